//! Test harness: starts the real Coffer server on a free loopback port with a real redb file in
//! a temporary directory, and hands out real gRPC clients.

use std::path::PathBuf;

use coffer_client::{CofferClient, pb};
use coffer_server::{Config, RunningServer};

/// A server under test and its data directory (removed when the test ends).
pub struct TestServer {
    server: Option<RunningServer>,
    data_dir: tempfile::TempDir,
    catalog_path: Option<PathBuf>,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    /// The development admin key the server generated.
    pub admin_key: String,
}

impl TestServer {
    /// A server with the demo catalog and an empty database.
    pub async fn start() -> TestServer {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let mut server = TestServer {
            server: None,
            data_dir,
            catalog_path: None,
            endpoint: String::new(),
            admin_key: String::new(),
        };
        server.boot().await;
        server
    }

    async fn boot(&mut self) {
        let mut config = Config::development("127.0.0.1:0".parse().unwrap(), self.data_dir.path());
        config.catalog_path = self.catalog_path.clone();
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

/// Asserts that the server's ledger verifier finds nothing wrong.
pub async fn assert_ledger_clean(client: &mut CofferClient) {
    let report = client.verify_ledger().await.expect("verify ledger");
    assert!(report.clean, "ledger violations: {:?}", report.violations);
}
