//! Coffer's sandbox store: Ed25519-signed test receipts and refunds, so the whole purchase flow
//! runs in development with no store account and no network.
//!
//! A sandbox token is `coffer-sandbox-v1.<base64url(JSON)>.<base64url(signature)>` (base64url
//! without padding). The signature is Ed25519 over the ASCII bytes before the last `.`, prefix
//! included, so a token from another system or another version never verifies. The JSON's
//! `type` (`purchase`, `refund`, `revoke`) keeps a refund from being redeemed as a receipt.

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, IssueError, ReceiptError};
use crate::types::{
    Platform, RefundKind, SandboxConfig, VerifiedNotification, VerifiedPurchase, VerifiedRefund,
};
use crate::{
    BASE64_URL, ID_BYTES_MAX, QUANTITY_MAX, optional_id, parse_json, quantity, required_id,
};

/// The first part of every sandbox token: names the format and its version.
pub const SANDBOX_TOKEN_PREFIX: &str = "coffer-sandbox-v1.";
/// The `environment` of every sandbox receipt and refund.
pub const SANDBOX_ENVIRONMENT: &str = "sandbox";

const TYPE_PURCHASE: &str = "purchase";
const TYPE_REFUND: &str = "refund";
const TYPE_REVOKE: &str = "revoke";

/// The JSON inside a sandbox token.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SandboxClaims {
    #[serde(rename = "type")]
    kind: Option<String>,
    transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    player_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantity: Option<i64>,
    issued_at_unix_ms: Option<i64>,
    environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price_minor_units: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
}

/// A test purchase to issue a receipt for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPurchase {
    /// Unique per test purchase; the caller chooses it (e.g. `sbx_` + random hex).
    pub transaction_id: String,
    /// A product id of the sandbox catalog.
    pub product_id: String,
    /// The player the receipt is for (returned as `player_hint`).
    pub player_id: String,
    /// Units bought, `1..=QUANTITY_MAX`.
    pub quantity: u32,
    /// When the receipt is issued (the purchase time).
    pub issued_at_unix_ms: i64,
    /// A pretend price, to exercise revenue metadata.
    pub price_minor_units: Option<i64>,
    /// ISO 4217 code of the pretend price.
    pub currency_code: Option<String>,
}

/// A test refund or revocation to issue a notification for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRefund {
    /// The sandbox transaction to reverse.
    pub transaction_id: String,
    /// Refund or revocation.
    pub kind: RefundKind,
    /// When it happens.
    pub issued_at_unix_ms: i64,
}

/// Issues sandbox receipts and refunds. Holds the Ed25519 signing key: keep it on the
/// development server (or the CLI), never in a game client, and never configure the sandbox
/// store on a production server.
pub struct SandboxIssuer {
    signing_key: SigningKey,
}

impl std::fmt::Debug for SandboxIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        f.debug_struct("SandboxIssuer")
            .field("verifying_key", &self.verifying_key())
            .finish_non_exhaustive()
    }
}

impl SandboxIssuer {
    /// An issuer from a 32-byte Ed25519 secret key (seed). Generate it with a CSPRNG.
    pub fn from_secret_key(secret_key: [u8; 32]) -> Self {
        Self {
            signing_key: SigningKey::from_bytes(&secret_key),
        }
    }

    /// The public key verifiers need ([`SandboxConfig::verifying_key`]).
    pub fn verifying_key(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// The verifier configuration matching this issuer.
    pub fn config(&self) -> SandboxConfig {
        SandboxConfig {
            verifying_key: self.verifying_key(),
        }
    }

    /// Issues a signed sandbox receipt for `purchase`.
    pub fn issue(&self, purchase: &SandboxPurchase) -> Result<String, IssueError> {
        check_issue_field("transaction_id", &purchase.transaction_id)?;
        check_issue_field("product_id", &purchase.product_id)?;
        check_issue_field("player_id", &purchase.player_id)?;
        if purchase.quantity == 0 || purchase.quantity > QUANTITY_MAX {
            return Err(IssueError::QuantityOutOfRange {
                quantity: purchase.quantity,
                quantity_max: QUANTITY_MAX,
            });
        }
        if let Some(currency_code) = &purchase.currency_code {
            check_issue_field("currency_code", currency_code)?;
        }
        Ok(self.sign(&SandboxClaims {
            kind: Some(TYPE_PURCHASE.to_owned()),
            transaction_id: Some(purchase.transaction_id.clone()),
            product_id: Some(purchase.product_id.clone()),
            player_id: Some(purchase.player_id.clone()),
            quantity: Some(i64::from(purchase.quantity)),
            issued_at_unix_ms: Some(purchase.issued_at_unix_ms),
            environment: Some(SANDBOX_ENVIRONMENT.to_owned()),
            price_minor_units: purchase.price_minor_units,
            currency: purchase.currency_code.clone(),
        }))
    }

    /// Issues a signed sandbox refund (or revocation) notification.
    pub fn issue_refund(&self, refund: &SandboxRefund) -> Result<String, IssueError> {
        check_issue_field("transaction_id", &refund.transaction_id)?;
        let kind = match refund.kind {
            RefundKind::Refund => TYPE_REFUND,
            RefundKind::Revoke => TYPE_REVOKE,
        };
        Ok(self.sign(&SandboxClaims {
            kind: Some(kind.to_owned()),
            transaction_id: Some(refund.transaction_id.clone()),
            product_id: None,
            player_id: None,
            quantity: None,
            issued_at_unix_ms: Some(refund.issued_at_unix_ms),
            environment: Some(SANDBOX_ENVIRONMENT.to_owned()),
            price_minor_units: None,
            currency: None,
        }))
    }

    fn sign(&self, claims: &SandboxClaims) -> String {
        // Serializing plain strings and integers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        debug_assert!(!json.is_empty());
        let mut token = String::from(SANDBOX_TOKEN_PREFIX);
        token.push_str(&BASE64_URL.encode(json));
        let signature = self.signing_key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&BASE64_URL.encode(signature.to_bytes()));
        token
    }
}

