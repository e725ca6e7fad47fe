//! `AdminService/ExportLedger`: an online backup. The store's export runs on a blocking thread
//! over one read snapshot (a redb read transaction, a PostgreSQL repeatable-read transaction)
//! while the writer keeps committing. Its bytes cross a small bounded channel in fixed-size
//! chunks, so a slow client slows the export down instead of making the server buffer the
//! ledger, and a client that goes away ends the export (and its snapshot) at the next chunk.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use coffer_proto::v1 as pb;
use futures::Stream;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::Status;

use crate::app::App;
use crate::error::ApiError;

/// Largest piece of the export one stream message carries, in bytes.
pub const EXPORT_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Chunks queued between the export thread and the connection: what a slow client may leave
/// unread in the server's memory, per export.
pub const EXPORT_CHUNKS_BUFFERED: usize = 4;
/// Exports that may run at once; each holds a blocking thread, a snapshot and, on PostgreSQL, a
/// connection for as long as its client takes to read it.
pub const EXPORTS_IN_FLIGHT_MAX: usize = 2;

/// The stream an `ExportLedger` call answers with.
pub type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportLedgerResponse, Status>> + Send>>;

type Message = Result<pb::ExportLedgerResponse, Status>;

/// Why the export thread stopped sending before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupted {
    /// The client closed the stream or lost its connection.
    ClientGone,
    /// The server is shutting down.
    ServerStopping,
}

/// The `Write` end of an export: fills fixed-size chunks and hands each to the connection,
/// waiting while the channel is full (back-pressure), until the client goes away or the server
/// stops.
struct ChunkSender {
    runtime: tokio::runtime::Handle,
    sender: mpsc::Sender<Message>,
    stopping: watch::Receiver<bool>,
    buffer: Vec<u8>,
    interrupted: Option<Interrupted>,
}

impl ChunkSender {
    /// Sends one message, blocking this (non-async) thread while the channel is full.
    fn send(&mut self, message: Message) -> Result<(), Interrupted> {
        if let Some(interrupted) = self.interrupted {
            return Err(interrupted);
        }
        let (sender, stopping) = (&self.sender, &mut self.stopping);
        let sent = self.runtime.block_on(async {
            tokio::select! {
                sent = sender.send(message) => sent.map_err(|_| Interrupted::ClientGone),
                _ = stopping.wait_for(|stopping| *stopping) => Err(Interrupted::ServerStopping),
            }
        });
        if let Err(interrupted) = sent {
            self.interrupted = Some(interrupted);
        }
        sent
    }

    fn send_chunk(&mut self, len: usize) -> std::io::Result<()> {
        let rest = self.buffer.split_off(len);
        let data = std::mem::replace(&mut self.buffer, rest);
        let chunk = pb::ExportLedgerResponse {
            data,
            summary: None,
        };
        self.send(Ok(chunk)).map_err(|interrupted| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                format!("export interrupted: {interrupted:?}"),
            )
        })
    }
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        while self.buffer.len() >= EXPORT_CHUNK_BYTES_MAX {
            self.send_chunk(EXPORT_CHUNK_BYTES_MAX)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.send_chunk(self.buffer.len())
    }
}

/// Starts an export for one `ExportLedger` call and returns its stream, or refuses when
/// [`EXPORTS_IN_FLIGHT_MAX`] exports are already running.
pub fn start(app: &App) -> Result<ExportStream, ApiError> {
    let permit = Arc::clone(&app.exports).try_acquire_owned().map_err(|_| {
        ApiError::ResourceExhausted(format!(
            "at most {EXPORTS_IN_FLIGHT_MAX} ledger exports run at once; retry when one has finished"
        ))
    })?;
    let (sender, receiver) = mpsc::channel(EXPORT_CHUNKS_BUFFERED);
    let store = Arc::clone(&app.store);
    let mut out = ChunkSender {
        runtime: tokio::runtime::Handle::current(),
        sender,
        stopping: app.stopping.clone(),
        buffer: Vec::with_capacity(EXPORT_CHUNK_BYTES_MAX * 2),
        interrupted: None,
    };
    tokio::task::spawn_blocking(move || {
        // Held until the snapshot is released: shutdown waits for every permit before it
        // closes the database.
        let _permit = permit;
        // Moved in after the permit so it is dropped before it (locals drop in reverse): once
        // the permit is back, this export holds nothing of the store. As a captured value it
        // outlived the permit, and shutdown could return with the database still open.
        let store = store;
        let started = std::time::Instant::now();
        let result = coffer_store::write_export(store.as_ref(), &mut out);
        let last = match (result, out.interrupted) {
            (_, Some(Interrupted::ClientGone)) => {
                tracing::info!("ledger export stopped: the client went away");
                return;
            }
            (_, Some(Interrupted::ServerStopping)) => {
                tracing::info!("ledger export stopped: the server is shutting down");
                return;
            }
            (Ok(summary), None) => {
                tracing::info!(
                    transactions = summary.transactions,
                    bytes = summary.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "ledger export sent"
                );
                Ok(pb::ExportLedgerResponse {
                    data: Vec::new(),
                    summary: Some(pb::ExportLedgerSummary {
                        records: summary.records,
                        transactions: summary.transactions,
                        last_transaction_id: summary.last_transaction_id,
                        bytes: summary.bytes,
                    }),
                })
            }
            (Err(error), None) => Err(Status::from(ApiError::from(error))),
        };
        let _ = out.send(last);
    });
    Ok(following_shutdown(receiver, app.stopping.clone()))
}

