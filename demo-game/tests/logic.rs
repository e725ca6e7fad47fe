//! The game's rules, headless: `MinimalPlugins`, keys pressed by hand, time advanced by a fixed
//! step. The last test plays against a real Coffer server.

use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_coffer::prelude::*;
use bevy_coffer::proto as pb;
use demo_game::*;

/// Requests the game wrote, as text.
#[derive(Resource, Default)]
struct Sent(Vec<String>);

fn record_requests(
    mut sent: ResMut<Sent>,
    mut claims: MessageReader<ClaimReward>,
    mut purchases: MessageReader<Purchase>,
    mut upgrades: MessageReader<Upgrade>,
    mut receipts: MessageReader<RedeemReceipt>,
) {
    sent.0
        .extend(claims.read().map(|c| format!("claim {}", c.reward_id)));
    sent.0
        .extend(purchases.read().map(|p| format!("buy {}", p.offer_id)));
    sent.0
        .extend(upgrades.read().map(|u| format!("upgrade {}", u.item_id)));
    sent.0
        .extend(receipts.read().map(|r| format!("redeem {:?}", r.platform)));
}

/// The game without a server: the plugin's resources and messages, registered by hand.
fn offline_game() -> App {
    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
            50,
        )))
        .init_resource::<ButtonInput<KeyCode>>()
        .init_resource::<Wallet>()
        .init_resource::<Inventory>()
        .init_resource::<Catalog>()
        .init_resource::<CofferConnection>()
        .add_message::<Purchase>()
        .add_message::<Upgrade>()
        .add_message::<Consume>()
        .add_message::<ClaimReward>()
        .add_message::<RedeemReceipt>()
        .add_message::<RequestCompleted>()
        .add_message::<RequestFailed>()
        .init_resource::<Sent>()
        .add_plugins(GamePlugin)
        .add_systems(PostUpdate, record_requests);
    app.update();
    app
}

/// Presses `key` for one frame.
fn tap(app: &mut App, key: KeyCode) {
    app.world_mut()
        .resource_mut::<ButtonInput<KeyCode>>()
        .press(key);
    app.update();
    let mut keys = app.world_mut().resource_mut::<ButtonInput<KeyCode>>();
    keys.release(key);
    keys.clear();
}

fn player_position(app: &mut App) -> Vec2 {
    app.world_mut()
        .query_filtered::<&Transform, With<Player>>()
        .single(app.world())
        .expect("one player")
        .translation
        .truncate()
}

fn walk_right(app: &mut App, frames: u32) -> f32 {
    let start = player_position(app).x;
    app.world_mut()
        .resource_mut::<ButtonInput<KeyCode>>()
        .press(KeyCode::ArrowRight);
    for _ in 0..frames {
        app.update();
    }
    app.world_mut()
        .resource_mut::<ButtonInput<KeyCode>>()
        .release(KeyCode::ArrowRight);
    player_position(app).x - start
}

#[test]
fn speed_boots_make_the_player_faster_with_each_level() {
    let mut barefoot = offline_game();
    let mut booted = offline_game();
    booted.world_mut().resource_mut::<Inventory>().items.insert(
        BOOTS_ITEM_ID.to_owned(),
        bevy_coffer::ItemStack {
            quantity: 1,
            level: 3,
        },
    );
    let slow = walk_right(&mut barefoot, 10);
    let fast = walk_right(&mut booted, 10);
    assert!(slow > 0.0);
    let expected = speed_px_per_s(3) / speed_px_per_s(0);
    assert!(
        (fast / slow - expected).abs() < 0.01,
        "boots at level 3 should be {expected}x faster: {fast} vs {slow}"
    );
    assert!(speed_px_per_s(1) > speed_px_per_s(0) && speed_px_per_s(5) > speed_px_per_s(4));
}

