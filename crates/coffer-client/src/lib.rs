//! A typed Rust client for Coffer's gRPC API, used by the tests, tools, the load generator and
//! the Bevy plugin. Rejections come back as [`ClientError::Rejected`] with the stable
//! [`Rejection`] code read from the status details, so callers can `match` on them.

#![forbid(unsafe_code)]

pub use coffer_proto::v1 as pb;
pub use coffer_proto::v1::Rejection;

use pb::{admin_service_client::AdminServiceClient, wallet_service_client::WalletServiceClient};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

/// Attaches `authorization: Bearer <credential>` (an API key or a player token) to every call.
#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// Credentials from an API key (`ck.…`) or a player token.
    pub fn bearer(credential: &str) -> Result<Credentials, ClientError> {
        let value = format!("Bearer {credential}").parse().map_err(|_| {
            ClientError::Status(tonic::Status::invalid_argument("credential is not ASCII"))
        })?;
        Ok(Credentials {
            authorization: Some(value),
        })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The generated wallet client with credentials attached.
pub type WalletClient = WalletServiceClient<InterceptedService<Channel, Credentials>>;
/// The generated admin client with credentials attached.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, Credentials>>;

/// The `ErrorInfo.domain` Coffer puts on rejections.
pub const ERROR_DOMAIN: &str = "coffer.v1";

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The ledger refused the request; `rejection` says why. Retrying with the same key gives the
    /// same answer.
    #[error("{code:?} {rejection:?}: {message}")]
    Rejected {
        code: tonic::Code,
        rejection: Rejection,
        message: String,
        /// For rate limits: when a new attempt can succeed.
        retry_after_ms: Option<i64>,
    },
    /// Any other gRPC error (INVALID_ARGUMENT, UNAVAILABLE, …).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The connection could not be made.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A ledger export ended before the server confirmed it complete; what was received is not
    /// a usable backup. Retrying takes a new one.
    #[error("incomplete export: {0}")]
    IncompleteExport(String),
    /// Writing what the server sent failed (a local I/O error).
    #[error("writing the export failed: {0}")]
    Output(#[source] std::io::Error),
}

impl ClientError {
    /// The gRPC code of the failure.
    pub fn code(&self) -> tonic::Code {
        match self {
            ClientError::Rejected { code, .. } => *code,
            ClientError::Status(status) => status.code(),
            ClientError::Transport(_) => tonic::Code::Unavailable,
            ClientError::IncompleteExport(_) => tonic::Code::Aborted,
            ClientError::Output(_) => tonic::Code::Unknown,
        }
    }

    /// The ledger's rejection, when it was one.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            ClientError::Rejected { rejection, .. } => Some(*rejection),
            _ => None,
        }
    }

    /// The machine-readable reason of the failure: the rejection's name without its prefix
    /// (`INSUFFICIENT_FUNDS`), or the `google.rpc.ErrorInfo` reason Coffer attached to another
    /// status (a store receipt that does not verify: `BAD_SIGNATURE`, `WRONG_ENVIRONMENT`…).
    pub fn reason(&self) -> Option<String> {
        match self {
            ClientError::Rejected { rejection, .. } => Some(
                rejection
                    .as_str_name()
                    .trim_start_matches("REJECTION_")
                    .to_owned(),
            ),
            ClientError::Status(status) => status
                .get_details_error_info()
                .filter(|info| info.domain == ERROR_DOMAIN && !info.reason.is_empty())
                .map(|info| info.reason),
            ClientError::Transport(_)
            | ClientError::IncompleteExport(_)
            | ClientError::Output(_) => None,
        }
    }

    /// True when retrying with the same idempotency key may succeed (nothing was committed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted
        )
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let Some(info) = status.get_details_error_info() else {
            return ClientError::Status(status);
        };
        if info.domain != ERROR_DOMAIN {
            return ClientError::Status(status);
        }
        match Rejection::from_str_name(&format!("REJECTION_{}", info.reason)) {
            Some(rejection) => ClientError::Rejected {
                code: status.code(),
                rejection,
                message: status.message().to_owned(),
                retry_after_ms: info
                    .metadata
                    .get("retry_after_ms")
                    .and_then(|v| v.parse().ok()),
            },
            None => ClientError::Status(status),
        }
    }
}

/// Builds a price or currency list from `(currency_id, amount_minor_units)` pairs.
pub fn money(amounts: &[(&str, i64)]) -> Vec<pb::Money> {
    amounts
        .iter()
        .map(|(currency, amount)| pb::Money {
            currency_id: (*currency).to_owned(),
            amount_minor_units: *amount,
        })
        .collect()
}

