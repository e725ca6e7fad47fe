//! The network side: a tokio runtime owned by the plugin, the gRPC client with its credentials
//! interceptor, the task that keeps the wallet in step, and request calls with retries.
//!
//! Nothing here touches the ECS: results go to the game over a bounded channel that a system
//! drains each frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_client::pb::wallet_service_client::WalletServiceClient;
use coffer_client::{ClientError, pb};
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::ReconnectPolicy;
use crate::messages::{CofferError, CofferRequest};
use crate::resources::ConnectionState;

/// Messages queued from the network towards the game before network tasks wait for a frame.
pub(crate) const TO_GAME_QUEUE_LEN: usize = 1024;

/// The client's bearer-token interceptor, built from the plugin's optional token.
pub(crate) struct Credentials;

impl Credentials {
    /// Credentials for `token`; `None` sends no header. Fails for a token that cannot be a
    /// header value (it must be visible ASCII).
    #[allow(clippy::new_ret_no_self)] // builds the client's credentials type
    pub(crate) fn new(token: Option<&str>) -> Result<coffer_client::Credentials, String> {
        match token {
            None => Ok(coffer_client::Credentials::default()),
            Some(token) => coffer_client::Credentials::bearer(token)
                .map_err(|_| "the token must be printable ASCII".to_owned()),
        }
    }
}

type WalletClient = WalletServiceClient<InterceptedService<Channel, coffer_client::Credentials>>;

/// The wallet service client the plugin uses, with credentials attached.
#[derive(Clone)]
pub(crate) struct NetClient {
    wallet: WalletClient,
}

impl NetClient {
    /// A client that connects on first use and reconnects after failures. Must be called inside
    /// the runtime's context.
    pub(crate) fn connect_lazy(
        endpoint: &str,
        credentials: coffer_client::Credentials,
        policy: &ReconnectPolicy,
    ) -> Result<Self, String> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?
            .connect_timeout(policy.request_timeout)
            .connect_lazy();
        Ok(NetClient {
            wallet: WalletServiceClient::with_interceptor(channel, credentials),
        })
    }

    async fn catalog(&mut self) -> Result<pb::Catalog, ClientError> {
        let response = self.wallet.get_catalog(pb::GetCatalogRequest {}).await?;
        Ok(response.into_inner().catalog.unwrap_or_default())
    }

    async fn wallet(&mut self, player_id: &str) -> Result<pb::Wallet, ClientError> {
        let request = pb::GetWalletRequest {
            player_id: player_id.to_owned(),
        };
        let response = self.wallet.get_wallet(request).await?;
        Ok(response.into_inner().wallet.unwrap_or_default())
    }

    async fn subscribe(
        &mut self,
        player_id: &str,
        from_version: u64,
    ) -> Result<tonic::Streaming<pb::SubscribeResponse>, ClientError> {
        let request = pb::SubscribeRequest {
            player_id: player_id.to_owned(),
            from_version,
        };
        Ok(self.wallet.subscribe(request).await?.into_inner())
    }

    async fn call(
        &mut self,
        player_id: &str,
        call: &Call,
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let player_id = player_id.to_owned();
        let idempotency_key = idempotency_key.to_owned();
        let transaction = match call.clone() {
            Call::Purchase { offer_id, price } => {
                let request = pb::PurchaseRequest {
                    player_id,
                    offer_id,
                    expected_price: price,
                    idempotency_key,
                };
                self.wallet
                    .purchase(request)
                    .await?
                    .into_inner()
                    .transaction
            }
            Call::Upgrade {
                item_id,
                target_level,
                price,
            } => {
                let request = pb::UpgradeRequest {
                    player_id,
                    item_id,
                    target_level,
                    expected_price: price,
                    idempotency_key,
                };
                self.wallet.upgrade(request).await?.into_inner().transaction
            }
            Call::Consume { item_id, quantity } => {
                let request = pb::ConsumeRequest {
                    player_id,
                    item_id,
                    quantity,
                    idempotency_key,
                };
                self.wallet.consume(request).await?.into_inner().transaction
            }
            Call::ClaimReward { reward_id } => {
                let request = pb::ClaimRewardRequest {
                    player_id,
                    reward_id,
                    idempotency_key,
                };
                self.wallet
                    .claim_reward(request)
                    .await?
                    .into_inner()
                    .transaction
            }
            Call::RedeemReceipt { platform, payload } => {
                let request = pb::RedeemReceiptRequest {
                    player_id,
                    platform: platform as i32,
                    payload,
                    idempotency_key,
                };
                self.wallet
                    .redeem_receipt(request)
                    .await?
                    .into_inner()
                    .transaction
            }
        };
        Ok(transaction.unwrap_or_default())
    }
}

