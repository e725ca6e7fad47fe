//! `coffer.v1.WalletService`: validate, turn the request into a command or a read, answer.

use std::pin::Pin;
use std::sync::Arc;

use coffer_core::{
    AccountId, Command, IdempotencyKey, Name, Operation, StorePurchase, Transaction,
};
use coffer_proto::v1 as pb;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::auth::caller_for_player;
use crate::convert;
use crate::error::{ApiError, BadField};
use crate::receipts::core_platform;
use crate::requests::{self, PlayerRequest};

/// Transactions returned by ListTransactions when the request names no page size.
pub const PAGE_SIZE_DEFAULT: u32 = 50;
/// Most transactions one ListTransactions page may hold.
pub const PAGE_SIZE_MAX: u32 = 500;
/// Transactions read from storage per round while a subscriber catches up.
pub const CATCH_UP_PAGE_LEN: usize = 256;
/// Events queued towards one subscriber's connection.
pub const STREAM_BUFFER_LEN: usize = 64;

/// The wallet service.
pub struct WalletApi {
    app: Arc<App>,
}

impl WalletApi {
    /// A wallet service over shared state.
    pub fn new(app: Arc<App>) -> Self {
        WalletApi { app }
    }

    async fn run<T>(
        &self,
        request: &Request<T>,
        check: fn(&T) -> Result<PlayerRequest, ApiError>,
    ) -> Result<Arc<Transaction>, ApiError> {
        let checked = check(request.get_ref())?;
        let caller = caller_for_player(request, &checked.player_id)?;
        let command = Command {
            idempotency_key: checked.idempotency_key,
            operation: checked.operation,
            caller: caller.label(),
            reason: Name::default(),
        };
        self.app.execute(command).await
    }
}

