//! Moving a ledger from redb to PostgreSQL with `coffer export` and `coffer import`: the
//! imported ledger verifies clean, holds the same wallets, and keeps every idempotency outcome.

use coffer_client::{ClientError, CofferClient, Rejection, balance, pb};

mod common;
use common::{Database, coffer};

async fn client_of(server: &coffer_server::RunningServer) -> CofferClient {
    let client = CofferClient::connect(format!("http://{}", server.local_addr))
        .await
        .unwrap();
    client
        .with_token(server.development_admin_key.as_ref().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redb_ledger_moves_to_postgres_intact() {
    let Some(database) = Database::create("export_import") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let redb_dir = dir.path().join("redb");

    let source = coffer_server::start(coffer_server::Config::development(
        "127.0.0.1:0".parse().unwrap(),
        &redb_dir,
    ))
    .await
    .unwrap();
    let mut client = client_of(&source).await;
    let potion = client
        .purchase("alice", "potion", &[("coins", 10)], "p1")
        .await
        .unwrap();
    client
        .purchase("alice", "starter_pack", &[("gems", 5)], "pack")
        .await
        .unwrap();
    let refused = client
        .purchase("bob", "sword", &[("coins", 150)], "sword")
        .await
        .unwrap_err();
    assert_eq!(refused.rejection(), Some(Rejection::InsufficientFunds));
    let grant = client
        .grant(
            "bob",
            pb::Contents {
                currencies: coffer_client::money(&[("credits", 250)]),
                items: vec![],
            },
            "gift",
            "g1",
        )
        .await
        .unwrap();
    client.reverse(grant.id, "mistake", "r1").await.unwrap();
    let (alice, bob) = (
        client.wallet("alice").await.unwrap(),
        client.wallet("bob").await.unwrap(),
    );
    let transactions = client.verify_ledger().await.unwrap().transactions_checked;
    source.shutdown().await.unwrap();

    let export = dir.path().join("ledger.jsonl");
    let (ok, text) = coffer(&[
        "export",
        "--data-dir",
        redb_dir.to_str().unwrap(),
        "--output",
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = coffer(&["verify", "--data-dir", redb_dir.to_str().unwrap()]);
    assert!(
        ok && text.contains(&format!("verifier: clean ({transactions} transactions")),
        "{text}"
    );
    let (ok, text) = coffer(&[
        "import",
        "--store",
        &database.url,
        "--input",
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "imported {transactions} transactions; verifier: clean"
        )),
        "{text}"
    );

    let mut config = coffer_server::Config::development(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("pg-node"),
    );
    config.postgres_url = Some(database.url.clone());
    let target = coffer_server::start(config).await.unwrap();
    let mut client = client_of(&target).await;
    assert_eq!(client.wallet("alice").await.unwrap(), alice);
    assert_eq!(client.wallet("bob").await.unwrap(), bob);
    assert_eq!(
        client
            .purchase("alice", "potion", &[("coins", 10)], "p1")
            .await
            .unwrap(),
        potion,
        "retries replay after the move"
    );
    match client
        .purchase("bob", "sword", &[("coins", 150)], "sword")
        .await
    {
        Err(ClientError::Rejected {
            rejection: Rejection::InsufficientFunds,
            ..
        }) => {}
        other => panic!("a stored rejection must survive the move, got {other:?}"),
    }
    let again = client.reverse(grant.id, "mistake", "r2").await.unwrap_err();
    assert_eq!(
        again.rejection(),
        Some(Rejection::AlreadyReversed),
        "reversal markers survive the move"
    );
    let next = client
        .purchase("alice", "potion", &[("coins", 10)], "p2")
        .await
        .unwrap();
    assert_eq!(next.id, transactions + 1, "ids continue without a gap");
    assert_eq!(
        balance(&client.wallet("alice").await.unwrap(), "coins"),
        balance(&alice, "coins") - 10
    );
    let report = client.verify_ledger().await.unwrap();
    assert!(report.clean, "{:?}", report.violations);
    target.shutdown().await.unwrap();

    let (ok, text) = coffer(&[
        "import",
        "--store",
        &database.url,
        "--input",
        export.to_str().unwrap(),
    ]);
    assert!(
        !ok && text.contains("not empty"),
        "importing twice must be refused: {text}"
    );

    // `coffer verify` finds damage: an account row removed behind the ledger's back.
    let (ok, text) = coffer(&["verify", "--store", &database.url]);
    assert!(ok && text.contains("verifier: clean"), "{text}");
    let url = database.url.clone();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client
            .execute("DELETE FROM coffer_accounts WHERE account_id = 'bob'", &[])
            .unwrap();
    })
    .join()
    .unwrap();
    let (ok, text) = coffer(&["verify", "--store", &database.url]);
    assert!(!ok, "a damaged ledger must fail verification: {text}");
    assert!(
        text.contains("bob has ledger entries but no stored account"),
        "{text}"
    );

    // The startup check refuses to serve the damaged ledger, and says why.
    let mut config = coffer_server::Config::development(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("pg-node-after-damage"),
    );
    config.postgres_url = Some(database.url.clone());
    match coffer_server::start(config).await {
        Err(error @ coffer_server::ServerError::LedgerViolations { .. }) => assert!(
            error
                .to_string()
                .contains("bob has ledger entries but no stored account"),
            "{error}"
        ),
        Err(other) => panic!("expected the startup check to refuse the ledger, got {other}"),
        Ok(_) => panic!("a server started on a damaged ledger"),
    }
}
