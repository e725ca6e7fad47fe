//! App Store: StoreKit 2 signed transactions and App Store Server Notifications V2, with test
//! chains built by rcgen.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_receipts::{
    AppleEnvironment, Platform, ReceiptError, RefundKind, VerifiedNotification, Verifier,
    VerifierConfig,
};
use common::*;
use serde_json::json;

fn verify(
    verifier: &Verifier,
    jws: &str,
) -> Result<coffer_receipts::VerifiedPurchase, ReceiptError> {
    verifier.verify_receipt(Platform::Apple, jws, NOW_UNIX_MS)
}

#[test]
fn valid_transaction_verifies_with_its_fields() {
    let chain = apple_chain();
    let purchase = verify(
        &apple_verifier(&chain.root_der),
        &chain.sign(&apple_transaction()),
    )
    .unwrap();
    assert_eq!(purchase.platform, Platform::Apple);
    assert_eq!(purchase.store_transaction_id, "2000000123456789");
    assert_eq!(
        purchase.original_transaction_id.as_deref(),
        Some("2000000123456789")
    );
    assert_eq!(purchase.product_id, "com.example.coffer.gems_500");
    assert_eq!(purchase.quantity, 1);
    assert_eq!(purchase.purchased_at_unix_ms, NOW_UNIX_MS - 60_000);
    assert_eq!(purchase.price_milliunits, Some(12_990));
    assert_eq!(purchase.price_minor_units, Some(1_299));
    assert_eq!(purchase.currency_code.as_deref(), Some("USD"));
    assert_eq!(purchase.environment, "Production");
    assert_eq!(
        purchase.player_hint.as_deref(),
        Some("7e3fb20b-4cdb-47cc-936d-99d65f608138")
    );
}

#[test]
fn chain_without_the_root_in_x5c_still_verifies() {
    let chain = apple_chain();
    let x5c = &chain.x5c()[..2];
    let jws = chain.sign_with_header(&json!({"alg": "ES256", "x5c": x5c}), &apple_transaction());
    assert!(verify(&apple_verifier(&chain.root_der), &jws).is_ok());
}

#[test]
fn tampered_payload_is_bad_signature() {
    let chain = apple_chain();
    let jws = chain.sign(&apple_transaction());
    let mut tampered = apple_transaction();
    tampered["productId"] = json!("com.example.coffer.gems_50000");
    let tampered_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tampered).unwrap());
    let parts: Vec<&str> = jws.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], tampered_b64, parts[2]);
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &forged),
        Err(ReceiptError::BadSignature)
    );
}

#[test]
fn signature_by_another_key_is_bad_signature() {
    let chain = apple_chain();
    let impostor = AppleChain::new(&ChainOptions::default());
    // A genuine chain in the header, but the JWS signed by a key that is not its leaf's.
    let jws = impostor.sign_with_header(
        &json!({"alg": "ES256", "x5c": chain.x5c()}),
        &apple_transaction(),
    );
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &jws),
        Err(ReceiptError::BadSignature)
    );
}

#[test]
fn chain_from_another_root_is_untrusted() {
    let trusted = apple_chain();
    let other = AppleChain::new(&ChainOptions {
        root_name: "Some Other Root",
        ..ChainOptions::default()
    });
    let error = verify(
        &apple_verifier(&trusted.root_der),
        &other.sign(&apple_transaction()),
    )
    .unwrap_err();
    assert_eq!(error.code(), "UNTRUSTED_CHAIN", "{error}");
}

#[test]
fn expired_leaf_is_certificate_expired() {
    let chain = AppleChain::new(&ChainOptions {
        leaf_valid_days: (-400, -1),
        ..ChainOptions::default()
    });
    assert_eq!(
        verify(
            &apple_verifier(&chain.root_der),
            &chain.sign(&apple_transaction())
        ),
        Err(ReceiptError::CertificateExpired)
    );
}

#[test]
fn expired_intermediate_is_certificate_expired() {
    let chain = AppleChain::new(&ChainOptions {
        intermediate_valid_days: (-800, -2),
        ..ChainOptions::default()
    });
    assert_eq!(
        verify(
            &apple_verifier(&chain.root_der),
            &chain.sign(&apple_transaction())
        ),
        Err(ReceiptError::CertificateExpired)
    );
}

