//! Online backup (`AdminService/ExportLedger`, `coffer backup`) taken while clients keep
//! committing, restored with `coffer import` into a fresh store, on redb and PostgreSQL. The
//! restored ledger must be one consistent snapshot: ids dense 1..N, the verifier clean (stored
//! balances, items and versions equal a replay of exactly the transactions it holds), every
//! transaction acknowledged before the backup started present, nothing from after its snapshot.
//! Also: a slow reader, clients that disconnect mid-stream, the export cap and shutdown.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_client::{CofferClient, pb};
use coffer_store::LedgerRecord;
use tonic::Code;

mod common;
use common::{Database, coffer};

/// Concurrent client tasks committing during the backup.
const LOAD_TASKS: usize = 4;
/// Players each load task cycles through.
const PLAYERS_PER_TASK: usize = 16;

async fn coffer_async(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        coffer(&args)
    })
    .await
    .unwrap()
}

async fn admin_client(server: &coffer_server::RunningServer) -> CofferClient {
    CofferClient::connect(format!("http://{}", server.local_addr))
        .await
        .unwrap()
        .with_token(server.development_admin_key.as_ref().unwrap())
        .unwrap()
}

/// A transaction a client saw acknowledged, and how to retry it.
#[derive(Debug, Clone)]
struct Ack {
    id: u64,
    player: String,
    /// Set for purchases: the idempotency key of a `potion` purchase.
    purchase_key: Option<String>,
}

/// Client tasks that grant coins, buy potions and drink them, each on its own connection,
/// until stopped. Every acknowledged transaction is recorded after its answer arrived.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Ack>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(server: &coffer_server::RunningServer, run: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for task in 0..LOAD_TASKS {
            let mut client = admin_client(server).await;
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            let run = run.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut step = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let player = format!("{run}-p{task}-{}", (step / 3) % PLAYERS_PER_TASK);
                    let key = format!("{run}-t{task}-s{step}");
                    let (result, purchase_key) = match step % 3 {
                        0 => (
                            client
                                .grant(
                                    &player,
                                    pb::Contents {
                                        currencies: coffer_client::money(&[("coins", 10)]),
                                        items: vec![],
                                    },
                                    "load",
                                    &key,
                                )
                                .await,
                            None,
                        ),
                        1 => (
                            client
                                .purchase(&player, "potion", &[("coins", 10)], &key)
                                .await,
                            Some(key.clone()),
                        ),
                        _ => (client.consume(&player, "potion", 1, &key).await, None),
                    };
                    let transaction =
                        result.unwrap_or_else(|e| panic!("load step {key} failed: {e}"));
                    acked.lock().unwrap().push(Ack {
                        id: transaction.id,
                        player,
                        purchase_key,
                    });
                    step += 1;
                }
            }));
        }
        Load { stop, acked, tasks }
    }

    fn acked(&self) -> Vec<Ack> {
        self.acked.lock().unwrap().clone()
    }

    async fn wait_for_acks(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while self.acked.lock().unwrap().len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the load did not reach {count} acknowledged transactions"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a load task failed");
        }
        self.acked.lock().unwrap().clone()
    }
}

/// A backup file, decoded.
struct Backup {
    records: Vec<LedgerRecord>,
}

impl Backup {
    fn read(path: &Path) -> Backup {
        let file = std::fs::File::open(path).unwrap();
        let records = coffer_store::read_export(std::io::BufReader::new(file))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        Backup { records }
    }

    fn from_bytes(bytes: &[u8]) -> Backup {
        let records = coffer_store::read_export(bytes)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        Backup { records }
    }

    fn transaction_ids(&self) -> Vec<u64> {
        self.records
            .iter()
            .filter_map(|r| match r {
                LedgerRecord::Transaction { transaction, .. } => Some(transaction.id),
                _ => None,
            })
            .collect()
    }

    /// Transaction ids that stored idempotency outcomes point to.
    fn outcome_ids(&self) -> BTreeSet<u64> {
        self.records
            .iter()
            .filter_map(|r| match r {
                LedgerRecord::Idempotency { outcome, .. } => outcome.result.clone().ok(),
                _ => None,
            })
            .collect()
    }

