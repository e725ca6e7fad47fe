//! The values verification returns, and the per-store configuration.

use std::fmt;
use std::str::FromStr;

/// A store a receipt or notification comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Apple App Store (StoreKit 2 and App Store Server Notifications V2).
    Apple,
    /// Google Play (Play Billing purchase data and voided purchases).
    Google,
    /// Coffer's own Ed25519-signed test store, for development and the demo game.
    Sandbox,
}

impl Platform {
    /// Every platform, in a fixed order.
    pub const ALL: [Platform; 3] = [Platform::Apple, Platform::Google, Platform::Sandbox];

    /// The lower-case name used in configuration, account names (`system:store:<name>`) and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apple => "apple",
            Platform::Google => "google",
            Platform::Sandbox => "sandbox",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of `apple`, `google`, `sandbox`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown store platform {0:?}; expected apple, google or sandbox")]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Platform::ALL
            .into_iter()
            .find(|platform| platform.as_str() == name)
            .ok_or_else(|| UnknownPlatform(name.to_owned()))
    }
}

/// A purchase whose receipt verified: genuine, for this app, in an accepted environment, and
/// completed. Grant it once per `(platform, store_transaction_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPurchase {
    /// The store it came from.
    pub platform: Platform,
    /// Unique per store purchase: Apple `transactionId`; Google `orderId` (or `purchaseToken`
    /// when the order id is empty); sandbox `transactionId`. The idempotency key for grants.
    pub store_transaction_id: String,
    /// Apple `originalTransactionId` (the first purchase of a subscription or a restored
    /// purchase); `None` for the other stores.
    pub original_transaction_id: Option<String>,
    /// The store product id, to look up in the catalog.
    pub product_id: String,
    /// How many units were bought (Apple `quantity`, Google `quantity`); at least 1.
    pub quantity: u32,
    /// When the store says the purchase happened.
    pub purchased_at_unix_ms: i64,
    /// The price in thousandths of the currency unit, as Apple reports it (`price`).
    pub price_milliunits: Option<i64>,
    /// The price in the currency's minor unit (cents for USD, yen for JPY), when the store
    /// reports a price and it converts exactly.
    pub price_minor_units: Option<i64>,
    /// ISO 4217 currency code, when the store reports a price.
    pub currency_code: Option<String>,
    /// Apple: `Production` or `Sandbox`; Google: `production`; sandbox: `sandbox`.
    pub environment: String,
    /// Who the client said the purchase is for: Apple `appAccountToken`, Google
    /// `obfuscatedAccountId`, sandbox `playerId`. Signed by the store, chosen by the client.
    pub player_hint: Option<String>,
}

/// What a store did to a past purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundKind {
    /// The buyer got their money back (Apple `REFUND`, Google voided purchase, sandbox refund).
    Refund,
    /// Access was withdrawn without a refund to this buyer (Apple `REVOKE`: Family Sharing
    /// ended; sandbox revoke).
    Revoke,
}

/// A refund or revocation notice that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRefund {
    /// The store it came from.
    pub platform: Platform,
    /// The refunded purchase, same value as [`VerifiedPurchase::store_transaction_id`].
    pub store_transaction_id: String,
    /// The refunded product, when the notice names it (Apple, sandbox).
    pub product_id: Option<String>,
    /// Refund or revocation.
    pub kind: RefundKind,
    /// When the store refunded or revoked it.
    pub at_unix_ms: i64,
    /// The store environment, as in [`VerifiedPurchase::environment`].
    pub environment: String,
    /// The store's reason, when given (Apple `revocationReason`, Google `voidedReason`).
    pub reason: Option<String>,
}

/// The outcome of a store notification that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedNotification {
    /// A purchase was refunded or revoked: reverse its grant once.
    Refund(VerifiedRefund),
    /// A genuine notification of a type Coffer does not act on (e.g. Apple `DID_RENEW`,
    /// `CONSUMPTION_REQUEST`, `TEST`). Acknowledge it and do nothing.
    Ignored {
        /// The store's type name, e.g. `CONSUMPTION_REQUEST`.
        notification_type: String,
    },
}

/// An App Store environment a server accepts transactions from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppleEnvironment {
    /// Real purchases.
    Production,
    /// Sandbox purchases (TestFlight, sandbox testers, and App Review).
    Sandbox,
}

impl AppleEnvironment {
    /// The value of the `environment` field in Apple's payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            AppleEnvironment::Production => "Production",
            AppleEnvironment::Sandbox => "Sandbox",
        }
    }
}

/// How to verify App Store receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppleConfig {
    /// DER root certificates the `x5c` chains must lead to. Production: Apple Root CA - G3
    /// (`AppleRootCA-G3.cer` from <https://www.apple.com/certificateauthority/>).
    pub root_certificates_der: Vec<Vec<u8>>,
    /// The app's bundle identifier, e.g. `com.example.game`.
    pub bundle_id: String,
    /// Environments to accept. App Review buys in the sandbox with your production build, so a
    /// production server usually accepts both and books sandbox revenue separately.
    pub accepted_environments: Vec<AppleEnvironment>,
}

/// How to verify Google Play receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleConfig {
    /// The app's package name, e.g. `com.example.game`.
    pub package_name: String,
    /// The app's licence key from Play Console (Monetize → Monetization setup → Licensing):
    /// base64 of an X.509 SubjectPublicKeyInfo holding an RSA key.
    pub license_public_key_base64: String,
}

/// How to verify Coffer sandbox receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The Ed25519 public key of the [`crate::SandboxIssuer`] that signs test receipts.
    pub verifying_key: [u8; 32],
}

/// Which stores a [`crate::Verifier`] accepts; a store left `None` is refused with
/// [`crate::ReceiptError::PlatformNotConfigured`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifierConfig {
    /// App Store settings.
    pub apple: Option<AppleConfig>,
    /// Google Play settings.
    pub google: Option<GoogleConfig>,
    /// Sandbox store settings (development only).
    pub sandbox: Option<SandboxConfig>,
}
