//! Real-money store receipts on the server side: the verifier built from the settings, the
//! sandbox store's issuer, and the refund policy. Verification happens in the handlers (it needs
//! the clock and does cryptography); the writer only ever sees verified facts.

use std::path::{Path, PathBuf};

use coffer_core::{RefundPolicy, StorePlatform};
use coffer_receipts::{
    AppleConfig, GoogleConfig, Platform, SandboxConfig, SandboxIssuer, Verifier, VerifierConfig,
};

use crate::settings::write_private;

/// File in the data directory holding a development server's sandbox store signing key.
pub const DEVELOPMENT_SANDBOX_KEY_FILE: &str = "development-sandbox-store-key.txt";

/// Where the sandbox store's key comes from.
#[derive(Clone, Default)]
pub enum SandboxStore {
    /// The sandbox store is off: sandbox receipts are refused with PLATFORM_NOT_CONFIGURED.
    #[default]
    Disabled,
    /// Development: a key generated once and kept in [`DEVELOPMENT_SANDBOX_KEY_FILE`].
    GeneratedInDataDir,
    /// This Ed25519 secret key (seed): the server verifies and issues sandbox receipts.
    SecretKey([u8; 32]),
    /// Only this public key: the server verifies receipts issued elsewhere (e.g. by the CLI).
    VerifyingKey([u8; 32]),
}

impl std::fmt::Debug for SandboxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        let name = match self {
            Self::Disabled => "Disabled",
            Self::GeneratedInDataDir => "GeneratedInDataDir",
            Self::SecretKey(_) => "SecretKey(..)",
            Self::VerifyingKey(_) => "VerifyingKey(..)",
        };
        f.write_str(name)
    }
}

/// How receipts are verified and refunds applied.
#[derive(Debug, Clone)]
pub struct ReceiptSettings {
    /// App Store verification, when the game sells on iOS/macOS.
    pub apple: Option<AppleConfig>,
    /// Google Play verification, when the game sells on Android.
    pub google: Option<GoogleConfig>,
    /// The sandbox store (development only).
    pub sandbox: SandboxStore,
    /// How refunds take back what a purchase granted.
    pub refund_policy: RefundPolicy,
}

impl Default for ReceiptSettings {
    /// No store configured; refunds claw back.
    fn default() -> Self {
        ReceiptSettings {
            apple: None,
            google: None,
            sandbox: SandboxStore::Disabled,
            refund_policy: RefundPolicy::ClawBack,
        }
    }
}

/// What the handlers use: a verifier for the configured stores, the sandbox issuer when the
/// server holds the sandbox secret key, and the refund policy.
#[derive(Debug)]
pub struct Receipts {
    pub verifier: Verifier,
    pub sandbox_issuer: Option<SandboxIssuer>,
    pub refund_policy: RefundPolicy,
}

impl Receipts {
    /// Builds the verifier (parsing certificates and keys) and, in development, reads or
    /// generates the sandbox key in `data_dir`.
    pub fn new(settings: &ReceiptSettings, data_dir: &Path) -> Result<Receipts, String> {
        let secret_key = match &settings.sandbox {
            SandboxStore::Disabled | SandboxStore::VerifyingKey(_) => None,
            SandboxStore::SecretKey(key) => Some(*key),
            SandboxStore::GeneratedInDataDir => Some(development_sandbox_key(data_dir)?),
        };
        let sandbox_issuer = secret_key.map(SandboxIssuer::from_secret_key);
        let sandbox = match (&settings.sandbox, &sandbox_issuer) {
            (SandboxStore::VerifyingKey(key), _) => Some(SandboxConfig {
                verifying_key: *key,
            }),
            (_, Some(issuer)) => Some(issuer.config()),
            (_, None) => None,
        };
        let verifier = Verifier::new(VerifierConfig {
            apple: settings.apple.clone(),
            google: settings.google.clone(),
            sandbox,
        })
        .map_err(|e| format!("receipts: {e}"))?;
        Ok(Receipts {
            verifier,
            sandbox_issuer,
            refund_policy: settings.refund_policy,
        })
    }
}

/// The core's name for a verifier platform.
pub fn core_platform(platform: Platform) -> StorePlatform {
    match platform {
        Platform::Apple => StorePlatform::Apple,
        Platform::Google => StorePlatform::Google,
        Platform::Sandbox => StorePlatform::Sandbox,
    }
}

/// The development sandbox key: read from the data directory, or generated and written there
/// (mode 0600) on first start.
pub fn development_sandbox_key(data_dir: &Path) -> Result<[u8; 32], String> {
    let path: PathBuf = data_dir.join(DEVELOPMENT_SANDBOX_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or_default();
            coffer_receipts::decode_key_base64url(line)
                .ok_or_else(|| format!("{}: not a base64url 32-byte sandbox key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| e.to_string())?;
            let text = format!(
                "# Sandbox store signing key (Ed25519 seed, base64url), generated by a Coffer server in\n\
                 # development mode. Anyone holding it can mint sandbox receipts: development only.\n{}\n",
                coffer_receipts::encode_key_base64url(&key)
            );
            std::fs::create_dir_all(data_dir)
                .map_err(|e| format!("{}: {e}", data_dir.display()))?;
            write_private(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
