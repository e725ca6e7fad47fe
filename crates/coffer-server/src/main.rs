//! `coffer`: runs the Coffer wallet server, creates API keys and token secrets for its
//! configuration, and issues sandbox store receipts for development.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coffer_server::settings::FileConfig;
use coffer_server::{Config, Role, Security};
use tracing_subscriber::EnvFilter;

// glibc's allocator showed up as a fifth of the writer thread's time: redb allocates and frees
// a buffer for every page a commit touches. mimalloc cut that (see README: Load generator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 [default: not served].
    #[arg(long, env = "COFFER_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// redb: how long a committed change waits in the journal before a checkpoint folds it into
    /// coffer.redb; up to 8x as long while checkpoints rewrite many pages per change
    /// [default: 4000].
    #[arg(long, env = "COFFER_REDB_CHECKPOINT_INTERVAL_MS")]
    redb_checkpoint_interval_ms: Option<u64>,
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
    /// Writes the whole ledger (catalog, transactions, accounts, idempotency outcomes) to a
    /// JSON-lines file, from one consistent snapshot. Stop the server first when using redb; for
    /// a running server use `coffer backup`.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// File to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Prints a signed sandbox store receipt (development only) to redeem with
    /// WalletService.RedeemReceipt and platform STORE_PLATFORM_SANDBOX, or with --refund a
    /// sandbox refund notice for AdminService.ProcessStoreNotification. Signs with the key a
    /// development server keeps in its data directory, or with --config's
    /// [receipts.sandbox] secret_key_base64url.
    SandboxReceipt {
        /// Data directory of the development server [default: ./coffer-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Configuration file whose [receipts.sandbox] secret key signs instead.
        #[arg(long, conflicts_with = "data_dir")]
        config: Option<PathBuf>,
        /// The player the receipt is for.
        #[arg(long, required_unless_present = "refund")]
        player: Option<String>,
        /// A product id of the catalog's [store_products.sandbox] section.
        #[arg(long, required_unless_present = "refund")]
        product: Option<String>,
        /// Units bought.
        #[arg(long, default_value_t = 1)]
        quantity: u32,
        /// Print a refund notice for this sandbox transaction id instead of a receipt.
        #[arg(long, conflicts_with_all = ["player", "product"])]
        refund: Option<String>,
    },
    /// Loads an export or backup into an empty store (to restore a backup, or to move from redb
    /// to PostgreSQL), then runs the ledger verifier on the result.
    #[command(visible_alias = "restore")]
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// File written by `coffer export` or `coffer backup`.
        #[arg(long)]
        input: PathBuf,
    },
    /// Takes an online backup of a running server (AdminService/ExportLedger, admin key): the
    /// whole ledger from one consistent snapshot while the server keeps taking writes, in the
    /// format of `coffer export`. Restore it with `coffer import` (alias `coffer restore`).
    Backup {
        /// The server, e.g. http://127.0.0.1:50051.
        #[arg(long, env = "COFFER_ENDPOINT")]
        endpoint: String,
        /// An API key with the admin role.
        #[arg(long, env = "COFFER_ADMIN_KEY", hide_env_values = true)]
        admin_key: String,
        /// The backup file; written only once complete (a temporary file is renamed onto it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Replays the whole ledger of a store and checks every invariant (sums per currency, caps,
    /// balances and inventories equal to the replay, versions, dense ids). Exits 1 on any
    /// violation. For a running server use `AdminService/VerifyLedger` instead.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store a maintenance command works on.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// `redb` (in --data-dir) or a PostgreSQL URL.
    #[arg(long, env = "COFFER_STORE", default_value = "redb")]
    store: String,
    /// Directory of the redb database.
    #[arg(long, env = "COFFER_DATA_DIR", default_value = "./coffer-data")]
    data_dir: PathBuf,
}

impl StoreArgs {
    fn open(&self) -> Result<Box<dyn coffer_store::Store>, String> {
        match postgres_url(Some(&self.store))? {
            Some(url) => Ok(Box::new(
                coffer_store::PostgresStore::open(&url).map_err(|e| e.to_string())?,
            )),
            None => Ok(Box::new(
                coffer_store::RedbStore::open(&self.data_dir).map_err(|e| e.to_string())?,
            )),
        }
    }
}

