//! `coffer`: runs the Coffer wallet server, and creates API keys and token secrets for its
//! configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coffer_server::settings::FileConfig;
use coffer_server::{Config, Role, Security};
use tracing_subscriber::EnvFilter;

/// Coffer: an in-game economy server (currencies, items, purchases) with a double-entry ledger.
///
/// Without --config it runs in development mode: it generates an admin key, keeps it in the data
/// directory and prints it. With --config it runs in production mode and refuses to start
/// without API keys and a token secret.
#[derive(Parser, Debug)]
#[command(name = "coffer", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (production mode). See README "Security".
    #[arg(long, env = "COFFER_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "COFFER_LISTEN_ADDR")]
    listen_addr: Option<SocketAddr>,
    /// Directory for the database, created if missing [default: ./coffer-data].
    #[arg(long, env = "COFFER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Catalog TOML file [default: the built-in demo catalog, assets/catalog.toml].
    #[arg(long, env = "COFFER_CATALOG")]
    catalog: Option<PathBuf>,
    /// Where the ledger lives: `redb` (embedded, in --data-dir) or a PostgreSQL URL such as
    /// postgres://postgres@127.0.0.1:5432/coffer (several nodes may share it) [default: redb].
    #[arg(long, env = "COFFER_STORE")]
    store: Option<String>,
}

/// The PostgreSQL URL a `--store` value names, or `None` for the embedded redb store.
fn postgres_url(store: Option<&str>) -> Result<Option<String>, String> {
    match store {
        None | Some("redb") => Ok(None),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Some(url.to_owned()))
        }
        Some(other) => Err(format!(
            "--store must be `redb` or a postgres:// URL, got {other:?}"
        )),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Creates an API key: prints the key (give it to its holder) and the entry for the
    /// configuration (which holds only the key's hash).
    NewApiKey {
        /// Key id, e.g. `ops` or `game-server-eu`.
        #[arg(long)]
        id: String,
        /// admin, game-server or support.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Creates a random secret for signing player tokens.
    NewTokenSecret,
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "admin" => Ok(Role::Admin),
        "game-server" => Ok(Role::GameServer),
        "support" => Ok(Role::Support),
        _ => Err("one of: admin, game-server, support".to_owned()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match args.command {
        Some(Command::NewApiKey { id, role }) => return new_api_key(&id, role),
        Some(Command::NewTokenSecret) => return new_token_secret(),
        None => {}
    }
    let config = match config_from(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("coffer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let server = match coffer_server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "coffer could not start");
            eprintln!("coffer: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("coffer listening on {} (gRPC)", server.local_addr);
    if let Some(key) = &server.development_admin_key {
        println!("DEVELOPMENT MODE: do not expose this server to players.");
        println!("  development admin key: {key}");
        println!(
            "  try: grpcurl -plaintext -H 'authorization: Bearer {key}' {} list",
            server.local_addr
        );
    }
    wait_for_signal().await;
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "shutdown failed");
            ExitCode::FAILURE
        }
    }
}

fn config_from(args: &Args) -> Result<Config, String> {
    let default_addr: SocketAddr = "127.0.0.1:50051".parse().expect("valid address");
    let default_data_dir = PathBuf::from("./coffer-data");
    let Some(path) = &args.config else {
        let mut config = Config::development(
            args.listen_addr.unwrap_or(default_addr),
            args.data_dir.clone().unwrap_or(default_data_dir),
        );
        config.catalog_path = args.catalog.clone();
        config.postgres_url = postgres_url(args.store.as_deref())?;
        return Ok(config);
    };
    let file = FileConfig::load(path)?;
    let security: Security = file.security()?;
    Ok(Config {
        listen_addr: args
            .listen_addr
            .or(file.listen_addr)
            .unwrap_or(default_addr),
        data_dir: args
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or(default_data_dir),
        catalog_path: args.catalog.clone().or(file.catalog.clone()),
        postgres_url: postgres_url(args.store.as_deref().or(file.store.as_deref()))?,
        security,
        limits: file.limits.clone(),
        tls: file.tls.clone(),
    })
}

fn new_api_key(id: &str, role: Role) -> ExitCode {
    match coffer_server::auth::keys::generate(id, role) {
        Ok((key, entry)) => {
            println!("API key (give it to its holder; it is shown only once):\n  {key}\n");
            println!("Configuration entry (holds only the hash):\n");
            println!(
                "[[security.api_keys]]\nid = \"{}\"\nrole = \"{}\"\nsecret_sha256 = \"{}\"",
                entry.id,
                role.name(),
                entry.secret_sha256
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("coffer: no randomness available: {error}");
            ExitCode::FAILURE
        }
    }
}

fn new_token_secret() -> ExitCode {
    let mut secret = [0u8; 32];
    if let Err(error) = getrandom::fill(&mut secret) {
        eprintln!("coffer: no randomness available: {error}");
        return ExitCode::FAILURE;
    }
    println!("[security]\ntoken_secret_hex = \"{}\"", hex::encode(secret));
    ExitCode::SUCCESS
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
