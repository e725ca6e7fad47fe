//! The request checks of the RPCs: each turns a `coffer.v1` request into the core operation (or
//! read) it asks for, or into every bad field at once. They are pure (no credentials, no clock,
//! no I/O) and public so that the fuzz targets in `coffer-fuzz` drive exactly the code the
//! handlers run; the handlers authorize the caller and do the work.

use coffer_core::{IdempotencyKey, Name, Operation};
use coffer_proto::v1 as pb;

use crate::auth::tokens::{TOKEN_TTL_SECONDS_DEFAULT, TOKEN_TTL_SECONDS_MAX};
use crate::convert::Checker;
use crate::error::ApiError;
use crate::wallet::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};

/// A checked request a player (or an admin on a player's behalf) may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerRequest {
    /// The player whose wallet changes; the caller must be allowed to act for them.
    pub player_id: Name,
    /// The key, scoped to the player.
    pub idempotency_key: IdempotencyKey,
    pub operation: Operation,
}

/// A checked administrative request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRequest {
    /// The key, in the admin scope.
    pub idempotency_key: IdempotencyKey,
    pub operation: Operation,
    /// Free text kept in the transaction's metadata.
    pub reason: Name,
}

fn player_request(
    check: Checker,
    player_id: Name,
    key: Name,
    operation: Operation,
) -> Result<PlayerRequest, ApiError> {
    let operation = check.finish(operation)?;
    Ok(PlayerRequest {
        idempotency_key: IdempotencyKey::player(&player_id, key),
        player_id,
        operation,
    })
}

fn admin_request(
    mut check: Checker,
    key: &str,
    reason: &str,
    operation: Operation,
) -> Result<AdminRequest, ApiError> {
    let key = check.idempotency_key(key);
    let reason = check.reason(reason);
    let operation = check.finish(operation)?;
    Ok(AdminRequest {
        idempotency_key: IdempotencyKey::admin(&key),
        operation,
        reason,
    })
}

/// `WalletService/Purchase`.
pub fn purchase(r: &pb::PurchaseRequest) -> Result<PlayerRequest, ApiError> {
    let mut check = Checker::default();
    let player_id = check.id("player_id", &r.player_id);
    let key = check.idempotency_key(&r.idempotency_key);
    let operation = Operation::Purchase {
        player_id: player_id.clone(),
        offer_id: check.id("offer_id", &r.offer_id),
        expected_price: check.amounts("expected_price", &r.expected_price, true),
    };
    player_request(check, player_id, key, operation)
}

/// `WalletService/Upgrade`.
pub fn upgrade(r: &pb::UpgradeRequest) -> Result<PlayerRequest, ApiError> {
    let mut check = Checker::default();
    let player_id = check.id("player_id", &r.player_id);
    let key = check.idempotency_key(&r.idempotency_key);
    if r.target_level == 0 {
        check.bad("target_level", "must be at least 1 (level 1 buys the item)");
    }
    let operation = Operation::Upgrade {
        player_id: player_id.clone(),
        item_id: check.id("item_id", &r.item_id),
        target_level: r.target_level,
        expected_price: check.amounts("expected_price", &r.expected_price, false),
    };
    player_request(check, player_id, key, operation)
}

/// `WalletService/Consume`.
pub fn consume(r: &pb::ConsumeRequest) -> Result<PlayerRequest, ApiError> {
    let mut check = Checker::default();
    let player_id = check.id("player_id", &r.player_id);
    let key = check.idempotency_key(&r.idempotency_key);
    let operation = Operation::Consume {
        player_id: player_id.clone(),
        item_id: check.id("item_id", &r.item_id),
        quantity: check.quantity("quantity", r.quantity),
    };
    player_request(check, player_id, key, operation)
}

/// `WalletService/ClaimReward`.
pub fn claim_reward(r: &pb::ClaimRewardRequest) -> Result<PlayerRequest, ApiError> {
    let mut check = Checker::default();
    let player_id = check.id("player_id", &r.player_id);
    let key = check.idempotency_key(&r.idempotency_key);
    let operation = Operation::ClaimReward {
        player_id: player_id.clone(),
        reward_id: check.id("reward_id", &r.reward_id),
    };
    player_request(check, player_id, key, operation)
}

/// `AdminService/Grant`.
pub fn grant(r: &pb::GrantRequest) -> Result<AdminRequest, ApiError> {
    let mut check = Checker::default();
    let operation = Operation::Grant {
        player_id: check.id("player_id", &r.player_id),
        contents: check.contents("contents", r.contents.as_ref()),
    };
    admin_request(check, &r.idempotency_key, &r.reason, operation)
}