#[test]
fn expired_root_is_certificate_expired() {
    // webpki does not check trust anchors' validity; the verifier does, as Apple's does.
    let chain = AppleChain::new(&ChainOptions {
        root_valid_days: (-3650, -3),
        ..ChainOptions::default()
    });
    assert_eq!(
        verify(
            &apple_verifier(&chain.root_der),
            &chain.sign(&apple_transaction())
        ),
        Err(ReceiptError::CertificateExpired)
    );
}

#[test]
fn leaf_not_yet_valid_is_refused() {
    let chain = AppleChain::new(&ChainOptions {
        leaf_valid_days: (2, 300),
        ..ChainOptions::default()
    });
    assert_eq!(
        verify(
            &apple_verifier(&chain.root_der),
            &chain.sign(&apple_transaction())
        ),
        Err(ReceiptError::CertificateNotYetValid)
    );
}

#[test]
fn leaf_without_apple_marker_is_refused() {
    let chain = AppleChain::new(&ChainOptions {
        leaf_marker: false,
        ..ChainOptions::default()
    });
    assert_eq!(
        verify(
            &apple_verifier(&chain.root_der),
            &chain.sign(&apple_transaction())
        ),
        Err(ReceiptError::NotAppleCertificate {
            certificate: "leaf",
            oid: "1.2.840.113635.100.6.11.1"
        })
    );
}

#[test]
fn intermediate_without_apple_marker_is_refused() {
    let chain = AppleChain::new(&ChainOptions {
        intermediate_marker: false,
        ..ChainOptions::default()
    });
    assert_eq!(
        verify(
            &apple_verifier(&chain.root_der),
            &chain.sign(&apple_transaction())
        ),
        Err(ReceiptError::NotAppleCertificate {
            certificate: "intermediate",
            oid: "1.2.840.113635.100.6.2.1"
        })
    );
}

#[test]
fn wrong_bundle_id_is_refused() {
    let chain = apple_chain();
    let mut transaction = apple_transaction();
    transaction["bundleId"] = json!("com.someone.else");
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &chain.sign(&transaction)),
        Err(ReceiptError::WrongBundleId {
            expected: BUNDLE_ID.to_owned(),
            found: "com.someone.else".to_owned()
        })
    );
}

#[test]
fn sandbox_transaction_is_refused_by_a_production_only_server() {
    let chain = apple_chain();
    let mut transaction = apple_transaction();
    transaction["environment"] = json!("Sandbox");
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &chain.sign(&transaction)),
        Err(ReceiptError::WrongEnvironment {
            expected: "Production".to_owned(),
            found: "Sandbox".to_owned()
        })
    );
}

#[test]
fn sandbox_transaction_is_accepted_when_sandbox_is_configured() {
    let chain = apple_chain();
    let verifier = Verifier::new(VerifierConfig {
        apple: Some(apple_config(
            &chain.root_der,
            &[AppleEnvironment::Production, AppleEnvironment::Sandbox],
        )),
        ..VerifierConfig::default()
    })
    .unwrap();
    let mut transaction = apple_transaction();
    transaction["environment"] = json!("Sandbox");
    let purchase = verify(&verifier, &chain.sign(&transaction)).unwrap();
    assert_eq!(purchase.environment, "Sandbox");
}

#[test]
fn xcode_transaction_is_wrong_environment() {
    let chain = apple_chain();
    let mut transaction = apple_transaction();
    transaction["environment"] = json!("Xcode");
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &chain.sign(&transaction))
            .unwrap_err()
            .code(),
        "WRONG_ENVIRONMENT"
    );
}

#[test]
fn revoked_transaction_is_not_redeemable() {
    let chain = apple_chain();
    let mut transaction = apple_transaction();
    transaction["revocationDate"] = json!(NOW_UNIX_MS - 5_000);
    transaction["revocationReason"] = json!(0);
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &chain.sign(&transaction)),
        Err(ReceiptError::Revoked {
            revoked_at_unix_ms: NOW_UNIX_MS - 5_000
        })
    );
}

