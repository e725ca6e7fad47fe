//! `coffer`: runs the Coffer wallet server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Coffer: an in-game economy server (currencies, items, purchases) with a double-entry ledger.
#[derive(Parser, Debug)]
#[command(name = "coffer", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "COFFER_LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    listen_addr: SocketAddr,
    /// Directory for the database (created if missing).
    #[arg(long, env = "COFFER_DATA_DIR", default_value = "./coffer-data")]
    data_dir: PathBuf,
    /// Catalog TOML file. Without it the built-in demo catalog (assets/catalog.toml) is used.
    #[arg(long, env = "COFFER_CATALOG")]
    catalog: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = coffer_server::Config {
        listen_addr: args.listen_addr,
        data_dir: args.data_dir,
        catalog_path: args.catalog,
    };
    let server = match coffer_server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "coffer could not start");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "coffer listening on {} (gRPC; try: grpcurl -plaintext {} list)",
        server.local_addr, server.local_addr
    );
    wait_for_signal().await;
    match server.shutdown().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "shutdown failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