    fn lines_of(records: &[&LedgerRecord]) -> String {
        let mut text = format!("{}\n", coffer_store::EXPORT_HEADER);
        for record in records {
            text.push_str(&serde_json::to_string(record).unwrap());
            text.push('\n');
        }
        text
    }
}

/// Where a test keeps its ledger: redb files in a directory, or a PostgreSQL database.
enum Backend {
    Redb,
    Postgres { live: Database, restored: Database },
}

impl Backend {
    fn postgres(prefix: &str) -> Option<Backend> {
        let live = Database::create(&format!("{prefix}_live"))?;
        let restored = Database::create(&format!("{prefix}_restored"))?;
        Some(Backend::Postgres { live, restored })
    }

    fn live_config(&self, dir: &Path) -> coffer_server::Config {
        let mut config =
            coffer_server::Config::development("127.0.0.1:0".parse().unwrap(), dir.join("live"));
        if let Backend::Postgres { live, .. } = self {
            config.postgres_url = Some(live.url.clone());
        }
        config
    }

    /// `coffer import`/`verify` arguments naming the (empty) store a backup is restored into.
    fn restore_target(&self, dir: &Path) -> Vec<String> {
        match self {
            Backend::Redb => vec![
                "--data-dir".into(),
                dir.join("restored").display().to_string(),
            ],
            Backend::Postgres { restored, .. } => vec!["--store".into(), restored.url.clone()],
        }
    }

    fn restored_config(&self, dir: &Path) -> coffer_server::Config {
        let mut config = coffer_server::Config::development(
            "127.0.0.1:0".parse().unwrap(),
            dir.join("restored"),
        );
        if let Backend::Postgres { restored, .. } = self {
            config.postgres_url = Some(restored.url.clone());
        }
        config
    }
}

