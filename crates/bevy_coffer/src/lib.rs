//! # bevy_coffer
//!
//! A [Bevy](https://bevy.org) plugin for Coffer, the in-game economy server. Add
//! [`CofferPlugin`], read the player's [`Wallet`], [`Inventory`] and the [`Catalog`] as
//! resources that stay live, and write request messages ([`Purchase`], [`Upgrade`],
//! [`Consume`], [`ClaimReward`], [`RedeemReceipt`]); each one is answered by a
//! [`RequestCompleted`] or a [`RequestFailed`] carrying the typed rejection (or, for a store
//! receipt that does not verify, the store's reason such as `BAD_SIGNATURE`).
//!
//! ```no_run
//! use bevy::prelude::*;
//! use bevy_coffer::prelude::*;
//!
//! fn buy(mut purchases: MessageWriter<Purchase>) {
//!     purchases.write(Purchase::offer("potion"));
//! }
//!
//! fn outcome(mut failed: MessageReader<RequestFailed>) {
//!     for failure in failed.read() {
//!         if failure.error.rejection() == Some(Rejection::InsufficientFunds) {
//!             println!("not enough coins");
//!         }
//!     }
//! }
//!
//! App::new()
//!     .add_plugins(MinimalPlugins)
//!     .add_plugins(CofferPlugin::new("http://127.0.0.1:50051").with_player("ada"))
//!     .add_systems(Startup, buy)
//!     .add_systems(Update, outcome)
//!     .run();
//! ```
//!
//! ## How it works
//! The plugin owns a small tokio runtime (one worker thread) that does all network work, so a
//! frame never waits on the network. One task loads the catalog and the wallet, then follows
//! the server's `Subscribe` stream; when the link drops it reconnects with the
//! [`ReconnectPolicy`]'s backoff and resumes from the last version it saw, so no change is
//! missed or applied twice. Each request gets an idempotency key and is retried with that same
//! key on transient failures, so a retry never buys twice. A [`RedeemReceipt`] is sent the same
//! way; there the store's transaction id is what makes it count once: redeeming the same
//! receipt again completes with the original transaction, and a receipt that does not verify
//! fails with [`CofferError::ReceiptRefused`] and the store's reason (`BAD_SIGNATURE`…).
//!
//! Amounts are integer minor units (`i64`); [`Catalog::format_amount`] shows them with the
//! currency's decimals.

#![forbid(missing_docs)]
#![forbid(unsafe_code)]

mod keys;
mod messages;
mod net;
mod resources;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use coffer_client::pb;

pub use coffer_client::{Rejection, pb as proto};
pub use messages::{
    ClaimReward, CofferError, CofferRequest, Consume, Purchase, RedeemReceipt, RequestCompleted,
    RequestFailed, Upgrade,
};
pub use resources::{
    Catalog, CofferConnection, ConnectionState, Inventory, ItemStack, Wallet, format_minor_units,
};

use keys::KeyGenerator;
use net::{Call, Credentials, InFlight, NetClient, NetEvent};

/// Everything a game usually needs: `use bevy_coffer::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Catalog, ClaimReward, CofferConnection, CofferError, CofferPlugin, CofferRequest,
        CofferSystems, ConnectionState, Consume, Inventory, Purchase, ReconnectPolicy,
        RedeemReceipt, Rejection, RequestCompleted, RequestFailed, Upgrade, Wallet,
    };
}

/// Requests waiting for the catalog or wallet (or for a free slot) before the plugin refuses
/// new ones with [`CofferError::Busy`].
pub const REQUESTS_WAITING_MAX: usize = 256;
/// Requests on the network at once; more wait their turn.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// Network messages applied per frame at most (the rest wait for the next frame).
pub const NET_EVENTS_PER_FRAME_MAX: usize = 1024;

