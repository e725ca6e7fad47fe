//! Test fixtures: certificate chains, keys and signed payloads built in the test, never real
//! store credentials.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coffer_receipts::{
    APPLE_INTERMEDIATE_MARKER_OID, APPLE_LEAF_MARKER_OID, AppleConfig, AppleEnvironment,
    GoogleConfig, SandboxIssuer, Verifier, VerifierConfig,
};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rsa::signature::{Keypair as _, SignatureEncoding as _, Signer as _};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The verification time of every test: 2025-06-15T14:13:20Z.
pub const NOW_UNIX_MS: i64 = 1_750_000_000_000;
pub const DAY_S: i64 = 86_400;
pub const BUNDLE_ID: &str = "com.example.coffer";
pub const PACKAGE_NAME: &str = "com.example.coffer";

pub fn at_offset_days(days: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW_UNIX_MS / 1000 + days * DAY_S).unwrap()
}

/// How to build a test App Store chain (root → intermediate → leaf, all P-256).
#[derive(Clone)]
pub struct ChainOptions {
    pub leaf_marker: bool,
    pub intermediate_marker: bool,
    /// Validity of the leaf, in days from `NOW_UNIX_MS`.
    pub leaf_valid_days: (i64, i64),
    /// Validity of the intermediate, in days from `NOW_UNIX_MS`.
    pub intermediate_valid_days: (i64, i64),
    /// Validity of the root, in days from `NOW_UNIX_MS`.
    pub root_valid_days: (i64, i64),
    pub root_name: &'static str,
}

impl Default for ChainOptions {
    fn default() -> Self {
        Self {
            leaf_marker: true,
            intermediate_marker: true,
            leaf_valid_days: (-30, 365),
            intermediate_valid_days: (-365, 3650),
            root_valid_days: (-3650, 3650),
            root_name: "Coffer Test Root CA",
        }
    }
}

/// A test chain and the leaf key that signs JWS with it.
pub struct AppleChain {
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn marker(oid: &str) -> CustomExtension {
    let arcs: Vec<u64> = oid.split('.').map(|arc| arc.parse().unwrap()).collect();
    // Apple's marker extensions hold an ASN.1 NULL.
    CustomExtension::from_oid_content(&arcs, vec![0x05, 0x00])
}

impl AppleChain {
    pub fn new(options: &ChainOptions) -> Self {
        let algorithm = &rcgen::PKCS_ECDSA_P256_SHA256;

        let root_key = KeyPair::generate_for(algorithm).unwrap();
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params.distinguished_name = distinguished_name(options.root_name);
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root_params.not_before = at_offset_days(options.root_valid_days.0);
        root_params.not_after = at_offset_days(options.root_valid_days.1);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);

        let intermediate_key = KeyPair::generate_for(algorithm).unwrap();
        let mut intermediate_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        intermediate_params.distinguished_name = distinguished_name("Coffer Test WWDR CA");
        intermediate_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        intermediate_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        intermediate_params.not_before = at_offset_days(options.intermediate_valid_days.0);
        intermediate_params.not_after = at_offset_days(options.intermediate_valid_days.1);
        if options.intermediate_marker {
            intermediate_params
                .custom_extensions
                .push(marker(APPLE_INTERMEDIATE_MARKER_OID));
        }
        let intermediate = intermediate_params
            .signed_by(&intermediate_key, &root_issuer)
            .unwrap();
        let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);

        let leaf_key = KeyPair::generate_for(algorithm).unwrap();
        let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf_params.distinguished_name = distinguished_name("Coffer Test StoreKit Signing");
        leaf_params.is_ca = IsCa::NoCa;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.not_before = at_offset_days(options.leaf_valid_days.0);
        leaf_params.not_after = at_offset_days(options.leaf_valid_days.1);
        if options.leaf_marker {
            leaf_params
                .custom_extensions
                .push(marker(APPLE_LEAF_MARKER_OID));
        }
        let leaf = leaf_params
            .signed_by(&leaf_key, &intermediate_issuer)
            .unwrap();

        let leaf_key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &leaf_key.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        Self {
            root_der: root.der().to_vec(),
            intermediate_der: intermediate.der().to_vec(),
            leaf_der: leaf.der().to_vec(),
            leaf_key,
        }
    }

    /// The `x5c` header Apple sends: leaf, intermediate, root.
    pub fn x5c(&self) -> Vec<String> {
        [&self.leaf_der, &self.intermediate_der, &self.root_der]
            .into_iter()
            .map(|der| STANDARD.encode(der))
            .collect()
    }

    pub fn sign_with_header(&self, header: &Value, payload: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap())
        );
        let signature = self
            .leaf_key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// A JWS as the App Store signs it.
    pub fn sign(&self, payload: &Value) -> String {
        self.sign_with_header(&json!({"alg": "ES256", "x5c": self.x5c()}), payload)
    }
}

/// The default test chain, built once per test binary (key generation is the slow part).
pub fn apple_chain() -> &'static AppleChain {
    static CHAIN: OnceLock<AppleChain> = OnceLock::new();
    CHAIN.get_or_init(|| AppleChain::new(&ChainOptions::default()))
}

