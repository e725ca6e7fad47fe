//! The reference durable-append phases: every request the generator counts as answered is a row
//! the reference server made durable first (read back from its redb table, or from the numbered
//! rows in its file), and the report sets each beside the no-op ceiling of the same run, with
//! what every phase cost the machine's CPU.

mod common;

use serde_json::Value;

fn run_loadgen(phases: &str) -> Value {
    common::run_loadgen_json(&[
        "--players",
        "10",
        "--concurrency",
        "16",
        "--duration-s",
        "1",
        "--phases",
        phases,
    ])
}

fn phase<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name:?} in {report}"))
}

#[test]
fn every_answered_reference_append_is_a_durable_row() {
    let report = run_loadgen("noop,append-redb,append-file");
    for name in [
        "reference: redb row append",
        "reference: file append + fdatasync",
    ] {
        let appended = phase(&report, name);
        assert_eq!(appended["unexpected_errors"], 0, "{appended}");
        let requests = appended["requests"].as_u64().expect("requests");
        assert!(requests > 0, "{appended}");
        assert_eq!(
            appended["rows_durable"].as_u64(),
            Some(requests),
            "one durable row per answered request: {appended}"
        );
    }
    let noop = phase(&report, "no-op gRPC call (baseline)");
    assert!(noop.get("rows_durable").is_none(), "{noop}");
}

#[test]
fn every_phase_reports_the_machines_busy_share_and_cpu_per_request() {
    let report = run_loadgen("noop,append-file,purchase");
    for phase in report["phases"].as_array().expect("phases") {
        let busy = phase["busy_percent"].as_f64().expect("busy_percent");
        assert!(busy > 0.0 && busy <= 100.0, "{phase}");
        let cpu_us = phase["cpu_us_per_request"]
            .as_f64()
            .expect("cpu_us_per_request");
        assert!(cpu_us > 0.0, "{phase}");
    }
}
