//! Restarts on the same data directory and the Subscribe stream, over real gRPC.

use std::time::Duration;

use coffer_client::{balance, holding, pb};
use coffer_integration_tests::{assert_ledger_clean, currencies};
use futures::StreamExt;

async fn next_event(stream: &mut tonic::Streaming<pb::SubscribeResponse>) -> pb::SubscribeResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .expect("an event, not an error")
}

coffer_integration_tests::backend_tests! {
    async fn a_restart_keeps_every_acknowledged_transaction_and_idempotency_outcome(server) {
        let mut client = server.client().await;
        let mut acknowledged = Vec::new();
        acknowledged.push(
            client
                .purchase("alice", "potion", &[("coins", 10)], "p1")
                .await
                .unwrap(),
        );
        acknowledged.push(
            client
                .grant("bob", currencies(&[("gems", 7)]), "gift", "g1")
                .await
                .unwrap(),
        );
        acknowledged.push(
            client
                .upgrade("alice", "speed_boots", 1, &[("coins", 50)], "u1")
                .await
                .unwrap(),
        );
        let alice = client.wallet("alice").await.unwrap();
        let bob = client.wallet("bob").await.unwrap();

        server.restart().await;
        let mut client = server.client().await;
        assert_eq!(client.wallet("alice").await.unwrap(), alice);
        assert_eq!(client.wallet("bob").await.unwrap(), bob);
        let mut admin = client.admin_raw();
        for transaction in &acknowledged {
            let stored = admin
                .get_transaction(pb::GetTransactionRequest {
                    transaction_id: transaction.id,
                })
                .await
                .unwrap()
                .into_inner()
                .transaction
                .unwrap();
            assert_eq!(&stored, transaction);
        }
        let retry = client
            .purchase("alice", "potion", &[("coins", 10)], "p1")
            .await
            .unwrap();
        assert_eq!(
            retry, acknowledged[0],
            "the idempotency outcome survived the restart"
        );
        assert_eq!(balance(&client.wallet("alice").await.unwrap(), "coins"), 40);
        assert_ledger_clean(&mut client).await;
    }

    async fn concurrent_writes_acknowledged_before_shutdown_survive_it(server) {
        let client = server.client().await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let mut client = client.clone();
            tasks.spawn(async move {
                client
                    .claim_reward(&format!("player-{i}"), "daily_bonus", "daily")
                    .await
            });
        }
        let mut acknowledged = Vec::new();
        while let Some(result) = tasks.join_next().await {
            acknowledged.push(result.unwrap().unwrap());
        }
        server.restart().await;
        let mut client = server.client().await;
        for i in 0..50 {
            let wallet = client.wallet(&format!("player-{i}")).await.unwrap();
            assert_eq!(balance(&wallet, "coins"), 150);
            assert_eq!(balance(&wallet, "credits"), 100);
        }
        assert_eq!(
            client.verify_ledger().await.unwrap().transactions_checked,
            100,
            "50 openings + 50 claims"
        );
        assert_ledger_clean(&mut client).await;
    }

    async fn subscribe_delivers_changes_in_order_and_resumes_from_a_version(server) {
        let mut client = server.client().await;
        let mut stream = client.subscribe("alice", 0).await.unwrap();

        client
            .purchase("alice", "potion", &[("coins", 10)], "a")
            .await
            .unwrap();
        client
            .claim_reward("alice", "coin_pickup", "b")
            .await
            .unwrap();
        client
            .grant("bob", currencies(&[("gems", 1)]), "not alice", "c")
            .await
            .unwrap();
        client.consume("alice", "potion", 1, "d").await.unwrap();
        let mut kinds = Vec::new();
        for expected_version in 1..=4 {
            let event = next_event(&mut stream).await;
            assert_eq!(event.version, expected_version);
            kinds.push(event.transaction.unwrap().kind());
        }
        use pb::TransactionKind as K;
        assert_eq!(
            kinds,
            [K::Opening, K::Purchase, K::RewardClaim, K::Consume],
            "bob's grant is not alice's"
        );
        drop(stream);

        // Changes while disconnected are delivered on resume, none twice.
        client
            .claim_reward("alice", "coin_pickup", "e")
            .await
            .unwrap();
        client
            .claim_reward("alice", "coin_pickup", "f")
            .await
            .unwrap();
        let mut resumed = client.subscribe("alice", 4).await.unwrap();
        assert_eq!(next_event(&mut resumed).await.version, 5);
        assert_eq!(next_event(&mut resumed).await.version, 6);
        client
            .upgrade("alice", "speed_boots", 1, &[("coins", 50)], "g")
            .await
            .unwrap();
        let live = next_event(&mut resumed).await;
        assert_eq!(live.version, 7);
        assert_eq!(live.transaction.unwrap().kind(), K::Upgrade);
        let nothing_more = tokio::time::timeout(Duration::from_millis(300), resumed.next()).await;
        assert!(
            nothing_more.is_err(),
            "no event repeats or appears without a change"
        );
        let wallet = client.wallet("alice").await.unwrap();
        assert_eq!(wallet.version, 7);
        assert_eq!(holding(&wallet, "speed_boots"), (1, 1));
    }

    async fn a_subscriber_under_a_burst_sees_every_version_once(server) {
        let mut client = server.client().await;
        let mut stream = client.subscribe("alice", 0).await.unwrap();
        let writers: Vec<_> = (0..300)
            .map(|i| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    client
                        .grant(
                            "alice",
                            currencies(&[("credits", 1)]),
                            "",
                            &format!("burst-{i}"),
                        )
                        .await
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        for expected_version in 1..=301 {
            assert_eq!(next_event(&mut stream).await.version, expected_version);
        }
        assert_eq!(
            balance(&client.wallet("alice").await.unwrap(), "credits"),
            300
        );
    }

    async fn shutdown_ends_open_streams_with_unavailable(server) {
        let mut client = server.client().await;
        let mut stream = client.subscribe("alice", 0).await.unwrap();
        client.claim_reward("alice", "coin_pickup", "before-stop").await.unwrap();
        assert_eq!(next_event(&mut stream).await.version, 1);
        assert_eq!(next_event(&mut stream).await.version, 2);
        tokio::time::timeout(Duration::from_secs(10), server.stop()).await.expect("shutdown finishes with a stream open");
        let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("the stream ends");
        match end {
            Some(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
            None => {}
            Some(Ok(event)) => panic!("no event expected after shutdown, got {event:?}"),
        }
    }
}
