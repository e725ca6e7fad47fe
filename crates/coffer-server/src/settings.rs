//! Server settings: the optional configuration file (production) and the development
//! credentials a server without one generates for itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::auth::keys::{self, ApiKeyEntry};
use crate::auth::rate::Limits;
use crate::auth::tokens::TOKEN_SECRET_BYTES_MIN;
use crate::receipts::{ReceiptSettings, SandboxStore};
use coffer_core::RefundPolicy;
use coffer_receipts::{AppleConfig, AppleEnvironment, GoogleConfig};

/// File in the data directory holding a development server's generated credentials.
pub const DEVELOPMENT_CREDENTIALS_FILE: &str = "development-credentials.toml";
/// Id of the generated development admin key.
pub const DEVELOPMENT_KEY_ID: &str = "dev-admin";

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum Security {
    /// No configuration: the server generates an admin key and a token secret once, keeps them in
    /// the data directory, and prints the key. For a developer's machine only.
    Development,
    /// Keys and the token secret come from the configuration; the server refuses to start
    /// without them.
    Production {
        api_keys: Vec<ApiKeyEntry>,
        token_secret: Vec<u8>,
    },
}

/// A certificate chain and private key in PEM files, for TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The configuration file (`coffer --config coffer.toml`). Its presence means production mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen_addr: Option<std::net::SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub catalog: Option<PathBuf>,
    /// `redb` or a PostgreSQL URL.
    pub store: Option<String>,
    /// How long a start may wait for the ledger check (0 turns it off) [default: 10000].
    pub startup_check_time_limit_ms: Option<u64>,
    /// The redb ledger file's commits (checkpoints) with two syncs (two-phase) or one
    /// [default: true]; the journal takes one `fdatasync` per batch either way.
    pub redb_two_phase_commit: Option<bool>,
    /// How long a journaled change waits for its checkpoint into `coffer.redb`, up to 8x as long
    /// while checkpoints rewrite many pages per change [default: 4000].
    pub redb_checkpoint_interval_ms: Option<u64>,
    pub security: FileSecurity,
    #[serde(default)]
    pub limits: Limits,
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub receipts: FileReceipts,
    #[serde(default)]
    pub metrics: FileMetrics,
}

/// The `[metrics]` section: where Prometheus scrapes `GET /metrics` (not served when absent).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    pub addr: Option<std::net::SocketAddr>,
}

/// The `[receipts]` section: which real-money stores this server accepts receipts from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReceipts {
    /// `claw_back` (default) or `reverse_if_possible`.
    pub refund_policy: Option<String>,
    pub apple: Option<FileApple>,
    pub google: Option<FileGoogle>,
    pub sandbox: Option<FileSandbox>,
}

/// `[receipts.apple]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApple {
    /// Root certificates (PEM or DER), e.g. `AppleRootCA-G3.cer`.
    pub root_certificate_files: Vec<PathBuf>,
    pub bundle_id: String,
    /// `Production` and/or `Sandbox` [default: both, since App Review buys in the sandbox].
    pub accepted_environments: Option<Vec<String>>,
}

/// `[receipts.google]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGoogle {
    pub package_name: String,
    /// Play Console → Monetization setup → Licensing: the base64 RSA public key.
    pub license_public_key_base64: String,
}

/// `[receipts.sandbox]`: enables the sandbox store. Never on a server players can reach.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSandbox {
    /// The issuer's Ed25519 seed (base64url): verify and issue sandbox receipts.
    pub secret_key_base64url: Option<String>,
    /// Only the public key (base64url): verify receipts issued by `coffer sandbox-receipt`.
    pub verifying_key_base64url: Option<String>,
}

/// The `[security]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSecurity {
    /// Hex secret (at least 32 bytes) that signs player tokens.
    pub token_secret_hex: String,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyEntry>,
}

impl FileConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The security settings, checked: at least one key and a long enough secret.
    pub fn security(&self) -> Result<Security, String> {
        let token_secret = hex::decode(&self.security.token_secret_hex)
            .map_err(|e| format!("security.token_secret_hex is not hex: {e}"))?;
        Ok(Security::Production {
            api_keys: self.security.api_keys.clone(),
            token_secret,
        })
    }
}

