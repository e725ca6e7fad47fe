//! Offline verification of real-money store receipts and refund notifications.
//!
//! A game sends Coffer what the platform store gave it after a purchase; this crate decides,
//! with the stores' real formats and cryptography, whether that is a genuine, completed purchase
//! of this app, and returns the facts a ledger needs ([`VerifiedPurchase`]). It does the same for
//! refund and revocation notices ([`VerifiedRefund`]). It is pure: no network, no database, no
//! clock (the verification time is an argument), so the server can call it anywhere and tests
//! can pin time. Granting exactly once is the caller's job, keyed by
//! `(platform, store_transaction_id)`.
//!
//! # Accepted payloads
//!
//! | platform | [`Verifier::verify_receipt`] | [`Verifier::verify_notification`] |
//! |---|---|---|
//! | Apple | StoreKit 2 `Transaction.jwsRepresentation` (JWS, ES256, `x5c`) | App Store Server Notification V2: the `signedPayload` JWS, or the POST body `{"signedPayload":"…"}` |
//! | Google | `{"purchaseData":"<Purchase.getOriginalJson()>","signature":"<Purchase.getSignature()>"}` | a Voided Purchases API record, or a Real-Time Developer Notification JSON; **unsigned, trusted input** |
//! | Sandbox | `coffer-sandbox-v1.<b64url JSON>.<b64url Ed25519 signature>` from [`SandboxIssuer::issue`] | same format, from [`SandboxIssuer::issue_refund`] |
//!
//! Apple: the `x5c` chain must lead to a configured root (Apple Root CA - G3 in production), all
//! its certificates must be valid at `now`, the leaf and intermediate must carry Apple's marker
//! extensions ([`APPLE_LEAF_MARKER_OID`], [`APPLE_INTERMEDIATE_MARKER_OID`]), and the JWS must
//! verify with the leaf key; then `bundleId` and `environment` must match the configuration, and
//! a transaction with a `revocationDate` is refused. Only `REFUND` and `REVOKE` notifications are
//! acted on; other types come back as [`VerifiedNotification::Ignored`].
//!
//! Google: `signature` is RSASSA-PKCS1-v1_5 with SHA-1 over the exact bytes of `purchaseData`,
//! checked with the app's licence key; then `packageName` must match and `purchaseState` must be
//! 0 (purchased). Google does not sign voided purchases: it serves them only through the
//! authenticated Voided Purchases API and Pub/Sub, so the studio's backend fetches them and
//! forwards them over an authenticated admin call; this crate only parses and validates them.
//!
//! Sandbox: see [`SandboxIssuer`]; never configure it on a production server.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apple;
mod error;
mod google;
mod price;
mod sandbox;
mod types;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::DeserializeOwned;

pub use apple::{APPLE_INTERMEDIATE_MARKER_OID, APPLE_LEAF_MARKER_OID};
pub use error::{ConfigError, IssueError, ReceiptError};
pub use google::GOOGLE_ENVIRONMENT;
pub use sandbox::{
    SANDBOX_ENVIRONMENT, SANDBOX_TOKEN_PREFIX, SandboxIssuer, SandboxPurchase, SandboxRefund,
};
pub use types::{
    AppleConfig, AppleEnvironment, GoogleConfig, Platform, RefundKind, SandboxConfig,
    UnknownPlatform, VerifiedNotification, VerifiedPurchase, VerifiedRefund, VerifierConfig,
};

/// Largest payload accepted, checked before any parsing. A StoreKit 2 transaction is about
/// 4 KiB and a notification with its nested transaction about 12 KiB.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Most certificates accepted in an `x5c` header; Apple sends 3 (leaf, intermediate, root).
pub const X5C_CERTIFICATES_MAX: usize = 4;
/// Longest identifier accepted (transaction, product, player ids, tokens, codes).
pub const ID_BYTES_MAX: usize = 512;
/// Largest quantity accepted in one purchase; Apple allows at most 10 per transaction.
pub const QUANTITY_MAX: u32 = 1_000;

/// base64url without padding, as JWS and sandbox tokens use.
const BASE64_URL: GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// Standard base64 with or without padding: `x5c`, Play signatures and keys are padded, but
/// copies pasted by hand often lose it.
const BASE64_STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Verifies receipts and notifications for the configured stores. Build it once at start-up
/// and share it: verification takes `&self` and does no I/O.
#[derive(Debug)]
pub struct Verifier {
    apple: Option<apple::AppleVerifier>,
    google: Option<google::GoogleVerifier>,
    sandbox: Option<sandbox::SandboxVerifier>,
}

