//! The reference durable write: a minimal gRPC server whose only call appends one row durably
//! before it answers, with group commit, and nothing else — no authentication, no ledger, no
//! metrics. It answers the gRPC health `Check` call, so the generator drives it with the very
//! request and response the no-op phase sends; the two differ by the durable append alone.
//!
//! This is what the machine allows for any service that acknowledges a write only once it is on
//! disk, measured in the same run and through the same client harness as Coffer's purchase. Two
//! stores: one redb write transaction per batch (a row per request, sequential keys), and one
//! `write` + `fdatasync` per batch into a zero-filled file (Coffer's journal does that much).

use std::os::unix::fs::FileExt;
use std::path::Path;

use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};

/// Bytes of one appended row, about what one purchase adds to Coffer's journal.
pub const APPEND_ROW_BYTES: usize = 128;
/// Most requests one commit takes, as Coffer's writer (`coffer_core::limits::BATCH_LEN_MAX`).
pub const APPEND_BATCH_LEN_MAX: usize = 1_024;
/// Requests queued for the writer before handlers wait (Coffer's `WRITER_QUEUE_LEN`).
const APPEND_QUEUE_LEN: usize = coffer_server::WRITER_QUEUE_LEN;
/// The file store's zero-filled file; appends wrap around to its start. Writing over blocks
/// already on disk needs no metadata update per `fdatasync`, as Coffer's journal segments.
const APPEND_FILE_BYTES: u64 = 64 << 20;

/// What a row holds after its 8-byte number; never zero, so the file's zeros are no row.
const ROW_FILL: u8 = 0x5a;

const ROWS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("rows");

/// Where the reference server appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendStore {
    /// A redb database: one write transaction per batch, committed durably.
    Redb,
    /// A zero-filled file: one `write` of the batch's rows, then one `fdatasync`.
    File,
}

impl AppendStore {
    /// The phase's name in the report.
    pub fn phase_name(self) -> &'static str {
        match self {
            AppendStore::Redb => "reference: redb row append",
            AppendStore::File => "reference: file append + fdatasync",
        }
    }
}

/// Why the reference server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("reference server storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("reference server redb: {0}")]
    Redb(String),
}

fn redb_error(error: impl std::fmt::Display) -> AppendError {
    AppendError::Redb(error.to_string())
}

/// One store's open state, owned by the writer thread.
enum Appender {
    Redb(redb::Database),
    File { file: std::fs::File, offset: u64 },
}

impl Appender {
    fn open(store: AppendStore, dir: &Path) -> Result<Appender, AppendError> {
        match store {
            AppendStore::Redb => {
                let db = redb::Database::create(dir.join("reference.redb")).map_err(redb_error)?;
                let txn = db.begin_write().map_err(redb_error)?;
                txn.open_table(ROWS).map_err(redb_error)?;
                txn.commit().map_err(redb_error)?;
                Ok(Appender::Redb(db))
            }
            AppendStore::File => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(dir.join("reference.append"))?;
                let zeros = vec![0u8; 1 << 20];
                let mut filled = 0;
                while filled < APPEND_FILE_BYTES {
                    file.write_all_at(&zeros, filled)?;
                    filled += zeros.len() as u64;
                }
                file.sync_all()?;
                Ok(Appender::File { file, offset: 0 })
            }
        }
    }

    /// Appends rows `first_row..first_row + count` and returns once they are durable.
    fn append(&mut self, first_row: u64, count: usize, buffer: &mut Vec<u8>) -> Result<(), String> {
        buffer.clear();
        for row in first_row..first_row + count as u64 {
            let start = buffer.len();
            buffer.resize(start + APPEND_ROW_BYTES, ROW_FILL);
            buffer[start..start + 8].copy_from_slice(&row.to_le_bytes());
        }
        match self {
            Appender::Redb(db) => {
                let txn = db.begin_write().map_err(|e| e.to_string())?;
                {
                    let mut rows = txn.open_table(ROWS).map_err(|e| e.to_string())?;
                    for (i, row) in buffer.chunks_exact(APPEND_ROW_BYTES).enumerate() {
                        rows.insert(first_row + i as u64, row)
                            .map_err(|e| e.to_string())?;
                    }
                }
                txn.commit().map_err(|e| e.to_string())
            }
            Appender::File { file, offset } => {
                if *offset + buffer.len() as u64 > APPEND_FILE_BYTES {
                    *offset = 0;
                }
                file.write_all_at(buffer, *offset)
                    .map_err(|e| e.to_string())?;
                file.sync_data().map_err(|e| e.to_string())?;
                *offset += buffer.len() as u64;
                Ok(())
            }
        }
    }

    /// Rows in the store, read back from it: the table's length for redb; for the file (which
    /// wraps around), one more than the highest row number found in it, as every row starts
    /// with its number and zeros are no row.
    fn rows(&self) -> Result<u64, String> {
        match self {
            Appender::Redb(db) => {
                use redb::{ReadableDatabase, ReadableTableMetadata};
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                let rows = txn.open_table(ROWS).map_err(|e| e.to_string())?;
                rows.len().map_err(|e| e.to_string())
            }
            Appender::File { file, .. } => {
                let mut piece = vec![0u8; 1 << 20];
                let mut rows = 0;
                for start in (0..APPEND_FILE_BYTES).step_by(piece.len()) {
                    file.read_exact_at(&mut piece, start)
                        .map_err(|e| e.to_string())?;
                    for row in piece.chunks_exact(APPEND_ROW_BYTES) {
                        if row[8] == ROW_FILL {
                            let number = u64::from_le_bytes(row[..8].try_into().expect("8 bytes"));
                            rows = rows.max(number + 1);
                        }
                    }
                }
                Ok(rows)
            }
        }
    }
}

