//! The Coffer demo game: walk around, pick up coins (each one a rate-limited `coin_pickup`
//! reward claimed from the server), open the shop to buy potions, a sword, the starter pack or
//! gems (with coins, or with "real money" through Coffer's sandbox store), and upgrade your speed
//! boots to run faster. Balances and the inventory on screen are
//! `bevy_coffer`'s live resources; every rejection and a lost connection show up as a message.
//!
//! [`GamePlugin`] holds the rules and runs headless (the tests drive it with `MinimalPlugins`);
//! [`GameViewPlugin`] adds the camera and the HUD.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::mpsc;

use bevy::prelude::*;
use bevy_coffer::prelude::*;
use bevy_coffer::proto as pb;
use coffer_client::CofferClient;

/// Half the size of the playing field, in pixels (the field is centred on the origin).
pub const FIELD_HALF_SIZE: Vec2 = Vec2::new(600.0, 300.0);
/// Walking speed without boots, in pixels per second.
pub const SPEED_BASE_PX_PER_S: f32 = 200.0;
/// Extra speed per level of the speed boots, in pixels per second.
pub const SPEED_PER_BOOTS_LEVEL_PX_PER_S: f32 = 70.0;
/// Coins lying on the field at most.
pub const COINS_ON_FIELD_MAX: usize = 8;
/// Seconds between two new coins.
pub const COIN_SPAWN_INTERVAL_S: f32 = 1.0;
/// How close the player must come to pick a coin up, in pixels.
pub const PICKUP_RADIUS_PX: f32 = 32.0;
/// Messages shown at once.
pub const TOASTS_MAX: usize = 5;
/// Seconds a message stays on screen.
pub const TOAST_TTL_S: f32 = 5.0;
/// The reward a coin pickup claims.
pub const COIN_REWARD_ID: &str = "coin_pickup";
/// The upgradable item that makes the player faster.
pub const BOOTS_ITEM_ID: &str = "speed_boots";
/// The sandbox store product the shop sells for "real money".
pub const GEMS_PRODUCT_ID: &str = "gems_100";

/// How fast the player walks with boots at `boots_level` (0 without boots).
pub fn speed_px_per_s(boots_level: u32) -> f32 {
    SPEED_BASE_PX_PER_S + SPEED_PER_BOOTS_LEVEL_PX_PER_S * boots_level.min(10) as f32
}

