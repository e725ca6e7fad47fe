//! The load generator against its embedded server: every purchase it counts in any round is a
//! new transaction in the ledger, not a replay of an earlier round's idempotency key (a replay is
//! answered from the stored outcome and does no work, so counting it would inflate the rate).

mod common;

use serde_json::Value;

/// Enough players that few reach the potion's stack limit in three seconds of buying.
const PLAYERS: u64 = 1_000;
/// Most potions a player may hold (the demo catalog's `potion`).
const POTION_STACK_MAX: u64 = 99;

/// The setup's transactions: each player's opening, and one `Execute` granting coins to up to
/// 200 players at a time.
fn setup_transactions(players: u64) -> u64 {
    players + players.div_ceil(200)
}

/// Runs the generator (1-second purchase phases, JSON report) with `extra` arguments.
fn run_loadgen(rounds: u32, extra: &[&str]) -> Value {
    run_loadgen_with_players(PLAYERS, rounds, extra)
}

fn run_loadgen_with_players(players: u64, rounds: u32, extra: &[&str]) -> Value {
    let (players, rounds) = (players.to_string(), rounds.to_string());
    let mut args = vec![
        "--players",
        &players,
        "--concurrency",
        "8",
        "--duration-s",
        "1",
        "--rounds",
        &rounds,
        "--phases",
        "purchase",
    ];
    args.extend_from_slice(extra);
    common::run_loadgen_json(&args)
}

/// Purchases of one phase's report that committed a transaction, once it had no unexpected error.
fn committed(phase: &Value) -> u64 {
    assert_eq!(phase["unexpected_errors"], 0, "{phase}");
    // Refusals (a full stack) are counted as requests but commit no transaction.
    let requests = phase["requests"].as_u64().expect("requests");
    let refused = phase["expected_rejections"].as_u64().expect("rejections");
    assert!(
        refused < requests / 2,
        "most purchases must go through: {phase}"
    );
    requests - refused
}

/// Purchases that committed a transaction over all rounds of a report; none was a replay.
fn purchases_committed(report: &Value) -> u64 {
    let mut purchases = 0;
    for round in report["rounds"].as_array().expect("rounds") {
        let phase = &round[0];
        assert_eq!(phase["name"], "coffer purchase (durable)");
        purchases += committed(phase);
    }
    purchases
}

/// Full stacks of potions the generator used up over a run (one consumption each).
fn stacks_emptied(report: &Value) -> u64 {
    report["full_potion_stacks_emptied"]
        .as_u64()
        .expect("stacks emptied")
}

/// The verifier found a clean ledger holding the setup's transactions, `purchases` more, and
/// one per full stack the generator used up.
fn assert_ledger_holds(report: &Value, players: u64, purchases: u64) {
    assert_eq!(report["verifier"]["clean"], true, "{report}");
    let emptied = stacks_emptied(report);
    assert_eq!(
        report["verifier"]["transactions_checked"].as_u64(),
        Some(setup_transactions(players) + purchases + emptied),
        "the ledger holds one transaction per purchase counted and per stack emptied, and no other"
    );
}

#[test]
fn every_purchase_counted_in_every_round_is_a_new_transaction() {
    let report = run_loadgen(3, &[]);
    assert_eq!(report["rounds"].as_array().expect("rounds").len(), 3);
    assert_ledger_holds(&report, PLAYERS, purchases_committed(&report));
}

#[test]
fn a_player_whose_stack_is_full_uses_it_up_and_buys_again() {
    // 4 players hold at most 396 potions: a second of buying fills every stack more than once.
    let players = 4;
    let report = run_loadgen_with_players(players, 1, &[]);
    let phase = &report["phases"][0];
    let purchases = committed(phase);
    let requests = phase["requests"].as_u64().expect("requests");
    let refused = requests - purchases;
    let emptied = stacks_emptied(&report);
    assert!(
        requests > 2 * POTION_STACK_MAX * players,
        "enough purchases to fill each stack twice: {phase}"
    );
    // A consumption succeeds only on a full stack and takes all of it, so the potions the
    // players hold at the end are those bought less a stack per consumption: at least none, at
    // most a full stack each.
    let held = purchases
        .checked_sub(POTION_STACK_MAX * emptied)
        .unwrap_or_else(|| panic!("more potions used up than bought: {report}"));
    assert!(held <= POTION_STACK_MAX * players, "{report}");
    // Every consumption followed a refusal (a racing refusal may find the stack used up
    // already), so purchases keep going through: a few refusals per stack.
    assert!(emptied >= players && emptied <= refused, "{report}");
    assert!(
        refused < requests / 10,
        "most purchases go through: {phase}"
    );
    assert_ledger_holds(&report, players, purchases);
}

