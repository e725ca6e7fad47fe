//! Player-facing wallet calls over real gRPC: purchases, idempotency, concurrency, upgrades,
//! rewards, limits and malformed input.

use coffer_client::{ClientError, Rejection, balance, holding, pb};
use coffer_integration_tests::{assert_ledger_clean, currencies, rejection};
use tonic::Code;
use tonic_types::StatusExt;

coffer_integration_tests::backend_tests! {
    async fn purchase_end_to_end_debits_price_grants_item_and_records_history(server) {
        let mut client = server.client().await;

        let before = client.wallet("alice").await.unwrap();
        assert_eq!(before.version, 0);
        assert_eq!(
            balance(&before, "coins"),
            100,
            "initial balance from the catalog"
        );

        let transaction = client
            .purchase("alice", "potion", &[("coins", 10)], "buy-potion-1")
            .await
            .unwrap();
        assert_eq!(transaction.kind(), pb::TransactionKind::Purchase);
        assert_eq!(transaction.catalog_entry_id, "potion");
        let sum: i64 = transaction
            .postings
            .iter()
            .map(|p| p.amount_minor_units)
            .sum();
        assert_eq!(sum, 0, "postings balance");
        assert!(
            transaction
                .postings
                .iter()
                .any(|p| p.account_id == "alice" && p.amount_minor_units == -10)
        );
        assert!(
            transaction
                .postings
                .iter()
                .any(|p| p.account_id == "system:shop" && p.amount_minor_units == 10)
        );

        let after = client.wallet("alice").await.unwrap();
        assert_eq!(balance(&after, "coins"), 90);
        assert_eq!(holding(&after, "potion"), (1, 0));
        assert_eq!(after.version, 2, "opening transaction, then the purchase");

        let (history, next) = client.transactions("alice", 10, "").await.unwrap();
        let kinds: Vec<_> = history.iter().map(|t| t.kind()).collect();
        assert_eq!(
            kinds,
            [pb::TransactionKind::Purchase, pb::TransactionKind::Opening],
            "newest first"
        );
        assert_eq!(next, "");
        assert_ledger_clean(&mut client).await;
    }

    async fn insufficient_funds_is_rejected_and_changes_nothing(server) {
        let mut client = server.client().await;
        let result = client
            .purchase("alice", "sword", &[("coins", 150)], "buy-sword")
            .await;
        assert_eq!(
            rejection(result),
            (Code::FailedPrecondition, Rejection::InsufficientFunds)
        );

        let wallet = client.wallet("alice").await.unwrap();
        assert_eq!(
            wallet.version, 0,
            "not even the opening transaction was committed"
        );
        assert_eq!(balance(&wallet, "coins"), 100);
        assert!(wallet.items.is_empty());
        assert!(
            client
                .transactions("alice", 10, "")
                .await
                .unwrap()
                .0
                .is_empty()
        );
        let report = client.verify_ledger().await.unwrap();
        assert_eq!(report.transactions_checked, 0);
        assert!(report.clean);
    }

    async fn idempotent_retry_returns_the_original_transaction_and_debits_once(server) {
        let mut client = server.client().await;
        let first = client
            .purchase("alice", "potion", &[("coins", 10)], "retry-me")
            .await
            .unwrap();
        let second = client
            .purchase("alice", "potion", &[("coins", 10)], "retry-me")
            .await
            .unwrap();
        assert_eq!(
            first, second,
            "the retry returns the original transaction unchanged"
        );
        let wallet = client.wallet("alice").await.unwrap();
        assert_eq!(balance(&wallet, "coins"), 90);
        assert_eq!(holding(&wallet, "potion"), (1, 0));
    }

    async fn same_key_with_another_request_is_rejected_and_changes_nothing(server) {
        let mut client = server.client().await;
        client
            .purchase("alice", "potion", &[("coins", 10)], "key-1")
            .await
            .unwrap();
        let before = client.wallet("alice").await.unwrap();

        let result = client
            .purchase("alice", "gem_pouch", &[("coins", 500)], "key-1")
            .await;
        assert_eq!(
            rejection(result),
            (Code::AlreadyExists, Rejection::IdempotencyKeyReused)
        );
        let result = client
            .purchase("alice", "potion", &[("coins", 10)], "key-1")
            .await
            .unwrap();
        assert_eq!(
            result.catalog_entry_id, "potion",
            "the key still belongs to the first request"
        );
        assert_eq!(client.wallet("alice").await.unwrap(), before);
    }

    async fn a_retried_rejection_stays_rejected_even_after_funds_arrive(server) {
        let mut client = server.client().await;
        let result = client
            .purchase("alice", "sword", &[("coins", 150)], "sword-1")
            .await;
        assert_eq!(rejection(result).1, Rejection::InsufficientFunds);
        client
            .grant("alice", currencies(&[("coins", 1000)]), "top up", "grant-1")
            .await
            .unwrap();

        let retry = client
            .purchase("alice", "sword", &[("coins", 150)], "sword-1")
            .await;
        assert_eq!(
            rejection(retry).1,
            Rejection::InsufficientFunds,
            "a retry never turns a rejection into a success"
        );
        let fresh = client
            .purchase("alice", "sword", &[("coins", 150)], "sword-2")
            .await
            .unwrap();
        assert_eq!(fresh.catalog_entry_id, "sword");
        assert_eq!(
            balance(&client.wallet("alice").await.unwrap(), "coins"),
            100 + 1000 - 150
        );
    }

    async fn same_key_from_two_players_does_not_collide(server) {
        let mut client = server.client().await;
        let a = client
            .purchase("alice", "potion", &[("coins", 10)], "shared")
            .await
            .unwrap();
        let b = client
            .purchase("bob", "potion", &[("coins", 10)], "shared")
            .await
            .unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(balance(&client.wallet("bob").await.unwrap(), "coins"), 90);
    }

    async fn two_hundred_concurrent_purchases_never_overspend(server) {
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(server.client().await);
        }
        // Alice starts with 100 coins: exactly 10 potions at 10 coins each can be bought.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let mut client = clients[i % clients.len()].clone();
            tasks.spawn(async move {
                client
                    .purchase("alice", "potion", &[("coins", 10)], &format!("potion-{i}"))
                    .await
            });
        }
        let (mut bought, mut refused) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(_) => bought += 1,
                Err(ClientError::Rejected {
                    rejection: Rejection::InsufficientFunds,
                    ..
                }) => refused += 1,
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!((bought, refused), (10, 190));
        let mut client = server.client().await;
        let wallet = client.wallet("alice").await.unwrap();
        assert_eq!(balance(&wallet, "coins"), 0);
        assert_eq!(holding(&wallet, "potion"), (10, 0));
        assert_eq!(wallet.version, 11, "opening + 10 purchases");
        assert_ledger_clean(&mut client).await;
    }

    async fn upgrade_walks_an_item_through_its_levels_and_stops_at_the_top(server) {
        let mut client = server.client().await;
        client
            .grant(
                "alice",
                currencies(&[("coins", 5_000), ("gems", 20)]),
                "upgrade test",
                "grant",
            )
            .await
            .unwrap();
        let prices: [&[(&str, i64)]; 5] = [
            &[("coins", 50)],
            &[("coins", 120)],
            &[("coins", 300)],
            &[("coins", 600), ("gems", 2)],
            &[("coins", 1_200), ("gems", 5)],
        ];

        let wrong_level = client
            .upgrade("alice", "speed_boots", 2, prices[1], "up-wrong")
            .await;
        assert_eq!(
            rejection(wrong_level),
            (Code::FailedPrecondition, Rejection::LevelChanged)
        );
        let wrong_price = client
            .upgrade("alice", "speed_boots", 1, &[("coins", 49)], "up-cheap")
            .await;
        assert_eq!(
            rejection(wrong_price),
            (Code::FailedPrecondition, Rejection::PriceChanged)
        );

        for (index, price) in prices.iter().enumerate() {
            let level = index as u32 + 1;
            let transaction = client
                .upgrade("alice", "speed_boots", level, price, &format!("up-{level}"))
                .await
                .unwrap();
            assert_eq!(transaction.level, level);
            let wallet = client.wallet("alice").await.unwrap();
            assert_eq!(holding(&wallet, "speed_boots"), (1, level));
        }
        let spent_coins: i64 = 50 + 120 + 300 + 600 + 1_200;
        let wallet = client.wallet("alice").await.unwrap();
        assert_eq!(balance(&wallet, "coins"), 100 + 5_000 - spent_coins);
        assert_eq!(balance(&wallet, "gems"), 5 + 20 - 7);

        let beyond = client
            .upgrade("alice", "speed_boots", 6, &[("coins", 1)], "up-6")
            .await;
        assert_eq!(
            rejection(beyond),
            (Code::FailedPrecondition, Rejection::MaxLevelReached)
        );
        assert_eq!(
            client.wallet("alice").await.unwrap(),
            wallet,
            "a refused upgrade changes nothing"
        );
        let not_upgradable = client
            .upgrade("alice", "potion", 1, &[("coins", 1)], "up-potion")
            .await;
        assert_eq!(rejection(not_upgradable).1, Rejection::NotUpgradable);
        assert_ledger_clean(&mut client).await;
    }

    async fn changed_price_unknown_offer_and_purchase_limit_are_rejected(server) {
        let mut client = server.client().await;
        let stale = client
            .purchase("alice", "potion", &[("coins", 9)], "stale")
            .await;
        assert_eq!(
            rejection(stale),
            (Code::FailedPrecondition, Rejection::PriceChanged)
        );
        let unknown = client
            .purchase("alice", "dragon", &[("coins", 9)], "dragon")
            .await;
        assert_eq!(
            rejection(unknown),
            (Code::NotFound, Rejection::UnknownOffer)
        );

        client
            .purchase("alice", "starter_pack", &[("gems", 5)], "starter-1")
            .await
            .unwrap();
        let wallet = client.wallet("alice").await.unwrap();
        assert_eq!(balance(&wallet, "coins"), 300, "the bundle's 200 coins");
        assert_eq!(holding(&wallet, "sword"), (1, 0));
        assert_eq!(holding(&wallet, "potion"), (3, 0));
        client
            .grant("alice", currencies(&[("gems", 5)]), "", "gems")
            .await
            .unwrap();
        let again = client
            .purchase("alice", "starter_pack", &[("gems", 5)], "starter-2")
            .await;
        assert_eq!(
            rejection(again),
            (Code::FailedPrecondition, Rejection::LimitReached)
        );
        let sword = client
            .purchase("alice", "sword", &[("coins", 150)], "second-sword")
            .await;
        assert_eq!(
            rejection(sword).1,
            Rejection::StackLimitExceeded,
            "a unique item is held once"
        );
    }

    async fn rewards_are_rate_limited_on_the_server(server) {
        let mut client = server.client().await;
        for i in 0..30 {
            client
                .claim_reward("alice", "coin_pickup", &format!("coin-{i}"))
                .await
                .unwrap();
        }
        let result = client.claim_reward("alice", "coin_pickup", "coin-30").await;
        match result {
            Err(ClientError::Rejected {
                code,
                rejection,
                retry_after_ms,
                ..
            }) => {
                assert_eq!(
                    (code, rejection),
                    (Code::ResourceExhausted, Rejection::RateLimited)
                );
                let retry = retry_after_ms.expect("a retry time");
                assert!(retry > 0 && retry <= 60_000, "retry after {retry} ms");
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert_eq!(
            balance(&client.wallet("alice").await.unwrap(), "coins"),
            130
        );
    }

    async fn consume_uses_up_items_and_refuses_more_than_held(server) {
        let mut client = server.client().await;
        client
            .grant(
                "alice",
                coffer_integration_tests::items(&[("potion", 3)]),
                "",
                "potions",
            )
            .await
            .unwrap();
        client
            .consume("alice", "potion", 2, "drink-2")
            .await
            .unwrap();
        let too_many = client.consume("alice", "potion", 2, "drink-2-more").await;
        assert_eq!(
            rejection(too_many),
            (Code::FailedPrecondition, Rejection::InsufficientItems)
        );
        assert_eq!(
            holding(&client.wallet("alice").await.unwrap(), "potion"),
            (1, 0)
        );
    }

    async fn malformed_requests_get_invalid_argument_naming_each_field(server) {
        let client = server.client().await;
        let mut wallet = client.wallet_raw();
        let request = pb::PurchaseRequest {
            player_id: "system:shop".to_owned(),
            offer_id: String::new(),
            expected_price: coffer_client::money(&[("coins", -5)]),
            idempotency_key: "k".to_owned(),
        };
        let status = wallet.purchase(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .expect("BadRequest details")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "player_id",
                "offer_id",
                "expected_price[0].amount_minor_units"
            ]
        );

        let status = wallet
            .list_transactions(pb::ListTransactionsRequest {
                player_id: "alice".into(),
                page_size: 10_000,
                page_token: "x".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("page_size") && status.message().contains("page_token"),
            "{}",
            status.message()
        );
        let mut client = client;
        let report = client.verify_ledger().await.unwrap();
        assert_eq!(report.transactions_checked, 0, "nothing was committed");
    }

    async fn history_pages_newest_first_without_overlap(server) {
        let mut client = server.client().await;
        for i in 0..7 {
            client
                .claim_reward("alice", "coin_pickup", &format!("c{i}"))
                .await
                .unwrap();
        }
        let mut ids = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = client.transactions("alice", 3, &token).await.unwrap();
            assert!(page.len() <= 3);
            ids.extend(page.iter().map(|t| t.id));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(
            ids,
            (1..=8).rev().collect::<Vec<u64>>(),
            "8 transactions (opening + 7 claims), newest first"
        );
    }

    async fn health_reports_serving(server) {
        let channel = tonic::transport::Endpoint::from_shared(server.endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "coffer.v1.WalletService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
}
