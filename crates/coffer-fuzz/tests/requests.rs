//! Request checks under hostile input: the proptest driver of `coffer_fuzz::requests`.

use coffer_fuzz::requests::{self, AnyRequest, REQUEST_KINDS};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(coffer_fuzz::proptest_cases()))]

    #[test]
    fn hostile_requests_become_bounded_commands_or_invalid_argument(
        mode in 0u8..2,
        kind in 0..REQUEST_KINDS,
        rest in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        requests::run(&[&[mode, kind], &rest[..]].concat());
    }
}

#[test]
fn seed_corpus_is_checked_in_and_passes() {
    let files = coffer_fuzz::replay_corpus("requests", requests::seeds(), requests::run);
    assert!(files >= requests::seeds().len());
}

#[test]
fn a_valid_request_of_every_kind_is_accepted() {
    let valid = requests::valid_requests();
    assert_eq!(valid.len(), usize::from(REQUEST_KINDS));
    for request in valid {
        let (kind, bytes) = request.encode();
        let decoded = AnyRequest::decode(kind, &bytes).unwrap();
        assert!(requests::check(&decoded), "refused: {request:?}");
    }
}

#[test]
fn an_empty_request_of_every_kind_is_refused() {
    for kind in 0..REQUEST_KINDS {
        let empty = AnyRequest::decode(kind, &[]).unwrap();
        assert!(!requests::check(&empty), "accepted: {empty:?}");
    }
}

/// The model mode exists to reach the limits assertions: enough of its requests must pass
/// their checks (measured: 446/1400).
#[test]
fn the_model_mode_often_produces_valid_requests() {
    let accepted = coffer_fuzz::accepted_count(1, 1400, 256, requests::run);
    assert!(accepted >= 280, "accepted: {accepted}/1400");
}
