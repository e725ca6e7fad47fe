//! Storage faults under load: while real clients buy over real gRPC, writes and fsyncs of the
//! ledger file and the journal, or their free space, fail on command. Affected calls must end
//! UNAVAILABLE (never another code, never a success that was not committed), the server must
//! recover by itself once the fault clears, and afterwards every acknowledged transaction is
//! there, every key applied once, the verifier clean and the coins conserved — also after a
//! restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coffer_client::{CofferClient, balance, holding, pb};
use coffer_integration_tests::{TestServer, assert_ledger_clean, currencies};
use coffer_store::{Fault, StorageFaults};
use tokio::sync::Mutex;

/// Concurrent buyers, one player each (so stack limits and funds never interfere).
const BUYERS: usize = 8;
const COINS_GRANTED: i64 = 100_000;
/// What the demo catalog gives every new player.
const COINS_AT_OPENING: i64 = 100;
const POTION_PRICE_COINS: i64 = 10;
/// Successful purchases wanted before the fault, and again after it clears.
const SUCCESSES_WANTED: usize = 40;
/// UNAVAILABLE answers wanted while the fault is on.
const FAILURES_WANTED: usize = 20;

#[derive(Default)]
struct Record {
    /// Key → transaction id, for every acknowledged purchase.
    acknowledged: BTreeMap<String, u64>,
    /// Keys of purchases answered UNAVAILABLE.
    unavailable: Vec<String>,
    /// Anything else: a wrong answer.
    wrong: Vec<String>,
}

fn player(buyer: usize) -> String {
    format!("faulty-buyer-{buyer}")
}

async fn buy(
    client: &mut CofferClient,
    buyer: usize,
    key: &str,
) -> Result<u64, coffer_client::ClientError> {
    client
        .purchase(
            &player(buyer),
            "potion",
            &[("coins", POTION_PRICE_COINS)],
            key,
        )
        .await
        .map(|transaction| transaction.id)
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..3_000 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting: {what}");
}