/// `AdminService/Revoke`.
pub fn revoke(r: &pb::RevokeRequest) -> Result<AdminRequest, ApiError> {
    let mut check = Checker::default();
    let operation = Operation::Revoke {
        player_id: check.id("player_id", &r.player_id),
        contents: check.contents("contents", r.contents.as_ref()),
    };
    admin_request(check, &r.idempotency_key, &r.reason, operation)
}

/// `AdminService/Reverse`.
pub fn reverse(r: &pb::ReverseRequest) -> Result<AdminRequest, ApiError> {
    let mut check = Checker::default();
    if r.transaction_id == 0 {
        check.bad(
            "transaction_id",
            "must be a transaction id (ids start at 1)",
        );
    }
    let operation = Operation::Reverse {
        transaction_id: r.transaction_id,
    };
    admin_request(check, &r.idempotency_key, &r.reason, operation)
}

/// `AdminService/Execute`.
pub fn execute(r: &pb::ExecuteRequest) -> Result<AdminRequest, ApiError> {
    let mut check = Checker::default();
    let operation = Operation::Execute {
        steps: check.steps(&r.operations),
    };
    admin_request(check, &r.idempotency_key, &r.reason, operation)
}

/// The player a `GetWallet` or `Subscribe` request names.
pub fn player_id(player_id: &str) -> Result<String, ApiError> {
    let mut check = Checker::default();
    let player_id = check.id("player_id", player_id);
    check.finish(player_id.into())
}

/// A checked `ListTransactions` request: one page of a player's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub player_id: String,
    /// 1 to [`PAGE_SIZE_MAX`] transactions.
    pub page_size: u32,
    /// Transactions at account versions below this one (`u64::MAX`: from the newest).
    pub before_version: u64,
}

/// `WalletService/ListTransactions`.
pub fn list_transactions(r: &pb::ListTransactionsRequest) -> Result<HistoryPage, ApiError> {
    let mut check = Checker::default();
    let player_id = check.id("player_id", &r.player_id);
    let page_size = match r.page_size {
        0 => PAGE_SIZE_DEFAULT,
        size if size > PAGE_SIZE_MAX => {
            check.bad("page_size", format!("must be at most {PAGE_SIZE_MAX}"));
            PAGE_SIZE_MAX
        }
        size => size,
    };
    let before_version = if r.page_token.is_empty() {
        u64::MAX
    } else {
        r.page_token.parse::<u64>().unwrap_or_else(|_| {
            check.bad("page_token", "is not a token from a previous response");
            0
        })
    };
    check.finish(HistoryPage {
        player_id: player_id.into(),
        page_size,
        before_version,
    })
}

/// A `RedeemReceipt` request whose fields are well-formed; the payload is not verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRedemption {
    pub player_id: String,
    pub platform: coffer_receipts::Platform,
    /// The caller's key, when it chose one (otherwise the store's transaction id is the key).
    pub client_key: Option<String>,
}

/// `WalletService/RedeemReceipt`, before the receipt is verified.
pub fn redeem_receipt(r: &pb::RedeemReceiptRequest) -> Result<ReceiptRedemption, ApiError> {
    let mut check = Checker::default();
    let player_id = check.id("player_id", &r.player_id);
    let platform = check.platform("platform", r.platform);
    check.payload("payload", &r.payload);
    let client_key =
        (!r.idempotency_key.is_empty()).then(|| check.idempotency_key(&r.idempotency_key).into());
    check.finish(ReceiptRedemption {
        player_id: player_id.into(),
        platform,
        client_key,
    })
}

/// `AdminService/ProcessStoreNotification`, before the notification is verified: its platform.
pub fn store_notification(
    r: &pb::ProcessStoreNotificationRequest,
) -> Result<coffer_receipts::Platform, ApiError> {
    let mut check = Checker::default();
    let platform = check.platform("platform", r.platform);
    check.payload("payload", &r.payload);
    check.finish(platform)
}

/// `AdminService/IssuePlayerToken`: the player and the token's lifetime in seconds.
pub fn issue_player_token(r: &pb::IssuePlayerTokenRequest) -> Result<(String, u64), ApiError> {
    let mut check = Checker::default();
    let player_id = check.id("player_id", &r.player_id);
    let ttl_seconds = match u64::from(r.ttl_seconds) {
        0 => TOKEN_TTL_SECONDS_DEFAULT,
        ttl if ttl > TOKEN_TTL_SECONDS_MAX => {
            check.bad(
                "ttl_seconds",
                format!("must be at most {TOKEN_TTL_SECONDS_MAX}"),
            );
            ttl
        }
        ttl => ttl,
    };
    check.finish((player_id.into(), ttl_seconds))
}