#[test]
fn the_half_peak_phase_sends_on_its_schedule_and_every_request_is_a_new_transaction() {
    // `--phases` adds to the purchase phase `run_loadgen` asks for: the peak, then half of it.
    let report = run_loadgen(1, &["--phases", "purchase-half-peak"]);
    let phases = report["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2, "{report}");
    let (peak, half) = (&phases[0], &phases[1]);
    assert_eq!(half["name"], "purchase at half of peak");
    // Requests go out when due, not when earlier ones are answered: one per slot of a schedule
    // at half the peak's sustained rate (checkpoint work included) over the phase's second, all
    // of them answered.
    let peak_sustained = peak["sustained_per_second"]
        .as_f64()
        .expect("sustained rate");
    assert!(
        peak_sustained <= peak["per_second"].as_f64().expect("rate"),
        "{peak}"
    );
    let slots = (peak_sustained / 2.0).ceil();
    let sent = half["requests"].as_u64().expect("requests") as f64;
    assert!(
        (sent - slots).abs() <= 1.0,
        "{sent} requests sent against {slots} slots scheduled: {half}"
    );
    // Every purchase of both phases committed a transaction of its own.
    assert_ledger_holds(&report, PLAYERS, phases.iter().map(committed).sum());
}

#[test]
fn the_disk_phase_reports_the_syncs_it_timed_with_no_ratio_to_the_no_op() {
    // `--phases` adds to the purchase phase `run_loadgen` asks for.
    let report = run_loadgen(2, &["--phases", "noop,disk"]);
    let phases = report["phases"].as_array().expect("phases");
    let named = |name: &str| {
        phases
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name:?} phase in {report}"))
    };
    let disk = named("disk: 4 KiB + fdatasync");
    let syncs = disk["requests"].as_u64().expect("requests");
    let seconds = disk["seconds"].as_f64().expect("seconds");
    assert!(syncs > 0 && seconds >= 1.0, "{disk}");
    assert!(
        (disk["per_second"].as_f64().expect("rate") - syncs as f64 / seconds).abs() < 1e-6,
        "{disk}"
    );
    let percentiles: Vec<u64> = ["p50_us", "p90_us", "p99_us", "p999_us"]
        .iter()
        .map(|p| disk[p].as_u64().expect("percentile"))
        .collect();
    assert!(percentiles[0] >= 1, "a sync takes time: {disk}");
    assert!(percentiles.is_sorted(), "{disk}");
    // Seen from arriving commits: a commit waits for at least one whole sync (so the median
    // wait is not far below the syncs' median), and no longer than two syncs.
    let wait = &disk["disk_wait"];
    let waits: Vec<u64> = ["p50_us", "p99_us", "p999_us"]
        .iter()
        .map(|p| wait[p].as_u64().expect("wait percentile"))
        .collect();
    let longest = wait["longest_sync_us"].as_u64().expect("longest sync");
    assert!(waits.is_sorted(), "{disk}");
    assert!(waits[0] >= percentiles[0] / 2, "{disk}");
    // Percentiles are histogram buckets of three significant digits: up to 0.1 % above a
    // value they hold.
    assert!(
        longest + longest / 1_000 + 1 >= percentiles[3] && waits[2] <= 2 * longest + 1_000,
        "{disk}"
    );
    let stalled = wait["stalled_share"].as_f64().expect("stalled share");
    assert!((0.0..=1.0).contains(&stalled), "{disk}");
    // A sync is not a request: no ratio to the transport ceiling; the purchase keeps its own.
    assert!(disk.get("vs_no_op").is_none(), "{disk}");
    assert!(
        named("coffer purchase (durable)")["vs_no_op"]
            .as_f64()
            .is_some()
    );
}

#[test]
fn the_server_side_latency_of_a_phase_counts_exactly_the_requests_the_generator_sent() {
    // `--phases` adds to the purchase phase `run_loadgen` asks for.
    let report = run_loadgen(1, &["--phases", "noop,disk"]);
    for phase in report["phases"].as_array().expect("phases") {
        if phase["name"] == "disk: 4 KiB + fdatasync" {
            assert!(phase.get("server").is_none(), "no server call: {phase}");
            continue;
        }
        let server = &phase["server"];
        // Each phase reads only its own requests off the server's histogram: not the setup's,
        // not an earlier phase's.
        assert_eq!(server["requests"], phase["requests"], "{phase}");
        let p50 = server["p50_us_at_most"].as_u64().expect("a bounded median");
        let p99 = server["p99_us_at_most"].as_u64().expect("a bounded p99");
        assert!(p50 <= p99, "{phase}");
        // The server's time is part of the generator's round trip, so the bucket its median
        // falls in starts below the generator's median (5/3 is the widest step between bounds).
        let client_p50 = phase["p50_us"].as_u64().expect("client median") as f64;
        assert!(
            p50 as f64 <= client_p50 * 5.0 / 3.0 + 1.0,
            "server median at most {p50} µs against {client_p50} µs round trip: {phase}"
        );
    }
}

