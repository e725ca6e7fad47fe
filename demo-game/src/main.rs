//! `cargo run -p demo-game`: plays against the Coffer server at 127.0.0.1:50051, or starts one
//! in-process when none answers (or with `--embedded`). See `--help`.

use std::path::PathBuf;
use std::time::Duration;

use bevy::prelude::*;
use bevy::render::view::window::screenshot::{Screenshot, save_to_disk};
use bevy::window::WindowResolution;
use bevy_coffer::prelude::*;
use coffer_client::CofferClient;
use demo_game::{GamePlugin, GameViewPlugin, SandboxStore};

const HELP: &str = "\
Coffer demo game

USAGE: demo-game [OPTIONS]

  --server URL        Coffer server to play against (default http://127.0.0.1:50051)
  --embedded          Start a server in this process instead of connecting
  --data-dir DIR      Data directory of the embedded server (default ./coffer-demo-data)
  --player ID         Player id (default demo-player)
  --token TOKEN       Player token (or env COFFER_PLAYER_TOKEN)
  --admin-key KEY     Admin or game-server API key to issue a player token with
                      (or env COFFER_ADMIN_KEY); not needed with the embedded server. It
                      is also the sandbox store key: shop key 6 buys gems with real
                      money only when the game has it (or runs the embedded server)
  --screenshot PATH   Buy a potion, upgrade the boots, try the sword, open the shop, save a PNG after
                      120 frames, and quit
  -h, --help          This text
";

/// Command-line settings.
struct Args {
    server: String,
    embedded: bool,
    data_dir: PathBuf,
    player: String,
    token: Option<String>,
    admin_key: Option<String>,
    screenshot: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        server: "http://127.0.0.1:50051".to_owned(),
        embedded: false,
        data_dir: PathBuf::from("coffer-demo-data"),
        player: "demo-player".to_owned(),
        token: std::env::var("COFFER_PLAYER_TOKEN").ok(),
        admin_key: std::env::var("COFFER_ADMIN_KEY").ok(),
        screenshot: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--server" => args.server = value()?,
            "--embedded" => args.embedded = true,
            "--data-dir" => args.data_dir = PathBuf::from(value()?),
            "--player" => args.player = value()?,
            "--token" => args.token = Some(value()?),
            "--admin-key" => args.admin_key = Some(value()?),
            "--screenshot" => args.screenshot = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{HELP}")),
        }
    }
    Ok(args)
}

/// The server the game plays against: an external one, or one this process runs.
struct Backend {
    endpoint: String,
    token: Option<String>,
    /// The key the sandbox store is paid with (stands in for the platform store).
    store_key: Option<String>,
    /// Keeps the embedded server running until the game ends.
    _runtime: Option<tokio::runtime::Runtime>,
}