fn export(store: &StoreArgs, output: &std::path::Path) -> Result<(), String> {
    let store = store.open()?;
    let file = std::fs::File::create(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let summary =
        coffer_store::write_export(store.as_ref(), &mut out).map_err(|e| e.to_string())?;
    out.get_ref().sync_all().map_err(|e| e.to_string())?;
    println!(
        "exported {} records to {}",
        summary.records,
        output.display()
    );
    Ok(())
}

fn import(store: &StoreArgs, input: &std::path::Path) -> Result<(), String> {
    let file = std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let records = coffer_store::read_export(std::io::BufReader::new(file))
        .map_err(|e| format!("{}: {e}", input.display()))?;
    let target = store.open()?;
    let mut catalog_source = None;
    let mut records = records.inspect(|record| {
        if let Ok(coffer_store::LedgerRecord::Catalog { source_toml, .. }) = record {
            catalog_source = Some(source_toml.clone());
        }
    });
    let transactions = target.import(&mut records).map_err(|e| e.to_string())?;
    drop(records);
    let source = catalog_source.unwrap_or_else(|| coffer_server::DEMO_CATALOG_TOML.to_owned());
    let catalog =
        coffer_core::Catalog::from_toml(&source).map_err(|e| format!("imported catalog: {e}"))?;
    let report = target.verify(&catalog).map_err(|e| e.to_string())?;
    println!(
        "imported {transactions} transactions; verifier: {} ({} transactions, {} accounts checked)",
        if report.is_clean() {
            "clean"
        } else {
            "VIOLATIONS"
        },
        report.transactions_checked,
        report.accounts_checked
    );
    if !report.is_clean() {
        return Err(format!(
            "the imported ledger has {} violations: {:?}",
            report.violation_count, report.violations
        ));
    }
    Ok(())
}

/// Takes an online backup from a running server into `output`. The export is written to a
/// temporary file beside it, synced, and only then renamed, so a file at `output` is always a
/// complete backup.
async fn backup(endpoint: String, admin_key: String, output: PathBuf) -> Result<(), String> {
    use std::io::Write;
    let file_name = output
        .file_name()
        .ok_or_else(|| format!("--out {} names no file", output.display()))?
        .to_string_lossy()
        .into_owned();
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = directory.join(format!(".{file_name}.partial-{}", std::process::id()));
    let client = coffer_client::CofferClient::connect(endpoint.clone())
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?;
    let mut client = client.with_token(&admin_key).map_err(|e| e.to_string())?;
    let file =
        std::fs::File::create_new(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let written = client
        .export_ledger(|chunk| tokio::task::block_in_place(|| out.write_all(chunk)))
        .await
        .map_err(|e| e.to_string())
        .and_then(|summary| {
            tokio::task::block_in_place(|| -> std::io::Result<()> {
                out.flush()?;
                out.get_ref().sync_all()?;
                std::fs::rename(&partial, &output)
            })
            .map_err(|e| format!("{}: {e}", output.display()))?;
            Ok(summary)
        });
    let summary = match written {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(format!(
                "backup failed, nothing written to {}: {error}",
                output.display()
            ));
        }
    };
    // The rename itself must reach the disk before the backup is reported done.
    std::fs::File::open(&directory)
        .and_then(|directory| directory.sync_all())
        .map_err(|e| {
            format!(
                "the backup is in {}, but syncing its directory failed: {e}",
                output.display()
            )
        })?;
    println!(
        "backup complete: {} transactions (ids 1..={}), {} records, {} bytes written to {}",
        summary.transactions,
        summary.last_transaction_id,
        summary.records,
        summary.bytes,
        output.display()
    );
    Ok(())
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
    coffer_server::disable_transparent_huge_pages();
    let args = Args::parse();
    match args.command {
        Some(Command::NewApiKey { id, role }) => return new_api_key(&id, role),
        Some(Command::NewTokenSecret) => return new_token_secret(),
        Some(Command::SandboxReceipt {
            data_dir,
            config,
            player,
            product,
            quantity,
            refund,
        }) => {
            let request = SandboxRequest {
                player,
                product,
                quantity,
                refund,
            };
            return report(sandbox_receipt(
                data_dir.as_deref(),
                config.as_deref(),
                request,
            ));
        }
        Some(Command::Export { store, output }) => {
            return report(
                tokio::task::spawn_blocking(move || export(&store, &output))
                    .await
                    .expect("export panicked"),
            );
        }
        Some(Command::Verify { store }) => {
            return report(
                tokio::task::spawn_blocking(move || verify(&store))
                    .await
                    .expect("verify panicked"),
            );
        }
        Some(Command::Backup {
            endpoint,
            admin_key,
            out,
        }) => return report(backup(endpoint, admin_key, out).await),
        Some(Command::Import { store, input }) => {
            return report(
                tokio::task::spawn_blocking(move || import(&store, &input))
                    .await
                    .expect("import panicked"),
            );
        }
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
    if let Some(addr) = server.metrics_addr {
        println!("metrics at http://{addr}/metrics");
    }
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

struct SandboxRequest {
    player: Option<String>,
    product: Option<String>,
    quantity: u32,
    refund: Option<String>,
}

/// Prints the receipt (or refund notice) on stdout and its transaction id on stderr.
fn sandbox_receipt(
    data_dir: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
    request: SandboxRequest,
) -> Result<(), String> {
    use coffer_receipts::{RefundKind, SandboxIssuer, SandboxPurchase, SandboxRefund};
    use coffer_server::SandboxStore;
    let secret_key = match config {
        Some(path) => match FileConfig::load(path)?.receipts()?.sandbox {
            SandboxStore::SecretKey(key) => key,
            _ => {
                return Err(format!(
                    "{}: [receipts.sandbox] has no secret_key_base64url to sign with",
                    path.display()
                ));
            }
        },
        None => coffer_server::receipts::development_sandbox_key(
            data_dir.unwrap_or(std::path::Path::new("./coffer-data")),
        )?,
    };
    let issuer = SandboxIssuer::from_secret_key(secret_key);
    let issued_at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as i64;
    let (payload, transaction_id) = match request.refund {
        Some(transaction_id) => {
            let refund = SandboxRefund {
                transaction_id: transaction_id.clone(),
                kind: RefundKind::Refund,
                issued_at_unix_ms,
            };
            (issuer.issue_refund(&refund), transaction_id)
        }
        None => {
            let mut random = [0u8; 16];
            getrandom::fill(&mut random).map_err(|e| e.to_string())?;
            let transaction_id = format!("sbx_{}", hex::encode(random));
            let purchase = SandboxPurchase {
                transaction_id: transaction_id.clone(),
                product_id: request.product.unwrap_or_default(),
                player_id: request.player.unwrap_or_default(),
                quantity: request.quantity,
                issued_at_unix_ms,
                price_minor_units: None,
                currency_code: None,
            };
            (issuer.issue(&purchase), transaction_id)
        }
    };
    println!("{}", payload.map_err(|e| e.to_string())?);
    eprintln!("sandbox store transaction id: {transaction_id}");
    Ok(())
}

fn verify(store: &StoreArgs) -> Result<(), String> {
    let target = store.open()?;
    let source = match target.stored_catalog().map_err(|e| e.to_string())? {
        Some(stored) => stored.source_toml,
        None => coffer_server::DEMO_CATALOG_TOML.to_owned(),
    };
    let catalog =
        coffer_core::Catalog::from_toml(&source).map_err(|e| format!("stored catalog: {e}"))?;
    let started = std::time::Instant::now();
    let report = target.verify(&catalog).map_err(|e| e.to_string())?;
    println!(
        "verifier: {} ({} transactions, {} accounts checked in {} ms)",
        if report.is_clean() {
            "clean"
        } else {
            "VIOLATIONS"
        },
        report.transactions_checked,
        report.accounts_checked,
        started.elapsed().as_millis()
    );
    for violation in &report.violations {
        println!("  {violation}");
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(format!("{} violations", report.violation_count))
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("coffer: {error}");
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
        config.metrics_addr = args.metrics_addr;
        if let Some(interval_ms) = args.redb_checkpoint_interval_ms {
            config.redb.checkpoint_interval_ms = interval_ms;
        }
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
        receipts: file.receipts()?,
        startup_check_time_limit_ms: file
            .startup_check_time_limit_ms
            .unwrap_or(coffer_server::startup_check::STARTUP_CHECK_TIME_LIMIT_MS_DEFAULT),
        redb: coffer_store::RedbOptions {
            two_phase_commit: file
                .redb_two_phase_commit
                .unwrap_or(coffer_store::TWO_PHASE_COMMIT_DEFAULT),
            checkpoint_interval_ms: args
                .redb_checkpoint_interval_ms
                .or(file.redb_checkpoint_interval_ms)
                .unwrap_or(coffer_store::CHECKPOINT_INTERVAL_MS_DEFAULT),
            runs_merge_at: coffer_store::RUNS_MERGE_AT_DEFAULT,
            faults: None,
        },
        metrics_addr: args.metrics_addr.or(file.metrics.addr),
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
