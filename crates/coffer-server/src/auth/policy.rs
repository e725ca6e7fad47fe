//! The permission table: which caller may call which method, and for which player. This is the
//! only place that decides; the layer and the handlers ask it.

use super::{Caller, Role};
use crate::error::ApiError;

/// Every Coffer RPC, named by its gRPC path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    GetCatalog,
    GetWallet,
    Purchase,
    Upgrade,
    Consume,
    ClaimReward,
    ListTransactions,
    Subscribe,
    Grant,
    Revoke,
    Reverse,
    Execute,
    GetTransaction,
    GetCatalogSource,
    ReplaceCatalog,
    VerifyLedger,
    IssuePlayerToken,
    RedeemReceipt,
    ProcessStoreNotification,
    IssueSandboxReceipt,
    ExportLedger,
}

impl Method {
    /// Every method, for tests that walk the whole table.
    pub const ALL: [Method; 21] = [
        Method::GetCatalog,
        Method::GetWallet,
        Method::Purchase,
        Method::Upgrade,
        Method::Consume,
        Method::ClaimReward,
        Method::ListTransactions,
        Method::Subscribe,
        Method::Grant,
        Method::Revoke,
        Method::Reverse,
        Method::Execute,
        Method::GetTransaction,
        Method::GetCatalogSource,
        Method::ReplaceCatalog,
        Method::VerifyLedger,
        Method::IssuePlayerToken,
        Method::RedeemReceipt,
        Method::ProcessStoreNotification,
        Method::IssueSandboxReceipt,
        Method::ExportLedger,
    ];

    /// The method a gRPC path names, e.g. `/coffer.v1.WalletService/Purchase`.
    pub fn from_path(path: &str) -> Option<Method> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let m = match (service, method) {
            ("coffer.v1.WalletService", "GetCatalog") => Method::GetCatalog,
            ("coffer.v1.WalletService", "GetWallet") => Method::GetWallet,
            ("coffer.v1.WalletService", "Purchase") => Method::Purchase,
            ("coffer.v1.WalletService", "Upgrade") => Method::Upgrade,
            ("coffer.v1.WalletService", "Consume") => Method::Consume,
            ("coffer.v1.WalletService", "ClaimReward") => Method::ClaimReward,
            ("coffer.v1.WalletService", "ListTransactions") => Method::ListTransactions,
            ("coffer.v1.WalletService", "Subscribe") => Method::Subscribe,
            ("coffer.v1.AdminService", "Grant") => Method::Grant,
            ("coffer.v1.AdminService", "Revoke") => Method::Revoke,
            ("coffer.v1.AdminService", "Reverse") => Method::Reverse,
            ("coffer.v1.AdminService", "Execute") => Method::Execute,
            ("coffer.v1.AdminService", "GetTransaction") => Method::GetTransaction,
            ("coffer.v1.AdminService", "GetCatalogSource") => Method::GetCatalogSource,
            ("coffer.v1.AdminService", "ReplaceCatalog") => Method::ReplaceCatalog,
            ("coffer.v1.AdminService", "VerifyLedger") => Method::VerifyLedger,
            ("coffer.v1.AdminService", "IssuePlayerToken") => Method::IssuePlayerToken,
            ("coffer.v1.WalletService", "RedeemReceipt") => Method::RedeemReceipt,
            ("coffer.v1.AdminService", "ProcessStoreNotification") => {
                Method::ProcessStoreNotification
            }
            ("coffer.v1.AdminService", "IssueSandboxReceipt") => Method::IssueSandboxReceipt,
            ("coffer.v1.AdminService", "ExportLedger") => Method::ExportLedger,
            _ => return None,
        };
        Some(m)
    }

    /// Methods that act on one player named in the request; a player token may call them only
    /// for itself.
    pub fn is_player_scoped(self) -> bool {
        matches!(
            self,
            Method::GetWallet
                | Method::Purchase
                | Method::Upgrade
                | Method::Consume
                | Method::ClaimReward
                | Method::ListTransactions
                | Method::Subscribe
                | Method::RedeemReceipt
        )
    }
}

/// May `caller` call `method` at all? (A player's own-wallet check comes later, in
/// [`check_player`], once the request is decoded.)
pub fn allows(caller: &Caller, method: Method) -> bool {
    use Method::*;
    match caller {
        Caller::Key {
            role: Role::Admin, ..
        } => true,
        Caller::Key {
            role: Role::GameServer,
            ..
        } => !matches!(
            method,
            Reverse | ReplaceCatalog | VerifyLedger | ExportLedger
        ),
        Caller::Key {
            role: Role::Support,
            ..
        } => {
            matches!(
                method,
                GetCatalog
                    | GetWallet
                    | ListTransactions
                    | Subscribe
                    | GetTransaction
                    | GetCatalogSource
            )
        }
        Caller::Player { .. } => method == GetCatalog || method.is_player_scoped(),
    }
}

/// May `caller` act for `player_id`? Keys with a role that allows the method may act for any
/// player; a player only for itself.
pub fn check_player(caller: &Caller, player_id: &str) -> Result<(), ApiError> {
    match caller {
        Caller::Key { .. } => Ok(()),
        Caller::Player { player_id: own } if own == player_id => Ok(()),
        Caller::Player { player_id: own } => Err(ApiError::PermissionDenied(format!(
            "a token for player {own:?} cannot act for player {player_id:?}"
        ))),
    }
}