/// The receiving end as a response stream. It ends after the summary or an error; when the
/// server shuts down it ends with UNAVAILABLE, so a half-sent export never looks complete and
/// shutdown need not wait for the whole ledger.
fn following_shutdown(
    receiver: mpsc::Receiver<Message>,
    stopping: watch::Receiver<bool>,
) -> ExportStream {
    let shutting_down = || {
        Err(Status::from(ApiError::Unavailable(
            "the server is shutting down; take the backup again".to_owned(),
        )))
    };
    Box::pin(futures::stream::unfold(
        Some((receiver, stopping)),
        move |state| async move {
            let (mut receiver, mut stopping) = state?;
            let message = tokio::select! {
                biased;
                message = receiver.recv() => match message {
                    Some(message) => message,
                    // The export thread gave up without a last word: it saw the shutdown.
                    None => shutting_down(),
                },
                _ = stopping.wait_for(|stopping| *stopping) => shutting_down(),
            };
            let last = !matches!(&message, Ok(chunk) if chunk.summary.is_none());
            Some((message, (!last).then_some((receiver, stopping))))
        },
    ))
}

/// Waits until no export holds a snapshot of the store (for shutdown, before closing it).
pub async fn wait_for_exports(exports: &Semaphore) {
    let _all = exports
        .acquire_many(EXPORTS_IN_FLIGHT_MAX as u32)
        .await
        .expect("the export semaphore is never closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_sender(
        capacity: usize,
    ) -> (ChunkSender, mpsc::Receiver<Message>, watch::Sender<bool>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let (stop, stopping) = watch::channel(false);
        let out = ChunkSender {
            runtime: tokio::runtime::Handle::current(),
            sender,
            stopping,
            buffer: Vec::new(),
            interrupted: None,
        };
        (out, receiver, stop)
    }

    /// Bytes 0, 1, 2, … wrapping, so a lost, repeated or reordered byte shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_does_not_read_stops_the_writer_at_the_queue_bound() {
        let (mut out, mut receiver, _stop) = chunk_sender(EXPORT_CHUNKS_BUFFERED);
        let total = EXPORT_CHUNK_BYTES_MAX * 20 + 123;
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let progress = Arc::clone(&written);
        let writer = tokio::task::spawn_blocking(move || {
            for piece in pattern(total).chunks(1000) {
                out.write_all(piece)?;
                progress.fetch_add(piece.len(), std::sync::atomic::Ordering::SeqCst);
            }
            out.flush()
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // Blocked: the queue is full and one more chunk waits to be sent; nothing else was
        // produced, however long the reader waits.
        let held = written.load(std::sync::atomic::Ordering::SeqCst);
        assert!(!writer.is_finished());
        assert!(
            held <= EXPORT_CHUNK_BYTES_MAX * (EXPORT_CHUNKS_BUFFERED + 2),
            "{held} bytes produced while nothing was read"
        );
        let mut received = Vec::new();
        while let Some(message) = receiver.recv().await {
            let data = message.unwrap().data;
            assert!(!data.is_empty() && data.len() <= EXPORT_CHUNK_BYTES_MAX);
            received.extend_from_slice(&data);
        }
        writer.await.unwrap().unwrap();
        assert_eq!(received, pattern(total));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_leaves_ends_the_writer() {
        let (mut out, mut receiver, _stop) = chunk_sender(1);
        let writer = tokio::task::spawn_blocking(move || {
            let result = out.write_all(&pattern(EXPORT_CHUNK_BYTES_MAX * 10));
            (result, out.interrupted)
        });
        assert!(receiver.recv().await.is_some());
        drop(receiver);
        let (result, interrupted) = writer.await.unwrap();
        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
        assert_eq!(interrupted, Some(Interrupted::ClientGone));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_ends_a_writer_waiting_on_a_full_queue() {
        let (mut out, _receiver, stop) = chunk_sender(1);
        let writer = tokio::task::spawn_blocking(move || {
            let result = out.write_all(&pattern(EXPORT_CHUNK_BYTES_MAX * 10));
            (result, out.interrupted)
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!writer.is_finished());
        stop.send(true).unwrap();
        let (result, interrupted) = writer.await.unwrap();
        assert!(result.is_err());
        assert_eq!(interrupted, Some(Interrupted::ServerStopping));
    }
}