impl FileConfig {
    /// The receipt settings, checked, with certificate files read.
    pub fn receipts(&self) -> Result<ReceiptSettings, String> {
        let file = &self.receipts;
        let refund_policy = match &file.refund_policy {
            None => RefundPolicy::ClawBack,
            Some(name) => RefundPolicy::from_name(name).ok_or_else(|| {
                format!(
                    "receipts.refund_policy must be claw_back or reverse_if_possible, got {name:?}"
                )
            })?,
        };
        let apple = match &file.apple {
            None => None,
            Some(apple) => {
                let mut roots = Vec::new();
                for path in &apple.root_certificate_files {
                    let bytes = std::fs::read(path).map_err(|e| {
                        format!(
                            "receipts.apple.root_certificate_files: {}: {e}",
                            path.display()
                        )
                    })?;
                    roots.extend(certificates_der(&bytes).map_err(|e| {
                        format!(
                            "receipts.apple.root_certificate_files: {}: {e}",
                            path.display()
                        )
                    })?);
                }
                let names = apple
                    .accepted_environments
                    .clone()
                    .unwrap_or_else(|| vec!["Production".to_owned(), "Sandbox".to_owned()]);
                let mut accepted_environments = Vec::new();
                for name in names {
                    accepted_environments.push(match name.as_str() {
                        "Production" => AppleEnvironment::Production,
                        "Sandbox" => AppleEnvironment::Sandbox,
                        other => {
                            return Err(format!(
                                "receipts.apple.accepted_environments: {other:?} is not Production or Sandbox"
                            ));
                        }
                    });
                }
                Some(AppleConfig {
                    root_certificates_der: roots,
                    bundle_id: apple.bundle_id.clone(),
                    accepted_environments,
                })
            }
        };
        let google = file.google.as_ref().map(|google| GoogleConfig {
            package_name: google.package_name.clone(),
            license_public_key_base64: google.license_public_key_base64.clone(),
        });
        let key = |field: &str, text: &str| {
            coffer_receipts::decode_key_base64url(text)
                .ok_or_else(|| format!("receipts.sandbox.{field} is not a base64url 32-byte key"))
        };
        let sandbox = match &file.sandbox {
            None => SandboxStore::Disabled,
            Some(FileSandbox {
                secret_key_base64url: Some(secret),
                ..
            }) => SandboxStore::SecretKey(key("secret_key_base64url", secret)?),
            Some(FileSandbox {
                verifying_key_base64url: Some(public),
                ..
            }) => SandboxStore::VerifyingKey(key("verifying_key_base64url", public)?),
            Some(_) => {
                return Err(
                    "[receipts.sandbox] needs secret_key_base64url or verifying_key_base64url"
                        .to_owned(),
                );
            }
        };
        Ok(ReceiptSettings {
            apple,
            google,
            sandbox,
            refund_policy,
        })
    }
}

/// The DER certificates in a file holding one DER certificate or any number of PEM ones.
fn certificates_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine as _;
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(vec![bytes.to_vec()]);
    };
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Ok(vec![bytes.to_vec()]);
    }
    let mut certificates = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match (line, &mut body) {
            ("-----BEGIN CERTIFICATE-----", None) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(b64)) => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| format!("bad PEM base64: {e}"))?;
                certificates.push(der);
                body = None;
            }
            (line, Some(b64)) => b64.push_str(line),
            _ => {}
        }
    }
    if body.is_some() {
        return Err("unterminated PEM certificate".to_owned());
    }
    Ok(certificates)
}