/// Unix milliseconds now, the time receipts' certificates are checked against.
pub(crate) fn now_unix_ms() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::wallet_service_server::WalletService for WalletApi {
    async fn get_catalog(
        &self,
        _request: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::GetCatalogResponse>, Status> {
        let catalog = self.app.catalog();
        Ok(Response::new(pb::GetCatalogResponse {
            catalog: Some(convert::catalog(&catalog)),
        }))
    }

    async fn get_wallet(
        &self,
        request: Request<pb::GetWalletRequest>,
    ) -> Result<Response<pb::GetWalletResponse>, Status> {
        let player_id = requests::player_id(&request.get_ref().player_id)?;
        caller_for_player(&request, &player_id)?;
        let account = AccountId::player(&player_id);
        let state = self
            .app
            .blocking(move |store| store.account(&account))
            .await?;
        let wallet = convert::wallet(&player_id, state.as_ref(), &self.app.catalog());
        Ok(Response::new(pb::GetWalletResponse {
            wallet: Some(wallet),
        }))
    }

    async fn purchase(
        &self,
        request: Request<pb::PurchaseRequest>,
    ) -> Result<Response<pb::PurchaseResponse>, Status> {
        let transaction = self.run(&request, requests::purchase).await?;
        Ok(Response::new(pb::PurchaseResponse {
            transaction: Some(convert::transaction(&transaction)),
        }))
    }

    async fn upgrade(
        &self,
        request: Request<pb::UpgradeRequest>,
    ) -> Result<Response<pb::UpgradeResponse>, Status> {
        let transaction = self.run(&request, requests::upgrade).await?;
        Ok(Response::new(pb::UpgradeResponse {
            transaction: Some(convert::transaction(&transaction)),
        }))
    }

    async fn consume(
        &self,
        request: Request<pb::ConsumeRequest>,
    ) -> Result<Response<pb::ConsumeResponse>, Status> {
        let transaction = self.run(&request, requests::consume).await?;
        Ok(Response::new(pb::ConsumeResponse {
            transaction: Some(convert::transaction(&transaction)),
        }))
    }

    async fn claim_reward(
        &self,
        request: Request<pb::ClaimRewardRequest>,
    ) -> Result<Response<pb::ClaimRewardResponse>, Status> {
        let transaction = self.run(&request, requests::claim_reward).await?;
        Ok(Response::new(pb::ClaimRewardResponse {
            transaction: Some(convert::transaction(&transaction)),
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let requests::HistoryPage {
            player_id,
            page_size,
            before_version,
        } = requests::list_transactions(request.get_ref())?;
        caller_for_player(&request, &player_id)?;
        let account = AccountId::player(&player_id);
        let page_account = account.clone();
        let transactions = self
            .app
            .blocking(move |store| {
                store.history_before(&page_account, before_version, page_size as usize)
            })
            .await?;
        let oldest_version = transactions
            .last()
            .and_then(|t| t.account_versions.get(&account).copied());
        let next_page_token = match oldest_version {
            Some(version) if transactions.len() == page_size as usize && version > 1 => {
                version.to_string()
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: transactions.iter().map(convert::transaction).collect(),
            next_page_token,
        }))
    }

    async fn redeem_receipt(
        &self,
        request: Request<pb::RedeemReceiptRequest>,
    ) -> Result<Response<pb::RedeemReceiptResponse>, Status> {
        let r = request.get_ref();
        let requests::ReceiptRedemption {
            player_id,
            platform,
            client_key,
        } = requests::redeem_receipt(r)?;
        let caller = caller_for_player(&request, &player_id)?;
        // Verify here, on the handler's task, never in the writer: cryptography is slow and
        // needs the clock; the core gets only the verified facts.
        let purchase = self
            .app
            .receipts
            .verifier
            .verify_receipt(platform, &r.payload, now_unix_ms())
            .map_err(ApiError::Receipt)?;
        // Coffer issues sandbox receipts for one player; redeeming one for another is a bug in
        // the game. (Apple's appAccountToken and Google's obfuscatedAccountId are chosen by the
        // game in its own format, so they are not compared.)
        if platform == coffer_receipts::Platform::Sandbox
            && purchase.player_hint.as_deref() != Some(player_id.as_str())
        {
            return Err(ApiError::InvalidArgument(vec![BadField::new(
                "payload",
                format!(
                    "this sandbox receipt was issued for player {:?}, not {player_id:?}",
                    purchase.player_hint.unwrap_or_default()
                ),
            )])
            .into());
        }
        let key = client_key.unwrap_or_else(|| purchase.store_transaction_id.clone());
        let command = Command {
            idempotency_key: IdempotencyKey::player(&player_id, &key),
            operation: Operation::RedeemReceipt {
                player_id: Name::new(&player_id),
                purchase: StorePurchase {
                    platform: core_platform(purchase.platform),
                    store_transaction_id: purchase.store_transaction_id,
                    product_id: purchase.product_id,
                    quantity: purchase.quantity,
                    price_minor_units: purchase.price_minor_units,
                    currency_code: purchase.currency_code,
                    environment: purchase.environment,
                    purchased_at_unix_ms: purchase.purchased_at_unix_ms,
                },
            },
            caller: caller.label(),
            reason: Name::default(),
        };
        let transaction = self.app.execute(command).await?;
        Ok(Response::new(pb::RedeemReceiptResponse {
            transaction: Some(convert::transaction(&transaction)),
        }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let player_id = requests::player_id(&request.get_ref().player_id)?;
        caller_for_player(&request, &player_id)?;
        let slot = self
            .app
            .streams
            .open(&player_id, self.app.limits.streams_per_player_max)?;
        let from_version = request.get_ref().from_version;
        // Listen before reading history, so a commit between the two is seen by one of them.
        let live = self.app.events.subscribe(&player_id);
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER_LEN);
        let app = Arc::clone(&self.app);
        tokio::spawn(async move {
            let player = AccountId::player(&player_id);
            feed_subscriber(app, player, from_version, live, sender).await;
            // The stream slot is released only when the feed ends (client gone or error).
            drop(slot);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

type EventSender = mpsc::Sender<Result<pb::SubscribeResponse, Status>>;

/// Sends every transaction past `version`, in version order with no gap and no repeat: history
/// from storage first, then live events; after a lag or a gap it goes back to storage.
async fn feed_subscriber(
    app: Arc<App>,
    player: AccountId,
    mut version: u64,
    mut live: broadcast::Receiver<crate::events::WalletEvent>,
    sender: EventSender,
) {
    let mut stopping = app.stopping.clone();
    loop {
        // Catch up from storage.
        loop {
            let after = version;
            let account = player.clone();
            let page = match app
                .blocking(move |store| store.history_after(&account, after, CATCH_UP_PAGE_LEN))
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            let page_len = page.len();
            for transaction in page {
                let Some(next) = transaction.account_versions.get(&player).copied() else {
                    continue;
                };
                if !send(&sender, next, &transaction).await {
                    return;
                }
                version = next;
            }
            if page_len < CATCH_UP_PAGE_LEN {
                break;
            }
        }
        // Follow live events until a gap or lag sends us back to storage.
        loop {
            let event = tokio::select! {
                _ = sender.closed() => return,
                _ = stopping.changed() => {
                    let status = Status::unavailable("the server is shutting down; subscribe again from the last version you saw");
                    let _ = sender.send(Err(status)).await;
                    return;
                }
                event = live.recv() => event,
            };
            match event {
                Ok(event) if event.version <= version => continue,
                Ok(event) if event.version == version + 1 => {
                    if !send(&sender, event.version, &event.transaction).await {
                        return;
                    }
                    version = event.version;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

async fn send(sender: &EventSender, version: u64, transaction: &Transaction) -> bool {
    let response = pb::SubscribeResponse {
        version,
        transaction: Some(convert::transaction(transaction)),
    };
    sender.send(Ok(response)).await.is_ok()
}
