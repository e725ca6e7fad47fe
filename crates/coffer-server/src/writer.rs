//! The single writer. Handlers send commands here; one thread takes everything queued (up to
//! `BATCH_LEN_MAX`), runs it through the core and writes it in one journal record (group
//! commit). A second thread, the completer, waits until each batch is durable, then publishes
//! its events and answers its requests, in batch order. The two overlap: while the disk syncs
//! one batch, the writer prepares the next (which builds on it). Nothing is acknowledged, and no
//! reader sees a batch, before its commit is durable.

use std::sync::{Arc, RwLock, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use coffer_core::{BatchResult, Catalog, Command, Outcome, limits::BATCH_LEN_MAX};
use coffer_store::{CommitTicket, Store, StoreError, StoredCatalog};
use tokio::sync::{mpsc, oneshot};

use crate::events::Events;

/// Requests waiting for the writer before handlers wait for room (back-pressure).
pub const WRITER_QUEUE_LEN: usize = 8_192;

/// Written batches waiting for the completer before the writer waits: how far preparing runs
/// ahead of the disk.
pub const BATCHES_AHEAD_MAX: usize = 2;

/// The catalog in force and the TOML it came from.
#[derive(Debug, Clone)]
pub struct CatalogInForce {
    pub catalog: Arc<Catalog>,
    pub source_toml: Arc<str>,
}

/// Shared, swappable catalog: readers clone the `Arc`s and never block the writer for long.
pub type SharedCatalog = Arc<RwLock<CatalogInForce>>;

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The commit failed; nothing of the batch was committed.
    #[error("commit failed: {0}")]
    Store(#[from] StoreError),
    /// The writer has stopped (the server is shutting down).
    #[error("the writer has stopped")]
    Stopped,
    /// The batch's commit failed; nothing of it was committed.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// A catalog replacement was refused.
    #[error("{0}")]
    Catalog(#[from] coffer_core::CatalogError),
}

enum Job {
    Command {
        command: Command,
        reply: oneshot::Sender<Result<Outcome, WriteError>>,
    },
    ReplaceCatalog {
        catalog: Catalog,
        source_toml: String,
        reply: oneshot::Sender<Result<u64, WriteError>>,
    },
}

/// A cloneable handle handlers use to reach the writer.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Job>,
}

impl WriterHandle {
    /// Applies one command; returns once its batch is durable.
    pub async fn submit(&self, command: Command) -> Result<Outcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Command { command, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Replaces the catalog between two batches, so every command sees exactly one catalog.
    pub async fn replace_catalog(
        &self,
        catalog: Catalog,
        source_toml: String,
    ) -> Result<u64, WriteError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::ReplaceCatalog {
            catalog,
            source_toml,
            reply,
        };
        self.jobs.send(job).await.map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

/// A batch written and waiting to be durable, with the requests it answers.
struct WrittenBatch {
    result: BatchResult,
    ticket: CommitTicket,
    replies: Vec<Reply>,
    started: Instant,
}

/// Starts the writer thread (and its completer). It stops after every handle is dropped, the
/// queue is drained and every batch is answered.
pub fn start(
    store: Arc<dyn Store>,
    catalog: SharedCatalog,
    events: Arc<Events>,
    metrics: Arc<crate::metrics::Metrics>,
) -> (WriterHandle, JoinHandle<()>) {
    let (jobs, queue) = mpsc::channel(WRITER_QUEUE_LEN);
    let thread = std::thread::Builder::new()
        .name("coffer-writer".to_owned())
        .spawn(move || {
            let (written, to_complete) = std_mpsc::sync_channel(BATCHES_AHEAD_MAX);
            let completer = Completer {
                store: Arc::clone(&store),
                events,
                metrics: Arc::clone(&metrics),
            };
            let completer = std::thread::Builder::new()
                .name("coffer-completer".to_owned())
                .spawn(move || completer.run(to_complete))
                .expect("spawning the completer thread");
            Writer {
                store,
                catalog,
                metrics,
                written,
                last_now_unix_ms: 0,
            }
            .run(queue);
            if completer.join().is_err() {
                tracing::error!("the completer thread panicked");
            }
        })
        .expect("spawning the writer thread");
    (WriterHandle { jobs }, thread)
}

struct Writer {
    store: Arc<dyn Store>,
    catalog: SharedCatalog,
    metrics: Arc<crate::metrics::Metrics>,
    written: std_mpsc::SyncSender<WrittenBatch>,
    last_now_unix_ms: i64,
}

impl Writer {
    /// Ends when the queue is drained; dropping `self` then tells the completer to finish.
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut commands = Vec::with_capacity(BATCH_LEN_MAX);
        let mut replies = Vec::with_capacity(BATCH_LEN_MAX);
        while let Some(first) = queue.blocking_recv() {
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Command { command, reply } => {
                        commands.push(command);
                        replies.push(reply);
                    }
                    Job::ReplaceCatalog {
                        catalog,
                        source_toml,
                        reply,
                    } => {
                        self.commit_commands(&mut commands, &mut replies);
                        let _ = reply.send(self.replace_catalog(catalog, source_toml));
                    }
                }
                if commands.len() < BATCH_LEN_MAX {
                    next = queue.try_recv().ok();
                }
            }
            self.commit_commands(&mut commands, &mut replies);
        }
        tracing::info!("writer stopped: queue drained");
    }

    /// Wall-clock time, never earlier than the previous batch's, so transaction times only grow.
    fn now_unix_ms(&mut self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.last_now_unix_ms = self.last_now_unix_ms.max(now);
        self.last_now_unix_ms
    }

    fn commit_commands(&mut self, commands: &mut Vec<Command>, replies: &mut Vec<Reply>) {
        if commands.is_empty() {
            return;
        }
        debug_assert_eq!(commands.len(), replies.len());
        let catalog = Arc::clone(&self.catalog.read().expect("catalog lock poisoned").catalog);
        let now = self.now_unix_ms();
        let started = Instant::now();
        match self.store.write_batch(commands, &catalog, now) {
            Ok((result, ticket)) => {
                let batch = WrittenBatch {
                    result,
                    ticket,
                    replies: std::mem::take(replies),
                    started,
                };
                if let Err(unsent) = self.written.send(batch) {
                    // Only if the completer panicked: nothing of this batch is acknowledged.
                    for reply in unsent.0.replies {
                        let _ = reply.send(Err(WriteError::Stopped));
                    }
                }
            }
            Err(error) => {
                self.metrics
                    .record_commit(commands.len(), started.elapsed(), false);
                tracing::error!(%error, batch_len = commands.len(), "batch write failed; nothing committed");
                answer_failed(replies.drain(..), &error);
            }
        }
        commands.clear();
    }

    fn replace_catalog(&mut self, next: Catalog, source_toml: String) -> Result<u64, WriteError> {
        let current = Arc::clone(&self.catalog.read().expect("catalog lock poisoned").catalog);
        current.check_replacement(&next)?;
        let version = next.version;
        self.store.save_catalog(&StoredCatalog {
            version,
            source_toml: source_toml.clone(),
        })?;
        *self.catalog.write().expect("catalog lock poisoned") = CatalogInForce {
            catalog: Arc::new(next),
            source_toml: source_toml.into(),
        };
        tracing::info!(version, "catalog replaced");
        Ok(version)
    }
}

