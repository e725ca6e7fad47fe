//! Google Play: purchase data signed with the licence key (SHA1withRSA), and voided purchases.

mod common;

use coffer_receipts::{
    ConfigError, GoogleConfig, Platform, ReceiptError, RefundKind, VerifiedNotification,
    VerifiedPurchase, Verifier, VerifierConfig,
};
use common::*;
use serde_json::json;

fn verify(payload: &str) -> Result<VerifiedPurchase, ReceiptError> {
    google_verifier().verify_receipt(Platform::Google, payload, NOW_UNIX_MS)
}

fn signed(purchase_data: &serde_json::Value) -> String {
    google_key().receipt(&purchase_data.to_string())
}

#[test]
fn valid_purchase_verifies_with_its_fields() {
    let purchase = verify(&signed(&google_purchase_data())).unwrap();
    assert_eq!(purchase.platform, Platform::Google);
    assert_eq!(purchase.store_transaction_id, "GPA.3312-4456-7788-99001");
    assert_eq!(purchase.product_id, "gems_500");
    assert_eq!(purchase.quantity, 1);
    assert_eq!(purchase.purchased_at_unix_ms, NOW_UNIX_MS - 60_000);
    assert_eq!(purchase.price_minor_units, None);
    assert_eq!(purchase.currency_code, None);
    assert_eq!(purchase.environment, "production");
    assert_eq!(purchase.player_hint.as_deref(), Some("player-42"));
}

#[test]
fn signature_covers_the_exact_bytes_sent() {
    // Play's JSON has no spaces; a pretty-printed copy is different bytes and must still verify
    // when it is what was signed, because nothing is re-serialized.
    let pretty = serde_json::to_string_pretty(&google_purchase_data()).unwrap();
    assert!(verify(&google_key().receipt(&pretty)).is_ok());
}

#[test]
fn purchase_without_order_id_uses_the_purchase_token() {
    let mut data = google_purchase_data();
    data["orderId"] = json!("");
    let purchase = verify(&signed(&data)).unwrap();
    assert_eq!(
        purchase.store_transaction_id,
        "opaque-token-abcdefghijklmnopqrstuvwxyz.AO-J1Oy"
    );
}

#[test]
fn multi_quantity_purchase_reports_its_quantity() {
    let mut data = google_purchase_data();
    data["quantity"] = json!(3);
    assert_eq!(verify(&signed(&data)).unwrap().quantity, 3);
}

#[test]
fn tampered_purchase_data_is_bad_signature() {
    let data = google_purchase_data().to_string();
    let signature = google_key().sign(&data);
    let tampered = data.replace("gems_500", "gems_9000");
    let payload = json!({"purchaseData": tampered, "signature": signature}).to_string();
    assert_eq!(verify(&payload), Err(ReceiptError::BadSignature));
}

#[test]
fn signature_by_another_key_is_bad_signature() {
    let payload = other_google_key().receipt(&google_purchase_data().to_string());
    assert_eq!(verify(&payload), Err(ReceiptError::BadSignature));
}

#[test]
fn wrong_package_name_is_refused() {
    let mut data = google_purchase_data();
    data["packageName"] = json!("com.someone.else");
    assert_eq!(
        verify(&signed(&data)),
        Err(ReceiptError::WrongPackageName {
            expected: PACKAGE_NAME.to_owned(),
            found: "com.someone.else".to_owned()
        })
    );
}

#[test]
fn canceled_and_pending_purchases_are_not_purchased() {
    for (state, name) in [(1, "canceled"), (2, "pending"), (4, "pending")] {
        let mut data = google_purchase_data();
        data["purchaseState"] = json!(state);
        assert_eq!(
            verify(&signed(&data)),
            Err(ReceiptError::NotPurchased {
                state: name.to_owned()
            })
        );
    }
}

#[test]
fn malformed_envelopes_are_malformed() {
    let data = google_purchase_data().to_string();
    for payload in [
        String::new(),
        "not json".to_owned(),
        "{}".to_owned(),
        json!({"purchaseData": data}).to_string(),
        json!({"signature": "AAAA"}).to_string(),
        json!({"purchaseData": data, "signature": "%%% not base64"}).to_string(),
        json!({"purchaseData": 5, "signature": "AAAA"}).to_string(),
    ] {
        assert_eq!(
            verify(&payload).unwrap_err().code(),
            "MALFORMED",
            "{payload}"
        );
    }
}

