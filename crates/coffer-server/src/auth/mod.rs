//! Who may do what. The [`layer`] in front of every Coffer service authenticates the caller
//! (a studio API key or a player token from `authorization: Bearer …`), checks the caller's role
//! against the method ([`policy`]), applies rate limits, and puts a typed [`Caller`] into the
//! request. Handlers never see credentials; they ask [`policy::check_player`] whether the caller
//! may act for the player a request names.

pub mod keys;
pub mod layer;
pub mod policy;
pub mod rate;
pub mod tokens;

use serde::{Deserialize, Serialize};
use tonic::Request;

use crate::error::ApiError;

/// What a studio API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything: catalog, reversals, verification, grants, players' calls.
    Admin,
    /// A studio's game server: players' calls, grant, revoke, execute, issue player tokens.
    GameServer,
    /// Read-only: catalog, wallets, history, transactions.
    Support,
}

impl Role {
    /// The role's name in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::GameServer => "game-server",
            Role::Support => "support",
        }
    }
}

/// The identity a request runs as, put into the request's extensions by the auth layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A studio API key.
    Key { id: String, role: Role },
    /// A player holding a token the server signed.
    Player { player_id: String },
}

impl Caller {
    /// How the caller is recorded in a transaction's metadata (`key:ops`, `player:alice`).
    pub fn label(&self) -> coffer_core::Name {
        match self {
            Caller::Key { id, .. } => compact_str::format_compact!("key:{id}"),
            Caller::Player { player_id } => compact_str::format_compact!("player:{player_id}"),
        }
    }
}

/// The caller the layer attached to a request.
pub fn caller_of<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("request reached a handler without a caller".to_owned()))
}

/// The caller of a request that names `player_id`, if it may act for that player.
pub fn caller_for_player<T>(request: &Request<T>, player_id: &str) -> Result<Caller, ApiError> {
    let caller = caller_of(request)?;
    policy::check_player(&caller, player_id)?;
    Ok(caller)
}