fn check_issue_field(field: &'static str, value: &str) -> Result<(), IssueError> {
    if value.is_empty() {
        return Err(IssueError::EmptyField { field });
    }
    if value.len() > ID_BYTES_MAX {
        return Err(IssueError::FieldTooLong {
            field,
            len_bytes: value.len(),
            len_bytes_max: ID_BYTES_MAX,
        });
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct SandboxVerifier {
    verifying_key: VerifyingKey,
}

impl SandboxVerifier {
    pub(crate) fn new(config: SandboxConfig) -> Result<Self, ConfigError> {
        let verifying_key = VerifyingKey::from_bytes(&config.verifying_key)
            .map_err(|_| ConfigError::SandboxInvalidKey)?;
        Ok(Self { verifying_key })
    }

    pub(crate) fn verify_receipt(&self, token: &str) -> Result<VerifiedPurchase, ReceiptError> {
        let claims = self.verify_token(token)?;
        if claims.kind.as_deref() != Some(TYPE_PURCHASE) {
            return Err(ReceiptError::WrongPayloadKind {
                expected: "sandbox purchase receipt",
                found: format!("sandbox {}", claims.kind.unwrap_or_default()),
            });
        }
        let currency_code = optional_id("currency", claims.currency)?;
        Ok(VerifiedPurchase {
            platform: Platform::Sandbox,
            store_transaction_id: required_id("transactionId", claims.transaction_id)?,
            original_transaction_id: None,
            product_id: required_id("productId", claims.product_id)?,
            quantity: quantity(claims.quantity.unwrap_or(1))?,
            purchased_at_unix_ms: claims
                .issued_at_unix_ms
                .ok_or_else(|| ReceiptError::malformed("missing issuedAtUnixMs"))?,
            price_milliunits: None,
            price_minor_units: claims.price_minor_units.filter(|_| currency_code.is_some()),
            currency_code,
            environment: SANDBOX_ENVIRONMENT.to_owned(),
            player_hint: Some(required_id("playerId", claims.player_id)?),
        })
    }

    pub(crate) fn verify_notification(
        &self,
        token: &str,
    ) -> Result<VerifiedNotification, ReceiptError> {
        let claims = self.verify_token(token)?;
        let kind = match claims.kind.as_deref() {
            Some(TYPE_REFUND) => RefundKind::Refund,
            Some(TYPE_REVOKE) => RefundKind::Revoke,
            other => {
                return Err(ReceiptError::WrongPayloadKind {
                    expected: "sandbox refund or revoke notification",
                    found: format!("sandbox {}", other.unwrap_or_default()),
                });
            }
        };
        Ok(VerifiedNotification::Refund(VerifiedRefund {
            platform: Platform::Sandbox,
            store_transaction_id: required_id("transactionId", claims.transaction_id)?,
            product_id: optional_id("productId", claims.product_id)?,
            kind,
            at_unix_ms: claims
                .issued_at_unix_ms
                .ok_or_else(|| ReceiptError::malformed("missing issuedAtUnixMs"))?,
            environment: SANDBOX_ENVIRONMENT.to_owned(),
            reason: None,
        }))
    }

    /// Checks the prefix and signature, then the environment; returns the claims.
    fn verify_token(&self, token: &str) -> Result<SandboxClaims, ReceiptError> {
        let token = token.trim();
        let body = token.strip_prefix(SANDBOX_TOKEN_PREFIX).ok_or_else(|| {
            ReceiptError::malformed(format!(
                "sandbox token must start with {SANDBOX_TOKEN_PREFIX}"
            ))
        })?;
        let (claims_b64, signature_b64) = body.split_once('.').ok_or_else(|| {
            ReceiptError::malformed("sandbox token must be prefix.payload.signature")
        })?;
        let signature_bytes: [u8; 64] = BASE64_URL
            .decode(signature_b64)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                ReceiptError::malformed("sandbox signature is not 64 base64url bytes")
            })?;
        let signed_len = SANDBOX_TOKEN_PREFIX.len() + claims_b64.len();
        // verify_strict refuses weak keys and non-canonical signatures (no malleability).
        self.verifying_key
            .verify_strict(
                &token.as_bytes()[..signed_len],
                &Signature::from_bytes(&signature_bytes),
            )
            .map_err(|_| ReceiptError::BadSignature)?;
        let claims_json = BASE64_URL
            .decode(claims_b64)
            .map_err(|_| ReceiptError::malformed("sandbox payload is not base64url"))?;
        let claims: SandboxClaims = parse_json(&claims_json, "sandbox payload")?;
        let environment = required_id("environment", claims.environment.clone())?;
        if environment != SANDBOX_ENVIRONMENT {
            return Err(ReceiptError::WrongEnvironment {
                expected: SANDBOX_ENVIRONMENT.to_owned(),
                found: environment,
            });
        }
        Ok(claims)
    }
}
