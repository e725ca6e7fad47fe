//! Studio API keys: `ck.<id>.<secret>`. The server keeps only the SHA-256 of each secret and
//! compares digests in constant time, so neither the configuration nor timing reveals a key.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;

/// Prefix of every API key.
pub const KEY_PREFIX: &str = "ck.";
/// Random bytes in a generated secret (hex-encoded in the key).
pub const SECRET_BYTES: usize = 32;

/// One configured key: its id, role and the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiKeyEntry {
    pub id: String,
    pub role: Role,
    /// Hex SHA-256 of the secret part of the key.
    pub secret_sha256: String,
}

/// A new random key for `id`, and the entry to put into the configuration.
pub fn generate(id: &str, role: Role) -> Result<(String, ApiKeyEntry), getrandom::Error> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    let secret = hex::encode(secret);
    let entry = ApiKeyEntry {
        id: id.to_owned(),
        role,
        secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
    };
    Ok((format!("{KEY_PREFIX}{id}.{secret}"), entry))
}

/// The configuration entry of an existing key.
pub fn entry_for(key: &str, role: Role) -> Option<ApiKeyEntry> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('.')?;
    Some(ApiKeyEntry {
        id: id.to_owned(),
        role,
        secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
    })
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    entries: Vec<(ApiKeyEntry, [u8; 32])>,
}

impl KeyRing {
    /// A key ring; each digest must be 64 hex characters.
    pub fn new(entries: Vec<ApiKeyEntry>) -> Result<KeyRing, String> {
        let mut ring = KeyRing::default();
        for entry in entries {
            let digest: [u8; 32] = hex::decode(&entry.secret_sha256)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "api key {:?}: secret_sha256 must be 64 hex characters",
                        entry.id
                    )
                })?;
            if ring.entries.iter().any(|(e, _)| e.id == entry.id) {
                return Err(format!("api key id {:?} appears twice", entry.id));
            }
            if entry.id.is_empty() || entry.id.contains('.') {
                return Err(format!(
                    "api key id {:?} must be non-empty and contain no '.'",
                    entry.id
                ));
            }
            ring.entries.push((entry, digest));
        }
        Ok(ring)
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The id and role of a presented key, or `None` when it matches no configured key.
    pub fn verify(&self, presented: &str) -> Option<(String, Role)> {
        let rest = presented.strip_prefix(KEY_PREFIX)?;
        let (id, secret) = rest.split_once('.')?;
        let (entry, digest) = self.entries.iter().find(|(e, _)| e.id == id)?;
        let presented_digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if bool::from(presented_digest.ct_eq(digest)) {
            Some((entry.id.clone(), entry.role))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_verify_and_others_do_not() {
        let (key, entry) = generate("ops", Role::Admin).unwrap();
        let ring = KeyRing::new(vec![entry]).unwrap();
        assert_eq!(ring.verify(&key), Some(("ops".to_owned(), Role::Admin)));
        let mut tampered = key.clone();
        tampered.pop();
        tampered.push('x');
        assert_eq!(ring.verify(&tampered), None);
        assert_eq!(ring.verify(&key.replace("ck.ops.", "ck.other.")), None);
        assert_eq!(ring.verify("not a key"), None);
    }
}