/// A request with everything resolved from the game's resources.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    Purchase {
        offer_id: String,
        price: Vec<pb::Money>,
    },
    Upgrade {
        item_id: String,
        target_level: u32,
        price: Vec<pb::Money>,
    },
    Consume {
        item_id: String,
        quantity: u64,
    },
    ClaimReward {
        reward_id: String,
    },
    RedeemReceipt {
        platform: pb::StorePlatform,
        payload: String,
    },
}

/// What the network tells the game.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// The link changed state.
    Connection {
        state: ConnectionState,
        error: Option<String>,
    },
    /// The catalog in force.
    Catalog(pb::Catalog),
    /// A full wallet read.
    Snapshot(pb::Wallet),
    /// One change from the stream.
    Change(pb::SubscribeResponse),
    /// A request's outcome.
    Outcome {
        request: CofferRequest,
        idempotency_key: String,
        result: Result<pb::Transaction, CofferError>,
    },
}

/// True when another attempt with the same key may succeed. Besides the codes the client calls
/// transient, a connection torn down mid-call surfaces as `Unknown` or `Cancelled`; retrying
/// with the same idempotency key is safe whatever happened on the server.
fn is_retryable(error: &ClientError) -> bool {
    error.is_transient()
        || matches!(
            error.code(),
            tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::ResourceExhausted
        ) && error.rejection().is_none()
}

/// Sends one request, retrying transient failures with the same idempotency key.
pub(crate) async fn execute(
    mut client: NetClient,
    player_id: String,
    call: Call,
    idempotency_key: String,
    policy: ReconnectPolicy,
) -> Result<pb::Transaction, CofferError> {
    let attempts_max = policy.request_attempts_max.max(1);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let result = tokio::time::timeout(
            policy.request_timeout,
            client.call(&player_id, &call, &idempotency_key),
        )
        .await;
        let message = match result {
            Ok(Ok(transaction)) => return Ok(transaction),
            Ok(Err(ClientError::Rejected {
                rejection,
                message,
                retry_after_ms,
                ..
            })) => {
                return Err(CofferError::Rejected {
                    rejection,
                    message,
                    retry_after_ms,
                });
            }
            Ok(Err(error)) if is_retryable(&error) => error.to_string(),
            Ok(Err(error)) => {
                return Err(match (&call, error.reason()) {
                    // A receipt that does not verify: the store's reason (BAD_SIGNATURE…) rides
                    // in the status's ErrorInfo.
                    (Call::RedeemReceipt { .. }, Some(reason)) if error.rejection().is_none() => {
                        let message = match &error {
                            ClientError::Status(status) => status.message().to_owned(),
                            other => other.to_string(),
                        };
                        CofferError::ReceiptRefused { reason, message }
                    }
                    _ => CofferError::Invalid {
                        message: error.to_string(),
                    },
                });
            }
            Err(_elapsed) => format!("no answer within {:?}", policy.request_timeout),
        };
        if attempt >= attempts_max {
            return Err(CofferError::Unavailable {
                attempts: attempt,
                message,
            });
        }
        tracing::debug!(%idempotency_key, attempt, %message, "retrying with the same key");
        tokio::time::sleep(policy.delay(attempt)).await;
    }
}

/// Why one sync session ended.
enum SyncEnd {
    /// The game went away: stop.
    GameGone,
    /// The link failed (or the stream ended); reconnect.
    Lost(String),
}

