//! Google Play: the purchase data JSON signed with the app's licence key, and voided purchases.
//!
//! Play Billing gives the app `Purchase.getOriginalJson()` (the INAPP_PURCHASE_DATA string) and
//! `Purchase.getSignature()` (INAPP_DATA_SIGNATURE): a base64 RSASSA-PKCS1-v1_5 signature with
//! SHA-1 over the exact bytes of that JSON, verifiable with the licence public key from Play
//! Console. Voided purchases are not signed at all: Google only hands them out through the
//! authenticated Voided Purchases API or Real-Time Developer Notifications, so they are
//! trusted input from the studio's own backend and are only parsed and validated here.

use base64::Engine as _;
use ring::signature::{RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RsaPublicKeyComponents};
use serde::Deserialize;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{ConfigError, ReceiptError};
use crate::types::{
    GoogleConfig, Platform, RefundKind, VerifiedNotification, VerifiedPurchase, VerifiedRefund,
};
use crate::{BASE64_STANDARD_LENIENT, optional_id, parse_json, quantity, required_id};

/// The environment reported for Google purchases: the signed purchase data does not say whether
/// a licence tester made it (only the Play Developer API's `purchaseType` does).
pub const GOOGLE_ENVIRONMENT: &str = "production";
/// Smallest licence key accepted; Play Console keys are 2048-bit.
const RSA_MODULUS_BITS_MIN: usize = 2048;
/// OID of `rsaEncryption`, the algorithm of Play licence keys.
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

#[derive(Debug)]
pub(crate) struct GoogleVerifier {
    package_name: String,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
}

/// The envelope a game sends for a Google Play purchase.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptEnvelope {
    purchase_data: Option<String>,
    signature: Option<String>,
}

/// The INAPP_PURCHASE_DATA fields Coffer uses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PurchaseData {
    order_id: Option<String>,
    package_name: Option<String>,
    product_id: Option<String>,
    product_ids: Option<Vec<String>>,
    purchase_time: Option<i64>,
    purchase_state: Option<i64>,
    purchase_token: Option<String>,
    quantity: Option<i64>,
    obfuscated_account_id: Option<String>,
}

/// A record from the Voided Purchases API (`androidpublisher#voidedPurchase`), or a Real-Time
/// Developer Notification (`DeveloperNotification`) forwarded by the studio's backend.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VoidedInput {
    // Voided Purchases API record.
    order_id: Option<String>,
    purchase_token: Option<String>,
    voided_time_millis: Option<Millis>,
    voided_reason: Option<i64>,
    // Real-Time Developer Notification.
    package_name: Option<String>,
    event_time_millis: Option<Millis>,
    voided_purchase_notification: Option<VoidedPurchaseNotification>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VoidedPurchaseNotification {
    purchase_token: Option<String>,
    order_id: Option<String>,
}

/// Google's JSON encodes int64 as a string (`"1234"`); accept a number too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Millis {
    Number(i64),
    Text(String),
}

impl Millis {
    fn get(self, field: &str) -> Result<i64, ReceiptError> {
        match self {
            Millis::Number(value) => Ok(value),
            Millis::Text(text) => text
                .parse()
                .map_err(|_| ReceiptError::malformed(format!("{field} is not an integer"))),
        }
    }
}

