//! The sandbox store: Ed25519-signed test receipts and refunds issued by Coffer itself.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_receipts::{
    ConfigError, IssueError, Platform, ReceiptError, RefundKind, SANDBOX_TOKEN_PREFIX,
    SandboxConfig, SandboxIssuer, SandboxPurchase, SandboxRefund, VerifiedNotification, Verifier,
    VerifierConfig,
};
use common::*;

fn purchase() -> SandboxPurchase {
    SandboxPurchase {
        transaction_id: "sbx_0001".to_owned(),
        product_id: "gems_500".to_owned(),
        player_id: "player-42".to_owned(),
        quantity: 2,
        issued_at_unix_ms: NOW_UNIX_MS - 1_000,
        price_minor_units: Some(499),
        currency_code: Some("EUR".to_owned()),
    }
}

fn sandbox_verifier(issuer: &SandboxIssuer) -> Verifier {
    Verifier::new(VerifierConfig {
        sandbox: Some(issuer.config()),
        ..VerifierConfig::default()
    })
    .unwrap()
}

#[test]
fn issued_receipt_verifies_with_its_fields() {
    let issuer = sandbox_issuer();
    let receipt = issuer.issue(&purchase()).unwrap();
    assert!(receipt.starts_with(SANDBOX_TOKEN_PREFIX));
    let verified = sandbox_verifier(&issuer)
        .verify_receipt(Platform::Sandbox, &receipt, NOW_UNIX_MS)
        .unwrap();
    assert_eq!(verified.platform, Platform::Sandbox);
    assert_eq!(verified.store_transaction_id, "sbx_0001");
    assert_eq!(verified.product_id, "gems_500");
    assert_eq!(verified.quantity, 2);
    assert_eq!(verified.purchased_at_unix_ms, NOW_UNIX_MS - 1_000);
    assert_eq!(verified.price_minor_units, Some(499));
    assert_eq!(verified.currency_code.as_deref(), Some("EUR"));
    assert_eq!(verified.environment, "sandbox");
    assert_eq!(verified.player_hint.as_deref(), Some("player-42"));
}

#[test]
fn tampered_receipt_is_bad_signature() {
    let issuer = sandbox_issuer();
    let receipt = issuer.issue(&purchase()).unwrap();
    let (signed, signature) = receipt.rsplit_once('.').unwrap();
    let claims_b64 = signed.strip_prefix(SANDBOX_TOKEN_PREFIX).unwrap();
    let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(claims_b64).unwrap()).unwrap();
    let forged_claims = URL_SAFE_NO_PAD.encode(claims.replace("gems_500", "gems_9000"));
    let forged = format!("{SANDBOX_TOKEN_PREFIX}{forged_claims}.{signature}");
    assert_eq!(
        sandbox_verifier(&issuer).verify_receipt(Platform::Sandbox, &forged, NOW_UNIX_MS),
        Err(ReceiptError::BadSignature)
    );
}

#[test]
fn receipt_from_another_issuer_is_bad_signature() {
    let stranger = SandboxIssuer::from_secret_key([9; 32]);
    let receipt = stranger.issue(&purchase()).unwrap();
    assert_eq!(
        sandbox_verifier(&sandbox_issuer()).verify_receipt(
            Platform::Sandbox,
            &receipt,
            NOW_UNIX_MS
        ),
        Err(ReceiptError::BadSignature)
    );
}

#[test]
fn refund_token_is_not_a_receipt() {
    let issuer = sandbox_issuer();
    let refund = issuer
        .issue_refund(&SandboxRefund {
            transaction_id: "sbx_0001".to_owned(),
            kind: RefundKind::Refund,
            issued_at_unix_ms: NOW_UNIX_MS,
        })
        .unwrap();
    assert_eq!(
        sandbox_verifier(&issuer)
            .verify_receipt(Platform::Sandbox, &refund, NOW_UNIX_MS)
            .unwrap_err()
            .code(),
        "WRONG_PAYLOAD_KIND"
    );
}