/// Waits for each written batch to be durable, then publishes its events and answers it.
struct Completer {
    store: Arc<dyn Store>,
    events: Arc<Events>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Completer {
    fn run(self, written: std_mpsc::Receiver<WrittenBatch>) {
        for batch in written {
            self.complete(batch);
        }
    }

    fn complete(&self, batch: WrittenBatch) {
        let WrittenBatch {
            result,
            ticket,
            replies,
            started,
        } = batch;
        let durable = self.store.wait_durable(ticket);
        self.metrics
            .record_commit(replies.len(), started.elapsed(), durable.is_ok());
        match durable {
            Ok(()) => {
                tracing::debug!(
                    batch_len = replies.len(),
                    transactions = result.changes.transactions.len(),
                    commit_us = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                for transaction in result.changes.transactions {
                    self.events.publish(&transaction);
                }
                for (reply, outcome) in replies.into_iter().zip(result.outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(%error, batch_len = replies.len(), "batch commit could not be confirmed");
                answer_failed(replies, &error);
            }
        }
    }
}

/// Answers every request of a batch whose commit failed or could not be confirmed.
fn answer_failed(replies: impl IntoIterator<Item = Reply>, error: &StoreError) {
    for reply in replies {
        let _ = reply.send(Err(WriteError::CommitFailed(error.to_string())));
    }
}