impl GoogleVerifier {
    pub(crate) fn new(config: GoogleConfig) -> Result<Self, ConfigError> {
        if config.package_name.is_empty() {
            return Err(ConfigError::EmptyField {
                field: "package_name",
            });
        }
        let invalid = |reason: &str| ConfigError::GoogleInvalidPublicKey {
            reason: reason.to_owned(),
        };
        let spki_der = BASE64_STANDARD_LENIENT
            .decode(config.license_public_key_base64.trim())
            .map_err(|_| invalid("not base64"))?;
        let (_, spki) = SubjectPublicKeyInfo::from_der(&spki_der)
            .map_err(|_| invalid("not a DER SubjectPublicKeyInfo"))?;
        if spki.algorithm.algorithm.to_id_string() != OID_RSA_ENCRYPTION {
            return Err(invalid("not an RSA key"));
        }
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(invalid("RSA key does not parse"));
        };
        let modulus = strip_leading_zeros(rsa.modulus);
        if modulus.len() * 8 < RSA_MODULUS_BITS_MIN {
            return Err(invalid("RSA key is shorter than 2048 bits"));
        }
        Ok(Self {
            package_name: config.package_name,
            modulus: modulus.to_vec(),
            exponent: strip_leading_zeros(rsa.exponent).to_vec(),
        })
    }

    /// Verifies `{"purchaseData": "<INAPP_PURCHASE_DATA>", "signature": "<base64>"}`.
    pub(crate) fn verify_receipt(&self, payload: &str) -> Result<VerifiedPurchase, ReceiptError> {
        let envelope: ReceiptEnvelope = parse_json(payload.as_bytes(), "Google receipt envelope")?;
        let purchase_data = envelope
            .purchase_data
            .ok_or_else(|| ReceiptError::malformed("missing purchaseData"))?;
        let signature_b64 = envelope
            .signature
            .ok_or_else(|| ReceiptError::malformed("missing signature"))?;
        let signature = BASE64_STANDARD_LENIENT
            .decode(signature_b64.trim())
            .map_err(|_| ReceiptError::malformed("signature is not base64"))?;
        // The signature covers the exact bytes of purchaseData: verify before parsing, and
        // never re-serialize it.
        RsaPublicKeyComponents {
            n: &self.modulus,
            e: &self.exponent,
        }
        .verify(
            &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            purchase_data.as_bytes(),
            &signature,
        )
        .map_err(|_| ReceiptError::BadSignature)?;

        let data: PurchaseData = parse_json(purchase_data.as_bytes(), "purchaseData")?;
        let package_name = required_id("packageName", data.package_name)?;
        if package_name != self.package_name {
            return Err(ReceiptError::WrongPackageName {
                expected: self.package_name.clone(),
                found: package_name,
            });
        }
        match data.purchase_state {
            // The field is absent in some older purchase data; Play Billing reads absent as
            // purchased as well.
            Some(0) | None => {}
            Some(state) => {
                return Err(ReceiptError::NotPurchased {
                    state: purchase_state_name(state),
                });
            }
        }
        let product_id = match (data.product_id, data.product_ids) {
            (Some(product_id), _) => required_id("productId", Some(product_id))?,
            (None, Some(product_ids)) if product_ids.len() == 1 => {
                required_id("productIds[0]", product_ids.into_iter().next())?
            }
            (None, Some(_)) => {
                return Err(ReceiptError::malformed(
                    "purchases of several products at once are not supported",
                ));
            }
            (None, None) => return Err(ReceiptError::malformed("missing productId")),
        };
        Ok(VerifiedPurchase {
            platform: Platform::Google,
            store_transaction_id: transaction_id(data.order_id, data.purchase_token)?,
            original_transaction_id: None,
            product_id,
            quantity: quantity(data.quantity.unwrap_or(1))?,
            purchased_at_unix_ms: data
                .purchase_time
                .ok_or_else(|| ReceiptError::malformed("missing purchaseTime"))?,
            price_milliunits: None,
            price_minor_units: None,
            currency_code: None,
            environment: GOOGLE_ENVIRONMENT.to_owned(),
            player_hint: optional_id("obfuscatedAccountId", data.obfuscated_account_id)?,
        })
    }

    /// Parses a voided purchase (trusted input, see the module documentation).
    pub(crate) fn parse_voided(&self, payload: &str) -> Result<VerifiedNotification, ReceiptError> {
        let input: VoidedInput = parse_json(payload.as_bytes(), "Google voided purchase")?;
        if let Some(package_name) = input.package_name {
            // A Real-Time Developer Notification names the app; a Voided Purchases API record
            // does not (the request did).
            if package_name != self.package_name {
                return Err(ReceiptError::WrongPackageName {
                    expected: self.package_name.clone(),
                    found: package_name,
                });
            }
            let Some(voided) = input.voided_purchase_notification else {
                return Ok(VerifiedNotification::Ignored {
                    notification_type: "developer_notification".to_owned(),
                });
            };
            let at_unix_ms = input
                .event_time_millis
                .ok_or_else(|| ReceiptError::malformed("missing eventTimeMillis"))?
                .get("eventTimeMillis")?;
            return Ok(VerifiedNotification::Refund(voided_refund(
                transaction_id(voided.order_id, voided.purchase_token)?,
                at_unix_ms,
                None,
            )));
        }
        let at_unix_ms = input
            .voided_time_millis
            .ok_or_else(|| ReceiptError::malformed("missing voidedTimeMillis"))?
            .get("voidedTimeMillis")?;
        Ok(VerifiedNotification::Refund(voided_refund(
            transaction_id(input.order_id, input.purchase_token)?,
            at_unix_ms,
            input.voided_reason.map(voided_reason_name),
        )))
    }
}

fn voided_refund(
    store_transaction_id: String,
    at_unix_ms: i64,
    reason: Option<String>,
) -> VerifiedRefund {
    VerifiedRefund {
        platform: Platform::Google,
        store_transaction_id,
        product_id: None,
        kind: RefundKind::Refund,
        at_unix_ms,
        environment: GOOGLE_ENVIRONMENT.to_owned(),
        reason,
    }
}

/// The order id identifies a Play purchase; Google leaves it empty for some test purchases,
/// and then the purchase token (also unique per purchase) stands in. Purchases and voided
/// records use the same rule, so a refund finds its purchase.
fn transaction_id(
    order_id: Option<String>,
    purchase_token: Option<String>,
) -> Result<String, ReceiptError> {
    match order_id.filter(|order_id| !order_id.is_empty()) {
        Some(order_id) => required_id("orderId", Some(order_id)),
        None => required_id("purchaseToken", purchase_token)
            .map_err(|_| ReceiptError::malformed("missing both orderId and purchaseToken")),
    }
}

/// Names for `purchaseState`: the Play Developer API uses 0 purchased, 1 canceled, 2 pending;
/// the purchase data JSON from Play Billing uses 4 for pending.
fn purchase_state_name(state: i64) -> String {
    match state {
        1 => "canceled".to_owned(),
        2 | 4 => "pending".to_owned(),
        other => format!("unknown state {other}"),
    }
}

/// Names for the Voided Purchases API `voidedReason`.
fn voided_reason_name(reason: i64) -> String {
    let name = match reason {
        0 => "other",
        1 => "remorse",
        2 => "not_received",
        3 => "defective",
        4 => "accidental_purchase",
        5 => "fraud",
        6 => "friendly_fraud",
        7 => "chargeback",
        _ => return format!("unknown({reason})"),
    };
    name.to_owned()
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first_nonzero = bytes
        .iter()
        .position(|&byte| byte != 0)
        .unwrap_or(bytes.len());
    &bytes[first_nonzero..]
}