async fn survive(fault: Fault) {
    let faults = StorageFaults::default();
    let mut server = TestServer::start_with_faults(faults.clone()).await;
    let mut admin = server.client().await;
    for buyer in 0..BUYERS {
        admin
            .grant(
                &player(buyer),
                currencies(&[("coins", COINS_GRANTED)]),
                "faults",
                &format!("grant-{buyer}"),
            )
            .await
            .expect("grant");
    }

    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // Set after the fault is switched on and cleared before it is switched off: a purchase that
    // sees it both when sent and when answered ran entirely under the fault, so its commit
    // cannot have been confirmed (no write or sync of its batch could succeed).
    let fault_on = Arc::new(AtomicBool::new(false));
    let mut buyers = Vec::new();
    for buyer in 0..BUYERS {
        let (record, stop, fault_on, mut client) = (
            Arc::clone(&record),
            Arc::clone(&stop),
            Arc::clone(&fault_on),
            server.client().await,
        );
        buyers.push(tokio::spawn(async move {
            let mut sequence = 0;
            while !stop.load(Ordering::SeqCst) {
                sequence += 1;
                let key = format!("buy-{buyer}-{sequence}");
                let sent_under_fault = fault_on.load(Ordering::SeqCst);
                let answer = buy(&mut client, buyer, &key).await;
                let wholly_under_fault = sent_under_fault && fault_on.load(Ordering::SeqCst);
                let mut record = record.lock().await;
                match answer {
                    Ok(_) if wholly_under_fault => record.wrong.push(format!(
                        "{key}: acknowledged while every write or sync failed"
                    )),
                    Ok(id) => {
                        record.acknowledged.insert(key, id);
                    }
                    Err(error) if error.code() == tonic::Code::Unavailable => {
                        record.unavailable.push(key)
                    }
                    Err(error) => record.wrong.push(format!("{key}: {error}")),
                }
            }
        }));
    }

    // A wrong answer ends the test at once, named, rather than as a timeout later.
    let count = |record: &Record| {
        assert!(
            record.wrong.is_empty(),
            "{fault:?}: wrong answers: {:?}",
            &record.wrong[..record.wrong.len().min(5)]
        );
        (record.acknowledged.len(), record.unavailable.len())
    };
    wait_until("purchases before the fault", async || {
        count(&*record.lock().await).0 >= SUCCESSES_WANTED
    })
    .await;
    faults.set(fault);
    fault_on.store(true, Ordering::SeqCst);
    let (before_fault, _) = count(&*record.lock().await);
    wait_until("UNAVAILABLE answers during the fault", async || {
        count(&*record.lock().await).1 >= FAILURES_WANTED
    })
    .await;
    assert!(faults.injected() > 0, "{fault:?} was never injected");
    fault_on.store(false, Ordering::SeqCst);
    faults.set(Fault::None);
    let (during_fault, failures) = count(&*record.lock().await);
    wait_until("purchases after the fault cleared", async || {
        count(&*record.lock().await).0 >= during_fault + SUCCESSES_WANTED
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for buyer in buyers {
        buyer.await.expect("buyer task");
    }
    let record = Arc::try_unwrap(record)
        .ok()
        .expect("buyers done")
        .into_inner();
    assert!(
        record.wrong.is_empty(),
        "{fault:?}: answers other than success or UNAVAILABLE: {:?}",
        record.wrong
    );
    assert!(failures >= FAILURES_WANTED);
    assert!(before_fault >= SUCCESSES_WANTED);

    check_ledger(&mut server, &record, fault).await;
    // Everything above must also hold for what is on disk: restart off the fault switch.
    server.remove_faults();
    server.restart().await;
    check_ledger(&mut server, &record, fault).await;
}

/// Every acknowledged purchase is there; every key, retried, resolves to one transaction; each
/// buyer's coins and potions match exactly the purchases that exist; the verifier is clean.
async fn check_ledger(server: &mut TestServer, record: &Record, fault: Fault) {
    let mut admin = server.client().await;
    let mut purchases_per_buyer = vec![0i64; BUYERS];
    for (key, id) in &record.acknowledged {
        let stored = admin
            .admin_raw()
            .get_transaction(pb::GetTransactionRequest {
                transaction_id: *id,
            })
            .await
            .unwrap_or_else(|e| {
                panic!("{fault:?}: acknowledged transaction {id} ({key}) is missing: {e}")
            })
            .into_inner()
            .transaction
            .expect("transaction");
        assert_eq!(stored.id, *id);
        let buyer: usize = key.split('-').nth(1).unwrap().parse().unwrap();
        let retried = buy(&mut admin, buyer, key)
            .await
            .expect("retry of an acknowledged key");
        assert_eq!(retried, *id, "{fault:?}: key {key} was applied twice");
        purchases_per_buyer[buyer] += 1;
    }
    // A key answered UNAVAILABLE either committed or did not; the retry settles it, once.
    for key in &record.unavailable {
        let buyer: usize = key.split('-').nth(1).unwrap().parse().unwrap();
        let first = buy(&mut admin, buyer, key)
            .await
            .expect("retry of an UNAVAILABLE key");
        let second = buy(&mut admin, buyer, key).await.expect("second retry");
        assert_eq!(first, second, "{fault:?}: key {key} was applied twice");
        if !record.acknowledged.contains_key(key) {
            purchases_per_buyer[buyer] += 1;
        }
    }
    assert_ledger_clean(&mut admin).await;
    for (buyer, purchases) in purchases_per_buyer.iter().enumerate() {
        let wallet = admin.wallet(&player(buyer)).await.expect("wallet");
        assert_eq!(
            balance(&wallet, "coins"),
            COINS_AT_OPENING + COINS_GRANTED - purchases * POTION_PRICE_COINS,
            "{fault:?}: coins of buyer {buyer} do not match its {purchases} purchases"
        );
        assert_eq!(
            holding(&wallet, "potion").0,
            *purchases as u64,
            "{fault:?}: potions of buyer {buyer}"
        );
    }
    assert_ledger_clean(&mut admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_errors_fail_calls_unavailable_and_the_server_recovers() {
    survive(Fault::WriteError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_errors_fail_calls_unavailable_and_the_server_recovers() {
    survive(Fault::SyncError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_calls_unavailable_and_the_server_recovers() {
    survive(Fault::DiskFull).await;
}