#[test]
fn algorithms_other_than_es256_are_refused() {
    let chain = apple_chain();
    for alg in ["none", "HS256", "RS256", "ES384"] {
        let jws = chain.sign_with_header(
            &json!({"alg": alg, "x5c": chain.x5c()}),
            &apple_transaction(),
        );
        assert_eq!(
            verify(&apple_verifier(&chain.root_der), &jws),
            Err(ReceiptError::UnsupportedAlgorithm {
                alg: alg.to_owned()
            })
        );
    }
}

#[test]
fn missing_x5c_is_malformed() {
    let chain = apple_chain();
    let jws = chain.sign_with_header(&json!({"alg": "ES256"}), &apple_transaction());
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &jws)
            .unwrap_err()
            .code(),
        "MALFORMED"
    );
}

#[test]
fn malformed_inputs_are_malformed() {
    let chain = apple_chain();
    let verifier = apple_verifier(&chain.root_der);
    let valid = chain.sign(&apple_transaction());
    let parts: Vec<&str> = valid.split('.').collect();
    let not_json = URL_SAFE_NO_PAD.encode(b"not json");
    for payload in [
        String::new(),
        "hello".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        "!!!.***.???".to_owned(),
        format!("{not_json}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], "AAAA"),
    ] {
        let error = verify(&verifier, &payload).unwrap_err();
        assert!(
            matches!(
                error,
                ReceiptError::Malformed { .. } | ReceiptError::BadSignature
            ),
            "{payload:?} gave {error:?}"
        );
    }
}

#[test]
fn signed_payload_missing_transaction_id_is_malformed() {
    let chain = apple_chain();
    let mut transaction = apple_transaction();
    transaction.as_object_mut().unwrap().remove("transactionId");
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &chain.sign(&transaction)),
        Err(ReceiptError::Malformed {
            reason: "missing transactionId".to_owned()
        })
    );
}

#[test]
fn oversized_payload_is_refused_before_parsing() {
    let chain = apple_chain();
    let payload = "a".repeat(coffer_receipts::PAYLOAD_BYTES_MAX + 1);
    assert_eq!(
        verify(&apple_verifier(&chain.root_der), &payload)
            .unwrap_err()
            .code(),
        "PAYLOAD_TOO_LARGE"
    );
}

#[test]
fn other_platforms_are_not_configured_on_an_apple_only_verifier() {
    let verifier = apple_verifier(&apple_chain().root_der);
    for platform in [Platform::Google, Platform::Sandbox] {
        assert_eq!(
            verifier.verify_receipt(platform, "{}", NOW_UNIX_MS),
            Err(ReceiptError::PlatformNotConfigured { platform })
        );
        assert_eq!(
            verifier.verify_notification(platform, "{}", NOW_UNIX_MS),
            Err(ReceiptError::PlatformNotConfigured { platform })
        );
    }
}

// --- App Store Server Notifications V2 -------------------------------------------------------

fn refunded_transaction() -> serde_json::Value {
    let mut transaction = apple_transaction();
    transaction["revocationDate"] = json!(NOW_UNIX_MS - 10_000);
    transaction["revocationReason"] = json!(1);
    transaction
}

#[test]
fn refund_notification_names_the_refunded_transaction() {
    let chain = apple_chain();
    let inner = chain.sign(&refunded_transaction());
    let notification = chain.sign(&apple_notification("REFUND", &inner));
    let outcome = apple_verifier(&chain.root_der)
        .verify_notification(Platform::Apple, &notification, NOW_UNIX_MS)
        .unwrap();
    let VerifiedNotification::Refund(refund) = outcome else {
        panic!("expected a refund, got {outcome:?}");
    };
    assert_eq!(refund.platform, Platform::Apple);
    assert_eq!(refund.store_transaction_id, "2000000123456789");
    assert_eq!(
        refund.product_id.as_deref(),
        Some("com.example.coffer.gems_500")
    );
    assert_eq!(refund.kind, RefundKind::Refund);
    assert_eq!(refund.at_unix_ms, NOW_UNIX_MS - 10_000);
    assert_eq!(refund.environment, "Production");
    assert_eq!(refund.reason.as_deref(), Some("app_issue"));
}

