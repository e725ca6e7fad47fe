//! Test harness: starts the real Coffer server on a free loopback port, over a real redb file in
//! a temporary directory or a fresh PostgreSQL database, and hands out real gRPC clients.
//! [`backend_tests!`] runs the same tests against both storage backends.

use std::path::PathBuf;

use coffer_client::{CofferClient, pb};
use coffer_server::{Config, RunningServer};

/// PostgreSQL server the tests use: `COFFER_TEST_POSTGRES_URL`, or the local one.
pub fn postgres_admin_url() -> String {
    std::env::var("COFFER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// True when a missing PostgreSQL server must fail the tests instead of skipping them
/// (`.ci/run` sets `COFFER_REQUIRE_POSTGRES=1`).
pub fn postgres_required() -> bool {
    std::env::var("COFFER_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Which storage a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Redb,
    /// A fresh PostgreSQL database per test.
    Postgres,
}

/// A fresh, uniquely named database on the test PostgreSQL server, dropped on drop.
pub struct TestDatabase {
    /// URL of the new database.
    pub url: String,
    name: String,
}

impl TestDatabase {
    /// Creates the database; `Err` when no PostgreSQL server answers.
    pub fn create() -> Result<TestDatabase, String> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let admin_url = postgres_admin_url();
        let name = format!(
            "coffer_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        // The synchronous client runs its own runtime: keep it on a plain thread.
        let create_name = name.clone();
        let url = admin_url.clone();
        std::thread::spawn(move || -> Result<(), String> {
            let mut client =
                postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
            // Only a server that does not answer is a reason to skip; any other error fails.
            client
                .batch_execute(&format!("CREATE DATABASE {create_name}"))
                .expect("creating the database");
            Ok(())
        })
        .join()
        .expect("database creation thread")?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base.to_owned())
            .unwrap_or(admin_url);
        Ok(TestDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (postgres_admin_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut client) = postgres::Client::connect(&url, postgres::NoTls) {
                let _ =
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// A server under test and its data directory (removed when the test ends).
pub struct TestServer {
    server: Option<RunningServer>,
    database: Option<TestDatabase>,
    data_dir: tempfile::TempDir,
    catalog_path: Option<PathBuf>,
    /// Receipt settings replacing the development default (sandbox store only).
    receipts: Option<coffer_server::ReceiptSettings>,
    /// The fault switch the redb file sits behind, if any.
    storage_faults: Option<coffer_store::StorageFaults>,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    /// The development admin key the server generated.
    pub admin_key: String,
}

impl TestServer {
    /// A redb server with the demo catalog and an empty database.
    pub async fn start() -> TestServer {
        Self::start_on(Backend::Redb)
            .await
            .expect("redb needs no server")
    }

    /// A server on `backend` with the demo catalog and an empty database, or `None` (after
    /// saying so) when the backend is PostgreSQL, no server answers and none is required.
    pub async fn start_on(backend: Backend) -> Option<TestServer> {
        let database = match backend {
            Backend::Redb => None,
            Backend::Postgres => match TestDatabase::create() {
                Ok(database) => Some(database),
                Err(error) if !postgres_required() => {
                    // Written to the process stderr directly, past the test harness capture, so a skip is
                    // always visible.
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "SKIPPED: no PostgreSQL server at {} ({error}); set COFFER_REQUIRE_POSTGRES=1 to fail instead",
                        postgres_admin_url()
                    );
                    return None;
                }
                Err(error) => panic!(
                    "PostgreSQL is required but {} answers: {error}",
                    postgres_admin_url()
                ),
            },
        };
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let mut server = TestServer {
            server: None,
            database,
            data_dir,
            catalog_path: None,
            receipts: None,
            storage_faults: None,
            endpoint: String::new(),
            admin_key: String::new(),
        };
        server.boot().await;
        Some(server)
    }

    async fn boot(&mut self) {
        let mut config = Config::development("127.0.0.1:0".parse().unwrap(), self.data_dir.path());
        config.catalog_path = self.catalog_path.clone();
        config.postgres_url = self.database.as_ref().map(|d| d.url.clone());
        if let Some(receipts) = &self.receipts {
            config.receipts = receipts.clone();
        }
        config.redb.faults = self.storage_faults.clone();
        let running = coffer_server::start(config).await.expect("server starts");
        self.endpoint = format!("http://{}", running.local_addr);
        self.admin_key = running
            .development_admin_key
            .clone()
            .expect("development mode key");
        self.server = Some(running);
    }

    /// A new connection to the server, authenticated with the admin key.
    pub async fn client(&self) -> CofferClient {
        self.anonymous_client()
            .await
            .with_token(&self.admin_key)
            .unwrap()
    }

    /// A new connection that sends no credentials.
    pub async fn anonymous_client(&self) -> CofferClient {
        CofferClient::connect(self.endpoint.clone())
            .await
            .expect("client connects")
    }

    /// A redb server whose file sits behind `faults`: the test decides when writes, syncs or
    /// space fail.
    pub async fn start_with_faults(faults: coffer_store::StorageFaults) -> TestServer {
        let mut server = TestServer {
            server: None,
            database: None,
            data_dir: tempfile::tempdir().expect("temporary directory"),
            catalog_path: None,
            receipts: None,
            storage_faults: Some(faults),
            endpoint: String::new(),
            admin_key: String::new(),
        };
        server.boot().await;
        server
    }

    /// Takes the server off its fault switch (effective at the next restart).
    pub fn remove_faults(&mut self) {
        self.storage_faults = None;
    }

    /// Restarts the server on the same data with these receipt settings.
    pub async fn set_receipts(&mut self, receipts: coffer_server::ReceiptSettings) {
        self.receipts = Some(receipts);
        self.restart().await;
    }

    /// Shuts the server down gracefully and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    /// Shuts the server down gracefully (database closed when this returns).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Contents holding only currencies.
pub fn currencies(amounts: &[(&str, i64)]) -> pb::Contents {
    pb::Contents {
        currencies: coffer_client::money(amounts),
        items: Vec::new(),
    }
}

/// Contents holding only items.
pub fn items(quantities: &[(&str, u64)]) -> pb::Contents {
    pb::Contents {
        currencies: Vec::new(),
        items: quantities
            .iter()
            .map(|(id, q)| pb::ItemQuantity {
                item_id: (*id).to_owned(),
                quantity: *q,
            })
            .collect(),
    }
}

/// The gRPC code and ledger rejection of a call that must have been refused.
pub fn rejection(
    result: Result<pb::Transaction, coffer_client::ClientError>,
) -> (tonic::Code, coffer_client::Rejection) {
    match result {
        Err(coffer_client::ClientError::Rejected {
            code, rejection, ..
        }) => (code, rejection),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Asserts that the server's ledger verifier finds nothing wrong.
pub async fn assert_ledger_clean(client: &mut CofferClient) {
    let report = client.verify_ledger().await.expect("verify ledger");
    assert!(report.clean, "ledger violations: {:?}", report.violations);
}

/// Runs each test against both storage backends: `mod redb` and `mod postgres` get one
/// `#[tokio::test]` per function, each with its own fresh server bound to the name given.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($server:ident) $body:block)*) => {
        mod redb {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                #[allow(unused_mut)]
                async fn $name() {
                    let Some(mut $server) = $crate::TestServer::start_on($crate::Backend::Redb).await else { return };
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                #[allow(unused_mut)]
                async fn $name() {
                    let Some(mut $server) = $crate::TestServer::start_on($crate::Backend::Postgres).await else { return };
                    $body
                }
            )*
        }
    };
}
