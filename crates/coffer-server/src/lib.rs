//! The Coffer server: it serves. Handlers check requests and turn them into commands; one writer
//! batches commands from every handler through the core and commits each batch once; answers
//! and stream events go out only after the commit. Health and reflection are served beside the
//! `coffer.v1` services so `grpcurl` can list, describe and call everything.
//!
//! [`start`] runs a server on a bound socket (the `coffer` binary and the tests both use it).

#![forbid(unsafe_code)]

mod admin;
mod app;
pub mod auth;
pub mod convert;
pub mod error;
mod events;
mod ledger_export;
pub mod metrics;
pub mod receipts;
pub mod requests;
pub mod settings;
pub mod startup_check;
mod wallet;
mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use coffer_core::{Catalog, CatalogError};
use coffer_proto::v1::{
    admin_service_server::AdminServiceServer, wallet_service_server::WalletServiceServer,
};
use coffer_store::{PostgresStore, RedbStore, Store, StoreError, StoredCatalog};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Turns transparent huge pages off for this process (the `coffer` binary and the load
/// generator call it first thing). With them, the first touch of fresh heap memory makes the
/// kernel zero 2 MiB at once: a map growing on the writer thread stopped it for 20–26 ms
/// (perf: `clear_page_erms` under a huge-page fault inside a map insert), and every request in
/// flight waited, the half-peak latency tail. With 4 KiB pages the same zeroing is spread over
/// many small faults. Per process, so it leaves the machine's setting alone.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "could not turn transparent huge pages off; expect latency spikes while memory grows");
    }
}

pub use auth::rate::Limits;
pub use auth::{Caller, Role};
pub use events::SUBSCRIBER_BUFFER_LEN;
pub use ledger_export::{EXPORT_CHUNK_BYTES_MAX, EXPORT_CHUNKS_BUFFERED, EXPORTS_IN_FLIGHT_MAX};
pub use receipts::{ReceiptSettings, SandboxStore};
pub use settings::{Security, TlsFiles};
pub use wallet::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
pub use writer::WRITER_QUEUE_LEN;

use app::App;
use writer::CatalogInForce;

/// The demo catalog shipped in `assets/catalog.toml`, built in so the server starts anywhere.
pub const DEMO_CATALOG_TOML: &str = include_str!("../../../assets/catalog.toml");

/// Largest wallet request the server decodes, in bytes.
pub const WALLET_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Largest admin request the server decodes, in bytes (a catalog replacement is the largest).
pub const ADMIN_REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// Directory of the redb database (and of development credentials), created if missing.
    pub data_dir: PathBuf,
    /// Store the ledger in this PostgreSQL database instead of redb, e.g.
    /// `postgres://postgres@127.0.0.1:5432/coffer`. Several nodes may share it.
    pub postgres_url: Option<String>,
    /// Catalog TOML to load; `None` loads the built-in demo catalog.
    pub catalog_path: Option<PathBuf>,
    /// How callers are authenticated.
    pub security: Security,
    /// Rate limits and stream caps.
    pub limits: Limits,
    /// Serve TLS with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Which real-money stores receipts are accepted from, and the refund policy.
    pub receipts: ReceiptSettings,
    /// How long the start may wait for the ledger check (0 turns it off); past it the server
    /// serves and the check finishes in the background.
    pub startup_check_time_limit_ms: u64,
    /// How the embedded redb store commits (and, in reliability tests only, a fault switch in
    /// front of its file).
    pub redb: coffer_store::RedbOptions,
    /// Serve Prometheus metrics at `GET /metrics` on this address (port 0 picks a free port).
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// A development server: generated credentials, the demo catalog, default limits, no TLS.
    pub fn development(listen_addr: SocketAddr, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen_addr,
            data_dir: data_dir.into(),
            postgres_url: None,
            catalog_path: None,
            security: Security::Development,
            limits: Limits::default(),
            tls: None,
            receipts: ReceiptSettings {
                sandbox: SandboxStore::GeneratedInDataDir,
                ..ReceiptSettings::default()
            },
            startup_check_time_limit_ms: startup_check::STARTUP_CHECK_TIME_LIMIT_MS_DEFAULT,
            redb: coffer_store::RedbOptions::default(),
            metrics_addr: None,
        }
    }
}

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The catalog file could not be read.
    #[error("cannot read catalog {path}: {source}")]
    CatalogFile {
        path: String,
        source: std::io::Error,
    },
    /// The catalog is invalid, or cannot replace the one stored in the database.
    #[error("catalog {origin}: {source}")]
    Catalog {
        origin: String,
        source: CatalogError,
    },
    /// The database could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The security configuration is incomplete or unreadable.
    #[error("security: {0}")]
    Security(String),
    /// The TLS certificate or key could not be read.
    #[error("tls: {0}")]
    Tls(String),
    /// The receipt verification settings are unusable (bad certificate, key or file).
    #[error("{0}")]
    Receipts(String),
    /// Building the reflection service failed.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The startup check found a stored ledger that breaks an invariant.
    #[error(
        "the stored ledger breaks {count} invariant(s), so the server will not serve it: {first}. \
         Run `coffer verify` for the full report; restore from a backup or investigate before starting"
    )]
    LedgerViolations { count: u64, first: String },
    /// The startup check's thread died without an answer.
    #[error("the startup integrity check crashed; the server log has the details")]
    StartupCheckCrashed,
}