#[test]
fn walking_onto_a_coin_picks_it_up_and_claims_the_coin_reward() {
    let mut app = offline_game();
    let coin = app
        .world_mut()
        .spawn((Coin, Transform::from_xyz(200.0, 100.0, 0.5)))
        .id();
    app.world_mut()
        .query_filtered::<&mut Transform, With<Player>>()
        .single_mut(app.world_mut())
        .expect("one player")
        .translation = Vec3::new(190.0, 95.0, 1.0);
    app.update();
    assert!(app.world().get_entity(coin).is_err(), "the coin is gone");
    let sent = &app.world().resource::<Sent>().0;
    assert_eq!(sent, &vec![format!("claim {COIN_REWARD_ID}")]);
    assert_eq!(app.world().resource::<Stats>().coins_picked_up, 1);
}

#[test]
fn coins_keep_appearing_up_to_the_field_limit() {
    let mut app = offline_game();
    for _ in 0..400 {
        app.update();
    }
    let coins = app
        .world_mut()
        .query_filtered::<&Transform, With<Coin>>()
        .iter(app.world())
        .map(|t| t.translation.truncate())
        .collect::<Vec<_>>();
    assert_eq!(coins.len(), COINS_ON_FIELD_MAX);
    assert!(
        coins
            .iter()
            .all(|c| c.x.abs() < FIELD_HALF_SIZE.x && c.y.abs() < FIELD_HALF_SIZE.y)
    );
}

#[test]
fn shop_keys_buy_only_while_the_shop_is_open() {
    let mut app = offline_game();
    tap(&mut app, KeyCode::Digit1);
    assert!(app.world().resource::<Sent>().0.is_empty());
    tap(&mut app, KeyCode::KeyB);
    assert!(app.world().resource::<ShopOpen>().0);
    tap(&mut app, KeyCode::Digit1);
    tap(&mut app, KeyCode::Digit3);
    tap(&mut app, KeyCode::Digit5);
    tap(&mut app, KeyCode::KeyB);
    tap(&mut app, KeyCode::Digit2);
    assert_eq!(
        app.world().resource::<Sent>().0,
        vec!["buy potion", "buy starter_pack", "upgrade speed_boots"]
    );
}

fn rejected(
    request: CofferRequest,
    rejection: Rejection,
    retry_after_ms: Option<i64>,
) -> RequestFailed {
    RequestFailed {
        request,
        idempotency_key: "k".to_owned(),
        error: CofferError::Rejected {
            rejection,
            message: String::new(),
            retry_after_ms,
        },
    }
}

#[test]
fn rejections_are_shown_in_plain_words() {
    let mut app = offline_game();
    app.world_mut().write_message(rejected(
        CofferRequest::Purchase(Purchase::offer("sword")),
        Rejection::InsufficientFunds,
        None,
    ));
    app.world_mut().write_message(rejected(
        CofferRequest::Purchase(Purchase::offer("starter_pack")),
        Rejection::LimitReached,
        None,
    ));
    app.world_mut().write_message(rejected(
        CofferRequest::ClaimReward(ClaimReward::reward(COIN_REWARD_ID)),
        Rejection::RateLimited,
        Some(12_500),
    ));
    app.update();
    let toasts = app.world().resource::<Toasts>();
    assert!(toasts.contains("Not enough money for sword"), "{toasts:?}");
    assert!(
        toasts.contains("starter_pack: purchase limit reached"),
        "{toasts:?}"
    );
    assert!(toasts.contains("wait 13 s"), "{toasts:?}");
    assert!(toasts.entries.iter().all(|t| t.is_error));

    // Messages leave the screen after a while.
    for _ in 0..((TOAST_TTL_S / 0.05) as u32 + 2) {
        app.update();
    }
    assert!(app.world().resource::<Toasts>().entries.is_empty());
}

#[test]
fn a_lost_connection_is_announced_and_cleared_when_live() {
    let mut connection = CofferConnection {
        state: ConnectionState::Reconnecting,
        last_error: Some("transport error".to_owned()),
        reconnect_count: 0,
    };
    let banner = connection_banner(&connection).expect("a banner");
    assert!(banner.contains("Connection lost"), "{banner}");
    assert!(banner.contains("transport error"), "{banner}");
    connection.state = ConnectionState::Live;
    assert_eq!(connection_banner(&connection), None);
}