/// What a shop line does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopAction {
    /// Buy this offer.
    Buy(&'static str),
    /// Raise this item one level.
    Upgrade(&'static str),
    /// Buy this sandbox store product with "real money", then redeem its receipt.
    BuyWithRealMoney(&'static str),
}

/// The shop, in key order: key `1` is the first line.
pub const SHOP: [ShopAction; 6] = [
    ShopAction::Buy("potion"),
    ShopAction::Buy("sword"),
    ShopAction::Buy("starter_pack"),
    ShopAction::Buy("gem_pouch"),
    ShopAction::Upgrade(BOOTS_ITEM_ID),
    ShopAction::BuyWithRealMoney(GEMS_PRODUCT_ID),
];

/// What the player reads when the game has no sandbox store key.
pub const NO_STORE_TEXT: &str = "Buying gems with real money needs the sandbox store key: \
     start the game with --embedded, or with --admin-key KEY";

/// The platform store, played by Coffer's sandbox store: paying "real money" there gives a
/// signed receipt, which the game then redeems with [`RedeemReceipt`]. In a real game the
/// receipt comes from StoreKit or Google Play; here the game asks the server's
/// `IssueSandboxReceipt` with an admin or game-server key (a development server only).
///
/// Receipts are fetched on a small runtime of its own, so a frame never waits for the store.
#[derive(Resource, Default)]
pub struct SandboxStore {
    backend: Option<StoreBackend>,
}

struct StoreBackend {
    runtime: Option<tokio::runtime::Runtime>,
    client: CofferClient,
    player_id: String,
    sender: mpsc::Sender<Result<String, String>>,
    receiver: Mutex<mpsc::Receiver<Result<String, String>>>,
}

impl Drop for StoreBackend {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl SandboxStore {
    /// No store: the real-money shop line explains how to get one.
    pub fn disabled() -> Self {
        SandboxStore::default()
    }

    /// The sandbox store of the server at `endpoint`, reached with `store_key` (an admin or
    /// game-server API key), selling to `player_id`.
    pub fn connect(endpoint: &str, store_key: &str, player_id: &str) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sandbox-store")
            .enable_all()
            .build()
            .map_err(|e| format!("sandbox store runtime: {e}"))?;
        let client = {
            let _context = runtime.enter();
            CofferClient::connect_lazy(endpoint.to_owned())
                .and_then(|c| c.with_token(store_key))
                .map_err(|e| format!("sandbox store at {endpoint}: {e}"))?
        };
        let (sender, receiver) = mpsc::channel();
        Ok(SandboxStore {
            backend: Some(StoreBackend {
                runtime: Some(runtime),
                client,
                player_id: player_id.to_owned(),
                sender,
                receiver: Mutex::new(receiver),
            }),
        })
    }

    /// True when the game can pay at the store.
    pub fn is_available(&self) -> bool {
        self.backend.is_some()
    }

    /// Pays for one unit of `product_id`; the receipt (or the store's refusal) arrives later
    /// through [`SandboxStore::receipts`]. False when there is no store.
    pub fn buy(&self, product_id: &str) -> bool {
        let Some(backend) = &self.backend else {
            return false;
        };
        let Some(runtime) = &backend.runtime else {
            return false;
        };
        let mut client = backend.client.clone();
        let player_id = backend.player_id.clone();
        let product_id = product_id.to_owned();
        let sender = backend.sender.clone();
        runtime.spawn(async move {
            let result = client
                .issue_sandbox_receipt(&player_id, &product_id, 1)
                .await
                .map_err(|error| match error.code() {
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                        NO_STORE_TEXT.to_owned()
                    }
                    _ => format!("The sandbox store refused the payment: {error}"),
                });
            let _ = sender.send(result);
        });
        true
    }

    /// Receipts (or refusals) that arrived since the last call.
    pub fn receipts(&self) -> Vec<Result<String, String>> {
        let Some(backend) = &self.backend else {
            return Vec::new();
        };
        match backend.receiver.lock() {
            Ok(receiver) => receiver.try_iter().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The player's character.
#[derive(Component, Debug)]
pub struct Player;

/// A coin lying on the field.
#[derive(Component, Debug)]
pub struct Coin;

/// Whether the shop panel is open.
#[derive(Resource, Debug, Default, PartialEq, Eq)]
pub struct ShopOpen(pub bool);

/// Counters for the HUD.
#[derive(Resource, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Coins walked over.
    pub coins_picked_up: u32,
    /// Pickups the server credited.
    pub coins_credited: u32,
}

/// Where and when coins appear. A small deterministic generator: no randomness crate needed.
#[derive(Resource, Debug)]
pub struct CoinField {
    rng_state: u64,
    until_next_coin_s: f32,
}

impl CoinField {
    /// A field whose coin positions follow from `seed`.
    pub fn new(seed: u64) -> Self {
        CoinField {
            rng_state: seed | 1,
            until_next_coin_s: 0.0,
        }
    }

    /// A value in `[0, 1)` (xorshift64*).
    fn next_unit(&mut self) -> f32 {
        self.rng_state ^= self.rng_state >> 12;
        self.rng_state ^= self.rng_state << 25;
        self.rng_state ^= self.rng_state >> 27;
        let value = self.rng_state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (value >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A position inside the field, away from its edges.
    fn next_position(&mut self) -> Vec2 {
        let margin = 40.0;
        let x = (self.next_unit() * 2.0 - 1.0) * (FIELD_HALF_SIZE.x - margin);
        let y = (self.next_unit() * 2.0 - 1.0) * (FIELD_HALF_SIZE.y - margin);
        Vec2::new(x, y)
    }
}

impl Default for CoinField {
    fn default() -> Self {
        CoinField::new(0x9E37_79B9_7F4A_7C15)
    }
}

/// One message for the player.
#[derive(Debug, Clone, PartialEq)]
pub struct Toast {
    /// What to show.
    pub text: String,
    /// Shown in red when true.
    pub is_error: bool,
    /// Seconds left on screen.
    pub ttl_s: f32,
}

/// The latest messages, newest last.
#[derive(Resource, Debug, Default)]
pub struct Toasts {
    /// Messages on screen.
    pub entries: VecDeque<Toast>,
}

impl Toasts {
    /// Shows `text`; the same text already on screen is refreshed rather than repeated.
    pub fn push(&mut self, text: impl Into<String>, is_error: bool) {
        let text = text.into();
        self.entries.retain(|t| t.text != text);
        if self.entries.len() >= TOASTS_MAX {
            self.entries.pop_front();
        }
        self.entries.push_back(Toast {
            text,
            is_error,
            ttl_s: TOAST_TTL_S,
        });
    }

    /// True when a message containing `part` is on screen.
    pub fn contains(&self, part: &str) -> bool {
        self.entries.iter().any(|t| t.text.contains(part))
    }
}

/// The game's rules: movement, coins, shop keys and messages. Needs `bevy_coffer`'s resources
/// and messages (add [`CofferPlugin`] first) and keyboard input.
pub struct GamePlugin;

impl Plugin for GamePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<ShopOpen>()
            .init_resource::<Stats>()
            .init_resource::<CoinField>()
            .init_resource::<Toasts>()
            .init_resource::<SandboxStore>()
            .add_systems(Startup, spawn_field)
            .add_systems(
                Update,
                (
                    move_player,
                    spawn_coins,
                    collect_coins,
                    shop_keys,
                    redeem_store_receipts,
                    report_outcomes,
                    expire_toasts,
                )
                    .chain()
                    .after(CofferSystems::Receive)
                    .before(CofferSystems::Send),
            );
    }
}

fn spawn_field(mut commands: Commands) {
    commands.spawn((
        Sprite::from_color(Color::srgb(0.10, 0.22, 0.16), FIELD_HALF_SIZE * 2.0),
        Transform::from_xyz(0.0, 0.0, -1.0),
    ));
    commands.spawn((
        Player,
        Sprite::from_color(Color::srgb(0.30, 0.62, 1.0), Vec2::splat(36.0)),
        Transform::from_xyz(0.0, 0.0, 1.0),
    ));
}

fn move_player(
    keys: Res<ButtonInput<KeyCode>>,
    time: Res<Time>,
    inventory: Res<Inventory>,
    mut player: Single<&mut Transform, With<Player>>,
) {
    let mut direction = Vec2::ZERO;
    if keys.any_pressed([KeyCode::ArrowLeft, KeyCode::KeyA]) {
        direction.x -= 1.0;
    }
    if keys.any_pressed([KeyCode::ArrowRight, KeyCode::KeyD]) {
        direction.x += 1.0;
    }
    if keys.any_pressed([KeyCode::ArrowDown, KeyCode::KeyS]) {
        direction.y -= 1.0;
    }
    if keys.any_pressed([KeyCode::ArrowUp, KeyCode::KeyW]) {
        direction.y += 1.0;
    }
    let step = direction.normalize_or_zero()
        * speed_px_per_s(inventory.level(BOOTS_ITEM_ID))
        * time.delta_secs();
    let limit = FIELD_HALF_SIZE - Vec2::splat(18.0);
    let position = (player.translation.truncate() + step).clamp(-limit, limit);
    player.translation = position.extend(player.translation.z);
}

fn spawn_coins(
    mut commands: Commands,
    time: Res<Time>,
    mut field: ResMut<CoinField>,
    coins: Query<(), With<Coin>>,
) {
    field.until_next_coin_s -= time.delta_secs();
    if field.until_next_coin_s > 0.0 || coins.iter().len() >= COINS_ON_FIELD_MAX {
        return;
    }
    field.until_next_coin_s = COIN_SPAWN_INTERVAL_S;
    let position = field.next_position();
    commands.spawn((
        Coin,
        Sprite::from_color(Color::srgb(1.0, 0.82, 0.20), Vec2::splat(18.0)),
        Transform::from_translation(position.extend(0.5))
            .with_rotation(Quat::from_rotation_z(std::f32::consts::FRAC_PI_4)),
    ));
}

fn collect_coins(
    mut commands: Commands,
    player: Single<&Transform, With<Player>>,
    coins: Query<(Entity, &Transform), With<Coin>>,
    mut claims: MessageWriter<ClaimReward>,
    mut stats: ResMut<Stats>,
) {
    let at = player.translation.truncate();
    for (coin, transform) in &coins {
        if transform.translation.truncate().distance(at) <= PICKUP_RADIUS_PX {
            commands.entity(coin).despawn();
            claims.write(ClaimReward::reward(COIN_REWARD_ID));
            stats.coins_picked_up += 1;
        }
    }
}

const DIGIT_KEYS: [KeyCode; 6] = [
    KeyCode::Digit1,
    KeyCode::Digit2,
    KeyCode::Digit3,
    KeyCode::Digit4,
    KeyCode::Digit5,
    KeyCode::Digit6,
];

#[allow(clippy::too_many_arguments)]
fn shop_keys(
    keys: Res<ButtonInput<KeyCode>>,
    store: Res<SandboxStore>,
    catalog: Res<Catalog>,
    mut toasts: ResMut<Toasts>,
    mut shop: ResMut<ShopOpen>,
    mut purchases: MessageWriter<Purchase>,
    mut upgrades: MessageWriter<Upgrade>,
    mut consumes: MessageWriter<Consume>,
) {
    if keys.just_pressed(KeyCode::KeyB) || keys.just_pressed(KeyCode::Tab) {
        shop.0 = !shop.0;
    }
    if keys.just_pressed(KeyCode::Escape) {
        shop.0 = false;
    }
    if keys.just_pressed(KeyCode::KeyU) {
        upgrades.write(Upgrade::next_level(BOOTS_ITEM_ID));
    }
    if keys.just_pressed(KeyCode::KeyP) {
        consumes.write(Consume::item("potion", 1));
    }
    if !shop.0 {
        return;
    }
    for (key, action) in DIGIT_KEYS.iter().zip(SHOP) {
        if keys.just_pressed(*key) {
            match action {
                ShopAction::Buy(offer) => {
                    purchases.write(Purchase::offer(offer));
                }
                ShopAction::Upgrade(item) => {
                    upgrades.write(Upgrade::next_level(item));
                }
                ShopAction::BuyWithRealMoney(product) => {
                    if store.buy(product) {
                        toasts.push(
                            format!(
                                "Paying for {} at the sandbox store...",
                                store_product_name(&catalog, product)
                            ),
                            false,
                        );
                    } else {
                        toasts.push(NO_STORE_TEXT, true);
                    }
                }
            }
        }
    }
}

/// Hands each receipt the store gave to the plugin to redeem; shows the store's refusals.
fn redeem_store_receipts(
    store: Res<SandboxStore>,
    mut receipts: MessageWriter<RedeemReceipt>,
    mut toasts: ResMut<Toasts>,
) {
    for result in store.receipts() {
        match result {
            Ok(payload) => {
                receipts.write(RedeemReceipt::sandbox(payload));
            }
            Err(message) => toasts.push(message, true),
        }
    }
}

/// The display name of a sandbox store product.
pub fn store_product_name(catalog: &Catalog, product_id: &str) -> String {
    catalog
        .store_product(pb::StorePlatform::Sandbox, product_id)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| product_id.to_owned())
}

/// What the player reads when a request went through.
pub fn success_text(done: &RequestCompleted, catalog: &Catalog, inventory: &Inventory) -> String {
    match &done.request {
        CofferRequest::Purchase(p) => {
            let name = catalog
                .offer(&p.offer_id)
                .map(|o| o.name.clone())
                .unwrap_or_else(|| p.offer_id.clone());
            format!("Bought {name}")
        }
        CofferRequest::Upgrade(u) => format!(
            "{} upgraded to level {}",
            item_name(catalog, &u.item_id),
            inventory.level(&u.item_id)
        ),
        CofferRequest::Consume(c) => format!("Used {}", item_name(catalog, &c.item_id)),
        CofferRequest::ClaimReward(r) => format!("Claimed {}", r.reward_id),
        CofferRequest::RedeemReceipt(_) => format!(
            "Bought {} with real money (sandbox store)",
            store_product_name(catalog, &done.transaction.catalog_entry_id)
        ),
    }
}

fn item_name(catalog: &Catalog, item_id: &str) -> String {
    catalog
        .item(item_id)
        .map(|i| i.name.clone())
        .unwrap_or_else(|| item_id.to_owned())
}

fn request_name(request: &CofferRequest, catalog: &Catalog) -> String {
    match request {
        CofferRequest::Purchase(p) => catalog
            .offer(&p.offer_id)
            .map(|o| o.name.clone())
            .unwrap_or_else(|| p.offer_id.clone()),
        CofferRequest::Upgrade(u) => format!("{} upgrade", item_name(catalog, &u.item_id)),
        CofferRequest::Consume(c) => item_name(catalog, &c.item_id),
        CofferRequest::ClaimReward(r) => catalog
            .reward(&r.reward_id)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| r.reward_id.clone()),
        CofferRequest::RedeemReceipt(_) => "Real-money purchase".to_owned(),
    }
}

/// What the player reads when a request failed: the rejection in plain words.
pub fn failure_text(failure: &RequestFailed, catalog: &Catalog) -> String {
    let what = request_name(&failure.request, catalog);
    match &failure.error {
        CofferError::Rejected {
            rejection,
            retry_after_ms,
            ..
        } => match rejection {
            Rejection::InsufficientFunds => format!("Not enough money for {what}"),
            Rejection::LimitReached => format!("{what}: purchase limit reached"),
            Rejection::RateLimited => {
                let wait_s = (retry_after_ms.unwrap_or(0).max(0) as u64).div_ceil(1000);
                format!("Too many coin pickups: wait {wait_s} s before the next one counts")
            }
            Rejection::MaxLevelReached => format!("{what}: already at the top level"),
            Rejection::StackLimitExceeded => format!("{what}: you cannot hold more"),
            Rejection::InsufficientItems => format!("You have no {what} left"),
            Rejection::NotAvailable => format!("{what} is not on sale right now"),
            Rejection::PriceChanged | Rejection::LevelChanged => {
                format!("{what}: the price changed, try again")
            }
            other => format!("{what} refused: {}", other.as_str_name()),
        },
        CofferError::ReceiptRefused { reason, .. } => {
            format!("{what} refused: the store receipt did not verify ({reason})")
        }
        CofferError::Unavailable { .. } => {
            format!("{what} failed: the server cannot be reached")
        }
        other => format!("{what} failed: {other}"),
    }
}

/// The banner shown while the server is not reachable, if any.
pub fn connection_banner(connection: &CofferConnection) -> Option<String> {
    match connection.state {
        ConnectionState::Live => None,
        ConnectionState::Connecting => Some("Connecting to the Coffer server...".to_owned()),
        ConnectionState::Reconnecting => Some(format!(
            "Connection lost: reconnecting... (your coins are safe on the server){}",
            connection
                .last_error
                .as_deref()
                .map(|e| format!("\n{e}"))
                .unwrap_or_default()
        )),
        ConnectionState::Failed => Some(format!(
            "Cannot use the server: {}",
            connection.last_error.as_deref().unwrap_or("bad settings")
        )),
    }
}

fn report_outcomes(
    mut completed: MessageReader<RequestCompleted>,
    mut failed: MessageReader<RequestFailed>,
    catalog: Res<Catalog>,
    inventory: Res<Inventory>,
    mut toasts: ResMut<Toasts>,
    mut stats: ResMut<Stats>,
) {
    for done in completed.read() {
        if matches!(done.request, CofferRequest::ClaimReward(_)) {
            // Coin pickups are frequent: the HUD counter shows them, not a message.
            stats.coins_credited += 1;
            continue;
        }
        toasts.push(success_text(done, &catalog, &inventory), false);
    }
    for failure in failed.read() {
        toasts.push(failure_text(failure, &catalog), true);
    }
}

fn expire_toasts(time: Res<Time>, mut toasts: ResMut<Toasts>) {
    if toasts.entries.is_empty() {
        return;
    }
    let dt = time.delta_secs();
    for toast in toasts.entries.iter_mut() {
        toast.ttl_s -= dt;
    }
    toasts.entries.retain(|t| t.ttl_s > 0.0);
}

/// The HUD text: balances, items and the boots' effect.
pub fn hud_text(
    wallet: &Wallet,
    inventory: &Inventory,
    catalog: &Catalog,
    stats: &Stats,
) -> String {
    let balances = ["coins", "gems", "credits"]
        .iter()
        .map(|c| {
            let name = catalog.currency(c).map(|c| c.name.as_str()).unwrap_or(c);
            format!("{name}: {}", catalog.format_amount(c, wallet.balance(c)))
        })
        .collect::<Vec<_>>()
        .join("    ");
    let boots = inventory.level(BOOTS_ITEM_ID);
    let boots_line = if boots == 0 {
        format!("No boots: speed {:.0}", speed_px_per_s(0))
    } else {
        format!(
            "Speed Boots level {boots}/{}: speed {:.0}",
            catalog.level_count(BOOTS_ITEM_ID),
            speed_px_per_s(boots)
        )
    };
    let sword = if inventory.quantity("sword") > 0 {
        "Iron Sword"
    } else {
        "no sword"
    };
    format!(
        "{balances}\n{boots_line}\nPotions: {}    {sword}\nCoins picked up: {} (credited {})",
        inventory.quantity("potion"),
        stats.coins_picked_up,
        stats.coins_credited
    )
}

/// The shop panel's text. `store_available`: whether the sandbox store can be paid at.
pub fn shop_text(
    catalog: &Catalog,
    wallet: &Wallet,
    inventory: &Inventory,
    store_available: bool,
) -> String {
    let mut lines = vec![
        "SHOP  (number to buy, B to close)".to_owned(),
        String::new(),
    ];
    for (index, action) in SHOP.iter().enumerate() {
        let key = index + 1;
        let line = match action {
            ShopAction::Buy(offer_id) => match catalog.offer(offer_id) {
                Some(offer) => {
                    let limit = offer
                        .limit_per_player
                        .map(|l| format!("  ({}/{l} bought)", wallet.purchases_of(offer_id)))
                        .unwrap_or_default();
                    format!(
                        "{key}  {}  -  {}{limit}",
                        offer.name,
                        catalog.format_price(&offer.price)
                    )
                }
                None => format!("{key}  {offer_id} (loading...)"),
            },
            ShopAction::Upgrade(item_id) => {
                let next = inventory.level(item_id) + 1;
                let name = item_name(catalog, item_id);
                match catalog.level_price(item_id, next) {
                    Some(price) => format!(
                        "{key}  {name} level {next}  -  {}",
                        catalog.format_price(price)
                    ),
                    None => format!("{key}  {name}  -  top level reached"),
                }
            }
            ShopAction::BuyWithRealMoney(product_id) => {
                let note = if store_available {
                    ""
                } else {
                    "  (needs the store key)"
                };
                format!(
                    "{key}  {}  -  real money (sandbox store){note}",
                    store_product_name(catalog, product_id)
                )
            }
        };
        lines.push(line);
    }
    lines.join("\n")
}

/// Marks the HUD text.
#[derive(Component)]
pub struct HudText;
/// Marks the shop panel.
#[derive(Component)]
pub struct ShopPanel;
/// Marks the shop text.
#[derive(Component)]
pub struct ShopText;
/// Marks the message list (one text child per message).
#[derive(Component)]
pub struct ToastList;
/// Marks the connection banner.
#[derive(Component)]
pub struct BannerText;

/// Camera and HUD: needs rendering, windows and text (the game binary adds `DefaultPlugins`).
pub struct GameViewPlugin;

impl Plugin for GameViewPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(ClearColor(Color::srgb(0.05, 0.07, 0.09)))
            .add_systems(Startup, spawn_view)
            .add_systems(Update, update_view.after(report_outcomes));
    }
}