/// Checks production settings: a server exposed to players must have keys and a real secret.
pub fn check_production(api_keys: &[ApiKeyEntry], token_secret: &[u8]) -> Result<(), String> {
    if api_keys.is_empty() {
        return Err("production mode needs at least one [[security.api_keys]] entry; create one with `coffer new-api-key --id ops --role admin`".to_owned());
    }
    if token_secret.len() < TOKEN_SECRET_BYTES_MIN {
        return Err(format!(
            "security.token_secret_hex must hold at least {TOKEN_SECRET_BYTES_MIN} bytes; create one with `coffer new-token-secret`"
        ));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct DevelopmentCredentials {
    admin_key: String,
    token_secret_hex: String,
}

/// The development admin key, its entry and the token secret: read from the data directory, or
/// generated and written there (mode 0600) on first start.
pub fn development_credentials(data_dir: &Path) -> Result<(String, ApiKeyEntry, Vec<u8>), String> {
    let path = data_dir.join(DEVELOPMENT_CREDENTIALS_FILE);
    let credentials = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<DevelopmentCredentials>(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (admin_key, _) =
                keys::generate(DEVELOPMENT_KEY_ID, Role::Admin).map_err(|e| e.to_string())?;
            let mut secret = [0u8; TOKEN_SECRET_BYTES_MIN];
            getrandom::fill(&mut secret).map_err(|e| e.to_string())?;
            let credentials = DevelopmentCredentials {
                admin_key,
                token_secret_hex: hex::encode(secret),
            };
            let text = format!(
                "# Generated by a Coffer server started without --config (development mode).\n\
                 # Never use these credentials for a server that players can reach.\n{}",
                toml::to_string(&credentials).expect("serializing credentials")
            );
            std::fs::create_dir_all(data_dir)
                .map_err(|e| format!("{}: {e}", data_dir.display()))?;
            write_private(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            credentials
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let entry = keys::entry_for(&credentials.admin_key, Role::Admin)
        .ok_or_else(|| format!("{}: admin_key is not a Coffer key", path.display()))?;
    let secret = hex::decode(&credentials.token_secret_hex)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((credentials.admin_key, entry, secret))
}

pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCTION: &str = r#"
        listen_addr = "0.0.0.0:50051"
        data_dir = "/var/lib/coffer"
        [security]
        token_secret_hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        [[security.api_keys]]
        id = "ops"
        role = "admin"
        secret_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        [limits]
        player_requests_per_second = 10
        [tls]
        cert_file = "cert.pem"
        key_file = "key.pem"
    "#;

    #[test]
    fn a_production_file_parses_into_checked_settings() {
        let file: FileConfig = toml::from_str(PRODUCTION).unwrap();
        let Security::Production {
            api_keys,
            token_secret,
        } = file.security().unwrap()
        else {
            panic!("a configuration file means production mode")
        };
        assert_eq!(api_keys[0].role, Role::Admin);
        assert_eq!(token_secret.len(), 32);
        check_production(&api_keys, &token_secret).unwrap();
        assert_eq!(file.limits.player_requests_per_second, 10);
        assert_eq!(
            file.limits.streams_per_player_max,
            Limits::default().streams_per_player_max
        );
        assert!(file.tls.is_some());
        assert_eq!(file.metrics.addr, None);
    }

    #[test]
    fn the_metrics_section_names_the_scrape_address() {
        let text = format!("{PRODUCTION}\n[metrics]\naddr = \"127.0.0.1:9464\"\n");
        let file: FileConfig = toml::from_str(&text).unwrap();
        assert_eq!(file.metrics.addr, Some("127.0.0.1:9464".parse().unwrap()));

        let bad = format!("{PRODUCTION}\n[metrics]\nport = 9464\n");
        let error = toml::from_str::<FileConfig>(&bad).unwrap_err().to_string();
        assert!(error.contains("port"), "{error}");
    }

    #[test]
    fn receipts_settings_parse_and_default_to_claw_back_without_stores() {
        let file: FileConfig = toml::from_str(PRODUCTION).unwrap();
        let receipts = file.receipts().unwrap();
        assert_eq!(receipts.refund_policy, RefundPolicy::ClawBack);
        assert!(receipts.apple.is_none() && receipts.google.is_none());
        assert!(matches!(receipts.sandbox, SandboxStore::Disabled));

        let key = coffer_receipts::encode_key_base64url(&[7; 32]);
        let text = format!(
            "{PRODUCTION}\n[receipts]\nrefund_policy = \"reverse_if_possible\"\n\
             [receipts.google]\npackage_name = \"com.example.game\"\nlicense_public_key_base64 = \"AAAA\"\n\
             [receipts.sandbox]\nverifying_key_base64url = \"{key}\"\n"
        );
        let file: FileConfig = toml::from_str(&text).unwrap();
        let receipts = file.receipts().unwrap();
        assert_eq!(receipts.refund_policy, RefundPolicy::ReverseIfPossible);
        assert_eq!(receipts.google.unwrap().package_name, "com.example.game");
        assert!(matches!(receipts.sandbox, SandboxStore::VerifyingKey(k) if k == [7; 32]));

        let bad = format!("{PRODUCTION}\n[receipts]\nrefund_policy = \"forgive\"\n");
        let error = toml::from_str::<FileConfig>(&bad)
            .unwrap()
            .receipts()
            .unwrap_err();
        assert!(error.contains("receipts.refund_policy"), "{error}");
    }

    #[test]
    fn pem_files_may_hold_several_certificates() {
        let pem = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBAUG\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certificates_der(pem.as_bytes()).unwrap(),
            vec![vec![1, 2, 3], vec![4, 5, 6]]
        );
        assert_eq!(
            certificates_der(&[0x30, 0x82]).unwrap(),
            vec![vec![0x30, 0x82]]
        );
    }

    #[test]
    fn unknown_settings_are_refused() {
        let text = PRODUCTION.replace("[limits]", "[limits]\nplayer_requests_per_minute = 3");
        let error = toml::from_str::<FileConfig>(&text).unwrap_err().to_string();
        assert!(error.contains("player_requests_per_minute"), "{error}");
    }

    #[test]
    fn development_credentials_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (key, entry, secret) = development_credentials(dir.path()).unwrap();
        let (again, _, secret_again) = development_credentials(dir.path()).unwrap();
        assert_eq!(
            (key.as_str(), secret.as_slice()),
            (again.as_str(), secret_again.as_slice())
        );
        let ring = crate::auth::keys::KeyRing::new(vec![entry]).unwrap();
        assert_eq!(
            ring.verify(&key),
            Some((DEVELOPMENT_KEY_ID.to_owned(), Role::Admin))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEVELOPMENT_CREDENTIALS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