#[test]
fn receipt_is_not_a_refund_notification() {
    let issuer = sandbox_issuer();
    let receipt = issuer.issue(&purchase()).unwrap();
    assert_eq!(
        sandbox_verifier(&issuer)
            .verify_notification(Platform::Sandbox, &receipt, NOW_UNIX_MS)
            .unwrap_err()
            .code(),
        "WRONG_PAYLOAD_KIND"
    );
}

#[test]
fn refund_and_revoke_notifications_verify() {
    let issuer = sandbox_issuer();
    for kind in [RefundKind::Refund, RefundKind::Revoke] {
        let token = issuer
            .issue_refund(&SandboxRefund {
                transaction_id: "sbx_0001".to_owned(),
                kind,
                issued_at_unix_ms: NOW_UNIX_MS,
            })
            .unwrap();
        let outcome = sandbox_verifier(&issuer)
            .verify_notification(Platform::Sandbox, &token, NOW_UNIX_MS)
            .unwrap();
        let VerifiedNotification::Refund(refund) = outcome else {
            panic!("expected a refund, got {outcome:?}");
        };
        assert_eq!(refund.platform, Platform::Sandbox);
        assert_eq!(refund.store_transaction_id, "sbx_0001");
        assert_eq!(refund.kind, kind);
        assert_eq!(refund.at_unix_ms, NOW_UNIX_MS);
        assert_eq!(refund.environment, "sandbox");
    }
}

#[test]
fn sandbox_receipt_sent_as_apple_is_not_configured_or_malformed() {
    let receipt = sandbox_issuer().issue(&purchase()).unwrap();
    // A verifier without Apple refuses it as not configured…
    assert_eq!(
        sandbox_verifier(&sandbox_issuer()).verify_receipt(Platform::Apple, &receipt, NOW_UNIX_MS),
        Err(ReceiptError::PlatformNotConfigured {
            platform: Platform::Apple
        })
    );
    // …and one with Apple refuses it as not a JWS.
    assert_eq!(
        full_verifier()
            .verify_receipt(Platform::Apple, &receipt, NOW_UNIX_MS)
            .unwrap_err()
            .code(),
        "MALFORMED"
    );
}

#[test]
fn malformed_tokens_are_malformed() {
    let verifier = sandbox_verifier(&sandbox_issuer());
    for token in [
        "",
        "coffer-sandbox-v1.",
        "coffer-sandbox-v1.abc",
        "coffer-sandbox-v1.abc.def",
        "coffer-sandbox-v2.abc.def",
        "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
    ] {
        assert_eq!(
            verifier
                .verify_receipt(Platform::Sandbox, token, NOW_UNIX_MS)
                .unwrap_err()
                .code(),
            "MALFORMED",
            "{token:?}"
        );
    }
}

#[test]
fn issuer_refuses_empty_fields_and_bad_quantities() {
    let issuer = sandbox_issuer();
    let mut empty_product = purchase();
    empty_product.product_id.clear();
    assert_eq!(
        issuer.issue(&empty_product),
        Err(IssueError::EmptyField {
            field: "product_id"
        })
    );
    let mut zero = purchase();
    zero.quantity = 0;
    assert!(matches!(
        issuer.issue(&zero),
        Err(IssueError::QuantityOutOfRange { quantity: 0, .. })
    ));
}

#[test]
fn invalid_verifying_key_is_refused_at_start_up() {
    // Not every 32-byte string is a point on the curve; this one (y = 2) is not.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let result = Verifier::new(VerifierConfig {
        sandbox: Some(SandboxConfig {
            verifying_key: not_a_point,
        }),
        ..VerifierConfig::default()
    });
    assert_eq!(result.unwrap_err(), ConfigError::SandboxInvalidKey);
}

#[test]
fn issuer_debug_does_not_print_the_secret_key() {
    let debug = format!("{:?}", SandboxIssuer::from_secret_key([7; 32]));
    assert!(!debug.contains("7, 7, 7"), "{debug}");
}
