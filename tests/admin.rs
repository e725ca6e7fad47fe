//! Admin calls over real gRPC: grants, revocations, reversals, atomic Execute, the catalog.

use coffer_client::{Rejection, balance, holding, pb};
use coffer_integration_tests::{assert_ledger_clean, currencies, items, rejection};
use tonic::Code;
use tonic_types::StatusExt;

fn transfer(from: &str, to: &str, contents: pb::Contents) -> pb::Operation {
    pb::Operation {
        operation: Some(pb::operation::Operation::Transfer(pb::TransferOperation {
            from_player_id: from.into(),
            to_player_id: to.into(),
            contents: Some(contents),
        })),
    }
}

fn grant(player: &str, contents: pb::Contents) -> pb::Operation {
    pb::Operation {
        operation: Some(pb::operation::Operation::Grant(pb::GrantOperation {
            player_id: player.into(),
            contents: Some(contents),
        })),
    }
}

coffer_integration_tests::backend_tests! {
    async fn grant_and_revoke_move_value_through_system_grants(server) {
        let mut client = server.client().await;
        let granted = client
            .grant(
                "alice",
                currencies(&[("credits", 1_234)]),
                "compensation",
                "g1",
            )
            .await
            .unwrap();
        assert_eq!(
            granted.metadata.get("reason").map(String::as_str),
            Some("compensation")
        );
        assert!(
            granted
                .postings
                .iter()
                .any(|p| p.account_id == "system:grants" && p.amount_minor_units == -1_234)
        );
        client
            .revoke("alice", currencies(&[("credits", 234)]), "correction", "r1")
            .await
            .unwrap();
        assert_eq!(
            balance(&client.wallet("alice").await.unwrap(), "credits"),
            1_000
        );
        let too_much = client
            .revoke("alice", currencies(&[("credits", 1_001)]), "", "r2")
            .await;
        assert_eq!(
            rejection(too_much),
            (Code::FailedPrecondition, Rejection::InsufficientFunds)
        );
        let cap = client
            .grant("alice", currencies(&[("gems", 100_000)]), "", "g2")
            .await;
        assert_eq!(
            rejection(cap),
            (Code::FailedPrecondition, Rejection::CapExceeded)
        );
        let unknown = client
            .grant("alice", currencies(&[("gold", 1)]), "", "g3")
            .await;
        assert_eq!(
            rejection(unknown),
            (Code::NotFound, Rejection::UnknownCurrency)
        );
        assert_ledger_clean(&mut client).await;
    }

    async fn reverse_refunds_a_purchase_once_and_restores_its_limit(server) {
        let mut client = server.client().await;
        let purchase = client
            .purchase("alice", "starter_pack", &[("gems", 5)], "starter")
            .await
            .unwrap();
        let reversal = client
            .reverse(purchase.id, "refund requested", "refund-1")
            .await
            .unwrap();
        assert_eq!(reversal.reverses_transaction_id, purchase.id);
        assert_eq!(reversal.kind(), pb::TransactionKind::Reversal);
        let wallet = client.wallet("alice").await.unwrap();
        assert_eq!(
            (balance(&wallet, "gems"), balance(&wallet, "coins")),
            (5, 100)
        );
        assert!(wallet.items.is_empty());
        assert!(
            wallet.offer_purchases.is_empty(),
            "the refunded purchase no longer counts against the limit"
        );

        let twice = client.reverse(purchase.id, "again", "refund-2").await;
        assert_eq!(
            rejection(twice),
            (Code::FailedPrecondition, Rejection::AlreadyReversed)
        );
        let of_reversal = client.reverse(reversal.id, "undo", "refund-3").await;
        assert_eq!(rejection(of_reversal).1, Rejection::NotReversible);
        let missing = client.reverse(9_999, "", "refund-4").await;
        assert_eq!(
            rejection(missing),
            (Code::NotFound, Rejection::TransactionNotFound)
        );
        // Looking the same id up names the same reason, for clients that match on it.
        let looked_up = client
            .admin_raw()
            .get_transaction(pb::GetTransactionRequest {
                transaction_id: 9_999,
            })
            .await
            .expect_err("no transaction 9999");
        assert_eq!(looked_up.code(), Code::NotFound);
        assert_eq!(
            looked_up
                .get_error_details()
                .error_info()
                .map(|info| (info.reason.as_str(), info.domain.as_str())),
            Some(("TRANSACTION_NOT_FOUND", "coffer.v1")),
            "{looked_up:?}"
        );
        client
            .purchase("alice", "starter_pack", &[("gems", 5)], "starter-again")
            .await
            .unwrap();
        assert_ledger_clean(&mut client).await;
    }

    async fn reversal_is_refused_when_the_goods_were_spent_or_moved_on(server) {
        let mut client = server.client().await;
        client
            .grant("alice", currencies(&[("coins", 400)]), "", "coins")
            .await
            .unwrap();
        let pouch = client
            .purchase("alice", "gem_pouch", &[("coins", 500)], "pouch")
            .await
            .unwrap();
        client
            .revoke(
                "alice",
                currencies(&[("gems", 10)]),
                "spent elsewhere",
                "take-gems",
            )
            .await
            .unwrap();
        let before = client.wallet("alice").await.unwrap();
        assert_eq!(balance(&before, "gems"), 5);
        let spent = client.reverse(pouch.id, "chargeback", "rev-pouch").await;
        assert_eq!(
            rejection(spent),
            (Code::FailedPrecondition, Rejection::InsufficientFunds)
        );
        assert_eq!(
            client.wallet("alice").await.unwrap(),
            before,
            "a refused reversal changes nothing"
        );

        client
            .grant("alice", currencies(&[("coins", 1_000)]), "", "more-coins")
            .await
            .unwrap();
        let level_1 = client
            .upgrade("alice", "coin_magnet", 1, &[("coins", 80)], "magnet-1")
            .await
            .unwrap();
        client
            .upgrade("alice", "coin_magnet", 2, &[("coins", 250)], "magnet-2")
            .await
            .unwrap();
        let moved_on = client.reverse(level_1.id, "", "rev-magnet-1").await;
        assert_eq!(
            rejection(moved_on).1,
            Rejection::NotReversible,
            "the item is at level 2 now"
        );
        assert_ledger_clean(&mut client).await;
    }

    async fn execute_is_all_or_nothing_across_players(server) {
        let mut client = server.client().await;
        client
            .grant("alice", items(&[("potion", 5)]), "", "seed")
            .await
            .unwrap();
        let alice_before = client.wallet("alice").await.unwrap();

        // The last step fails (bob cannot give 1,000 coins): nothing of the first two happens.
        let operations = vec![
            transfer("alice", "bob", items(&[("potion", 2)])),
            grant("carol", currencies(&[("gems", 3)])),
            transfer("bob", "alice", currencies(&[("coins", 1_000)])),
        ];
        let failed = client.execute(operations, "trade", "trade-1").await;
        assert_eq!(
            rejection(failed),
            (Code::FailedPrecondition, Rejection::InsufficientFunds)
        );
        assert_eq!(client.wallet("alice").await.unwrap(), alice_before);
        assert_eq!(client.wallet("bob").await.unwrap().version, 0);
        assert_eq!(client.wallet("carol").await.unwrap().version, 0);

        let operations = vec![
            transfer("alice", "bob", items(&[("potion", 2)])),
            grant("carol", currencies(&[("gems", 3)])),
            transfer("bob", "alice", currencies(&[("coins", 30)])),
        ];
        let done = client
            .execute(operations, "trade", "trade-2")
            .await
            .unwrap();
        assert_eq!(done.kind(), pb::TransactionKind::Execute);
        let (alice, bob, carol) = (
            client.wallet("alice").await.unwrap(),
            client.wallet("bob").await.unwrap(),
            client.wallet("carol").await.unwrap(),
        );
        assert_eq!(
            (holding(&alice, "potion").0, balance(&alice, "coins")),
            (3, 130)
        );
        assert_eq!((holding(&bob, "potion").0, balance(&bob, "coins")), (2, 70));
        assert_eq!(balance(&carol, "gems"), 8);
        assert_ledger_clean(&mut client).await;
    }

    async fn catalog_replacement_is_validated_versioned_and_takes_effect(server) {
        let mut client = server.client().await;
        let source = client
            .admin_raw()
            .get_catalog_source(pb::GetCatalogSourceRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(source.version, 1);

        let same_version = client
            .replace_catalog(&source.catalog_toml)
            .await
            .unwrap_err();
        assert_eq!(same_version.code(), Code::FailedPrecondition);
        let broken = source
            .catalog_toml
            .replace("price = { coins = 10 }", "price = { gold = 10 }");
        let broken = client
            .replace_catalog(&broken.replace("version = 1", "version = 2"))
            .await
            .unwrap_err();
        assert_eq!(broken.code(), Code::InvalidArgument);
        assert!(
            broken
                .to_string()
                .contains("offers.potion.price: unknown currency \"gold\""),
            "{broken}"
        );

        let next = source
            .catalog_toml
            .replace("version = 1", "version = 2")
            .replace(
                "price = { coins = 10 }\nitems = { potion = 1 }",
                "price = { coins = 12 }\nitems = { potion = 1 }",
            )
            .replace(
                "available_from = \"2026-12-01T00:00:00Z\"\navailable_until = \"2027-01-01T00:00:00Z\"",
                "available_from = \"2020-01-01T00:00:00Z\"\navailable_until = \"2020-02-01T00:00:00Z\"",
            );
        assert_eq!(client.replace_catalog(&next).await.unwrap(), 2);
        assert_eq!(client.catalog().await.unwrap().version, 2);
        let stale = client
            .purchase("alice", "potion", &[("coins", 10)], "old-price")
            .await;
        assert_eq!(
            rejection(stale),
            (Code::FailedPrecondition, Rejection::PriceChanged)
        );
        client
            .purchase("alice", "potion", &[("coins", 12)], "new-price")
            .await
            .unwrap();
        client
            .grant("alice", currencies(&[("gems", 20)]), "", "gems")
            .await
            .unwrap();
        let ended = client
            .purchase("alice", "golden_hat", &[("gems", 20)], "hat")
            .await;
        assert_eq!(
            rejection(ended),
            (Code::FailedPrecondition, Rejection::NotAvailable)
        );
    }
}
