//! Three `coffer` server processes on one PostgreSQL database: concurrent purchases spread
//! across them, retries landing on other nodes, a subscriber on one node seeing changes made
//! through another; afterwards every invariant holds and every acknowledged transaction exists.
//!
//! Needs PostgreSQL (`COFFER_TEST_POSTGRES_URL`, default the local server); without one it says
//! SKIPPED, unless `COFFER_REQUIRE_POSTGRES=1` makes that a failure (as `.ci/run` does).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coffer_client::{ClientError, CofferClient, Rejection, balance, pb};
use futures::StreamExt;

mod common;
use common::Database;

const NODES: usize = 3;
const PLAYERS: usize = 12;
const PURCHASES_PER_PLAYER: usize = 15;

/// A `coffer` process, killed when dropped.
struct Node {
    child: Child,
    endpoint: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(config: &std::path::Path, data_dir: &std::path::Path) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("--config")
        .arg(config)
        .arg("--listen-addr")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env("COFFER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting coffer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("coffer printed its address").unwrap();
    let addr = line
        .strip_prefix("coffer listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Node {
        child,
        endpoint: format!("http://{addr}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_database_keep_every_invariant() {
    let Some(database) = Database::create("multi_node") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (admin_key, entry) =
        coffer_server::auth::keys::generate("ops", coffer_server::Role::Admin).unwrap();
    let config = dir.path().join("coffer.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n[security]\ntoken_secret_hex = \"{}\"\n[[security.api_keys]]\nid = \"ops\"\nrole = \"admin\"\nsecret_sha256 = \"{}\"\n",
            database.url,
            "ab".repeat(32),
            entry.secret_sha256
        ),
    )
    .unwrap();
    let nodes: Vec<Node> = (0..NODES)
        .map(|i| start_node(&config, &dir.path().join(format!("node-{i}"))))
        .collect();
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(
            CofferClient::connect(node.endpoint.clone())
                .await
                .unwrap()
                .with_token(&admin_key)
                .unwrap(),
        );
    }

    // A subscriber on node 0 for player-0, whose changes are all made through other nodes.
    let mut stream = clients[0].subscribe("player-0", 0).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for player in 0..PLAYERS {
        for purchase in 0..PURCHASES_PER_PLAYER {
            let node = 1 + (player + purchase) % (NODES - 1);
            let retry_node = (node + 1) % NODES;
            let (mut client, mut retry_client) =
                (clients[node].clone(), clients[retry_node].clone());
            tasks.spawn(async move {
                let key = format!("buy-{purchase}");
                let player = format!("player-{player}");
                let first = client
                    .purchase(&player, "potion", &[("coins", 10)], &key)
                    .await;
                // The same request again, through another node: the same outcome, nothing twice.
                let retry = retry_client
                    .purchase(&player, "potion", &[("coins", 10)], &key)
                    .await;
                (player, first, retry)
            });
        }
    }
    let mut acknowledged = Vec::new();
    let mut bought = std::collections::BTreeMap::<String, i64>::new();
    while let Some(result) = tasks.join_next().await {
        let (player, first, retry) = result.unwrap();
        match (first, retry) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    a, b,
                    "a retry on another node returns the original transaction"
                );
                *bought.entry(player).or_default() += 1;
                acknowledged.push(a.id);
            }
            (
                Err(ClientError::Rejected {
                    rejection: Rejection::InsufficientFunds,
                    ..
                }),
                Err(ClientError::Rejected { rejection, .. }),
            ) => {
                assert_eq!(
                    rejection,
                    Rejection::InsufficientFunds,
                    "a retried rejection stays rejected"
                );
            }
            (a, b) => panic!("unexpected outcomes {a:?} / {b:?}"),
        }
    }

    // Every player starts with 100 coins: exactly 10 potions each, whatever node sold them.
    for player in 0..PLAYERS {
        let name = format!("player-{player}");
        assert_eq!(bought.get(&name).copied(), Some(10), "{name}");
        let wallet = clients[player % NODES].wallet(&name).await.unwrap();
        assert_eq!(balance(&wallet, "coins"), 0);
    }
    let mut admin = clients[2].admin_raw();
    for id in &acknowledged {
        let found = admin
            .get_transaction(pb::GetTransactionRequest {
                transaction_id: *id,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.transaction.unwrap().id, *id);
    }
    let report = clients[1].verify_ledger().await.unwrap();
    assert!(report.clean, "{:?}", report.violations);
    assert_eq!(
        report.transactions_checked,
        (PLAYERS + PLAYERS * 10) as u64,
        "openings and purchases, none twice"
    );

    // player-0's 11 versions (opening + 10 purchases) reached the subscriber on node 0, in order.
    for expected in 1..=11u64 {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        assert_eq!(event.version, expected);
    }
    drop(nodes);
    drop(database);
}
