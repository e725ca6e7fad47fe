//! Player session tokens: short-lived JWTs (HS256) carrying the player id and expiry, issued by
//! an admin call for a game-server key and verified from the signature alone (no database read).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

/// Issuer claim of every token.
pub const TOKEN_ISSUER: &str = "coffer";
/// Audience claim of player tokens.
pub const TOKEN_AUDIENCE: &str = "coffer-player";
/// Shortest signing secret accepted, in bytes.
pub const TOKEN_SECRET_BYTES_MIN: usize = 32;
/// Longest lifetime a token may be issued with: 24 hours.
pub const TOKEN_TTL_SECONDS_MAX: u64 = 24 * 3600;
/// Lifetime when the request names none: 1 hour.
pub const TOKEN_TTL_SECONDS_DEFAULT: u64 = 3600;

/// The claims of a player token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerClaims {
    /// The player id.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Issue time, unix seconds.
    pub iat: u64,
    pub iss: String,
    pub aud: String,
}

/// Signs and verifies player tokens with one secret.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenSigner {
    /// A signer; the caller has checked the secret's length.
    pub fn new(secret: &[u8]) -> TokenSigner {
        assert!(
            secret.len() >= TOKEN_SECRET_BYTES_MIN,
            "token secret too short"
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[TOKEN_ISSUER]);
        validation.set_audience(&[TOKEN_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        // The server both issues and checks tokens: no clock skew to allow for.
        validation.leeway = 0;
        TokenSigner {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A token for `player_id` valid for `ttl_seconds`; returns it and its expiry (unix seconds).
    pub fn issue(&self, player_id: &str, ttl_seconds: u64) -> (String, u64) {
        let now = unix_seconds();
        let claims = PlayerClaims {
            sub: player_id.to_owned(),
            exp: now + ttl_seconds,
            iat: now,
            iss: TOKEN_ISSUER.to_owned(),
            aud: TOKEN_AUDIENCE.to_owned(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, claims.exp)
    }

    /// The player of a valid token; `Err` says why it is not valid.
    pub fn verify(&self, token: &str) -> Result<String, String> {
        match decode::<PlayerClaims>(token, &self.decoding, &self.validation) {
            Ok(data) if coffer_core::check_id(&data.claims.sub).is_ok() => Ok(data.claims.sub),
            Ok(_) => Err("the token names an invalid player id".to_owned()),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the player token has expired; ask the game server for a new one".to_owned()
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the player token's signature is not valid".to_owned()
                }
                _ => format!("the player token is not valid: {e}"),
            }),
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
