//! A canary planted in every payload and in the transport's credential
//! never shows up in the output, even with every log level on.

use super::support::{simulate, stderr, stdout};

const CANARY: &str = "CANARY-7f3a9c";

#[test]
fn canary_in_payloads_and_credential_is_never_printed() {
    let token = format!("tok-{CANARY}");
    let out = simulate(
        &[
            "--suite",
            "lost-acks,conflicts,poison,crash-restart",
            "--quick",
            "--payload-canary",
            CANARY,
            "--bearer-token",
            &token,
        ],
        &[("RUST_LOG", "trace")],
    );
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{so}");
    // The logs were really on: trace events of the engine and the simulator.
    assert!(
        se.contains("TRACE") || se.contains("DEBUG"),
        "no logs captured"
    );
    assert!(
        se.contains("cpc_worker") || se.contains("batch processed"),
        "no engine logs"
    );
    assert_eq!(so.matches(CANARY).count() + se.matches(CANARY).count(), 0);
}

#[test]
fn the_test_would_see_a_leak() {
    // Control: the canary given as something the harness does print (a
    // bad suite name is echoed in the usage error) is found.
    let out = simulate(&["--suite", CANARY], &[("RUST_LOG", "trace")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(CANARY));
}

#[test]
fn record_ids_never_reach_the_logs_above_debug() {
    let out = simulate(
        &[
            "--suite",
            "lost-acks,conflicts,poison,crash-restart,hostile-answers",
            "--quick",
            "--entity-canary",
            CANARY,
        ],
        &[("RUST_LOG", "info")],
    );
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{so}");
    assert!(
        se.contains("INFO") || se.contains("WARN"),
        "no logs captured"
    );
    assert_eq!(
        so.matches(CANARY).count() + se.matches(CANARY).count(),
        0,
        "a record id was logged above DEBUG"
    );
    // Control: at DEBUG the ids may appear, and this test would see them.
    let out = simulate(
        &["--suite", "conflicts", "--quick", "--entity-canary", CANARY],
        &[("RUST_LOG", "debug")],
    );
    assert!(
        stderr(&out).contains(CANARY),
        "the control run shows no record id at DEBUG: the check proves nothing"
    );
}