#[test]
fn the_hud_and_shop_show_balances_levels_and_prices() {
    let catalog = Catalog {
        catalog: Some(pb::Catalog {
            currencies: vec![pb::Currency {
                id: "credits".to_owned(),
                name: "Credits".to_owned(),
                decimals: 2,
                ..Default::default()
            }],
            offers: vec![pb::Offer {
                id: "potion".to_owned(),
                name: "Health Potion".to_owned(),
                price: coffer_client::money(&[("credits", 250)]),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let mut wallet = Wallet::for_player("p");
    wallet.balances.insert("credits".to_owned(), 1234);
    let hud = hud_text(&wallet, &Inventory::default(), &catalog, &Stats::default());
    assert!(hud.contains("Credits: 12.34"), "{hud}");
    let shop = shop_text(&catalog, &wallet, &Inventory::default(), false);
    assert!(shop.contains("1  Health Potion  -  2.50 Credits"), "{shop}");
    assert!(
        shop.contains("6  gems_100  -  real money (sandbox store)  (needs the store key)"),
        "{shop}"
    );
    let shop = shop_text(&catalog, &wallet, &Inventory::default(), true);
    assert!(
        shop.lines()
            .any(|l| l == "6  gems_100  -  real money (sandbox store)"),
        "{shop}"
    );
}

#[test]
fn without_the_store_key_the_real_money_line_explains_what_is_missing() {
    let mut app = offline_game();
    tap(&mut app, KeyCode::KeyB);
    tap(&mut app, KeyCode::Digit6);
    assert!(app.world().resource::<Sent>().0.is_empty());
    let toasts = app.world().resource::<Toasts>();
    assert!(toasts.contains("needs the sandbox store key"), "{toasts:?}");
    assert!(toasts.entries.iter().all(|t| t.is_error));
}

#[test]
fn a_refused_store_receipt_shows_the_store_reason() {
    let mut app = offline_game();
    app.world_mut().write_message(RequestFailed {
        request: CofferRequest::RedeemReceipt(RedeemReceipt::sandbox("tampered")),
        idempotency_key: "k".to_owned(),
        error: CofferError::ReceiptRefused {
            reason: "BAD_SIGNATURE".to_owned(),
            message: "BAD_SIGNATURE: the signature does not verify".to_owned(),
        },
    });
    app.update();
    let toasts = app.world().resource::<Toasts>();
    assert!(
        toasts.contains(
            "Real-money purchase refused: the store receipt did not verify (BAD_SIGNATURE)"
        ),
        "{toasts:?}"
    );
}

/// Runs frames until `done` holds (bounded).
fn run_until(app: &mut App, what: &str, mut done: impl FnMut(&mut World) -> bool) {
    let start = Instant::now();
    while !done(app.world_mut()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A development server on a free port, its endpoint and admin key.
fn real_server(
    runtime: &tokio::runtime::Runtime,
    data_dir: &std::path::Path,
) -> (coffer_server::RunningServer, String, String) {
    let config = coffer_server::Config::development("127.0.0.1:0".parse().unwrap(), data_dir);
    let server = runtime
        .block_on(coffer_server::start(config))
        .expect("server starts");
    let endpoint = format!("http://{}", server.local_addr);
    let admin_key = server.development_admin_key.clone().expect("dev key");
    (server, endpoint, admin_key)
}

fn player_token(
    runtime: &tokio::runtime::Runtime,
    endpoint: &str,
    admin_key: &str,
    player: &str,
) -> String {
    runtime.block_on(async {
        coffer_client::CofferClient::connect(endpoint.to_owned())
            .await
            .expect("connect")
            .with_token(admin_key)
            .expect("key")
            .issue_player_token(player, 600)
            .await
            .expect("token")
    })
}

/// The game with the plugin against `endpoint`, live.
fn live_game(endpoint: &str, player: &str, token: String, store: SandboxStore) -> App {
    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
            20,
        )))
        .init_resource::<ButtonInput<KeyCode>>()
        .add_plugins(
            CofferPlugin::new(endpoint)
                .with_player(player)
                .with_token(token),
        )
        .insert_resource(store)
        .add_plugins(GamePlugin);
    run_until(&mut app, "live", |w| {
        w.resource::<CofferConnection>().is_live() && w.resource::<Wallet>().is_synced()
    });
    app
}

#[test]
fn against_a_real_server_key_6_buys_100_gems_through_the_sandbox_store() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let (server, endpoint, admin_key) = real_server(&runtime, data_dir.path());

    let token = player_token(&runtime, &endpoint, &admin_key, "buyer");
    let store = SandboxStore::connect(&endpoint, &admin_key, "buyer").expect("store");
    let mut app = live_game(&endpoint, "buyer", token, store);
    let gems_before = app.world().resource::<Wallet>().balance("gems");

    tap(&mut app, KeyCode::KeyB);
    tap(&mut app, KeyCode::Digit6);
    run_until(&mut app, "the gems bought", |w| {
        w.resource::<Toasts>()
            .contains("Bought 100 Gems with real money (sandbox store)")
            || w.resource::<Toasts>().entries.iter().any(|t| t.is_error)
    });
    let toasts = app.world().resource::<Toasts>();
    assert!(toasts.entries.iter().all(|t| !t.is_error), "{toasts:?}");
    assert_eq!(
        app.world().resource::<Wallet>().balance("gems"),
        gems_before + 100
    );

    // A player token cannot pay at the sandbox store: the game says what is missing.
    let token = player_token(&runtime, &endpoint, &admin_key, "kid");
    let store_token = player_token(&runtime, &endpoint, &admin_key, "kid");
    let store = SandboxStore::connect(&endpoint, &store_token, "kid").expect("store");
    let mut app = live_game(&endpoint, "kid", token, store);
    let gems_before = app.world().resource::<Wallet>().balance("gems");
    tap(&mut app, KeyCode::KeyB);
    tap(&mut app, KeyCode::Digit6);
    run_until(&mut app, "the store refusal", |w| {
        w.resource::<Toasts>()
            .contains("needs the sandbox store key")
    });
    assert_eq!(
        app.world().resource::<Wallet>().balance("gems"),
        gems_before
    );
    drop(app);
    drop(server);
}

#[test]
fn against_a_real_server_a_coin_pickup_credits_one_coin_and_a_too_dear_sword_is_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let config =
        coffer_server::Config::development("127.0.0.1:0".parse().unwrap(), data_dir.path());
    let server = runtime
        .block_on(coffer_server::start(config))
        .expect("server starts");
    let endpoint = format!("http://{}", server.local_addr);
    let admin_key = server.development_admin_key.clone().expect("dev key");
    let token = runtime.block_on(async {
        coffer_client::CofferClient::connect(endpoint.clone())
            .await
            .expect("connect")
            .with_token(&admin_key)
            .expect("key")
            .issue_player_token("walker", 600)
            .await
            .expect("token")
    });

    let mut app = App::new();
    app.add_plugins(MinimalPlugins)
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
            20,
        )))
        .init_resource::<ButtonInput<KeyCode>>()
        .add_plugins(
            CofferPlugin::new(endpoint)
                .with_player("walker")
                .with_token(token),
        )
        .add_plugins(GamePlugin);
    run_until(&mut app, "live", |w| {
        w.resource::<CofferConnection>().is_live() && w.resource::<Wallet>().is_synced()
    });
    assert_eq!(app.world().resource::<Wallet>().balance("coins"), 100);

    app.world_mut()
        .spawn((Coin, Transform::from_xyz(0.0, 0.0, 0.5)));
    run_until(&mut app, "the coin credited", |w| {
        w.resource::<Stats>().coins_credited == 1
    });
    assert_eq!(app.world().resource::<Wallet>().balance("coins"), 101);

    tap(&mut app, KeyCode::KeyB);
    tap(&mut app, KeyCode::Digit2);
    run_until(&mut app, "the refusal", |w| {
        w.resource::<Toasts>()
            .contains("Not enough money for Iron Sword")
    });
    assert_eq!(app.world().resource::<Inventory>().quantity("sword"), 0);
    assert_eq!(app.world().resource::<Wallet>().balance("coins"), 101);
    drop(app);
    drop(server);
}
