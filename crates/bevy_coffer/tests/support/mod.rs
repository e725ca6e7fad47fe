//! Test support: a real Coffer server on a loopback port with a temporary data directory, run
//! on its own tokio runtime so the Bevy app can be driven frame by frame on the test thread.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_coffer::prelude::*;
use coffer_client::{CofferClient, pb};
use coffer_server::{Config, RunningServer};

/// Longest a test waits for something the plugin should do.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A Coffer server that can be stopped and started again on the same address and data.
pub struct TestServer {
    runtime: tokio::runtime::Runtime,
    data_dir: tempfile::TempDir,
    server: Option<RunningServer>,
    /// The address, fixed by the first start.
    pub addr: SocketAddr,
    /// The development admin key (kept in the data directory, so it survives restarts).
    pub admin_key: String,
}

impl TestServer {
    /// Starts a server with the demo catalog on a free port.
    pub fn start() -> TestServer {
        let runtime = server_runtime();
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let mut server = TestServer {
            runtime,
            data_dir,
            server: None,
            addr: "127.0.0.1:0".parse().expect("address"),
            admin_key: String::new(),
        };
        server.boot();
        server
    }

    fn boot(&mut self) {
        // After a kill, the old instance's writer thread may still hold the database for a
        // moment: retry until it opens.
        let start = Instant::now();
        let running = loop {
            let config = Config::development(self.addr, self.data_dir.path());
            match self.runtime.block_on(coffer_server::start(config)) {
                Ok(running) => break running,
                Err(error) if start.elapsed() < DEADLINE => {
                    eprintln!("server not startable yet ({error}); retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => panic!("server does not start: {error}"),
            }
        };
        self.addr = running.local_addr;
        self.admin_key = running
            .development_admin_key
            .clone()
            .expect("a development server has an admin key");
        self.server = Some(running);
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server gracefully (database closed when this returns).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), server.shutdown()).await
                })
                .expect("server shut down within 30 s")
                .expect("clean shutdown");
        }
    }

    /// Kills the server as a crash or `kill -9` would: its runtime stops with every connection
    /// and stream it holds, without a graceful shutdown.
    pub fn kill(&mut self) {
        let running = self.server.take().expect("the server is running");
        let runtime = std::mem::replace(&mut self.runtime, server_runtime());
        runtime.shutdown_timeout(Duration::from_secs(5));
        drop(running);
    }

    /// Starts the server again on the same address and data directory.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "stop the server first");
        self.boot();
    }

    /// Runs `f` with a fresh admin client of this server (for checks and out-of-band changes).
    pub fn with_client<T>(&self, f: impl AsyncFnOnce(&mut CofferClient) -> T) -> T {
        let endpoint = self.endpoint();
        let admin_key = self.admin_key.clone();
        self.runtime.block_on(async move {
            let mut client = CofferClient::connect(endpoint)
                .await
                .expect("client connects")
                .with_token(&admin_key)
                .expect("usable admin key");
            f(&mut client).await
        })
    }

    /// A player token for `player_id`, as a game backend would hand to a game client.
    pub fn player_token(&self, player_id: &str) -> String {
        let player_id = player_id.to_owned();
        self.with_client(async move |client| {
            client
                .issue_player_token(&player_id, 3600)
                .await
                .expect("player token")
        })
    }

    /// The server's view of a player's wallet.
    pub fn wallet(&self, player_id: &str) -> pb::Wallet {
        let player_id = player_id.to_owned();
        self.with_client(async move |client| client.wallet(&player_id).await.expect("wallet"))
    }
}

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime")
}

/// Outcomes the plugin wrote, in order.
#[derive(Resource, Default)]
pub struct Outcomes {
    pub completed: Vec<RequestCompleted>,
    pub failed: Vec<RequestFailed>,
}

fn record_outcomes(
    mut outcomes: ResMut<Outcomes>,
    mut completed: MessageReader<RequestCompleted>,
    mut failed: MessageReader<RequestFailed>,
) {
    outcomes.completed.extend(completed.read().cloned());
    outcomes.failed.extend(failed.read().cloned());
}

/// A headless game with the plugin, following `player_id` on `server`.
pub fn game(server: &TestServer, player_id: &str) -> App {
    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .add_plugins(
            CofferPlugin::new(server.endpoint())
                .with_player(player_id)
                .with_token(server.player_token(player_id))
                .with_reconnect_policy(ReconnectPolicy {
                    retry_delay_initial: Duration::from_millis(50),
                    retry_delay_max: Duration::from_millis(250),
                    ..ReconnectPolicy::default()
                }),
        )
        .init_resource::<Outcomes>()
        .add_systems(Update, record_outcomes.after(CofferSystems::Receive));
    app
}

/// Runs frames until `done` holds, failing the test after [`DEADLINE`].
pub fn run_until(app: &mut App, what: &str, mut done: impl FnMut(&mut World) -> bool) {
    let start = Instant::now();
    loop {
        app.update();
        if done(app.world_mut()) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "gave up after {DEADLINE:?} waiting for: {what}"
        );
        // Pace the frames like a game would; the assertion is the condition, not the time.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs frames until the plugin is live with the wallet loaded.
pub fn wait_until_live(app: &mut App) {
    run_until(app, "the plugin to be live", |world| {
        world.resource::<CofferConnection>().is_live() && world.resource::<Wallet>().is_synced()
    });
}

/// Balances of a server wallet as a sorted list.
pub fn balances(wallet: &pb::Wallet) -> Vec<(String, i64)> {
    let mut list: Vec<_> = wallet
        .balances
        .iter()
        .map(|m| (m.currency_id.clone(), m.amount_minor_units))
        .collect();
    list.sort();
    list
}

/// Balances of the plugin's wallet as a sorted list.
pub fn game_balances(wallet: &Wallet) -> Vec<(String, i64)> {
    wallet
        .balances
        .iter()
        .map(|(c, a)| (c.clone(), *a))
        .collect()
}