/// A connection to one Coffer server, with both services.
#[derive(Clone)]
pub struct CofferClient {
    channel: Channel,
    wallet: WalletClient,
    admin: AdminClient,
}

impl CofferClient {
    /// Connects to `endpoint`, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        let channel = Endpoint::from_shared(endpoint.into())?.connect().await?;
        Ok(Self::from_channel(channel))
    }

    /// A client that connects on first use and reconnects after failures (for games: never
    /// blocks start-up on the network). Must be called inside a tokio runtime.
    pub fn connect_lazy(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        let channel = Endpoint::from_shared(endpoint.into())?.connect_lazy();
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel, without credentials.
    pub fn from_channel(channel: Channel) -> Self {
        Self::with_credentials(channel, Credentials::default())
    }

    fn with_credentials(channel: Channel, credentials: Credentials) -> Self {
        CofferClient {
            wallet: WalletServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            admin: AdminServiceClient::with_interceptor(channel.clone(), credentials),
            channel,
        }
    }

    /// The same connection, sending `credential` (an API key or a player token) with every call.
    pub fn with_token(&self, credential: &str) -> Result<Self, ClientError> {
        Ok(Self::with_credentials(
            self.channel.clone(),
            Credentials::bearer(credential)?,
        ))
    }

    /// The generated wallet client, for calls this type does not wrap.
    pub fn wallet_raw(&self) -> WalletClient {
        self.wallet.clone()
    }

    /// The generated admin client, for calls this type does not wrap.
    pub fn admin_raw(&self) -> AdminClient {
        self.admin.clone()
    }

    /// A token that lets a game client act as `player_id` (needs an admin or game-server key).
    pub async fn issue_player_token(
        &mut self,
        player_id: &str,
        ttl_seconds: u32,
    ) -> Result<String, ClientError> {
        let request = pb::IssuePlayerTokenRequest {
            player_id: player_id.to_owned(),
            ttl_seconds,
        };
        Ok(self
            .admin
            .issue_player_token(request)
            .await?
            .into_inner()
            .token)
    }

    /// The catalog in force.
    pub async fn catalog(&mut self) -> Result<pb::Catalog, ClientError> {
        let response = self.wallet.get_catalog(pb::GetCatalogRequest {}).await?;
        Ok(response.into_inner().catalog.unwrap_or_default())
    }

    /// A player's wallet.
    pub async fn wallet(&mut self, player_id: &str) -> Result<pb::Wallet, ClientError> {
        let response = self
            .wallet
            .get_wallet(pb::GetWalletRequest {
                player_id: player_id.to_owned(),
            })
            .await?;
        Ok(response.into_inner().wallet.unwrap_or_default())
    }

    /// Buys an offer at the price the player saw.
    pub async fn purchase(
        &mut self,
        player_id: &str,
        offer_id: &str,
        expected_price: &[(&str, i64)],
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::PurchaseRequest {
            player_id: player_id.to_owned(),
            offer_id: offer_id.to_owned(),
            expected_price: money(expected_price),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .wallet
            .purchase(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// Raises an item to `target_level` at the price the player saw.
    pub async fn upgrade(
        &mut self,
        player_id: &str,
        item_id: &str,
        target_level: u32,
        expected_price: &[(&str, i64)],
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::UpgradeRequest {
            player_id: player_id.to_owned(),
            item_id: item_id.to_owned(),
            target_level,
            expected_price: money(expected_price),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .wallet
            .upgrade(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// Uses up items.
    pub async fn consume(
        &mut self,
        player_id: &str,
        item_id: &str,
        quantity: u64,
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::ConsumeRequest {
            player_id: player_id.to_owned(),
            item_id: item_id.to_owned(),
            quantity,
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .wallet
            .consume(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// Claims a reward.
    pub async fn claim_reward(
        &mut self,
        player_id: &str,
        reward_id: &str,
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::ClaimRewardRequest {
            player_id: player_id.to_owned(),
            reward_id: reward_id.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .wallet
            .claim_reward(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// Verifies a real-money store receipt and credits what its product grants. The store's
    /// transaction id makes it idempotent: a replay by the same player returns the original
    /// transaction. A receipt that does not verify fails with a [`ClientError::Status`] whose
    /// [`ClientError::reason`] says why (e.g. `BAD_SIGNATURE`).
    pub async fn redeem_receipt(
        &mut self,
        player_id: &str,
        platform: pb::StorePlatform,
        payload: &str,
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::RedeemReceiptRequest {
            player_id: player_id.to_owned(),
            platform: platform as i32,
            payload: payload.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .wallet
            .redeem_receipt(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// One page of a player's history, newest first, and the token of the next page.
    pub async fn transactions(
        &mut self,
        player_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::Transaction>, String), ClientError> {
        let request = pb::ListTransactionsRequest {
            player_id: player_id.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        let response = self.wallet.list_transactions(request).await?.into_inner();
        Ok((response.transactions, response.next_page_token))
    }

    /// A player's changes after `from_version`, then live.
    pub async fn subscribe(
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

    /// Gives a player currencies and items.
    pub async fn grant(
        &mut self,
        player_id: &str,
        contents: pb::Contents,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::GrantRequest {
            player_id: player_id.to_owned(),
            contents: Some(contents),
            reason: reason.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .admin
            .grant(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// Takes currencies and items from a player.
    pub async fn revoke(
        &mut self,
        player_id: &str,
        contents: pb::Contents,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::RevokeRequest {
            player_id: player_id.to_owned(),
            contents: Some(contents),
            reason: reason.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .admin
            .revoke(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// Reverses a transaction.
    pub async fn reverse(
        &mut self,
        transaction_id: u64,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::ReverseRequest {
            transaction_id,
            reason: reason.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .admin
            .reverse(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// Applies several operations atomically.
    pub async fn execute(
        &mut self,
        operations: Vec<pb::Operation>,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<pb::Transaction, ClientError> {
        let request = pb::ExecuteRequest {
            operations,
            reason: reason.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        };
        Ok(self
            .admin
            .execute(request)
            .await?
            .into_inner()
            .transaction
            .unwrap_or_default())
    }

    /// Replaces the catalog; returns the version now in force.
    pub async fn replace_catalog(&mut self, catalog_toml: &str) -> Result<u64, ClientError> {
        let request = pb::ReplaceCatalogRequest {
            catalog_toml: catalog_toml.to_owned(),
        };
        Ok(self
            .admin
            .replace_catalog(request)
            .await?
            .into_inner()
            .version)
    }

    /// A signed sandbox store receipt for `quantity` units of `product_id` bought by
    /// `player_id`, to pass to [`CofferClient::redeem_receipt`] (development servers with the
    /// sandbox store; needs an admin or game-server key).
    pub async fn issue_sandbox_receipt(
        &mut self,
        player_id: &str,
        product_id: &str,
        quantity: u32,
    ) -> Result<String, ClientError> {
        let request = pb::IssueSandboxReceiptRequest {
            player_id: player_id.to_owned(),
            product_id: product_id.to_owned(),
            quantity,
            refund_transaction_id: String::new(),
        };
        Ok(self
            .admin
            .issue_sandbox_receipt(request)
            .await?
            .into_inner()
            .payload)
    }

    /// An online backup (admin keys only): the whole ledger, read by the server from one
    /// consistent snapshot while it keeps taking writes, as the export file `coffer import`
    /// restores. `write` receives the file's bytes in order, as they arrive (a slow `write`
    /// slows the server's export down rather than making it buffer). `Ok` comes only after
    /// the server's summary has confirmed every byte; on any error, what `write` received is
    /// not a complete backup.
    pub async fn export_ledger(
        &mut self,
        mut write: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<pb::ExportLedgerSummary, ClientError> {
        let mut stream = self
            .admin
            .export_ledger(pb::ExportLedgerRequest {})
            .await?
            .into_inner();
        let mut bytes = 0u64;
        while let Some(message) = stream.message().await? {
            if !message.data.is_empty() {
                write(&message.data).map_err(ClientError::Output)?;
                bytes += message.data.len() as u64;
            }
            if let Some(summary) = message.summary {
                if summary.bytes != bytes {
                    return Err(ClientError::IncompleteExport(format!(
                        "received {bytes} bytes, the server sent {}",
                        summary.bytes
                    )));
                }
                return Ok(summary);
            }
        }
        Err(ClientError::IncompleteExport(format!(
            "the stream ended after {bytes} bytes without the server's summary"
        )))
    }

    /// Replays the ledger on the server and reports every broken invariant.
    pub async fn verify_ledger(&mut self) -> Result<pb::VerifyLedgerResponse, ClientError> {
        Ok(self
            .admin
            .verify_ledger(pb::VerifyLedgerRequest {})
            .await?
            .into_inner())
    }
}

/// A player's balance of one currency in a wallet (0 when absent).
pub fn balance(wallet: &pb::Wallet, currency_id: &str) -> i64 {
    wallet
        .balances
        .iter()
        .find(|m| m.currency_id == currency_id)
        .map(|m| m.amount_minor_units)
        .unwrap_or(0)
}

/// What a wallet holds of one item (quantity, level).
pub fn holding(wallet: &pb::Wallet, item_id: &str) -> (u64, u32) {
    wallet
        .items
        .iter()
        .find(|i| i.item_id == item_id)
        .map(|i| (i.quantity, i.level))
        .unwrap_or((0, 0))
}