/// The whole scenario: load, a backup with `coffer backup` in the middle of it, more load,
/// then a restore with `coffer import` into an empty store, checked record by record.
async fn backup_under_load_restores_one_snapshot(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = coffer_server::start(backend.live_config(dir.path()))
        .await
        .unwrap();
    let load = Load::start(&server, "bk").await;
    load.wait_for_acks(600).await;

    // Everything acknowledged before the backup starts must be in it.
    let acked_before = load.acked();
    let backup_path = dir.path().join("ledger-backup.jsonl");
    let (ok, text) = coffer_async(vec![
        "backup".into(),
        "--endpoint".into(),
        format!("http://{}", server.local_addr),
        "--admin-key".into(),
        server.development_admin_key.clone().unwrap(),
        "--out".into(),
        backup_path.display().to_string(),
    ])
    .await;
    assert!(ok, "coffer backup failed: {text}");
    let acked_at_backup_end = load.acked().len();
    assert!(
        acked_at_backup_end > acked_before.len(),
        "the load kept committing while the backup ran"
    );
    // The load goes on after the backup.
    load.wait_for_acks(acked_at_backup_end + 300).await;
    let acked_all = load.stop().await;

    let backup = Backup::read(&backup_path);
    let ids = backup.transaction_ids();
    let last_id = ids.len() as u64;
    assert_eq!(
        ids,
        (1..=last_id).collect::<Vec<_>>(),
        "transaction ids in a backup are dense 1..N"
    );
    let records = backup.records.len();
    assert!(
        text.contains(&format!(
            "backup complete: {last_id} transactions (ids 1..={last_id}), {records} records, {} bytes written to {}",
            std::fs::metadata(&backup_path).unwrap().len(),
            backup_path.display()
        )),
        "{text}"
    );
    let outcome_ids = backup.outcome_ids();
    for ack in &acked_before {
        assert!(
            ack.id <= last_id,
            "transaction {} was acknowledged before the backup started but is missing (backup ends at {last_id})",
            ack.id
        );
        assert!(
            outcome_ids.contains(&ack.id),
            "the idempotency outcome of transaction {} is missing",
            ack.id
        );
    }
    assert!(
        outcome_ids.iter().all(|id| *id <= last_id),
        "an idempotency outcome points past the snapshot"
    );
    let max_acked = acked_all.iter().map(|a| a.id).max().unwrap();
    assert!(
        max_acked > last_id,
        "transactions committed after the snapshot ({max_acked} > {last_id}) are not in it"
    );
    // No partial file is left beside the backup.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The backup is a prefix of the ledger that went on: a second export, after the load,
    // holds the same first N transactions, byte for byte.
    let mut admin = admin_client(&server).await;
    let mut later_bytes = Vec::new();
    admin
        .export_ledger(|chunk| {
            later_bytes.extend_from_slice(chunk);
            Ok(())
        })
        .await
        .unwrap();
    let later = Backup::from_bytes(&later_bytes);
    let transactions_of = |backup: &Backup, limit: u64| -> Vec<String> {
        backup
            .records
            .iter()
            .filter_map(|r| match r {
                LedgerRecord::Transaction { transaction, .. } if transaction.id <= limit => {
                    Some(serde_json::to_string(&transaction).unwrap())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        transactions_of(&backup, last_id),
        transactions_of(&later, last_id)
    );
    assert_eq!(later.transaction_ids().len() as u64, max_acked);
    let live_report = admin.verify_ledger().await.unwrap();
    assert!(live_report.clean, "{:?}", live_report.violations);
    server.shutdown().await.unwrap();

    // Restore into an empty store; import runs the verifier, and so does `coffer verify`.
    let target = backend.restore_target(dir.path());
    let mut args = vec!["import".to_owned()];
    args.extend(target.iter().cloned());
    args.extend(["--input".to_owned(), backup_path.display().to_string()]);
    let (ok, text) = coffer_async(args).await;
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "imported {last_id} transactions; verifier: clean ({last_id} transactions"
        )),
        "{text}"
    );
    let mut args = vec!["verify".to_owned()];
    args.extend(target.iter().cloned());
    let (ok, text) = coffer_async(args).await;
    assert!(
        ok && text.contains(&format!("verifier: clean ({last_id} transactions")),
        "{text}"
    );

    // The restored server carries on from the snapshot: a retried purchase acknowledged before
    // the backup returns its original transaction, and new ids continue at N + 1.
    let restored = coffer_server::start(backend.restored_config(dir.path()))
        .await
        .unwrap();
    let mut client = admin_client(&restored).await;
    let retried = acked_before
        .iter()
        .rev()
        .find(|a| a.purchase_key.is_some())
        .expect("a purchase before the backup");
    let again = client
        .purchase(
            &retried.player,
            "potion",
            &[("coins", 10)],
            retried.purchase_key.as_ref().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        again.id, retried.id,
        "a retry returns the original transaction"
    );
    // An existing player: a new one would first get an opening transaction.
    let next = client
        .grant(
            &retried.player,
            pb::Contents {
                currencies: coffer_client::money(&[("coins", 1)]),
                items: vec![],
            },
            "",
            "after-restore",
        )
        .await
        .unwrap();
    assert_eq!(next.id, last_id + 1, "ids continue without a gap");
    let report = client.verify_ledger().await.unwrap();
    assert!(report.clean, "{:?}", report.violations);
    restored.shutdown().await.unwrap();

    // The verifier is what proves the snapshot consistent: transactions from this backup with
    // the accounts of the later export do not restore.
    if let Backend::Redb = backend {
        let mixed: Vec<&LedgerRecord> = backup
            .records
            .iter()
            .filter(|r| !matches!(r, LedgerRecord::Account { .. }))
            .chain(
                later
                    .records
                    .iter()
                    .filter(|r| matches!(r, LedgerRecord::Account { .. })),
            )
            .collect();
        let mixed_path = dir.path().join("mixed.jsonl");
        std::fs::write(&mixed_path, Backup::lines_of(&mixed)).unwrap();
        let mixed_dir = dir.path().join("mixed");
        let (ok, text) = coffer_async(vec![
            "import".into(),
            "--data-dir".into(),
            mixed_dir.display().to_string(),
            "--input".into(),
            mixed_path.display().to_string(),
        ])
        .await;
        assert!(
            !ok && text.contains("verifier: VIOLATIONS")
                && text.contains("differ from the ledger replay"),
            "accounts from another moment must fail verification: {text}"
        );
    }
}

