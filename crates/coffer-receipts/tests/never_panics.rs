//! Every entry point returns an error, never panics, on arbitrary input; and no mutation of a
//! genuine payload verifies as a different purchase.

mod common;

use std::sync::OnceLock;

use coffer_receipts::{Platform, Verifier, decode_key_base64url};
use common::*;
use proptest::prelude::*;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(full_verifier)
}

fn genuine_payloads() -> &'static [(Platform, String)] {
    static PAYLOADS: OnceLock<Vec<(Platform, String)>> = OnceLock::new();
    PAYLOADS.get_or_init(|| {
        let chain = apple_chain();
        let apple = chain.sign(&apple_transaction());
        let google = google_key().receipt(&google_purchase_data().to_string());
        let sandbox = sandbox_issuer()
            .issue(&coffer_receipts::SandboxPurchase {
                transaction_id: "sbx_1".to_owned(),
                product_id: "gems_500".to_owned(),
                player_id: "player-42".to_owned(),
                quantity: 1,
                issued_at_unix_ms: NOW_UNIX_MS,
                price_minor_units: None,
                currency_code: None,
            })
            .unwrap();
        vec![
            (Platform::Apple, apple),
            (Platform::Google, google),
            (Platform::Sandbox, sandbox),
        ]
    })
}

fn all_entry_points(payload: &str, now_unix_ms: i64) {
    for platform in Platform::ALL {
        let _ = verifier().verify_receipt(platform, payload, now_unix_ms);
        let _ = verifier().verify_notification(platform, payload, now_unix_ms);
    }
    let _ = payload.parse::<Platform>();
    let _ = decode_key_base64url(payload);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_panic(payload in ".{0,2048}", now_unix_ms in any::<i64>()) {
        all_entry_points(&payload, now_unix_ms);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        all_entry_points(&String::from_utf8_lossy(&bytes), NOW_UNIX_MS);
    }

    #[test]
    fn json_shaped_strings_never_panic(payload in r#"[{}\[\]":,.0-9a-zA-Z_ -]{0,512}"#) {
        all_entry_points(&payload, NOW_UNIX_MS);
    }

    #[test]
    fn mutated_genuine_payloads_never_verify_as_something_else(
        which in 0usize..3,
        position in any::<prop::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let (platform, genuine) = &genuine_payloads()[which];
        let original = verifier().verify_receipt(*platform, genuine, NOW_UNIX_MS).unwrap();
        let mut chars: Vec<char> = genuine.chars().collect();
        let index = position.index(chars.len());
        chars[index] = replacement;
        let mutated: String = chars.into_iter().collect();
        all_entry_points(&mutated, NOW_UNIX_MS);
        // A mutation may be harmless (e.g. trailing base64 bits, whitespace around the token),
        // but it can never produce a different verified purchase.
        if let Ok(purchase) = verifier().verify_receipt(*platform, &mutated, NOW_UNIX_MS) {
            prop_assert_eq!(purchase, original);
        }
    }
}
