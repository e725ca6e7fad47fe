//! The single writer. Handlers send commands here; one thread takes everything queued (up to
//! `BATCH_LEN_MAX`), runs it through the core and commits it in one durable write (group commit),
//! then publishes events and answers every request. Nothing is acknowledged before its commit.

use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use coffer_core::{Catalog, Command, Outcome, limits::BATCH_LEN_MAX};
use coffer_store::{Store, StoreError, StoredCatalog};
use tokio::sync::{mpsc, oneshot};

use crate::events::Events;

/// Requests waiting for the writer before handlers wait for room (back-pressure).
pub const WRITER_QUEUE_LEN: usize = 8_192;

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

/// Starts the writer thread. It stops after every handle is dropped and the queue is drained.
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
            Writer {
                store,
                catalog,
                events,
                metrics,
                last_now_unix_ms: 0,
            }
            .run(queue)
        })
        .expect("spawning the writer thread");
    (WriterHandle { jobs }, thread)
}

struct Writer {
    store: Arc<dyn Store>,
    catalog: SharedCatalog,
    events: Arc<Events>,
    metrics: Arc<crate::metrics::Metrics>,
    last_now_unix_ms: i64,
}

impl Writer {
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

    fn commit_commands(
        &mut self,
        commands: &mut Vec<Command>,
        replies: &mut Vec<oneshot::Sender<Result<Outcome, WriteError>>>,
    ) {
        if commands.is_empty() {
            return;
        }
        debug_assert_eq!(commands.len(), replies.len());
        let catalog = Arc::clone(&self.catalog.read().expect("catalog lock poisoned").catalog);
        let now = self.now_unix_ms();
        let started = std::time::Instant::now();
        let committed = self.store.commit_batch(commands, &catalog, now);
        let elapsed = started.elapsed();
        self.metrics
            .record_commit(commands.len(), elapsed, committed.is_ok());
        match committed {
            Ok(result) => {
                tracing::debug!(
                    batch_len = commands.len(),
                    transactions = result.changes.transactions.len(),
                    commit_us = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                for transaction in result.changes.transactions {
                    self.events.publish(&Arc::new(transaction));
                }
                for (reply, outcome) in replies.drain(..).zip(result.outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(%error, batch_len = commands.len(), "batch commit failed; nothing committed");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(WriteError::CommitFailed(error.to_string())));
                }
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