/// Keeps the game's resources in step with the server for as long as the game runs: loads the
/// catalog and wallet, follows the change stream, and after any failure reconnects and resumes
/// from the last version it passed on.
pub(crate) async fn sync_forever(
    mut client: NetClient,
    player_id: String,
    policy: ReconnectPolicy,
    to_game: mpsc::Sender<NetEvent>,
) {
    let mut version: Option<u64> = None;
    let mut failures: u32 = 0;
    loop {
        match sync_once(
            &mut client,
            &player_id,
            &mut version,
            &to_game,
            &mut failures,
        )
        .await
        {
            SyncEnd::GameGone => return,
            SyncEnd::Lost(error) => {
                tracing::info!(%error, "coffer link lost; reconnecting");
                let event = NetEvent::Connection {
                    state: ConnectionState::Reconnecting,
                    error: Some(error),
                };
                if to_game.send(event).await.is_err() {
                    return;
                }
            }
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(policy.delay(failures)).await;
    }
}

async fn sync_once(
    client: &mut NetClient,
    player_id: &str,
    version: &mut Option<u64>,
    to_game: &mpsc::Sender<NetEvent>,
    failures: &mut u32,
) -> SyncEnd {
    macro_rules! send {
        ($event:expr) => {
            if to_game.send($event).await.is_err() {
                return SyncEnd::GameGone;
            }
        };
    }
    macro_rules! try_net {
        ($call:expr) => {
            match $call.await {
                Ok(value) => value,
                Err(error) => return SyncEnd::Lost(error.to_string()),
            }
        };
    }

    let catalog = try_net!(client.catalog());
    send!(NetEvent::Catalog(catalog));
    let from_version = match *version {
        Some(v) => v,
        None => {
            let wallet = try_net!(client.wallet(player_id));
            let v = wallet.version;
            send!(NetEvent::Snapshot(wallet));
            *version = Some(v);
            v
        }
    };
    let mut stream = try_net!(client.subscribe(player_id, from_version));
    *failures = 0;
    send!(NetEvent::Connection {
        state: ConnectionState::Live,
        error: None,
    });
    let mut last = from_version;
    loop {
        let Some(change) = try_net!(stream.message()) else {
            return SyncEnd::Lost("the server closed the change stream".to_owned());
        };
        if change.version <= last {
            continue;
        }
        if change.version != last + 1 {
            // The server promises no gaps; if one shows up anyway, start over from a snapshot.
            *version = None;
            return SyncEnd::Lost(format!(
                "change stream jumped from version {last} to {}",
                change.version
            ));
        }
        last = change.version;
        *version = Some(last);
        let reversal = change
            .transaction
            .as_ref()
            .is_some_and(|t| t.kind == pb::TransactionKind::Reversal as i32);
        send!(NetEvent::Change(change));
        if reversal {
            // A reversal does not say which offer's purchase count it undoes: re-read the wallet.
            let wallet = try_net!(client.wallet(player_id));
            send!(NetEvent::Snapshot(wallet));
        }
    }
}

/// Counts requests between being sent and their outcome reaching the channel.
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(&self.0))
    }
}

/// Ends one in-flight request when dropped.
pub(crate) struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Delay before retry `attempt` (1-based): doubling from the initial delay up to the maximum.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(16);
    initial.saturating_mul(1 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn a_token_is_sent_as_exactly_one_bearer_authorization_header() {
        let mut credentials = Credentials::new(Some("t0k3n")).expect("valid token");
        let request = credentials.call(tonic::Request::new(())).expect("passes");
        let values: Vec<_> = request.metadata().get_all("authorization").iter().collect();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0], "Bearer t0k3n");
    }

    #[test]
    fn without_a_token_no_authorization_header_is_sent() {
        let mut credentials = Credentials::new(None).expect("no token");
        let request = credentials.call(tonic::Request::new(())).expect("passes");
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        assert!(Credentials::new(Some("line\nbreak")).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        assert_eq!(backoff(initial, max, 1), Duration::from_millis(100));
        assert_eq!(backoff(initial, max, 2), Duration::from_millis(200));
        assert_eq!(backoff(initial, max, 5), Duration::from_millis(1600));
        assert_eq!(backoff(initial, max, 6), max);
        assert_eq!(backoff(initial, max, u32::MAX), max);
    }
}