/// A server running in the background of the current tokio runtime.
pub struct RunningServer {
    /// The address it listens on (with the real port when port 0 was asked for).
    pub local_addr: SocketAddr,
    /// In development mode, the generated admin key (send as `authorization: Bearer <key>`).
    pub development_admin_key: Option<String>,
    /// Where `GET /metrics` is served (with the real port when port 0 was asked for).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: oneshot::Sender<()>,
    serve: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests and the writer's queue finish, then closes the
    /// database. Returns once the database file is closed.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(());
        self.serve.await.expect("server task panicked")
    }

    /// Waits until the server stops on its own (it does not, unless the transport fails).
    pub async fn wait(self) -> Result<(), ServerError> {
        self.serve.await.expect("server task panicked")
    }
}

/// Chooses the catalog: the configured file (or the demo catalog), unless the database holds a
/// catalog of the same or a higher version, replaced at run time, which then stays in force.
fn choose_catalog(config: &Config, store: &dyn Store) -> Result<CatalogInForce, ServerError> {
    let (origin, source) = match &config.catalog_path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| ServerError::CatalogFile {
                    path: path.display().to_string(),
                    source,
                })?;
            (path.display().to_string(), text)
        }
        None => (
            "built-in demo catalog".to_owned(),
            DEMO_CATALOG_TOML.to_owned(),
        ),
    };
    let from_file = Catalog::from_toml(&source).map_err(|source| ServerError::Catalog {
        origin: origin.clone(),
        source,
    })?;
    if let Some(stored) = store.stored_catalog()? {
        let in_db =
            Catalog::from_toml(&stored.source_toml).map_err(|source| ServerError::Catalog {
                origin: "stored in the database".to_owned(),
                source,
            })?;
        if in_db.version >= from_file.version {
            if in_db.version > from_file.version {
                tracing::warn!(
                    file_version = from_file.version,
                    stored_version = in_db.version,
                    "the database holds a newer catalog than {origin}; keeping it"
                );
            }
            return Ok(CatalogInForce {
                catalog: Arc::new(in_db),
                source_toml: stored.source_toml.into(),
            });
        }
        in_db
            .check_replacement(&from_file)
            .map_err(|source| ServerError::Catalog {
                origin: origin.clone(),
                source,
            })?;
    }
    store.save_catalog(&StoredCatalog {
        version: from_file.version,
        source_toml: source.clone(),
    })?;
    tracing::info!(version = from_file.version, %origin, "catalog loaded");
    Ok(CatalogInForce {
        catalog: Arc::new(from_file),
        source_toml: source.into(),
    })
}