fn absolute(top: f32, left: Option<f32>, right: Option<f32>) -> Node {
    Node {
        position_type: PositionType::Absolute,
        top: Val::Px(top),
        left: left.map(Val::Px).unwrap_or(Val::Auto),
        right: right.map(Val::Px).unwrap_or(Val::Auto),
        ..default()
    }
}

fn spawn_view(mut commands: Commands) {
    commands.spawn(Camera2d);
    commands.spawn((
        HudText,
        Text::new(""),
        TextFont::from_font_size(20.0),
        TextColor(Color::WHITE),
        absolute(12.0, Some(16.0), None),
    ));
    commands.spawn((
        BannerText,
        Text::new(""),
        TextFont::from_font_size(22.0),
        TextColor(Color::srgb(1.0, 0.45, 0.40)),
        absolute(12.0, None, Some(16.0)),
    ));
    commands.spawn((
        ToastList,
        Node {
            position_type: PositionType::Absolute,
            bottom: Val::Px(40.0),
            left: Val::Px(16.0),
            flex_direction: FlexDirection::Column,
            ..default()
        },
    ));
    commands.spawn((
        Text::new("Move: WASD / arrows    Shop: B (6: gems for real money)    Upgrade boots: U    Drink potion: P"),
        TextFont::from_font_size(16.0),
        TextColor(Color::srgb(0.65, 0.70, 0.75)),
        Node {
            position_type: PositionType::Absolute,
            bottom: Val::Px(12.0),
            left: Val::Px(16.0),
            ..default()
        },
    ));
    commands
        .spawn((
            ShopPanel,
            Node {
                position_type: PositionType::Absolute,
                top: Val::Px(150.0),
                right: Val::Px(40.0),
                padding: UiRect::all(Val::Px(16.0)),
                ..default()
            },
            BackgroundColor(Color::srgba(0.0, 0.0, 0.0, 0.8)),
            Visibility::Hidden,
        ))
        .with_children(|panel| {
            panel.spawn((
                ShopText,
                Text::new(""),
                TextFont::from_font_size(20.0),
                TextColor(Color::srgb(1.0, 0.92, 0.6)),
            ));
        });
}