/// How hard the plugin tries when the server does not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Delay before the first retry; it doubles with each failure up to `retry_delay_max`.
    pub retry_delay_initial: Duration,
    /// Longest delay between two attempts.
    pub retry_delay_max: Duration,
    /// Attempts per request (first try included) before it fails with
    /// [`CofferError::Unavailable`]. The change stream never gives up.
    pub request_attempts_max: u32,
    /// How long one attempt (or one connection attempt) may take.
    pub request_timeout: Duration,
    /// How long a request may wait for the first catalog and wallet before it fails.
    pub request_wait_max: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            retry_delay_initial: Duration::from_millis(100),
            retry_delay_max: Duration::from_secs(2),
            request_attempts_max: 20,
            request_timeout: Duration::from_secs(5),
            request_wait_max: Duration::from_secs(30),
        }
    }
}

impl ReconnectPolicy {
    /// The delay before retry `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        net::backoff(self.retry_delay_initial, self.retry_delay_max, attempt)
    }
}

/// Order your systems around the plugin's: `.after(CofferSystems::Receive)` to see this frame's
/// outcomes and updated resources, `.before(CofferSystems::Send)` to have requests leave this
/// frame (both hold by default for systems in `Update`).
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CofferSystems {
    /// In `PreUpdate`: applies what the network delivered to the resources and writes outcome
    /// messages.
    Receive,
    /// In `PostUpdate`: reads request messages and hands them to the network runtime.
    Send,
}

/// Connects a Bevy app to a Coffer server.
///
/// # Settings
/// - endpoint: the server's URL (default `http://127.0.0.1:50051`), [`CofferPlugin::new`];
/// - player: whose wallet to follow and spend from (default `player-1`),
///   [`CofferPlugin::with_player`];
/// - token: when set, every call carries the gRPC metadata `authorization: Bearer <token>`,
///   [`CofferPlugin::with_token`];
/// - reconnect policy: [`CofferPlugin::with_reconnect_policy`].
///
/// # What it adds
/// - Resources: [`Wallet`], [`Inventory`], [`Catalog`], [`CofferConnection`], kept live.
/// - Messages: requests [`Purchase`], [`Upgrade`], [`Consume`], [`ClaimReward`],
///   [`RedeemReceipt`]; outcomes [`RequestCompleted`], [`RequestFailed`].
/// - Systems:
///   - `receive_from_network` in `PreUpdate`, set [`CofferSystems::Receive`]: drains the
///     network channel (at most [`NET_EVENTS_PER_FRAME_MAX`] per frame) into the resources
///     and writes the outcome messages;
///   - `send_requests` in `PostUpdate`, set [`CofferSystems::Send`]: gives each request
///     message an idempotency key, quotes catalog prices, and spawns the call on the runtime.
/// - A tokio runtime with one worker thread named `coffer-net`, owned by a private resource
///   and shut down with the app; it runs the change-stream task and the requests.
#[derive(Debug, Clone)]
pub struct CofferPlugin {
    /// The server's URL.
    pub endpoint: String,
    /// The player whose wallet the game shows and spends.
    pub player_id: String,
    /// Player token sent as `authorization: Bearer <token>`, when set.
    pub token: Option<String>,
    /// Retry and reconnect behaviour.
    pub reconnect: ReconnectPolicy,
}

impl Default for CofferPlugin {
    fn default() -> Self {
        CofferPlugin::new("http://127.0.0.1:50051")
    }
}

impl CofferPlugin {
    /// A plugin for the server at `endpoint`, e.g. `http://127.0.0.1:50051`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        CofferPlugin {
            endpoint: endpoint.into(),
            player_id: "player-1".to_owned(),
            token: None,
            reconnect: ReconnectPolicy::default(),
        }
    }

    /// Follow and spend the wallet of `player_id`.
    pub fn with_player(mut self, player_id: impl Into<String>) -> Self {
        self.player_id = player_id.into();
        self
    }

    /// Send `authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Use these retry and reconnect settings.
    pub fn with_reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }
}