/// Opens the database, loads the catalog, binds the address and serves until
/// [`RunningServer::shutdown`].
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    // Storage calls block (redb, and the synchronous PostgreSQL client): keep them off the
    // async workers.
    let store_config = config.clone();
    let (store, catalog) = tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
        let store: Arc<dyn Store> = match &store_config.postgres_url {
            Some(url) => {
                let store = PostgresStore::open(url)?;
                tracing::info!("PostgreSQL storage open");
                Arc::new(store)
            }
            None => {
                let store =
                    RedbStore::open_with(&store_config.data_dir, store_config.redb.clone())?;
                tracing::info!(path = %store.path().display(), "database open");
                Arc::new(store)
            }
        };
        let catalog = choose_catalog(&store_config, store.as_ref())?;
        startup_check::run(
            &store,
            &catalog.catalog,
            store_config.startup_check_time_limit_ms,
        )?;
        Ok((store, catalog))
    })
    .await
    .expect("opening storage panicked")?;
    let catalog = Arc::new(RwLock::new(catalog));
    let receipts = Arc::new(
        receipts::Receipts::new(&config.receipts, &config.data_dir)
            .map_err(ServerError::Receipts)?,
    );

    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen_addr,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen_addr,
        source,
    })?;

    let (api_keys, token_secret, development_admin_key) = match &config.security {
        Security::Development => {
            let (key, entry, secret) = settings::development_credentials(&config.data_dir)
                .map_err(ServerError::Security)?;
            tracing::warn!(
                "development mode: generated credentials are in {}",
                config
                    .data_dir
                    .join(settings::DEVELOPMENT_CREDENTIALS_FILE)
                    .display()
            );
            (vec![entry], secret, Some(key))
        }
        Security::Production {
            api_keys,
            token_secret,
        } => {
            settings::check_production(api_keys, token_secret).map_err(ServerError::Security)?;
            (api_keys.clone(), token_secret.clone(), None)
        }
    };
    let gatekeeper = Arc::new(auth::layer::Gatekeeper {
        keys: auth::keys::KeyRing::new(api_keys).map_err(ServerError::Security)?,
        tokens: auth::tokens::TokenSigner::new(&token_secret),
        rate: auth::rate::RateLimits::new(&config.limits),
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| ServerError::Tls(format!("{}: {e}", path.display())))
        };
        let identity =
            tonic::transport::Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    }

    let events = Arc::new(events::Events::default());
    let (stop_streams, stopping) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(metrics::Metrics::new());
    metrics.watch_store(&store);
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(
            metrics::bind(addr)
                .await
                .map_err(|source| ServerError::MetricsBind { addr, source })?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
    let relay_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(commits) = store.commits_elsewhere() {
        let (store, events, stop) = (
            Arc::clone(&store),
            Arc::clone(&events),
            Arc::clone(&relay_stop),
        );
        std::thread::Builder::new()
            .name("coffer-commit-relay".to_owned())
            .spawn(move || events::relay_commits(store.as_ref(), &events, &commits, &stop))
            .expect("spawning the commit relay");
    }
    let (writer, writer_thread) = writer::start(
        Arc::clone(&store),
        Arc::clone(&catalog),
        Arc::clone(&events),
        Arc::clone(&metrics),
    );
    let exports = Arc::new(tokio::sync::Semaphore::new(EXPORTS_IN_FLIGHT_MAX));
    let app = Arc::new(App {
        store,
        writer,
        catalog,
        events,
        gatekeeper: Arc::clone(&gatekeeper),
        limits: config.limits.clone(),
        receipts,
        streams: Arc::new(auth::rate::StreamCounter::new(metrics.subscribers())),
        stopping,
        exports: Arc::clone(&exports),
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<WalletServiceServer<wallet::WalletApi>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<admin::AdminApi>>()
        .await;
    // Both reflection versions: grpcurl 1.8 speaks only v1alpha. The google.rpc descriptors let
    // tools decode the ErrorInfo and BadRequest details of our errors.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(coffer_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let wallet = WalletServiceServer::new(wallet::WalletApi::new(Arc::clone(&app)))
        .max_decoding_message_size(WALLET_REQUEST_BYTES_MAX);
    let admin = AdminServiceServer::new(admin::AdminApi::new(Arc::clone(&app)))
        .max_decoding_message_size(ADMIN_REQUEST_BYTES_MAX);
    drop(app);

    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    let metrics_task = metrics_listener.map(|(listener, addr)| {
        tracing::info!(%addr, "metrics served at /metrics");
        tokio::spawn(metrics::serve(
            listener,
            Arc::clone(&metrics),
            stop_streams.subscribe(),
        ))
    });
    // The metrics layer goes first, outermost, so it also counts what authentication refuses.
    let router = builder
        .layer(metrics::MetricsLayer::new(metrics))
        .layer(auth::layer::AuthLayer::new(gatekeeper))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(wallet)
        .add_service(admin);
    tracing::info!(%local_addr, "coffer listening");
    // Without TCP_NODELAY a response's trailers wait for the client's delayed ACK (~40 ms on
    // Linux): that was a p99.9 of 44 ms on every call, the no-op one included.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = tokio::spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = shutdown_signal.await;
                tracing::info!("shutting down: no new connections, finishing requests in flight");
                let _ = stop_streams.send(true);
            })
            .await;
        // An export still running holds a snapshot of the store; it stops at its next chunk.
        ledger_export::wait_for_exports(&exports).await;
        // The router (and with it every handle to the writer) is gone: the writer drains its
        // queue, commits the last batch and stops; then the last reference to the store drops.
        tokio::task::spawn_blocking(move || writer_thread.join())
            .await
            .expect("joining the writer")
            .expect("the writer thread panicked");
        relay_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(mut task) = metrics_task {
            let wait = std::time::Duration::from_millis(metrics::SHUTDOWN_WAIT_MS);
            if tokio::time::timeout(wait, &mut task).await.is_err() {
                task.abort();
            }
        }
        tracing::info!("database closed");
        result.map_err(ServerError::from)
    });
    Ok(RunningServer {
        local_addr,
        development_admin_key,
        metrics_addr,
        shutdown,
        serve,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn transparent_huge_pages_end_up_off_for_the_process() {
        super::disable_transparent_huge_pages();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
        // What the kernel reports for the process (the line exists since Linux 5.0).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        if let Some(line) = status.lines().find(|line| line.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
