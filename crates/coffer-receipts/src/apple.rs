//! App Store: StoreKit 2 signed transactions and App Store Server Notifications V2.
//!
//! Both are JWS compact serializations signed with ES256 by a leaf certificate whose chain is
//! in the `x5c` header. Verification follows Apple's own `SignedDataVerifier`
//! (app-store-server-library): the chain must lead to a configured root, every certificate must
//! be valid at the verification time, the leaf and its issuer must carry Apple's marker
//! extensions, and the JWS must verify with the leaf's P-256 key. Online OCSP checks are not
//! done (this crate does no I/O).

use std::time::Duration;

use base64::Engine as _;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use serde::Deserialize;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

use crate::error::{ConfigError, ReceiptError};
use crate::types::{
    AppleConfig, AppleEnvironment, Platform, RefundKind, VerifiedNotification, VerifiedPurchase,
    VerifiedRefund,
};
use crate::{
    BASE64_STANDARD_LENIENT, BASE64_URL, X5C_CERTIFICATES_MAX, optional_id, parse_json,
    price::milliunits_to_minor_units, quantity, required_id,
};

/// Extension Apple puts in every App Store receipt-signing leaf certificate.
pub const APPLE_LEAF_MARKER_OID: &str = "1.2.840.113635.100.6.11.1";
/// Extension Apple puts in the Worldwide Developer Relations intermediate certificate.
pub const APPLE_INTERMEDIATE_MARKER_OID: &str = "1.2.840.113635.100.6.2.1";
/// OID of the NIST P-256 curve, the only key ES256 allows.
const OID_CURVE_P256: &str = "1.2.840.10045.3.1.7";

/// Certificate signature algorithms accepted in the chain. Apple's chain is all ECDSA
/// (Root CA G3 is P-384); RSA is not needed, so it is not accepted.
static CHAIN_SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
];

/// Accepts any extended key usage: Apple's receipt chain is identified by its marker
/// extensions, not by EKU, and Apple's verifier does not constrain EKU either.
struct AnyExtendedKeyUsage;

impl ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        // Still reject a malformed EKU extension.
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

/// The configured App Store verifier, with its roots parsed once.
#[derive(Debug)]
pub(crate) struct AppleVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    roots_der: Vec<Vec<u8>>,
    bundle_id: String,
    accepted_environments: Vec<AppleEnvironment>,
}

#[derive(Deserialize)]
struct JwsHeader {
    alg: Option<String>,
    x5c: Option<Vec<String>>,
    crit: Option<serde_json::Value>,
}

/// The fields of `JWSTransactionDecodedPayload` Coffer uses; all optional so that a missing
/// field is reported by name.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionPayload {
    bundle_id: Option<String>,
    environment: Option<String>,
    product_id: Option<String>,
    transaction_id: Option<String>,
    original_transaction_id: Option<String>,
    purchase_date: Option<i64>,
    quantity: Option<i64>,
    price: Option<i64>,
    currency: Option<String>,
    revocation_date: Option<i64>,
    revocation_reason: Option<i64>,
    app_account_token: Option<String>,
}

/// The fields of `ResponseBodyV2DecodedPayload` Coffer uses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationPayload {
    notification_type: Option<String>,
    data: Option<NotificationData>,
    signed_date: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationData {
    bundle_id: Option<String>,
    environment: Option<String>,
    signed_transaction_info: Option<String>,
}

/// The HTTP body Apple POSTs to the notification URL.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationBody {
    signed_payload: Option<String>,
}

impl AppleVerifier {
    pub(crate) fn new(config: AppleConfig) -> Result<Self, ConfigError> {
        if config.root_certificates_der.is_empty() {
            return Err(ConfigError::AppleNoRootCertificate);
        }
        if config.bundle_id.is_empty() {
            return Err(ConfigError::EmptyField { field: "bundle_id" });
        }
        if config.accepted_environments.is_empty() {
            return Err(ConfigError::AppleNoEnvironment);
        }
        let mut anchors = Vec::with_capacity(config.root_certificates_der.len());
        for (index, der) in config.root_certificates_der.iter().enumerate() {
            let invalid =
                |reason: String| ConfigError::AppleInvalidRootCertificate { index, reason };
            // Parsed with both libraries: webpki for the anchor, x509-parser for the validity
            // period checked at verification time.
            X509Certificate::from_der(der).map_err(|e| invalid(e.to_string()))?;
            let cert_der = CertificateDer::from(der.as_slice());
            let anchor =
                webpki::anchor_from_trusted_cert(&cert_der).map_err(|e| invalid(e.to_string()))?;
            anchors.push(anchor.to_owned());
        }
        Ok(Self {
            anchors,
            roots_der: config.root_certificates_der,
            bundle_id: config.bundle_id,
            accepted_environments: config.accepted_environments,
        })
    }