impl Plugin for CofferPlugin {
    fn build(&self, app: &mut App) {
        let (to_game, from_net) = tokio::sync::mpsc::channel(net::TO_GAME_QUEUE_LEN);
        let mut connection = CofferConnection::default();
        let (runtime, client) = match start_network(self, to_game.clone()) {
            Ok((runtime, client)) => (Some(runtime), Some(client)),
            Err(message) => {
                tracing::error!(%message, "coffer plugin misconfigured; nothing will be sent");
                connection.state = ConnectionState::Failed;
                connection.last_error = Some(message);
                (None, None)
            }
        };
        app.insert_resource(Wallet::for_player(&self.player_id))
            .init_resource::<Inventory>()
            .init_resource::<Catalog>()
            .insert_resource(connection)
            .insert_resource(CofferNet {
                runtime,
                client,
                player_id: self.player_id.clone(),
                policy: self.reconnect.clone(),
                to_game,
                from_net,
                in_flight: InFlight::default(),
                keys: KeyGenerator::new(),
                waiting: VecDeque::new(),
                held: Vec::new(),
            })
            .add_message::<Purchase>()
            .add_message::<Upgrade>()
            .add_message::<Consume>()
            .add_message::<ClaimReward>()
            .add_message::<RedeemReceipt>()
            .add_message::<RequestCompleted>()
            .add_message::<RequestFailed>()
            .configure_sets(PreUpdate, CofferSystems::Receive)
            .configure_sets(PostUpdate, CofferSystems::Send)
            .add_systems(
                PreUpdate,
                receive_from_network.in_set(CofferSystems::Receive),
            )
            .add_systems(PostUpdate, send_requests.in_set(CofferSystems::Send));
    }
}

