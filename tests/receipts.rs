//! Real-money purchases end to end, over real gRPC on both storage backends: sandbox, App Store
//! and Google Play receipts are verified with keys and certificate chains built here, credited
//! exactly once across all players, refused with a precise reason when they do not verify, and
//! refunded exactly once.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coffer_client::{CofferClient, pb};
use coffer_integration_tests::{assert_ledger_clean, backend_tests, currencies};
use coffer_receipts::{AppleConfig, AppleEnvironment, GoogleConfig};
use coffer_server::{ReceiptSettings, SandboxStore};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt as _;

const BUNDLE_ID: &str = "com.example.coffer";
const PACKAGE_NAME: &str = "com.example.coffer";
/// Demo catalog products (assets/catalog.toml), each granting 100 gems.
const APPLE_PRODUCT: &str = "com.example.coffer.gems_100";
const GOOGLE_PRODUCT: &str = "gems_100";
const SANDBOX_PRODUCT: &str = "gems_100";
const GEMS_INITIAL: i64 = 5;
const GEMS_PER_PRODUCT: i64 = 100;

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// --- Fixtures: an App Store-shaped chain and a Play licence key, made here ---------------------

fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(now_unix_ms() / 1000 + days * 86_400).unwrap()
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn marker(oid: &str) -> CustomExtension {
    let arcs: Vec<u64> = oid.split('.').map(|arc| arc.parse().unwrap()).collect();
    // Apple's marker extensions hold an ASN.1 NULL.
    CustomExtension::from_oid_content(&arcs, vec![0x05, 0x00])
}

/// Root → intermediate → leaf (P-256) with Apple's marker extensions, valid around now.
struct AppleChain {
    root_der: Vec<u8>,
    x5c: Vec<String>,
    leaf_key: EcdsaKeyPair,
}

impl AppleChain {
    fn new() -> AppleChain {
        let algorithm = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = |params: &mut CertificateParams, common_name: &str| {
            params.distinguished_name = name(common_name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = days_from_now(-365);
            params.not_after = days_from_now(3650);
        };
        let root_key = KeyPair::generate_for(algorithm).unwrap();
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca(&mut root_params, "Coffer Test Root CA");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);

        let intermediate_key = KeyPair::generate_for(algorithm).unwrap();
        let mut intermediate_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca(&mut intermediate_params, "Coffer Test WWDR CA");
        intermediate_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        intermediate_params
            .custom_extensions
            .push(marker(coffer_receipts::APPLE_INTERMEDIATE_MARKER_OID));
        let intermediate = intermediate_params
            .signed_by(&intermediate_key, &root_issuer)
            .unwrap();
        let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);

        let leaf_key = KeyPair::generate_for(algorithm).unwrap();
        let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf_params.distinguished_name = name("Coffer Test StoreKit Signing");
        leaf_params.is_ca = IsCa::NoCa;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.not_before = days_from_now(-30);
        leaf_params.not_after = days_from_now(365);
        leaf_params
            .custom_extensions
            .push(marker(coffer_receipts::APPLE_LEAF_MARKER_OID));
        let leaf = leaf_params
            .signed_by(&leaf_key, &intermediate_issuer)
            .unwrap();
        let leaf_key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &leaf_key.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        AppleChain {
            root_der: root.der().to_vec(),
            x5c: [leaf.der(), intermediate.der(), root.der()]
                .into_iter()
                .map(|der| STANDARD.encode(der))
                .collect(),
            leaf_key,
        }
    }

    /// A JWS signed by this chain's leaf key, carrying `x5c`.
    fn sign_with_x5c(&self, x5c: &[String], payload: &Value) -> String {
        let header = json!({"alg": "ES256", "x5c": x5c});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap())
        );
        let signature = self
            .leaf_key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// A JWS as the App Store signs it.
    fn sign(&self, payload: &Value) -> String {
        self.sign_with_x5c(&self.x5c, payload)
    }
}

fn apple_chain() -> &'static AppleChain {
    static CHAIN: OnceLock<AppleChain> = OnceLock::new();
    CHAIN.get_or_init(AppleChain::new)
}

fn other_apple_chain() -> &'static AppleChain {
    static CHAIN: OnceLock<AppleChain> = OnceLock::new();
    CHAIN.get_or_init(AppleChain::new)
}

