//! Errors: one enum per operation, every variant documented, each with a stable `code()`.

use crate::Platform;

/// Why a receipt or a store notification was refused.
///
/// Variants are ordered roughly by the order in which verification checks them: the envelope
/// (size, encoding), then the cryptography (certificates, signature), then the content (app,
/// environment, purchase state). Match on [`ReceiptError::code`] for a stable, machine-readable
/// name; the `Display` text is for people and may change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The server has no configuration for this store, so it cannot verify anything from it.
    #[error(
        "the {platform} store is not configured on this server; add its settings to the receipt verifier"
    )]
    PlatformNotConfigured {
        /// The store the payload claimed to come from.
        platform: Platform,
    },

    /// The payload is larger than any genuine receipt or notification; refused before parsing.
    #[error("payload is {len_bytes} bytes, more than the {len_bytes_max} bytes a receipt may have")]
    PayloadTooLarge {
        /// Size of the payload that was sent.
        len_bytes: usize,
        /// The limit ([`crate::PAYLOAD_BYTES_MAX`]).
        len_bytes_max: usize,
    },

    /// The payload is not in the format this store uses (bad base64, bad JSON, missing field…).
    /// Usually the client sent the wrong string: see the crate documentation for each format.
    #[error("malformed payload: {reason}")]
    Malformed {
        /// What was wrong, naming the field when there is one.
        reason: String,
    },

    /// The signed payload uses a signature algorithm this store never uses (Apple: only `ES256`).
    #[error("unsupported signature algorithm {alg:?}; App Store payloads are signed with ES256")]
    UnsupportedAlgorithm {
        /// The `alg` found in the header.
        alg: String,
    },

    /// The certificate chain in the payload does not lead to a configured root certificate,
    /// or one of its certificates is not signed by its issuer.
    #[error("untrusted certificate chain: {reason}; check the configured root certificates")]
    UntrustedChain {
        /// What the path validation reported.
        reason: String,
    },

    /// A certificate of the chain had expired at the verification time.
    #[error("a certificate in the chain has expired")]
    CertificateExpired,

    /// A certificate of the chain was not yet valid at the verification time (check the clock).
    #[error("a certificate in the chain is not valid yet; check the server clock")]
    CertificateNotYetValid,

    /// The chain is valid but a certificate lacks Apple's marker extension, so it was not
    /// issued for App Store signing (for example another certificate issued under Apple's root).
    #[error("the {certificate} certificate lacks Apple's App Store marker extension {oid}")]
    NotAppleCertificate {
        /// `"leaf"` or `"intermediate"`.
        certificate: &'static str,
        /// The extension OID that was required.
        oid: &'static str,
    },

    /// The signature does not match the payload: it was altered, or signed with another key.
    #[error("signature does not match the payload (tampered data or wrong key)")]
    BadSignature,

    /// The receipt is genuine but for another app (Apple bundle identifier).
    #[error("receipt is for bundle id {found:?}, but this server is configured for {expected:?}")]
    WrongBundleId {
        /// The configured bundle identifier.
        expected: String,
        /// The bundle identifier in the receipt.
        found: String,
    },

    /// The receipt is genuine but for another app (Google package name).
    #[error("receipt is for package {found:?}, but this server is configured for {expected:?}")]
    WrongPackageName {
        /// The configured package name.
        expected: String,
        /// The package name in the receipt.
        found: String,
    },

    /// The receipt comes from a store environment this server does not accept, e.g. an App Store
    /// sandbox purchase sent to a server that accepts only production, or the reverse.
    #[error("receipt is from environment {found:?}, but this server accepts {expected}")]
    WrongEnvironment {
        /// The accepted environments, comma-separated.
        expected: String,
        /// The environment in the receipt.
        found: String,
    },

    /// The payload is a genuine document of another kind, e.g. a sandbox refund sent as a
    /// receipt, or a receipt sent as a notification.
    #[error("expected a {expected}, found a {found}")]
    WrongPayloadKind {
        /// The kind this call accepts.
        expected: &'static str,
        /// The kind that was sent.
        found: String,
    },

    /// The purchase is not in the purchased state (Google: canceled or pending), so nothing may
    /// be granted yet.
    #[error("purchase is {state}, not purchased; grant nothing until it completes")]
    NotPurchased {
        /// The state the store reports (`canceled`, `pending`, …).
        state: String,
    },

    /// The App Store has refunded or revoked this transaction: it can no longer be redeemed.
    #[error("transaction was refunded or revoked at {revoked_at_unix_ms} (unix ms)")]
    Revoked {
        /// When the App Store revoked it.
        revoked_at_unix_ms: i64,
    },
}

