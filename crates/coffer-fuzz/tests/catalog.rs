//! Catalog TOML under hostile input: the proptest driver of `coffer_fuzz::catalog`.

use coffer_core::Catalog;
use coffer_fuzz::catalog::{self, DEMO_CATALOG_TOML, SMALL_CATALOG_TOML};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(coffer_fuzz::proptest_cases()))]

    #[test]
    fn hostile_catalogs_are_refused_or_keep_every_rule(
        mode in 0u8..3,
        rest in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        catalog::run(&[&[mode], &rest[..]].concat());
    }
}

#[test]
fn seed_corpus_is_checked_in_and_passes() {
    let files = coffer_fuzz::replay_corpus("catalog", catalog::seeds(), catalog::run);
    assert!(files >= catalog::seeds().len());
}

#[test]
fn demo_and_small_catalogs_are_accepted_and_written_back_unchanged() {
    for text in [DEMO_CATALOG_TOML, SMALL_CATALOG_TOML] {
        let parsed = catalog::check_text(text).expect("accepted");
        let written = catalog::render(&parsed).expect("renderable");
        assert_eq!(Catalog::from_toml(&written), Ok(parsed));
    }
}

/// The invariants are not vacuous: a catalog broken after validation fails them.
#[test]
fn a_catalog_broken_after_validation_fails_the_invariants() {
    let valid = Catalog::from_toml(SMALL_CATALOG_TOML).unwrap();
    let breakages: [fn(&mut Catalog); 4] = [
        |c| {
            *c.offers
                .get_mut("pack")
                .unwrap()
                .price
                .get_mut("coins")
                .unwrap() = 0
        },
        |c| c.rewards.get_mut("daily").unwrap().rate_limit_window_ms = 1_500,
        |c| {
            c.currencies
                .get_mut("coins")
                .unwrap()
                .initial_balance_minor_units = 1_001
        },
        |c| {
            c.offers
                .get_mut("pack")
                .unwrap()
                .grants
                .items
                .remove("potion");
        },
    ];
    for (index, breakage) in breakages.into_iter().enumerate() {
        let mut broken = valid.clone();
        breakage(&mut broken);
        let caught = std::panic::catch_unwind(|| catalog::check_accepted(&broken));
        assert!(caught.is_err(), "breakage {index} went unnoticed");
    }
}

/// The structured modes exist to get past the parser into the rules: enough of their inputs
/// must be accepted catalogs (measured: tree 56/300, text 25/300).
#[test]
fn structured_modes_often_produce_valid_catalogs() {
    let tree = coffer_fuzz::accepted_count(1, 300, 256, catalog::run);
    let text = coffer_fuzz::accepted_count(2, 300, 256, catalog::run);
    assert!(
        tree >= 30 && text >= 10,
        "accepted: tree {tree}/300, text {text}/300"
    );
}