/// A StoreKit 2 transaction payload for one unit of `APPLE_PRODUCT` at $1.99.
fn apple_transaction(transaction_id: &str) -> Value {
    json!({
        "transactionId": transaction_id,
        "originalTransactionId": transaction_id,
        "bundleId": BUNDLE_ID,
        "productId": APPLE_PRODUCT,
        "purchaseDate": now_unix_ms() - 60_000,
        "originalPurchaseDate": now_unix_ms() - 60_000,
        "quantity": 1,
        "type": "Consumable",
        "inAppOwnershipType": "PURCHASED",
        "signedDate": now_unix_ms() - 30_000,
        "environment": "Production",
        "transactionReason": "PURCHASE",
        "price": 1_990,
        "currency": "USD"
    })
}

/// An App Store Server Notification V2 of `notification_type` about `signed_transaction`.
fn apple_notification(notification_type: &str, signed_transaction: &str) -> Value {
    json!({
        "notificationType": notification_type,
        "notificationUUID": "002e14d5-51f5-4503-b5a8-c3a1af68eb20",
        "data": {
            "bundleId": BUNDLE_ID,
            "environment": "Production",
            "signedTransactionInfo": signed_transaction,
        },
        "version": "2.0",
        "signedDate": now_unix_ms() - 1_000
    })
}

/// A 2048-bit RSA key standing in for a Play Console licence key.
struct GoogleKey {
    signing_key: rsa::pkcs1v15::SigningKey<sha1::Sha1>,
    public_key_base64: String,
}

impl GoogleKey {
    fn generate() -> GoogleKey {
        use rsa::Generate as _;
        use rsa::pkcs8::EncodePublicKey as _;
        use rsa::signature::Keypair as _;
        let signing_key = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::generate();
        let public_key_der = signing_key
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .into_vec();
        GoogleKey {
            signing_key,
            public_key_base64: STANDARD.encode(public_key_der),
        }
    }

    /// The envelope Coffer accepts: the exact purchase data and its SHA1withRSA signature.
    fn receipt(&self, purchase_data: &str) -> String {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        let signature = STANDARD.encode(self.signing_key.sign(purchase_data.as_bytes()).to_vec());
        json!({"purchaseData": purchase_data, "signature": signature}).to_string()
    }
}

fn google_key() -> &'static GoogleKey {
    static KEY: OnceLock<GoogleKey> = OnceLock::new();
    KEY.get_or_init(GoogleKey::generate)
}

fn other_google_key() -> &'static GoogleKey {
    static KEY: OnceLock<GoogleKey> = OnceLock::new();
    KEY.get_or_init(GoogleKey::generate)
}

fn google_purchase_data(order_id: &str, package_name: &str) -> String {
    json!({
        "orderId": order_id,
        "packageName": package_name,
        "productId": GOOGLE_PRODUCT,
        "purchaseTime": now_unix_ms() - 60_000,
        "purchaseState": 0,
        "purchaseToken": format!("token-{order_id}"),
        "obfuscatedAccountId": "some-account",
        "quantity": 1
    })
    .to_string()
}

/// Every store configured with this file's keys (Apple accepting production only), plus the
/// development sandbox store.
fn all_stores() -> ReceiptSettings {
    ReceiptSettings {
        apple: Some(AppleConfig {
            root_certificates_der: vec![apple_chain().root_der.clone()],
            bundle_id: BUNDLE_ID.to_owned(),
            accepted_environments: vec![AppleEnvironment::Production],
        }),
        google: Some(GoogleConfig {
            package_name: PACKAGE_NAME.to_owned(),
            license_public_key_base64: google_key().public_key_base64.clone(),
        }),
        sandbox: SandboxStore::GeneratedInDataDir,
        ..ReceiptSettings::default()
    }
}

// --- Calls ---------------------------------------------------------------------------------

async fn redeem(
    client: &CofferClient,
    player: &str,
    platform: pb::StorePlatform,
    payload: &str,
) -> Result<pb::Transaction, tonic::Status> {
    let response = client
        .wallet_raw()
        .redeem_receipt(pb::RedeemReceiptRequest {
            player_id: player.into(),
            platform: platform.into(),
            payload: payload.into(),
            idempotency_key: String::new(),
        })
        .await?;
    Ok(response.into_inner().transaction.expect("a transaction"))
}

async fn notify(
    client: &CofferClient,
    platform: pb::StorePlatform,
    payload: &str,
) -> Result<pb::ProcessStoreNotificationResponse, tonic::Status> {
    let response = client
        .admin_raw()
        .process_store_notification(pb::ProcessStoreNotificationRequest {
            platform: platform.into(),
            payload: payload.into(),
        })
        .await?;
    Ok(response.into_inner())
}

