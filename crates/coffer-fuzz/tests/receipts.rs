//! Receipts under hostile input: the proptest driver of `coffer_fuzz::receipts`.

use coffer_fuzz::receipts::{self, GENUINE_PAYLOADS};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(coffer_fuzz::proptest_cases()))]

    #[test]
    fn hostile_receipts_are_refused_or_verify_only_as_signed(
        mode in 0u8..4,
        base in 0..GENUINE_PAYLOADS,
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        receipts::run(&[&[mode, base], &rest[..]].concat());
    }
}

#[test]
fn seed_corpus_is_checked_in_and_passes() {
    let files = coffer_fuzz::replay_corpus("receipts", receipts::seeds(), receipts::run);
    assert!(files >= receipts::seeds().len());
}

/// The property the text mode relies on, checked exhaustively on a sample of positions: any
/// change inside the signed part of a genuine payload is refused.
#[test]
fn a_changed_character_in_the_signed_part_is_refused() {
    for base in 0..GENUINE_PAYLOADS {
        let (platform, signed, text) = receipts::genuine(base);
        assert!(receipts::verifies_as(base, text), "{platform:?} genuine");
        if !signed {
            continue;
        }
        // The signed part ends at the last '.' (JWS, sandbox) or, for Play, is purchaseData.
        let signed_end = match platform {
            coffer_receipts::Platform::Google => text.find("\"signature\"").unwrap_or(text.len()),
            _ => text.rfind('.').unwrap(),
        };
        let mut changed = 0;
        for (index, original) in text[..signed_end].char_indices().step_by(5) {
            let replacement = if original == 'A' { 'B' } else { 'A' };
            let mut mutated = text.to_owned();
            mutated.replace_range(index..index + original.len_utf8(), &replacement.to_string());
            assert!(
                !receipts::verifies_as(base, &mutated),
                "{platform:?} payload {base} changed at byte {index} still verifies"
            );
            changed += 1;
        }
        assert!(changed > 10);
    }
}

/// The claims and header modes exist to get past the signature into the field checks: enough
/// of their payloads must verify (measured: text 10/300, claims 77/300, header 26/300).
#[test]
fn structured_modes_often_verify() {
    let text = coffer_fuzz::accepted_count(1, 300, 128, receipts::run);
    let claims = coffer_fuzz::accepted_count(2, 300, 128, receipts::run);
    let header = coffer_fuzz::accepted_count(3, 300, 128, receipts::run);
    assert!(
        text >= 3 && claims >= 30 && header >= 10,
        "verified: text {text}/300, claims {claims}/300, header {header}/300"
    );
}