mod redb {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_taken_under_load_restores_one_consistent_snapshot() {
        backup_under_load_restores_one_snapshot(Backend::Redb).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_taken_under_load_restores_one_consistent_snapshot() {
        let Some(backend) = Backend::postgres("backup_load") else {
            return;
        };
        backup_under_load_restores_one_snapshot(backend).await;
    }
}

/// Grants to many players in few large transactions, so an export is several megabytes: more
/// than the server's chunk queue and the connection's flow-control windows hold.
async fn grow_ledger(client: &mut CofferClient, transactions: usize) {
    for t in 0..transactions {
        let operations = (0..256)
            .map(|p| pb::Operation {
                operation: Some(pb::operation::Operation::Grant(pb::GrantOperation {
                    player_id: format!("bulk-{t}-{p}"),
                    contents: Some(pb::Contents {
                        currencies: coffer_client::money(&[("coins", 5), ("gems", 1)]),
                        items: vec![],
                    }),
                })),
            })
            .collect();
        client
            .execute(operations, "grow the ledger", &format!("grow-{t}"))
            .await
            .unwrap();
    }
}

async fn open_export(
    client: &CofferClient,
) -> Result<tonic::Streaming<pb::ExportLedgerResponse>, tonic::Status> {
    Ok(client
        .admin_raw()
        .export_ledger(pb::ExportLedgerRequest {})
        .await?
        .into_inner())
}

/// Reads an export stream to its end: the bytes and the summary.
async fn read_all(
    mut stream: tonic::Streaming<pb::ExportLedgerResponse>,
    pause: Duration,
) -> (Vec<u8>, pb::ExportLedgerSummary, usize) {
    let (mut bytes, mut messages) = (Vec::new(), 0);
    while let Some(message) = stream.message().await.unwrap() {
        messages += 1;
        bytes.extend_from_slice(&message.data);
        if let Some(summary) = message.summary {
            return (bytes, summary, messages);
        }
        tokio::time::sleep(pause).await;
    }
    panic!("the export ended without its summary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_one_snapshot_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = coffer_server::start(coffer_server::Config::development(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("live"),
    ))
    .await
    .unwrap();
    let mut admin = admin_client(&server).await;
    grow_ledger(&mut admin, 24).await;
    let load = Load::start(&server, "slow").await;
    load.wait_for_acks(100).await;

    let stream = open_export(&admin).await.unwrap();
    let acked_at_start = load.acked().len();
    // 30 ms per message: the export spans many commits, and the server waits on the reader.
    let (bytes, summary, messages) = read_all(stream, Duration::from_millis(30)).await;
    let acked_during = load.acked().len() - acked_at_start;
    let acked_all = load.stop().await;

    assert!(
        messages > coffer_server::EXPORT_CHUNKS_BUFFERED * 4,
        "the export is long enough to fill the server's queue ({messages} messages)"
    );
    assert!(
        bytes.chunks(coffer_server::EXPORT_CHUNK_BYTES_MAX).count() <= messages,
        "no message is larger than a chunk"
    );
    assert!(
        acked_during > 50,
        "writes went on during the export ({acked_during})"
    );
    assert_eq!(summary.bytes, bytes.len() as u64);
    let backup = Backup::from_bytes(&bytes);
    assert_eq!(backup.records.len() as u64, summary.records);
    let last_id = summary.last_transaction_id;
    assert_eq!(backup.transaction_ids(), (1..=last_id).collect::<Vec<_>>());
    assert!(acked_all.iter().map(|a| a.id).max().unwrap() > last_id);
    server.shutdown().await.unwrap();