fn choose_backend(args: &Args) -> Result<Backend, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    if !args.embedded {
        let reachable = runtime.block_on(async {
            let connect = CofferClient::connect(args.server.clone());
            matches!(
                tokio::time::timeout(Duration::from_secs(2), connect).await,
                Ok(Ok(_))
            )
        });
        if reachable {
            println!("Playing against the Coffer server at {}", args.server);
            let token = match (&args.token, &args.admin_key) {
                (Some(token), _) => Some(token.clone()),
                (None, Some(key)) => {
                    Some(runtime.block_on(issue_token(&args.server, key, &args.player))?)
                }
                (None, None) => {
                    println!(
                        "No player token: pass --token, or --admin-key with the key the server \
                         printed at start-up. The game will show the server's refusal."
                    );
                    None
                }
            };
            return Ok(Backend {
                endpoint: args.server.clone(),
                token,
                store_key: args.admin_key.clone(),
                _runtime: None,
            });
        }
        println!("No Coffer server answers at {}", args.server);
    }
    let running = runtime.block_on(async {
        let mut last_error = String::new();
        // The usual port first, so tools can find the server; any free port otherwise.
        for addr in ["127.0.0.1:50051", "127.0.0.1:0"] {
            let config =
                coffer_server::Config::development(addr.parse().expect("address"), &args.data_dir);
            match coffer_server::start(config).await {
                Ok(running) => return Ok(running),
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(format!("cannot start the embedded server: {last_error}"))
    })?;
    let endpoint = format!("http://{}", running.local_addr);
    println!(
        "Started an embedded Coffer server at {endpoint} (data in {})",
        args.data_dir.display()
    );
    let admin_key = running
        .development_admin_key
        .clone()
        .ok_or("the embedded server has no development key")?;
    let token = runtime.block_on(issue_token(&endpoint, &admin_key, &args.player))?;
    // The server runs on this runtime's threads for as long as the game.
    std::mem::forget(running);
    Ok(Backend {
        endpoint,
        token: Some(token),
        store_key: Some(admin_key),
        _runtime: Some(runtime),
    })
}

async fn issue_token(endpoint: &str, key: &str, player: &str) -> Result<String, String> {
    let mut admin = CofferClient::connect(endpoint.to_owned())
        .await
        .and_then(|c| c.with_token(key))
        .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
    admin
        .issue_player_token(player, 24 * 3600)
        .await
        .map_err(|e| format!("issuing a player token: {e}"))
}

/// Frames to wait before the screenshot: the first ones are still black under a software
/// renderer.
const SCREENSHOT_FRAME: u32 = 120;

#[allow(clippy::too_many_arguments)]
fn screenshot_script(
    mut commands: Commands,
    mut frame: Local<u32>,
    path: Res<ScreenshotPath>,
    connection: Res<CofferConnection>,
    mut shop: ResMut<demo_game::ShopOpen>,
    mut purchases: MessageWriter<Purchase>,
    mut upgrades: MessageWriter<Upgrade>,
    mut player: Single<&mut Transform, With<demo_game::Player>>,
    mut exit: MessageWriter<AppExit>,
) {
    // Wait for the server before counting frames, so the picture shows live balances.
    if !connection.is_live() && *frame == 0 {
        return;
    }
    *frame += 1;
    match *frame {
        1 => {
            purchases.write(Purchase::offer("potion"));
            upgrades.write(Upgrade::next_level("speed_boots"));
            // 100 - 10 - 50 coins left: too few for the sword, to show a refusal.
            purchases.write(Purchase::offer("sword"));
            player.translation.x = -180.0;
            player.translation.y = 40.0;
        }
        30 => shop.0 = true,
        f if f == SCREENSHOT_FRAME => {
            commands
                .spawn(Screenshot::primary_window())
                .observe(save_to_disk(path.0.clone()));
        }
        f if f == SCREENSHOT_FRAME + 30 => {
            exit.write(AppExit::Success);
        }
        _ => {}
    }
}

#[derive(Resource)]
struct ScreenshotPath(PathBuf);

fn main() -> AppExit {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}");
            return AppExit::error();
        }
    };
    let backend = match choose_backend(&args) {
        Ok(backend) => backend,
        Err(error) => {
            eprintln!("{error}");
            return AppExit::error();
        }
    };
    let mut coffer = CofferPlugin::new(backend.endpoint.clone()).with_player(args.player.clone());
    if let Some(token) = &backend.token {
        coffer = coffer.with_token(token.clone());
    }
    println!(
        "Player {:?}. Move with WASD or the arrows, B opens the shop.",
        args.player
    );

    let store = match &backend.store_key {
        Some(key) => {
            SandboxStore::connect(&backend.endpoint, key, &args.player).unwrap_or_else(|error| {
                eprintln!("{error}; buying gems with real money is off");
                SandboxStore::disabled()
            })
        }
        None => {
            println!("No sandbox store key (--admin-key): buying gems with real money is off.");
            SandboxStore::disabled()
        }
    };

    let mut app = App::new();
    app.add_plugins(DefaultPlugins.set(WindowPlugin {
        primary_window: Some(Window {
            title: "Coffer demo".to_owned(),
            resolution: WindowResolution::new(1280, 720),
            ..default()
        }),
        ..default()
    }))
    .add_plugins(coffer)
    .insert_resource(store)
    .add_plugins((GamePlugin, GameViewPlugin));
    if let Some(path) = args.screenshot {
        app.insert_resource(ScreenshotPath(path))
            .add_systems(Update, screenshot_script.before(CofferSystems::Send));
    }
    let exit = app.run();
    drop(backend);
    exit
}