/// Builds the runtime, the client and the sync task.
fn start_network(
    plugin: &CofferPlugin,
    to_game: tokio::sync::mpsc::Sender<NetEvent>,
) -> Result<(tokio::runtime::Runtime, NetClient), String> {
    let credentials = Credentials::new(plugin.token.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("coffer-net")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the network runtime: {e}"))?;
    let client = {
        let _context = runtime.enter();
        NetClient::connect_lazy(&plugin.endpoint, credentials, &plugin.reconnect)?
    };
    runtime.spawn(net::sync_forever(
        client.clone(),
        plugin.player_id.clone(),
        plugin.reconnect.clone(),
        to_game,
    ));
    Ok((runtime, client))
}

/// A request between its message and its call.
struct Waiting {
    request: CofferRequest,
    idempotency_key: String,
    since: Instant,
}

/// The plugin's network state (private).
#[derive(Resource)]
struct CofferNet {
    /// `None` when misconfigured; shut down in the background on drop, so dropping the app
    /// inside another async runtime does not panic.
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<NetClient>,
    player_id: String,
    policy: ReconnectPolicy,
    to_game: tokio::sync::mpsc::Sender<NetEvent>,
    from_net: tokio::sync::mpsc::Receiver<NetEvent>,
    in_flight: InFlight,
    keys: KeyGenerator,
    /// Requests not yet sent, oldest first.
    waiting: VecDeque<Waiting>,
    /// Completed requests waiting for the wallet to reach their version.
    held: Vec<(u64, RequestCompleted)>,
}

impl Drop for CofferNet {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Turns a waiting request into a call, or says why it must wait.
fn resolve(
    request: &CofferRequest,
    wallet: &Wallet,
    inventory: &Inventory,
    catalog: &Catalog,
) -> Option<Call> {
    let quote =
        |price: &Option<Vec<(String, i64)>>, catalog_price: Option<&[pb::Money]>| match price {
            Some(price) => Some(
                price
                    .iter()
                    .map(|(currency, amount)| pb::Money {
                        currency_id: currency.clone(),
                        amount_minor_units: *amount,
                    })
                    .collect(),
            ),
            // An offer missing from a loaded catalog is sent unpriced: the server's rejection
            // (unknown offer, not upgradable, top level reached…) is the answer the game wants.
            None if catalog.is_loaded() => {
                Some(catalog_price.map(<[_]>::to_vec).unwrap_or_default())
            }
            None => None,
        };
    match request {
        CofferRequest::Purchase(p) => Some(Call::Purchase {
            offer_id: p.offer_id.clone(),
            price: quote(
                &p.expected_price,
                catalog.offer(&p.offer_id).map(|o| o.price.as_slice()),
            )?,
        }),
        CofferRequest::Upgrade(u) => {
            let target_level = match u.target_level {
                Some(level) => level,
                None if wallet.is_synced() => inventory.level(&u.item_id).saturating_add(1),
                None => return None,
            };
            Some(Call::Upgrade {
                item_id: u.item_id.clone(),
                target_level,
                price: quote(
                    &u.expected_price,
                    catalog.level_price(&u.item_id, target_level),
                )?,
            })
        }
        CofferRequest::Consume(c) => Some(Call::Consume {
            item_id: c.item_id.clone(),
            quantity: c.quantity,
        }),
        CofferRequest::ClaimReward(r) => Some(Call::ClaimReward {
            reward_id: r.reward_id.clone(),
        }),
        CofferRequest::RedeemReceipt(r) => Some(Call::RedeemReceipt {
            platform: r.platform,
            payload: r.payload.clone(),
        }),
    }
}

/// `PostUpdate`, [`CofferSystems::Send`]: request messages → network calls.
#[allow(clippy::too_many_arguments)]
fn send_requests(
    mut net: ResMut<CofferNet>,
    wallet: Res<Wallet>,
    inventory: Res<Inventory>,
    catalog: Res<Catalog>,
    mut purchases: MessageReader<Purchase>,
    mut upgrades: MessageReader<Upgrade>,
    mut consumes: MessageReader<Consume>,
    mut claims: MessageReader<ClaimReward>,
    mut receipts: MessageReader<RedeemReceipt>,
    mut failed: MessageWriter<RequestFailed>,
) {
    let net = &mut *net;
    let now = Instant::now();
    let incoming = purchases
        .read()
        .cloned()
        .map(CofferRequest::Purchase)
        .chain(upgrades.read().cloned().map(CofferRequest::Upgrade))
        .chain(consumes.read().cloned().map(CofferRequest::Consume))
        .chain(claims.read().cloned().map(CofferRequest::ClaimReward))
        .chain(receipts.read().cloned().map(CofferRequest::RedeemReceipt));
    for request in incoming {
        let idempotency_key = net.keys.next_key();
        if net.waiting.len() >= REQUESTS_WAITING_MAX {
            failed.write(RequestFailed {
                request,
                idempotency_key,
                error: CofferError::Busy,
            });
            continue;
        }
        net.waiting.push_back(Waiting {
            request,
            idempotency_key,
            since: now,
        });
    }

    let Some(client) = net.client.clone() else {
        let message = "the plugin's endpoint or token is unusable".to_owned();
        for waiting in net.waiting.drain(..) {
            failed.write(RequestFailed {
                request: waiting.request,
                idempotency_key: waiting.idempotency_key,
                error: CofferError::Misconfigured {
                    message: message.clone(),
                },
            });
        }
        return;
    };
    let Some(runtime) = net.runtime.as_ref() else {
        return;
    };

    let mut still_waiting = VecDeque::with_capacity(net.waiting.len());
    for waiting in net.waiting.drain(..) {
        let call = if net.in_flight.get() < REQUESTS_IN_FLIGHT_MAX {
            resolve(&waiting.request, &wallet, &inventory, &catalog)
        } else {
            None
        };
        let Some(call) = call else {
            if now.duration_since(waiting.since) > net.policy.request_wait_max {
                failed.write(RequestFailed {
                    request: waiting.request,
                    idempotency_key: waiting.idempotency_key,
                    error: CofferError::Unavailable {
                        attempts: 0,
                        message: "the catalog and wallet never loaded".to_owned(),
                    },
                });
            } else {
                still_waiting.push_back(waiting);
            }
            continue;
        };
        let guard = net.in_flight.start();
        let client = client.clone();
        let to_game = net.to_game.clone();
        let player_id = net.player_id.clone();
        let policy = net.policy.clone();
        let Waiting {
            request,
            idempotency_key,
            ..
        } = waiting;
        runtime.spawn(async move {
            let result =
                net::execute(client, player_id, call, idempotency_key.clone(), policy).await;
            // Count the request as in flight until its outcome is queued for the game.
            let _ = to_game
                .send(NetEvent::Outcome {
                    request,
                    idempotency_key,
                    result,
                })
                .await;
            drop(guard);
        });
    }
    net.waiting = still_waiting;
}

/// `PreUpdate`, [`CofferSystems::Receive`]: network results → resources and outcome messages.
fn receive_from_network(
    mut net: ResMut<CofferNet>,
    mut wallet: ResMut<Wallet>,
    mut inventory: ResMut<Inventory>,
    mut catalog: ResMut<Catalog>,
    mut connection: ResMut<CofferConnection>,
    mut completed: MessageWriter<RequestCompleted>,
    mut failed: MessageWriter<RequestFailed>,
) {
    let net = &mut *net;
    for _ in 0..NET_EVENTS_PER_FRAME_MAX {
        let Ok(event) = net.from_net.try_recv() else {
            break;
        };
        match event {
            NetEvent::Connection { state, error } => {
                if state == ConnectionState::Live
                    && connection.state == ConnectionState::Reconnecting
                {
                    connection.reconnect_count = connection.reconnect_count.saturating_add(1);
                }
                connection.state = state;
                if error.is_some() {
                    connection.last_error = error;
                }
            }
            NetEvent::Catalog(new) => {
                if catalog.catalog.as_ref() != Some(&new) {
                    catalog.catalog = Some(new);
                }
            }
            NetEvent::Snapshot(snapshot) => {
                resources::apply_snapshot(&mut wallet, &mut inventory, &snapshot);
            }
            NetEvent::Change(change) => {
                if let Some(transaction) = &change.transaction
                    && change.version > wallet.version
                {
                    resources::apply_transaction(
                        &mut wallet,
                        &mut inventory,
                        change.version,
                        transaction,
                    );
                }
            }
            NetEvent::Outcome {
                request,
                idempotency_key,
                result: Ok(transaction),
            } => {
                let version = resources::version_after(&transaction, &wallet.player_id);
                let outcome = RequestCompleted {
                    request,
                    idempotency_key,
                    transaction,
                };
                match version {
                    // The next version: apply it now (the stream's copy is then skipped).
                    Some(v) if wallet.is_synced() && v == wallet.version + 1 => {
                        resources::apply_transaction(
                            &mut wallet,
                            &mut inventory,
                            v,
                            &outcome.transaction,
                        );
                        completed.write(outcome);
                    }
                    Some(v) if v > wallet.version || !wallet.is_synced() => {
                        net.held.push((v, outcome));
                    }
                    _ => {
                        completed.write(outcome);
                    }
                }
            }
            NetEvent::Outcome {
                request,
                idempotency_key,
                result: Err(error),
            } => {
                failed.write(RequestFailed {
                    request,
                    idempotency_key,
                    error,
                });
            }
        }
    }
    // Release completions the wallet has caught up with, so a game reading one sees its effect.
    if !net.held.is_empty() && wallet.is_synced() {
        let version = wallet.version;
        let (ready, held): (Vec<_>, Vec<_>) = net.held.drain(..).partition(|(v, _)| *v <= version);
        net.held = held;
        completed.write_batch(ready.into_iter().map(|(_, outcome)| outcome));
    }
}