/// A sandbox receipt from the server's development sandbox store: (payload, transaction id).
async fn sandbox_receipt(client: &CofferClient, player: &str, product: &str) -> (String, String) {
    let response = client
        .admin_raw()
        .issue_sandbox_receipt(pb::IssueSandboxReceiptRequest {
            player_id: player.into(),
            product_id: product.into(),
            quantity: 1,
            refund_transaction_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    (response.payload, response.store_transaction_id)
}

async fn sandbox_refund(client: &CofferClient, transaction_id: &str) -> String {
    client
        .admin_raw()
        .issue_sandbox_receipt(pb::IssueSandboxReceiptRequest {
            refund_transaction_id: transaction_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payload
}

/// The code and ErrorInfo reason of a refused call.
fn refusal<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("the call must be refused");
    let reason = status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default();
    (status.code(), reason)
}

async fn gems(client: &mut CofferClient, player: &str) -> i64 {
    let wallet = client.wallet(player).await.unwrap();
    wallet
        .balances
        .iter()
        .find(|m| m.currency_id == "gems")
        .map_or(0, |m| m.amount_minor_units)
}

/// What a refused call must leave untouched: the ledger's length and both players' gems.
async fn snapshot(client: &mut CofferClient) -> (u64, i64, i64) {
    let report = client.verify_ledger().await.unwrap();
    assert!(report.clean, "{:?}", report.violations);
    (
        report.transactions_checked,
        gems(client, "alice").await,
        gems(client, "bob").await,
    )
}

fn tamper_signature(payload: &str) -> String {
    // Change the first character of the last (signature) segment to another base64url one.
    let (body, signature) = payload.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    format!("{body}.{first}{}", &signature[1..])
}

backend_tests! {
    async fn a_sandbox_receipt_credits_once_and_its_replay_returns_the_original(server) {
        let mut admin = server.client().await;
        let token = admin.issue_player_token("alice", 600).await.unwrap();
        let alice = server.anonymous_client().await.with_token(&token).unwrap();
        let (payload, transaction_id) = sandbox_receipt(&admin, "alice", SANDBOX_PRODUCT).await;

        let first = redeem(&alice, "alice", pb::StorePlatform::Sandbox, &payload).await.unwrap();
        assert_eq!(first.kind, pb::TransactionKind::StoreRedemption as i32);
        assert_eq!(first.catalog_entry_id, SANDBOX_PRODUCT);
        assert_eq!(first.metadata["store_transaction_id"], transaction_id);
        assert_eq!(first.metadata["platform"], "sandbox");
        assert!(first.postings.iter().any(|p| p.account_id == "system:store:sandbox"
            && p.currency_id == "gems"
            && p.amount_minor_units == -GEMS_PER_PRODUCT));
        assert_eq!(gems(&mut admin, "alice").await, GEMS_INITIAL + GEMS_PER_PRODUCT);

        let before = snapshot(&mut admin).await;
        let replay = redeem(&alice, "alice", pb::StorePlatform::Sandbox, &payload).await.unwrap();
        assert_eq!(replay, first);
        assert_eq!(snapshot(&mut admin).await, before);
        assert_ledger_clean(&mut admin).await;
    }

    async fn the_catalog_lists_store_products_and_what_they_grant(server) {
        let mut client = server.client().await;
        let catalog = client.catalog().await.unwrap();
        let product = catalog
            .store_products
            .iter()
            .find(|p| p.platform == pb::StorePlatform::Sandbox as i32 && p.product_id == "starter_bundle")
            .expect("the demo sandbox starter bundle");
        assert_eq!(product.bundle_id, "starter_pack");
        let grants = product.grants.as_ref().unwrap();
        assert!(grants.currencies.iter().any(|m| m.currency_id == "coins" && m.amount_minor_units == 200));
        assert!(catalog.store_products.iter().any(|p| p.platform == pb::StorePlatform::Apple as i32 && p.product_id == APPLE_PRODUCT));
    }

    async fn a_receipt_redeemed_by_one_player_is_refused_to_another(server) {
        server.set_receipts(all_stores()).await;
        let mut admin = server.client().await;
        let receipt = google_key().receipt(&google_purchase_data("GPA.1111-2222-3333-44444", PACKAGE_NAME));
        let first = redeem(&admin, "alice", pb::StorePlatform::Google, &receipt).await.unwrap();
        assert_eq!(first.metadata["store_transaction_id"], "GPA.1111-2222-3333-44444");

        let before = snapshot(&mut admin).await;
        let stolen = redeem(&admin, "bob", pb::StorePlatform::Google, &receipt).await;
        assert_eq!(refusal(stolen), (Code::AlreadyExists, "RECEIPT_ALREADY_REDEEMED".to_owned()));
        assert_eq!(snapshot(&mut admin).await, before);
        // The refusal is not stored: alice still gets her original transaction back.
        assert_eq!(redeem(&admin, "alice", pb::StorePlatform::Google, &receipt).await.unwrap(), first);
    }

    async fn a_sandbox_receipt_issued_for_another_player_is_refused(server) {
        let mut admin = server.client().await;
        let (payload, _) = sandbox_receipt(&admin, "alice", SANDBOX_PRODUCT).await;
        let before = snapshot(&mut admin).await;
        let status = redeem(&admin, "bob", pb::StorePlatform::Sandbox, &payload).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("issued for player \"alice\""), "{status:?}");
        assert_eq!(snapshot(&mut admin).await, before);
    }

    async fn tampered_receipts_and_unknown_products_are_refused_precisely_and_change_nothing(server) {
        let mut admin = server.client().await;
        let (payload, _) = sandbox_receipt(&admin, "alice", SANDBOX_PRODUCT).await;
        let (unknown, _) = sandbox_receipt(&admin, "alice", "no_such_product").await;
        let before = snapshot(&mut admin).await;

        let tampered = redeem(&admin, "alice", pb::StorePlatform::Sandbox, &tamper_signature(&payload)).await;
        assert_eq!(refusal(tampered), (Code::InvalidArgument, "BAD_SIGNATURE".to_owned()));
        let garbage = redeem(&admin, "alice", pb::StorePlatform::Sandbox, "not-a-receipt").await;
        assert_eq!(refusal(garbage), (Code::InvalidArgument, "MALFORMED".to_owned()));
        let unknown = redeem(&admin, "alice", pb::StorePlatform::Sandbox, &unknown).await;
        assert_eq!(refusal(unknown), (Code::NotFound, "UNKNOWN_PRODUCT".to_owned()));
        let not_configured = redeem(&admin, "alice", pb::StorePlatform::Apple, &payload).await;
        assert_eq!(refusal(not_configured), (Code::FailedPrecondition, "PLATFORM_NOT_CONFIGURED".to_owned()));
        let never_redeemed = notify(&admin, pb::StorePlatform::Sandbox, &sandbox_refund(&admin, "sbx_never").await).await;
        assert_eq!(refusal(never_redeemed), (Code::NotFound, "STORE_TRANSACTION_NOT_FOUND".to_owned()));

        assert_eq!(snapshot(&mut admin).await, before);
    }

    async fn a_sandbox_refund_claws_back_spent_currency_exactly_once(server) {
        let mut admin = server.client().await;
        let (payload, transaction_id) = sandbox_receipt(&admin, "alice", SANDBOX_PRODUCT).await;
        let redemption = redeem(&admin, "alice", pb::StorePlatform::Sandbox, &payload).await.unwrap();
        // Alice spends all but 5 of her gems before the refund arrives.
        admin.revoke("alice", currencies(&[("gems", GEMS_PER_PRODUCT)]), "spent", "spend-1").await.unwrap();
        assert_eq!(gems(&mut admin, "alice").await, GEMS_INITIAL);

        let notice = sandbox_refund(&admin, &transaction_id).await;
        let refund = notify(&admin, pb::StorePlatform::Sandbox, &notice).await.unwrap();
        let refund = refund.transaction.expect("a refund transaction");
        assert_eq!(refund.kind, pb::TransactionKind::StoreRefund as i32);
        assert_eq!(refund.reverses_transaction_id, redemption.id);
        assert_eq!(refund.metadata["refund_policy"], "claw_back");
        assert_eq!(gems(&mut admin, "alice").await, GEMS_INITIAL - GEMS_PER_PRODUCT);
        assert_ledger_clean(&mut admin).await;

        let before = snapshot(&mut admin).await;
        let again = notify(&admin, pb::StorePlatform::Sandbox, &notice).await.unwrap();
        assert_eq!(again.transaction, Some(refund));
        assert_eq!(snapshot(&mut admin).await, before);

        // In debt, alice cannot spend gems; the redemption cannot be reversed a second time.
        let spend = admin.revoke("alice", currencies(&[("gems", 1)]), "spend", "spend-2").await;
        assert_eq!(coffer_integration_tests::rejection(spend).1, coffer_client::Rejection::InsufficientFunds);
        let reverse = admin.reverse(redemption.id, "again", "reverse-1").await;
        assert_eq!(coffer_integration_tests::rejection(reverse).1, coffer_client::Rejection::AlreadyReversed);
        assert_ledger_clean(&mut admin).await;
    }

    async fn apple_receipts_are_verified_up_to_the_configured_root(server) {
        server.set_receipts(all_stores()).await;
        let mut admin = server.client().await;
        let chain = apple_chain();
        let before = snapshot(&mut admin).await;

        let mut wrong_bundle = apple_transaction("2000000000000001");
        wrong_bundle["bundleId"] = json!("com.example.other");
        let mut sandbox_environment = apple_transaction("2000000000000002");
        sandbox_environment["environment"] = json!("Sandbox");
        let refusals = [
            (chain.sign(&wrong_bundle), "WRONG_BUNDLE_ID"),
            (chain.sign(&sandbox_environment), "WRONG_ENVIRONMENT"),
            (other_apple_chain().sign(&apple_transaction("2000000000000003")), "UNTRUSTED_CHAIN"),
            // Signed by another key under the trusted chain's certificates.
            (other_apple_chain().sign_with_x5c(&chain.x5c, &apple_transaction("2000000000000004")), "BAD_SIGNATURE"),
            (tamper_signature(&chain.sign(&apple_transaction("2000000000000005"))), "BAD_SIGNATURE"),
        ];
        for (payload, reason) in refusals {
            let result = redeem(&admin, "alice", pb::StorePlatform::Apple, &payload).await;
            assert_eq!(refusal(result), (Code::InvalidArgument, reason.to_owned()));
        }
        assert_eq!(snapshot(&mut admin).await, before);

        let signed = chain.sign(&apple_transaction("2000000000000006"));
        let redemption = redeem(&admin, "alice", pb::StorePlatform::Apple, &signed).await.unwrap();
        assert_eq!(redemption.metadata["price_minor_units"], "199");
        assert_eq!(redemption.metadata["price_currency"], "USD");
        assert_eq!(redemption.metadata["environment"], "Production");
        assert_eq!(gems(&mut admin, "alice").await, GEMS_INITIAL + GEMS_PER_PRODUCT);

        let notice = chain.sign(&apple_notification("REFUND", &signed));
        let refund = notify(&admin, pb::StorePlatform::Apple, &notice).await.unwrap();
        assert_eq!(refund.transaction.unwrap().reverses_transaction_id, redemption.id);
        assert_eq!(gems(&mut admin, "alice").await, GEMS_INITIAL);
        let before = snapshot(&mut admin).await;
        notify(&admin, pb::StorePlatform::Apple, &notice).await.unwrap();
        assert_eq!(snapshot(&mut admin).await, before);
        let ignored = notify(&admin, pb::StorePlatform::Apple, &chain.sign(&apple_notification("CONSUMPTION_REQUEST", &signed))).await.unwrap();
        assert_eq!((ignored.transaction, ignored.ignored_notification_type.as_str()), (None, "CONSUMPTION_REQUEST"));
        assert_eq!(snapshot(&mut admin).await, before);
    }

    async fn google_receipts_are_verified_with_the_licence_key(server) {
        server.set_receipts(all_stores()).await;
        let mut admin = server.client().await;
        let before = snapshot(&mut admin).await;
        let data = google_purchase_data("GPA.5555-6666-7777-88888", PACKAGE_NAME);
        let refusals = [
            (other_google_key().receipt(&data), "BAD_SIGNATURE"),
            (google_key().receipt(&google_purchase_data("GPA.5555-6666-7777-88889", "com.example.other")), "WRONG_PACKAGE_NAME"),
        ];
        for (payload, reason) in refusals {
            let result = redeem(&admin, "bob", pb::StorePlatform::Google, &payload).await;
            assert_eq!(refusal(result), (Code::InvalidArgument, reason.to_owned()));
        }
        assert_eq!(snapshot(&mut admin).await, before);

        let redemption = redeem(&admin, "bob", pb::StorePlatform::Google, &google_key().receipt(&data)).await.unwrap();
        assert_eq!(gems(&mut admin, "bob").await, GEMS_INITIAL + GEMS_PER_PRODUCT);
        let voided = json!({
            "kind": "androidpublisher#voidedPurchase",
            "purchaseToken": "token-GPA.5555-6666-7777-88888",
            "orderId": "GPA.5555-6666-7777-88888",
            "voidedTimeMillis": (now_unix_ms() - 1_000).to_string(),
            "voidedReason": 1
        })
        .to_string();
        let refund = notify(&admin, pb::StorePlatform::Google, &voided).await.unwrap();
        assert_eq!(refund.transaction.unwrap().reverses_transaction_id, redemption.id);
        assert_eq!(gems(&mut admin, "bob").await, GEMS_INITIAL);
        let before = snapshot(&mut admin).await;
        notify(&admin, pb::StorePlatform::Google, &voided).await.unwrap();
        assert_eq!(snapshot(&mut admin).await, before);
    }
}