    /// Verifies a StoreKit 2 signed transaction (`Transaction.jwsRepresentation`).
    pub(crate) fn verify_transaction(
        &self,
        jws: &str,
        now_unix_ms: i64,
    ) -> Result<VerifiedPurchase, ReceiptError> {
        let payload_json = self.verify_jws(jws.trim(), now_unix_ms)?;
        let payload: TransactionPayload = parse_json(&payload_json, "transaction payload")?;
        let transaction = self.check_transaction(payload)?;
        if let Some(revoked_at_unix_ms) = transaction.revocation_date {
            return Err(ReceiptError::Revoked { revoked_at_unix_ms });
        }
        Ok(transaction.purchase)
    }

    /// Verifies an App Store Server Notification V2: the raw `signedPayload` JWS, or the JSON
    /// body `{"signedPayload": "..."}` exactly as Apple POSTs it.
    pub(crate) fn verify_notification(
        &self,
        payload: &str,
        now_unix_ms: i64,
    ) -> Result<VerifiedNotification, ReceiptError> {
        let payload = payload.trim();
        let signed_payload = if payload.starts_with('{') {
            let body: NotificationBody = parse_json(payload.as_bytes(), "notification body")?;
            body.signed_payload
                .ok_or_else(|| ReceiptError::malformed("notification body has no signedPayload"))?
        } else {
            payload.to_owned()
        };
        let notification_json = self.verify_jws(&signed_payload, now_unix_ms)?;
        let notification: NotificationPayload =
            parse_json(&notification_json, "notification payload")?;
        let notification_type = required_id("notificationType", notification.notification_type)?;

        // Summary-style notifications carry no `data`; they are never refunds.
        let Some(data) = notification.data else {
            return refund_kind(&notification_type).map_or(
                Ok(VerifiedNotification::Ignored { notification_type }),
                |_| Err(ReceiptError::malformed("refund notification has no data")),
            );
        };
        self.check_bundle_id(data.bundle_id)?;
        let environment = self.check_environment(data.environment)?;
        let Some(kind) = refund_kind(&notification_type) else {
            return Ok(VerifiedNotification::Ignored { notification_type });
        };

        let signed_transaction = data.signed_transaction_info.ok_or_else(|| {
            ReceiptError::malformed("refund notification has no data.signedTransactionInfo")
        })?;
        let transaction_json = self.verify_jws(&signed_transaction, now_unix_ms)?;
        let transaction: TransactionPayload =
            parse_json(&transaction_json, "signedTransactionInfo payload")?;
        let transaction = self.check_transaction(transaction)?;
        if transaction.purchase.environment != environment {
            return Err(ReceiptError::malformed(
                "notification and its transaction are from different environments",
            ));
        }
        let at_unix_ms = transaction
            .revocation_date
            .or(notification.signed_date)
            .ok_or_else(|| ReceiptError::malformed("neither revocationDate nor signedDate"))?;
        Ok(VerifiedNotification::Refund(VerifiedRefund {
            platform: Platform::Apple,
            store_transaction_id: transaction.purchase.store_transaction_id,
            product_id: Some(transaction.purchase.product_id),
            kind,
            at_unix_ms,
            environment,
            reason: transaction.revocation_reason.map(|reason| {
                // Apple documents 0 (other) and 1 (an issue in the app).
                match reason {
                    0 => "other".to_owned(),
                    1 => "app_issue".to_owned(),
                    other => format!("unknown({other})"),
                }
            }),
        }))
    }