impl ReceiptError {
    /// A stable upper-case name for the variant, for clients and metrics to switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PlatformNotConfigured { .. } => "PLATFORM_NOT_CONFIGURED",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::Malformed { .. } => "MALFORMED",
            Self::UnsupportedAlgorithm { .. } => "UNSUPPORTED_ALGORITHM",
            Self::UntrustedChain { .. } => "UNTRUSTED_CHAIN",
            Self::CertificateExpired => "CERTIFICATE_EXPIRED",
            Self::CertificateNotYetValid => "CERTIFICATE_NOT_YET_VALID",
            Self::NotAppleCertificate { .. } => "NOT_APPLE_CERTIFICATE",
            Self::BadSignature => "BAD_SIGNATURE",
            Self::WrongBundleId { .. } => "WRONG_BUNDLE_ID",
            Self::WrongPackageName { .. } => "WRONG_PACKAGE_NAME",
            Self::WrongEnvironment { .. } => "WRONG_ENVIRONMENT",
            Self::WrongPayloadKind { .. } => "WRONG_PAYLOAD_KIND",
            Self::NotPurchased { .. } => "NOT_PURCHASED",
            Self::Revoked { .. } => "REVOKED",
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed {
            reason: reason.into(),
        }
    }
}

/// Why a [`crate::Verifier`] could not be built from its configuration. These are operator
/// mistakes, reported at start-up rather than on the first purchase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The Apple configuration lists no root certificate, so nothing could ever verify.
    #[error("apple: no root certificate configured (use Apple Root CA - G3 in production)")]
    AppleNoRootCertificate,

    /// An Apple root certificate is not a DER X.509 certificate usable as a trust anchor.
    #[error("apple: root certificate #{index} is not a valid DER certificate: {reason}")]
    AppleInvalidRootCertificate {
        /// Position in `root_certificates_der`.
        index: usize,
        /// What the parser reported.
        reason: String,
    },

    /// The Apple configuration accepts no environment.
    #[error("apple: no accepted environment configured")]
    AppleNoEnvironment,

    /// A required identifier (bundle id, package name) is empty.
    #[error("{field} must not be empty")]
    EmptyField {
        /// The configuration field.
        field: &'static str,
    },

    /// The Google Play licence key is not a base64 X.509 SubjectPublicKeyInfo holding an RSA
    /// key of at least 2048 bits (copy it from Play Console → Monetization setup → Licensing).
    #[error("google: licence public key is invalid: {reason}")]
    GoogleInvalidPublicKey {
        /// What was wrong.
        reason: String,
    },

    /// The sandbox verifying key is not a valid Ed25519 public key.
    #[error("sandbox: verifying key is not a valid Ed25519 public key")]
    SandboxInvalidKey,
}

/// Why [`crate::SandboxIssuer`] refused to issue a test receipt or refund.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// A required field is empty.
    #[error("{field} must not be empty")]
    EmptyField {
        /// The field.
        field: &'static str,
    },
    /// A field is longer than [`crate::ID_BYTES_MAX`].
    #[error("{field} is {len_bytes} bytes, more than {len_bytes_max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len_bytes: usize,
        /// The limit.
        len_bytes_max: usize,
    },
    /// The quantity is zero or above [`crate::QUANTITY_MAX`].
    #[error("quantity {quantity} is outside 1..={quantity_max}")]
    QuantityOutOfRange {
        /// The requested quantity.
        quantity: u32,
        /// The limit.
        quantity_max: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_upper_snake_case() {
        let errors = [
            ReceiptError::PlatformNotConfigured {
                platform: Platform::Apple,
            },
            ReceiptError::PayloadTooLarge {
                len_bytes: 2,
                len_bytes_max: 1,
            },
            ReceiptError::malformed("x"),
            ReceiptError::UnsupportedAlgorithm { alg: "x".into() },
            ReceiptError::UntrustedChain { reason: "x".into() },
            ReceiptError::CertificateExpired,
            ReceiptError::CertificateNotYetValid,
            ReceiptError::NotAppleCertificate {
                certificate: "leaf",
                oid: "1",
            },
            ReceiptError::BadSignature,
            ReceiptError::WrongBundleId {
                expected: "a".into(),
                found: "b".into(),
            },
            ReceiptError::WrongPackageName {
                expected: "a".into(),
                found: "b".into(),
            },
            ReceiptError::WrongEnvironment {
                expected: "a".into(),
                found: "b".into(),
            },
            ReceiptError::WrongPayloadKind {
                expected: "a",
                found: "b".into(),
            },
            ReceiptError::NotPurchased {
                state: "pending".into(),
            },
            ReceiptError::Revoked {
                revoked_at_unix_ms: 1,
            },
        ];
        let mut codes: Vec<&str> = errors.iter().map(ReceiptError::code).collect();
        assert!(
            codes
                .iter()
                .all(|code| code.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        );
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
    }
}
