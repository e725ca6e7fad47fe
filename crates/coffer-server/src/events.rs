//! Live wallet changes, fanned out per player after each commit. Each player with subscribers
//! has one bounded broadcast channel; a subscriber that falls behind is told it lagged and
//! catches up from storage, so it never misses or repeats a version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coffer_core::Transaction;
use tokio::sync::broadcast;

/// Events buffered per player before a slow subscriber lags and re-reads from storage.
pub const SUBSCRIBER_BUFFER_LEN: usize = 256;

/// One committed change of one player's wallet.
#[derive(Debug, Clone)]
pub struct WalletEvent {
    /// The player's version after the transaction.
    pub version: u64,
    pub transaction: Arc<Transaction>,
}

/// The per-player channels.
#[derive(Default)]
pub struct Events {
    channels: Mutex<HashMap<String, broadcast::Sender<WalletEvent>>>,
}

impl Events {
    /// Starts receiving a player's events (before reading history, so nothing falls between).
    pub fn subscribe(&self, player_id: &str) -> broadcast::Receiver<WalletEvent> {
        let mut channels = self.channels.lock().expect("events lock poisoned");
        channels
            .entry(player_id.to_owned())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER_LEN).0)
            .subscribe()
    }

    /// Sends every player's share of a committed transaction. Called only after the commit.
    pub fn publish(&self, transaction: &Arc<Transaction>) {
        let mut channels = self.channels.lock().expect("events lock poisoned");
        for (account, version) in &transaction.account_versions {
            let Some(sender) = channels.get(account.as_str()) else {
                continue;
            };
            let event = WalletEvent {
                version: *version,
                transaction: Arc::clone(transaction),
            };
            if sender.send(event).is_err() {
                // Nobody listens any more: drop the channel so idle players cost nothing.
                channels.remove(account.as_str());
            }
        }
    }
}

/// Transactions loaded per round while relaying commits made by other nodes.
pub const RELAY_PAGE_LEN: usize = 1_000;

/// Publishes transactions committed through other nodes sharing the database. `commits` names
/// the newest transaction id committed anywhere; everything after the last one published is
/// loaded and published (this node's own commits again too: subscribers skip versions they have).
pub fn relay_commits(
    store: &dyn coffer_store::Store,
    events: &Events,
    commits: &std::sync::mpsc::Receiver<u64>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let Ok(mut published) = commits.recv() else {
        return;
    };
    while let Ok(newest) = commits.recv() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        while published < newest {
            match store.transactions_after(published, RELAY_PAGE_LEN) {
                Ok(transactions) if transactions.is_empty() => break,
                Ok(transactions) => {
                    for transaction in transactions {
                        published = transaction.id;
                        events.publish(&Arc::new(transaction));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "relaying commits from other nodes failed; retrying");
                    break;
                }
            }
        }
    }
}