#[test]
fn a_write_phase_ends_once_its_checkpoints_are_done_and_is_charged_their_work() {
    // Changes wait up to 3 s in memory before a checkpoint, so right after a 1-second write
    // phase about 2 s of that wait remain; the phase ends only after it.
    let report = run_loadgen(
        2,
        &["--phases", "noop", "--redb-checkpoint-interval-ms", "3000"],
    );
    for round in report["rounds"].as_array().expect("rounds") {
        let [purchase, noop] = round.as_array().expect("phases").as_slice() else {
            panic!("two phases per round: {round}");
        };
        assert_eq!(purchase["name"], "coffer purchase (durable)");
        assert!(noop["name"].as_str().expect("name").starts_with("no-op"));
        let seconds = |phase: &Value, field: &str| phase[field].as_f64().expect(field);
        assert!(
            seconds(purchase, "checkpoint_wait_s") >= 1.0,
            "the purchases waited for their generation to be due: {round}"
        );
        // The checkpoint's work is part of that wait; only the work is charged to the phase.
        let catch_up = seconds(purchase, "checkpoint_catch_up_s");
        assert!(
            catch_up > 0.0 && catch_up < seconds(purchase, "checkpoint_wait_s"),
            "{round}"
        );
        let requests = purchase["requests"].as_f64().expect("requests");
        let sustained = requests / (seconds(purchase, "seconds") + catch_up);
        assert!(
            (seconds(purchase, "sustained_per_second") - sustained).abs() < 1e-6,
            "{round}"
        );
        // So the phase after it finds nothing to wait for; every phase reports its wait.
        assert!(seconds(noop, "settle_s") < 1.0, "{round}");
        assert!(seconds(purchase, "settle_s") >= 0.0, "{round}");
        // A phase that writes nothing has nothing to charge.
        assert!(noop.get("sustained_per_second").is_none(), "{round}");
    }
    assert_ledger_holds(&report, PLAYERS, purchases_committed(&report));
}

#[test]
fn a_data_size_phase_runs_once_per_round_and_reports_its_median_run() {
    const GROWN_TO: u64 = 1_500;
    let report = run_loadgen(2, &["--scale-players", &GROWN_TO.to_string()]);
    let runs = report["scale_runs"][0].as_array().expect("scale runs");
    assert_eq!(runs.len(), 2, "one run per round: {report}");
    let name = format!("purchase @ {GROWN_TO} players");
    let mut rates: Vec<f64> = runs
        .iter()
        .map(|run| {
            assert_eq!(run["name"], name.as_str());
            run["sustained_per_second"]
                .as_f64()
                .expect("sustained rate")
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let row = report["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .find(|phase| phase["name"] == name.as_str())
        .expect("the data size row");
    // Of two runs, the median index (len / 2) is the faster one (sustained, checkpoint work
    // included), as for the rounds' rows.
    assert_eq!(
        row["sustained_per_second"].as_f64(),
        Some(rates[1]),
        "{report}"
    );
    // Growing adds an opening per new player and one grant per 200; every run's purchases are
    // new transactions too.
    let grown = GROWN_TO - PLAYERS;
    let scale_purchases: u64 = runs.iter().map(committed).sum();
    assert_ledger_holds(
        &report,
        PLAYERS,
        grown + grown.div_ceil(200) + purchases_committed(&report) + scale_purchases,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_against_the_same_server_replays_nothing_of_the_first() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config =
        coffer_server::Config::development("127.0.0.1:0".parse().unwrap(), data_dir.path());
    config.limits.key_requests_per_second = u32::MAX;
    config.limits.key_burst = u32::MAX;
    let server = coffer_server::start(config).await.expect("server starts");
    let endpoint = format!("http://{}", server.local_addr);
    let key = server
        .development_admin_key
        .clone()
        .expect("development key");
    let (first, second) = tokio::task::spawn_blocking(move || {
        let args = ["--endpoint", endpoint.as_str(), "--admin-key", key.as_str()];
        (run_loadgen(1, &args), run_loadgen(1, &args))
    })
    .await
    .unwrap();
    // The second run's setup grants are replays of the first's (same players, same keys).
    assert_ledger_holds(
        &second,
        PLAYERS,
        purchases_committed(&first) + purchases_committed(&second) + stacks_emptied(&first),
    );
    server.shutdown().await.unwrap();
}