impl Verifier {
    /// Checks the configuration (parses root certificates and keys) and builds the verifier.
    pub fn new(config: VerifierConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            apple: config.apple.map(apple::AppleVerifier::new).transpose()?,
            google: config.google.map(google::GoogleVerifier::new).transpose()?,
            sandbox: config
                .sandbox
                .map(sandbox::SandboxVerifier::new)
                .transpose()?,
        })
    }

    /// Whether receipts from `platform` can be verified.
    pub fn is_configured(&self, platform: Platform) -> bool {
        match platform {
            Platform::Apple => self.apple.is_some(),
            Platform::Google => self.google.is_some(),
            Platform::Sandbox => self.sandbox.is_some(),
        }
    }

    /// Verifies a purchase receipt from `platform` (formats in the crate documentation) at
    /// `now_unix_ms`, the time certificate validity is checked against.
    pub fn verify_receipt(
        &self,
        platform: Platform,
        payload: &str,
        now_unix_ms: i64,
    ) -> Result<VerifiedPurchase, ReceiptError> {
        check_payload_len(payload)?;
        let purchase = match platform {
            Platform::Apple => self.apple()?.verify_transaction(payload, now_unix_ms),
            Platform::Google => self.google()?.verify_receipt(payload),
            Platform::Sandbox => self.sandbox()?.verify_receipt(payload),
        }?;
        debug_assert_eq!(purchase.platform, platform);
        debug_assert!(!purchase.store_transaction_id.is_empty());
        debug_assert!(purchase.quantity >= 1);
        Ok(purchase)
    }

    /// Verifies a refund or revocation notification from `platform` (formats in the crate
    /// documentation) at `now_unix_ms`. Genuine notifications of other kinds come back as
    /// [`VerifiedNotification::Ignored`].
    pub fn verify_notification(
        &self,
        platform: Platform,
        payload: &str,
        now_unix_ms: i64,
    ) -> Result<VerifiedNotification, ReceiptError> {
        check_payload_len(payload)?;
        let notification = match platform {
            Platform::Apple => self.apple()?.verify_notification(payload, now_unix_ms),
            Platform::Google => self.google()?.parse_voided(payload),
            Platform::Sandbox => self.sandbox()?.verify_notification(payload),
        }?;
        if let VerifiedNotification::Refund(refund) = &notification {
            debug_assert_eq!(refund.platform, platform);
            debug_assert!(!refund.store_transaction_id.is_empty());
        }
        Ok(notification)
    }

    fn apple(&self) -> Result<&apple::AppleVerifier, ReceiptError> {
        self.apple
            .as_ref()
            .ok_or(ReceiptError::PlatformNotConfigured {
                platform: Platform::Apple,
            })
    }

    fn google(&self) -> Result<&google::GoogleVerifier, ReceiptError> {
        self.google
            .as_ref()
            .ok_or(ReceiptError::PlatformNotConfigured {
                platform: Platform::Google,
            })
    }

    fn sandbox(&self) -> Result<&sandbox::SandboxVerifier, ReceiptError> {
        self.sandbox
            .as_ref()
            .ok_or(ReceiptError::PlatformNotConfigured {
                platform: Platform::Sandbox,
            })
    }
}

fn check_payload_len(payload: &str) -> Result<(), ReceiptError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(ReceiptError::PayloadTooLarge {
            len_bytes: payload.len(),
            len_bytes_max: PAYLOAD_BYTES_MAX,
        });
    }
    Ok(())
}

/// Parses JSON, naming `what` in the error.
fn parse_json<T: DeserializeOwned>(json: &[u8], what: &str) -> Result<T, ReceiptError> {
    serde_json::from_slice(json).map_err(|error| {
        ReceiptError::malformed(format!("{what} is not the expected JSON: {error}"))
    })
}

/// A present, non-empty identifier of at most [`ID_BYTES_MAX`] bytes without control characters.
fn required_id(field: &str, value: Option<String>) -> Result<String, ReceiptError> {
    let value = value.ok_or_else(|| ReceiptError::malformed(format!("missing {field}")))?;
    if value.is_empty() {
        return Err(ReceiptError::malformed(format!("{field} is empty")));
    }
    check_id(field, value)
}

/// Like [`required_id`] but absent or empty is `None`.
fn optional_id(field: &str, value: Option<String>) -> Result<Option<String>, ReceiptError> {
    value
        .filter(|value| !value.is_empty())
        .map(|value| check_id(field, value))
        .transpose()
}

fn check_id(field: &str, value: String) -> Result<String, ReceiptError> {
    if value.len() > ID_BYTES_MAX {
        return Err(ReceiptError::malformed(format!(
            "{field} is {} bytes, more than {ID_BYTES_MAX}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        // Ids end up in ledger metadata and logs; control characters there are never genuine.
        return Err(ReceiptError::malformed(format!(
            "{field} contains control characters"
        )));
    }
    Ok(value)
}

fn quantity(value: i64) -> Result<u32, ReceiptError> {
    u32::try_from(value)
        .ok()
        .filter(|quantity| (1..=QUANTITY_MAX).contains(quantity))
        .ok_or_else(|| {
            ReceiptError::malformed(format!("quantity {value} is outside 1..={QUANTITY_MAX}"))
        })
}

/// Decodes a 32-byte key written as base64url (how configuration files and the sandbox CLI
/// store sandbox keys). Returns `None` unless it decodes to exactly 32 bytes.
pub fn decode_key_base64url(text: &str) -> Option<[u8; 32]> {
    BASE64_URL.decode(text.trim()).ok()?.try_into().ok()
}

/// Encodes a 32-byte key as base64url without padding (the inverse of
/// [`decode_key_base64url`]).
pub fn encode_key_base64url(key: &[u8; 32]) -> String {
    BASE64_URL.encode(key)
}