#[test]
fn signed_but_incomplete_purchase_data_is_malformed() {
    let mut data = google_purchase_data();
    data.as_object_mut().unwrap().remove("productId");
    assert_eq!(
        verify(&signed(&data)),
        Err(ReceiptError::Malformed {
            reason: "missing productId".to_owned()
        })
    );
}

#[test]
fn invalid_licence_keys_are_refused_at_start_up() {
    for key in [
        "",
        "not base64!",
        "AAAA",
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
    ] {
        let result = Verifier::new(VerifierConfig {
            google: Some(GoogleConfig {
                package_name: PACKAGE_NAME.to_owned(),
                license_public_key_base64: key.to_owned(),
            }),
            ..VerifierConfig::default()
        });
        assert!(
            matches!(result, Err(ConfigError::GoogleInvalidPublicKey { .. })),
            "{key:?}: {result:?}"
        );
    }
}

// --- Voided purchases (trusted input) --------------------------------------------------------

#[test]
fn voided_purchase_record_is_a_refund_of_its_order() {
    let record = json!({
        "kind": "androidpublisher#voidedPurchase",
        "purchaseToken": "opaque-token-abcdefghijklmnopqrstuvwxyz.AO-J1Oy",
        "purchaseTimeMillis": (NOW_UNIX_MS - 60_000).to_string(),
        "voidedTimeMillis": (NOW_UNIX_MS - 1_000).to_string(),
        "orderId": "GPA.3312-4456-7788-99001",
        "voidedSource": 0,
        "voidedReason": 1,
        "voidedQuantity": 1
    });
    let outcome = google_verifier()
        .verify_notification(Platform::Google, &record.to_string(), NOW_UNIX_MS)
        .unwrap();
    let VerifiedNotification::Refund(refund) = outcome else {
        panic!("expected a refund, got {outcome:?}");
    };
    assert_eq!(refund.platform, Platform::Google);
    assert_eq!(refund.store_transaction_id, "GPA.3312-4456-7788-99001");
    assert_eq!(refund.kind, RefundKind::Refund);
    assert_eq!(refund.at_unix_ms, NOW_UNIX_MS - 1_000);
    assert_eq!(refund.reason.as_deref(), Some("remorse"));
}

#[test]
fn voided_purchase_notification_from_rtdn_is_a_refund() {
    let notification = json!({
        "version": "1.0",
        "packageName": PACKAGE_NAME,
        "eventTimeMillis": (NOW_UNIX_MS - 2_000).to_string(),
        "voidedPurchaseNotification": {
            "purchaseToken": "opaque-token-abcdefghijklmnopqrstuvwxyz.AO-J1Oy",
            "orderId": "GPA.3312-4456-7788-99001",
            "productType": 2,
            "refundType": 1
        }
    });
    let outcome = google_verifier()
        .verify_notification(Platform::Google, &notification.to_string(), NOW_UNIX_MS)
        .unwrap();
    assert!(
        matches!(&outcome, VerifiedNotification::Refund(refund)
            if refund.store_transaction_id == "GPA.3312-4456-7788-99001"
            && refund.at_unix_ms == NOW_UNIX_MS - 2_000),
        "{outcome:?}"
    );
}

#[test]
fn other_rtdn_notifications_are_ignored() {
    let notification = json!({
        "version": "1.0",
        "packageName": PACKAGE_NAME,
        "eventTimeMillis": NOW_UNIX_MS.to_string(),
        "testNotification": {"version": "1.0"}
    });
    assert!(matches!(
        google_verifier().verify_notification(
            Platform::Google,
            &notification.to_string(),
            NOW_UNIX_MS
        ),
        Ok(VerifiedNotification::Ignored { .. })
    ));
}

#[test]
fn rtdn_for_another_package_is_wrong_package_name() {
    let notification = json!({
        "packageName": "com.someone.else",
        "eventTimeMillis": NOW_UNIX_MS.to_string(),
        "voidedPurchaseNotification": {"purchaseToken": "t", "orderId": "GPA.1"}
    });
    assert_eq!(
        google_verifier()
            .verify_notification(Platform::Google, &notification.to_string(), NOW_UNIX_MS)
            .unwrap_err()
            .code(),
        "WRONG_PACKAGE_NAME"
    );
}

#[test]
fn voided_record_without_ids_is_malformed() {
    let record = json!({"voidedTimeMillis": "1"});
    assert_eq!(
        google_verifier()
            .verify_notification(Platform::Google, &record.to_string(), NOW_UNIX_MS)
            .unwrap_err()
            .code(),
        "MALFORMED"
    );
}