#[test]
fn revoke_notification_is_a_revocation() {
    let chain = apple_chain();
    let inner = chain.sign(&refunded_transaction());
    let notification = chain.sign(&apple_notification("REVOKE", &inner));
    let outcome = apple_verifier(&chain.root_der)
        .verify_notification(Platform::Apple, &notification, NOW_UNIX_MS)
        .unwrap();
    assert!(
        matches!(&outcome, VerifiedNotification::Refund(refund) if refund.kind == RefundKind::Revoke),
        "{outcome:?}"
    );
}

#[test]
fn notification_post_body_is_accepted() {
    let chain = apple_chain();
    let inner = chain.sign(&refunded_transaction());
    let body =
        json!({"signedPayload": chain.sign(&apple_notification("REFUND", &inner))}).to_string();
    let outcome = apple_verifier(&chain.root_der)
        .verify_notification(Platform::Apple, &body, NOW_UNIX_MS)
        .unwrap();
    assert!(
        matches!(outcome, VerifiedNotification::Refund(_)),
        "{outcome:?}"
    );
}

#[test]
fn other_notification_types_are_ignored() {
    let chain = apple_chain();
    let inner = chain.sign(&apple_transaction());
    for notification_type in [
        "DID_RENEW",
        "CONSUMPTION_REQUEST",
        "REFUND_REVERSED",
        "ONE_TIME_CHARGE",
    ] {
        let notification = chain.sign(&apple_notification(notification_type, &inner));
        assert_eq!(
            apple_verifier(&chain.root_der).verify_notification(
                Platform::Apple,
                &notification,
                NOW_UNIX_MS
            ),
            Ok(VerifiedNotification::Ignored {
                notification_type: notification_type.to_owned()
            })
        );
    }
}

#[test]
fn test_notification_without_transaction_is_ignored() {
    let chain = apple_chain();
    let mut notification = apple_notification("TEST", "");
    notification["data"]
        .as_object_mut()
        .unwrap()
        .remove("signedTransactionInfo");
    assert_eq!(
        apple_verifier(&chain.root_der).verify_notification(
            Platform::Apple,
            &chain.sign(&notification),
            NOW_UNIX_MS
        ),
        Ok(VerifiedNotification::Ignored {
            notification_type: "TEST".to_owned()
        })
    );
}

#[test]
fn notification_for_another_app_is_wrong_bundle_id() {
    let chain = apple_chain();
    let inner = chain.sign(&refunded_transaction());
    let mut notification = apple_notification("REFUND", &inner);
    notification["data"]["bundleId"] = json!("com.someone.else");
    assert_eq!(
        apple_verifier(&chain.root_der)
            .verify_notification(Platform::Apple, &chain.sign(&notification), NOW_UNIX_MS)
            .unwrap_err()
            .code(),
        "WRONG_BUNDLE_ID"
    );
}

#[test]
fn refund_with_untrusted_inner_transaction_is_refused() {
    let chain = apple_chain();
    let other = AppleChain::new(&ChainOptions {
        root_name: "Some Other Root",
        ..ChainOptions::default()
    });
    // The outer notification is genuine; the transaction inside it is forged.
    let inner = other.sign(&refunded_transaction());
    let notification = chain.sign(&apple_notification("REFUND", &inner));
    assert_eq!(
        apple_verifier(&chain.root_der)
            .verify_notification(Platform::Apple, &notification, NOW_UNIX_MS)
            .unwrap_err()
            .code(),
        "UNTRUSTED_CHAIN"
    );
}

#[test]
fn tampered_notification_is_bad_signature() {
    let chain = apple_chain();
    let inner = chain.sign(&refunded_transaction());
    let notification = chain.sign(&apple_notification("DID_RENEW", &inner));
    let forged_payload =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&apple_notification("REFUND", &inner)).unwrap());
    let parts: Vec<&str> = notification.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(
        apple_verifier(&chain.root_der).verify_notification(Platform::Apple, &forged, NOW_UNIX_MS),
        Err(ReceiptError::BadSignature)
    );
}
