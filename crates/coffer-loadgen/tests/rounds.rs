//! The load generator against its embedded server: every purchase it counts in any round is a
//! new transaction in the ledger, not a replay of an earlier round's idempotency key (a replay is
//! answered from the stored outcome and does no work, so counting it would inflate the rate).

use std::process::Command;

/// Enough players that few reach the potion's stack limit of 99 in three seconds of buying.
const PLAYERS: u64 = 1_000;
/// The setup's transactions: each player's opening, and one `Execute` granting coins to up to
/// 200 players at a time.
const SETUP_TRANSACTIONS: u64 = PLAYERS + PLAYERS.div_ceil(200);

#[test]
fn every_purchase_counted_in_every_round_is_a_new_transaction() {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer-loadgen"))
        .args([
            "--players",
            &PLAYERS.to_string(),
            "--concurrency",
            "8",
            "--duration-s",
            "1",
            "--rounds",
            "3",
            "--phases",
            "purchase",
            "--json",
        ])
        .output()
        .expect("running coffer-loadgen");
    assert!(
        output.status.success(),
        "coffer-loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("coffer-loadgen prints JSON");

    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 3);
    let mut purchases = 0;
    for round in rounds {
        let phase = &round[0];
        assert_eq!(phase["name"], "coffer purchase (durable)");
        assert_eq!(phase["unexpected_errors"], 0, "{phase}");
        // Refusals (a full stack) are counted as requests but commit no transaction.
        let requests = phase["requests"].as_u64().expect("requests");
        let refused = phase["expected_rejections"].as_u64().expect("rejections");
        assert!(
            refused < requests / 2,
            "most purchases must go through: {phase}"
        );
        purchases += requests - refused;
    }
    assert_eq!(report["verifier"]["clean"], true);
    assert_eq!(
        report["verifier"]["transactions_checked"].as_u64(),
        Some(SETUP_TRANSACTIONS + purchases),
        "the ledger holds one transaction per purchase counted, over all rounds"
    );
}