enum Job {
    Append(oneshot::Sender<Result<(), String>>),
    CountRows(oneshot::Sender<Result<u64, String>>),
}

/// The health service whose `Check` appends a row first.
struct AppendingHealth {
    jobs: mpsc::Sender<Job>,
}

#[tonic::async_trait]
impl Health for AppendingHealth {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Append(reply))
            .await
            .map_err(|_| Status::unavailable("the reference writer has stopped"))?;
        match answer.await {
            Ok(Ok(())) => Ok(Response::new(HealthCheckResponse {
                status: health_check_response::ServingStatus::Serving as i32,
            })),
            Ok(Err(error)) => Err(Status::internal(format!("append failed: {error}"))),
            Err(_) => Err(Status::unavailable("the reference writer has stopped")),
        }
    }

    type WatchStream = std::pin::Pin<
        Box<
            dyn tonic::codegen::tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>>
                + Send,
        >,
    >;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "the reference server answers Check only",
        ))
    }
}

/// The writer: takes everything queued (up to [`APPEND_BATCH_LEN_MAX`]), appends it in one
/// durable commit, answers, and starts over — the simplest group commit, with no overlap of
/// one batch's sync and the next one's preparation.
fn write_rows(mut appender: Appender, mut queue: mpsc::Receiver<Job>) {
    // Rows made durable so far; also the key of the next one.
    let mut synced = 0u64;
    let mut replies = Vec::with_capacity(APPEND_BATCH_LEN_MAX);
    let mut buffer = Vec::with_capacity(APPEND_BATCH_LEN_MAX * APPEND_ROW_BYTES);
    let mut next = queue.blocking_recv();
    while let Some(job) = next.take() {
        match job {
            Job::Append(reply) => replies.push(reply),
            Job::CountRows(reply) => {
                let _ = reply.send(appender.rows());
            }
        }
        next = if replies.len() < APPEND_BATCH_LEN_MAX {
            queue.try_recv().ok()
        } else {
            None
        };
        if next.is_none() && !replies.is_empty() {
            let result = appender.append(synced, replies.len(), &mut buffer);
            if result.is_ok() {
                synced += replies.len() as u64;
            }
            for reply in replies.drain(..) {
                let _ = reply.send(result.clone());
            }
        }
        if next.is_none() {
            next = queue.blocking_recv();
        }
    }
}

/// A running reference server on a runtime of its own (as the embedded Coffer server has).
pub struct ReferenceServer {
    pub endpoint: String,
    jobs: mpsc::Sender<Job>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ReferenceServer {
    /// Opens the store in `dir` and serves on a free loopback port.
    pub fn start(store: AppendStore, dir: &Path) -> Result<ReferenceServer, AppendError> {
        let appender = Appender::open(store, dir)?;
        let (jobs, queue) = mpsc::channel(APPEND_QUEUE_LEN);
        std::thread::Builder::new()
            .name("reference-writer".to_owned())
            .spawn(move || write_rows(appender, queue))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("reference-rt")
            .build()?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let service = HealthServer::new(AppendingHealth { jobs: jobs.clone() });
        // A failed server fails every request, which the phase reports.
        let _serving = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            // As Coffer's server: without TCP_NODELAY a response's trailers wait for the
            // client's delayed ACK.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
        Ok(ReferenceServer {
            endpoint: format!("http://{addr}"),
            jobs,
            runtime: Some(runtime),
        })
    }

    /// Rows the store holds durably now.
    pub async fn rows(&self) -> Result<u64, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::CountRows(reply))
            .await
            .map_err(|_| "the reference writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the reference writer has stopped".to_owned())?
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        // A runtime cannot be dropped from async code; its threads end in the background.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