    /// Checks a decoded transaction's app, environment and fields.
    fn check_transaction(
        &self,
        payload: TransactionPayload,
    ) -> Result<CheckedTransaction, ReceiptError> {
        self.check_bundle_id(payload.bundle_id)?;
        let environment = self.check_environment(payload.environment)?;
        let price_milliunits = payload.price;
        let currency_code = optional_id("currency", payload.currency)?;
        let price_minor_units = match (price_milliunits, currency_code.as_deref()) {
            (Some(price), Some(currency)) => milliunits_to_minor_units(price, currency),
            _ => None,
        };
        let purchase = VerifiedPurchase {
            platform: Platform::Apple,
            store_transaction_id: required_id("transactionId", payload.transaction_id)?,
            original_transaction_id: optional_id(
                "originalTransactionId",
                payload.original_transaction_id,
            )?,
            product_id: required_id("productId", payload.product_id)?,
            quantity: quantity(payload.quantity.unwrap_or(1))?,
            purchased_at_unix_ms: payload
                .purchase_date
                .ok_or_else(|| ReceiptError::malformed("missing purchaseDate"))?,
            price_milliunits,
            price_minor_units,
            currency_code,
            environment,
            player_hint: optional_id("appAccountToken", payload.app_account_token)?,
        };
        Ok(CheckedTransaction {
            purchase,
            revocation_date: payload.revocation_date,
            revocation_reason: payload.revocation_reason,
        })
    }

    fn check_bundle_id(&self, found: Option<String>) -> Result<(), ReceiptError> {
        let found = required_id("bundleId", found)?;
        if found != self.bundle_id {
            return Err(ReceiptError::WrongBundleId {
                expected: self.bundle_id.clone(),
                found,
            });
        }
        Ok(())
    }

    /// Returns the environment name when it is one this server accepts.
    fn check_environment(&self, found: Option<String>) -> Result<String, ReceiptError> {
        let found = required_id("environment", found)?;
        let accepted = self
            .accepted_environments
            .iter()
            .any(|environment| environment.as_str() == found);
        if !accepted {
            let expected = self
                .accepted_environments
                .iter()
                .map(|environment| environment.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ReceiptError::WrongEnvironment { expected, found });
        }
        Ok(found)
    }

    /// Verifies a JWS compact serialization signed through an `x5c` chain and returns its
    /// payload bytes.
    fn verify_jws(&self, jws: &str, now_unix_ms: i64) -> Result<Vec<u8>, ReceiptError> {
        let mut parts = jws.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ReceiptError::malformed(
                "not a JWS: expected three base64url parts separated by '.'",
            ));
        };
        let header_json = decode_b64url("JWS header", header_b64)?;
        let header: JwsHeader = parse_json(&header_json, "JWS header")?;
        let alg = header
            .alg
            .ok_or_else(|| ReceiptError::malformed("JWS header has no alg"))?;
        if alg != "ES256" {
            return Err(ReceiptError::UnsupportedAlgorithm { alg });
        }
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: a verifier must refuse critical header parameters it does not
            // understand, and Apple defines none.
            return Err(ReceiptError::malformed(
                "JWS header has unsupported crit parameters",
            ));
        }
        let x5c = header
            .x5c
            .ok_or_else(|| ReceiptError::malformed("JWS header has no x5c certificate chain"))?;
        if x5c.is_empty() || x5c.len() > X5C_CERTIFICATES_MAX {
            return Err(ReceiptError::malformed(format!(
                "x5c has {} certificates, expected 1 to {X5C_CERTIFICATES_MAX}",
                x5c.len()
            )));
        }
        let mut chain_der = Vec::with_capacity(x5c.len());
        for (index, cert_b64) in x5c.iter().enumerate() {
            let der = BASE64_STANDARD_LENIENT.decode(cert_b64).map_err(|_| {
                ReceiptError::malformed(format!("x5c[{index}] is not standard base64"))
            })?;
            chain_der.push(der);
        }
        let leaf_public_key = self.verify_chain(&chain_der, now_unix_ms)?;

        let signature = decode_b64url("JWS signature", signature_b64)?;
        // The signing input is the ASCII of `header.payload`, exactly as received.
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = &jws.as_bytes()[..signing_input_len];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &leaf_public_key)
            .verify(signing_input, &signature)
            .map_err(|_| ReceiptError::BadSignature)?;
        decode_b64url("JWS payload", payload_b64)
    }

    /// Validates the chain (leaf first) at `now_unix_ms` and returns the leaf's P-256 public
    /// key as an uncompressed point.
    fn verify_chain(
        &self,
        chain_der: &[Vec<u8>],
        now_unix_ms: i64,
    ) -> Result<Vec<u8>, ReceiptError> {
        debug_assert!(!chain_der.is_empty());
        let (leaf_der, intermediates_der) = chain_der
            .split_first()
            .ok_or_else(|| ReceiptError::malformed("empty certificate chain"))?;
        let leaf_cert_der = CertificateDer::from(leaf_der.as_slice());
        let leaf = EndEntityCert::try_from(&leaf_cert_der).map_err(|e| {
            ReceiptError::malformed(format!("x5c[0] is not a valid certificate: {e}"))
        })?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates_der
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        // A time before 1970 is a caller bug; clamping makes every certificate "not yet valid"
        // instead of panicking.
        let now_ms = u64::try_from(now_unix_ms).unwrap_or(0);
        let time = UnixTime::since_unix_epoch(Duration::from_millis(now_ms));
        let path = leaf
            .verify_for_usage(
                CHAIN_SIGNATURE_ALGORITHMS,
                &self.anchors,
                &intermediates,
                time,
                AnyExtendedKeyUsage,
                None,
                None,
            )
            .map_err(chain_error)?;

        // webpki does not check the trust anchor's own validity period; Apple's verifier does.
        let anchor_spki: &[u8] = path.anchor().subject_public_key_info.as_ref();
        let root_der = self
            .anchors
            .iter()
            .position(|anchor| anchor.subject_public_key_info.as_ref() == anchor_spki)
            .and_then(|index| self.roots_der.get(index))
            .ok_or_else(|| ReceiptError::UntrustedChain {
                reason: "verified path ends at an unknown anchor".to_owned(),
            })?;
        check_validity(root_der, now_ms)?;

        let leaf_x509 = parse_x509(leaf_der)?;
        require_extension(&leaf_x509, "leaf", APPLE_LEAF_MARKER_OID)?;
        let issuer =
            path.intermediate_certificates()
                .next()
                .ok_or(ReceiptError::NotAppleCertificate {
                    certificate: "intermediate",
                    oid: APPLE_INTERMEDIATE_MARKER_OID,
                })?;
        let issuer_der = issuer.der();
        let issuer_x509 = parse_x509(issuer_der.as_ref())?;
        require_extension(&issuer_x509, "intermediate", APPLE_INTERMEDIATE_MARKER_OID)?;

        let spki = leaf_x509.public_key();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.as_oid().ok())
            .map(|oid| oid.to_id_string());
        if curve.as_deref() != Some(OID_CURVE_P256) {
            return Err(ReceiptError::UnsupportedAlgorithm {
                alg: "ES256 with a non-P-256 leaf key".to_owned(),
            });
        }
        Ok(spki.subject_public_key.data.to_vec())
    }
}