#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn update_view(
    mut commands: Commands,
    wallet: Res<Wallet>,
    inventory: Res<Inventory>,
    catalog: Res<Catalog>,
    stats: Res<Stats>,
    toasts: Res<Toasts>,
    shop: Res<ShopOpen>,
    connection: Res<CofferConnection>,
    store: Res<SandboxStore>,
    mut texts: ParamSet<(
        Single<&mut Text, With<HudText>>,
        Single<&mut Text, With<ShopText>>,
        Single<&mut Text, With<BannerText>>,
    )>,
    toast_list: Single<Entity, With<ToastList>>,
    mut shown_toasts: Local<Vec<(String, bool)>>,
    mut panel: Single<&mut Visibility, With<ShopPanel>>,
    mut player: Single<&mut Sprite, With<Player>>,
) {
    let hud = hud_text(&wallet, &inventory, &catalog, &stats);
    set_text(&mut texts.p0(), hud);
    set_text(
        &mut texts.p1(),
        shop_text(&catalog, &wallet, &inventory, store.is_available()),
    );
    set_text(
        &mut texts.p2(),
        connection_banner(&connection).unwrap_or_default(),
    );

    let wanted: Vec<(String, bool)> = toasts
        .entries
        .iter()
        .map(|t| (t.text.clone(), t.is_error))
        .collect();
    if *shown_toasts != wanted {
        commands.entity(*toast_list).despawn_children();
        commands.entity(*toast_list).with_children(|list| {
            for (text, is_error) in &wanted {
                let color = if *is_error {
                    Color::srgb(1.0, 0.50, 0.42)
                } else {
                    Color::srgb(0.65, 1.0, 0.65)
                };
                list.spawn((
                    Text::new(text.clone()),
                    TextFont::from_font_size(20.0),
                    TextColor(color),
                ));
            }
        });
        *shown_toasts = wanted;
    }

    let visibility = if shop.0 {
        Visibility::Inherited
    } else {
        Visibility::Hidden
    };
    if **panel != visibility {
        **panel = visibility;
    }
    // The boots show on the character: it turns from blue to bright green as they level up.
    let level = inventory.level(BOOTS_ITEM_ID).min(5) as f32 / 5.0;
    let color = Color::srgb(0.30 - 0.15 * level, 0.62 + 0.35 * level, 1.0 - 0.55 * level);
    if player.color != color {
        player.color = color;
    }
}

fn set_text(text: &mut Text, value: String) {
    if text.0 != value {
        text.0 = value;
    }
}