pub fn apple_config(root_der: &[u8], environments: &[AppleEnvironment]) -> AppleConfig {
    AppleConfig {
        root_certificates_der: vec![root_der.to_vec()],
        bundle_id: BUNDLE_ID.to_owned(),
        accepted_environments: environments.to_vec(),
    }
}

/// A verifier trusting `root_der` for Apple, accepting only production.
pub fn apple_verifier(root_der: &[u8]) -> Verifier {
    Verifier::new(VerifierConfig {
        apple: Some(apple_config(root_der, &[AppleEnvironment::Production])),
        ..VerifierConfig::default()
    })
    .unwrap()
}

/// A StoreKit 2 `JWSTransactionDecodedPayload` for a consumable bought for $12.99.
pub fn apple_transaction() -> Value {
    json!({
        "transactionId": "2000000123456789",
        "originalTransactionId": "2000000123456789",
        "bundleId": BUNDLE_ID,
        "productId": "com.example.coffer.gems_500",
        "purchaseDate": NOW_UNIX_MS - 60_000,
        "originalPurchaseDate": NOW_UNIX_MS - 60_000,
        "quantity": 1,
        "type": "Consumable",
        "appAccountToken": "7e3fb20b-4cdb-47cc-936d-99d65f608138",
        "inAppOwnershipType": "PURCHASED",
        "signedDate": NOW_UNIX_MS - 30_000,
        "environment": "Production",
        "transactionReason": "PURCHASE",
        "storefront": "USA",
        "storefrontId": "143441",
        "price": 12_990,
        "currency": "USD"
    })
}

/// A `ResponseBodyV2DecodedPayload` wrapping `signed_transaction_info`.
pub fn apple_notification(notification_type: &str, signed_transaction_info: &str) -> Value {
    json!({
        "notificationType": notification_type,
        "notificationUUID": "002e14d5-51f5-4503-b5a8-c3a1af68eb20",
        "data": {
            "appAppleId": 1234567890,
            "bundleId": BUNDLE_ID,
            "bundleVersion": "1.0",
            "environment": "Production",
            "signedTransactionInfo": signed_transaction_info,
            "status": 1
        },
        "version": "2.0",
        "signedDate": NOW_UNIX_MS - 1_000
    })
}

/// A 2048-bit RSA key standing in for a Play Console licence key.
pub struct GoogleKey {
    signing_key: rsa::pkcs1v15::SigningKey<sha1::Sha1>,
    pub public_key_base64: String,
}

impl GoogleKey {
    fn generate() -> Self {
        use rsa::Generate as _;
        use rsa::pkcs8::EncodePublicKey as _;
        let signing_key = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::generate();
        let public_key_der = signing_key
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        Self {
            signing_key,
            public_key_base64: STANDARD.encode(public_key_der),
        }
    }

    /// INAPP_DATA_SIGNATURE: base64 SHA1withRSA over the exact purchase data bytes.
    pub fn sign(&self, purchase_data: &str) -> String {
        STANDARD.encode(self.signing_key.sign(purchase_data.as_bytes()).to_vec())
    }

    /// The envelope Coffer accepts.
    pub fn receipt(&self, purchase_data: &str) -> String {
        json!({"purchaseData": purchase_data, "signature": self.sign(purchase_data)}).to_string()
    }
}

pub fn google_key() -> &'static GoogleKey {
    static KEY: OnceLock<GoogleKey> = OnceLock::new();
    KEY.get_or_init(GoogleKey::generate)
}

pub fn other_google_key() -> &'static GoogleKey {
    static KEY: OnceLock<GoogleKey> = OnceLock::new();
    KEY.get_or_init(GoogleKey::generate)
}

pub fn google_config() -> GoogleConfig {
    GoogleConfig {
        package_name: PACKAGE_NAME.to_owned(),
        license_public_key_base64: google_key().public_key_base64.clone(),
    }
}

pub fn google_verifier() -> Verifier {
    Verifier::new(VerifierConfig {
        google: Some(google_config()),
        ..VerifierConfig::default()
    })
    .unwrap()
}

/// INAPP_PURCHASE_DATA as Play Billing produces it (field order and spacing matter: the
/// signature covers these exact bytes).
pub fn google_purchase_data() -> Value {
    json!({
        "orderId": "GPA.3312-4456-7788-99001",
        "packageName": PACKAGE_NAME,
        "productId": "gems_500",
        "purchaseTime": NOW_UNIX_MS - 60_000,
        "purchaseState": 0,
        "purchaseToken": "opaque-token-abcdefghijklmnopqrstuvwxyz.AO-J1Oy",
        "obfuscatedAccountId": "player-42",
        "quantity": 1,
        "acknowledged": false
    })
}

pub fn sandbox_issuer() -> SandboxIssuer {
    SandboxIssuer::from_secret_key([7; 32])
}

/// A verifier with every store configured.
pub fn full_verifier() -> Verifier {
    Verifier::new(VerifierConfig {
        apple: Some(apple_config(
            &apple_chain().root_der,
            &[AppleEnvironment::Production],
        )),
        google: Some(google_config()),
        sandbox: Some(sandbox_issuer().config()),
    })
    .unwrap()
}