    let path = dir.path().join("slow.jsonl");
    std::fs::write(&path, &bytes).unwrap();
    let (ok, text) = coffer_async(vec![
        "restore".into(),
        "--data-dir".into(),
        dir.path().join("restored").display().to_string(),
        "--input".into(),
        path.display().to_string(),
    ])
    .await;
    assert!(
        ok && text.contains(&format!("imported {last_id} transactions; verifier: clean")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_mid_export_disturb_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = coffer_server::start(coffer_server::Config::development(
        "127.0.0.1:0".parse().unwrap(),
        dir.path(),
    ))
    .await
    .unwrap();
    let mut admin = admin_client(&server).await;
    grow_ledger(&mut admin, 24).await;
    let before = admin.verify_ledger().await.unwrap();
    assert!(before.clean);

    // One export on its own connection, one on the shared one; each reads a single message.
    let leaving = admin_client(&server).await;
    let mut first = open_export(&leaving).await.unwrap();
    assert!(first.message().await.unwrap().unwrap().summary.is_none());
    let mut second = open_export(&admin).await.unwrap();
    assert!(second.message().await.unwrap().unwrap().summary.is_none());
    assert_eq!(coffer_server::EXPORTS_IN_FLIGHT_MAX, 2);
    let third = open_export(&admin).await;
    let refused = match third {
        Ok(mut stream) => stream.message().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // Both readers vanish: the whole connection of one, the stream of the other.
    drop(first);
    drop(leaving);
    drop(second);

    // The writer never noticed (an existing player: a new one would also get an opening).
    let bought = admin
        .purchase("bulk-0-0", "potion", &[("coins", 10)], "after-1")
        .await
        .unwrap();
    assert_eq!(bought.id, before.transactions_checked + 1);

    // Both exports end and give their slots back: two new exports run side by side to the end
    // and agree.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (a, b) = loop {
        let a = open_export(&admin).await;
        let b = open_export(&admin).await;
        match (a, b) {
            (Ok(mut a), Ok(mut b)) => match (a.message().await, b.message().await) {
                (Ok(Some(a_first)), Ok(Some(b_first))) => break ((a, a_first), (b, b_first)),
                (a_first, b_first) => {
                    let refusals = [a_first.err(), b_first.err()];
                    assert!(
                        refusals
                            .iter()
                            .flatten()
                            .all(|s| s.code() == Code::ResourceExhausted),
                        "{refusals:?}"
                    );
                }
            },
            (a, b) => {
                for status in [a.err(), b.err()].into_iter().flatten() {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned exports never gave their slots back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ((a, a_first), (b, b_first)) = (a, b);
    let (a_rest, a_summary, _) = read_all(a, Duration::ZERO).await;
    let (b_rest, b_summary, _) = read_all(b, Duration::ZERO).await;
    assert_eq!(a_summary, b_summary);
    assert_eq!(
        [a_first.data, a_rest].concat(),
        [b_first.data, b_rest].concat()
    );
    assert_eq!(a_summary.last_transaction_id, bought.id);

    let after = admin.verify_ledger().await.unwrap();
    assert!(after.clean, "{:?}", after.violations);
    assert_eq!(after.transactions_checked, before.transactions_checked + 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_running_export_and_closes_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let server = coffer_server::start(coffer_server::Config::development(
        "127.0.0.1:0".parse().unwrap(),
        dir.path(),
    ))
    .await
    .unwrap();
    let mut admin = admin_client(&server).await;
    grow_ledger(&mut admin, 24).await;

    let mut stream = open_export(&admin).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().summary.is_none());
    // The reader keeps reading, slowly, until the stream ends.
    let reader = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(message)) if message.summary.is_some() => return Ok(()),
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(None) => return Err(Code::Ok),
                Err(status) => return Err(status.code()),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("shutdown waited on the export")
        .unwrap();
    assert_eq!(
        reader.await.unwrap(),
        Err(Code::Unavailable),
        "an export cut short ends with UNAVAILABLE, never as if complete"
    );
    // Nothing of the export outlives the server: the database file opens right away.
    let store = coffer_store::RedbStore::open(dir.path()).expect("the database is closed");
    drop(store);
}