struct CheckedTransaction {
    purchase: VerifiedPurchase,
    revocation_date: Option<i64>,
    revocation_reason: Option<i64>,
}

/// The notification types that reverse a grant; every other type is ignored.
fn refund_kind(notification_type: &str) -> Option<RefundKind> {
    match notification_type {
        "REFUND" => Some(RefundKind::Refund),
        "REVOKE" => Some(RefundKind::Revoke),
        _ => None,
    }
}

fn chain_error(error: webpki::Error) -> ReceiptError {
    match error {
        webpki::Error::CertExpired { .. } => ReceiptError::CertificateExpired,
        webpki::Error::CertNotValidYet { .. } => ReceiptError::CertificateNotYetValid,
        webpki::Error::UnknownIssuer => ReceiptError::UntrustedChain {
            reason: "no path from the x5c chain to a configured root certificate".to_owned(),
        },
        other => ReceiptError::UntrustedChain {
            reason: other.to_string(),
        },
    }
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, ReceiptError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| ReceiptError::malformed(format!("certificate does not parse: {e}")))
}

fn check_validity(der: &[u8], now_ms: u64) -> Result<(), ReceiptError> {
    let cert = parse_x509(der)?;
    let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let now = ASN1Time::from_timestamp(now_s)
        .map_err(|_| ReceiptError::malformed("verification time out of range"))?;
    let validity = cert.validity();
    if now < validity.not_before {
        return Err(ReceiptError::CertificateNotYetValid);
    }
    if now > validity.not_after {
        return Err(ReceiptError::CertificateExpired);
    }
    Ok(())
}

fn require_extension(
    cert: &X509Certificate<'_>,
    certificate: &'static str,
    oid: &'static str,
) -> Result<(), ReceiptError> {
    let present = cert
        .extensions()
        .iter()
        .any(|extension| extension.oid.to_id_string() == oid);
    if !present {
        return Err(ReceiptError::NotAppleCertificate { certificate, oid });
    }
    Ok(())
}

fn decode_b64url(what: &str, text: &str) -> Result<Vec<u8>, ReceiptError> {
    BASE64_URL
        .decode(text)
        .map_err(|_| ReceiptError::malformed(format!("{what} is not base64url")))
}
