//! The suite against the reference server: a correct server passes every
//! check, and each deliberate fault (`cpc-server` feature `test-faults`)
//! fails exactly the checks that watch its rule.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use cpc_conformance::{run, Report, CHECKS};
use cpc_server::Faults;
use support::Restartable;

/// Runs the whole suite against a server with `faults`.
async fn run_against(faults: Faults, fast: bool) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let server = Restartable::start(dir.path(), faults, fast).await;
    let report = run(&server.target()).await;
    server.shutdown().await;
    report
}

/// The whole suite against a server on PostgreSQL, in a database of its
/// own; `None` (skipped, saying why) without `CPC_TEST_DATABASE_URL`.
async fn run_on_postgres(faults: Faults) -> Option<Report> {
    let Ok(admin) = std::env::var("CPC_TEST_DATABASE_URL") else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: CPC_TEST_DATABASE_URL is not set (see CONTRIBUTING.md)"
        );
        return None;
    };
    let db = cpc_server::ScratchDatabase::create(&admin).await.unwrap();
    let server = Restartable::start_on_postgres(db.url(), faults, true).await;
    let report = run(&server.target()).await;
    server.shutdown().await;
    Some(report)
}

/// Exactly `expected` failed; every other check passed (none skipped).
fn assert_fails_exactly(report: &Report, expected: &[&str]) {
    assert_eq!(report.failed_names(), expected, "\n{report}");
    assert_eq!(report.skipped(), 0, "\n{report}");
    assert_eq!(report.passed(), CHECKS.len() - expected.len(), "\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_passes_every_check_even_when_rate_limited() {
    // The default rate limit (20/s, burst 40): the suite waits out the 429s.
    let report = run_against(Faults::default(), false).await;
    assert_fails_exactly(&report, &[]);
    assert_eq!(report.checks.len(), CHECKS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_on_postgres_passes_every_check() {
    let Some(report) = run_on_postgres(Faults::default()).await else {
        return;
    };
    assert_fails_exactly(&report, &[]);
    println!("PostgreSQL conformance:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_too_a_gap_in_the_log_fails_the_seq_checks() {
    // The suite watches the PostgreSQL backend as closely as the embedded
    // one: the same fault fails the same checks.
    let faults = Faults {
        skip_seq: true,
        ..Faults::default()
    };
    let Some(report) = run_on_postgres(faults).await else {
        return;
    };
    assert_fails_exactly(
        &report,
        &["seq-in-batch-consecutive", "seq-concurrent-pushes"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_conflicts_fail_conflict_not_cached() {
    let faults = Faults {
        record_conflicts: true,
        ..Faults::default()
    };
    let report = run_against(faults, true).await;
    assert_fails_exactly(&report, &["conflict-not-cached"]);
    let detail = &report.get("conflict-not-cached").unwrap().detail;
    assert!(detail.contains("already_applied"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_retry_laters_fail_retry_later_behind_conflict() {
    let faults = Faults {
        record_retry_later: true,
        ..Faults::default()
    };
    let report = run_against(faults, true).await;
    assert_fails_exactly(&report, &["retry-later-behind-conflict"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_no_store_fails_no_store_on_every_answer() {
    let faults = Faults {
        no_cache_header: true,
        ..Faults::default()
    };
    let report = run_against(faults, true).await;
    assert_fails_exactly(&report, &["no-store-on-every-answer"]);
    let detail = &report.get("no-store-on-every-answer").unwrap().detail;
    assert!(detail.contains("GET /v1/health"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_seqs_fail_the_seq_checks() {
    let faults = Faults {
        skip_seq: true,
        ..Faults::default()
    };
    let report = run_against(faults, true).await;
    assert_fails_exactly(
        &report,
        &["seq-in-batch-consecutive", "seq-concurrent-pushes"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchecked_known_fails_known_diverged() {
    let faults = Faults {
        ignore_known: true,
        ..Faults::default()
    };
    let report = run_against(faults, true).await;
    assert_fails_exactly(&report, &["known-diverged"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_page_that_drops_a_change_fails_the_change_feed_checks() {
    let faults = Faults {
        pull_skip_change: true,
        ..Faults::default()
    };
    let report = run_against(faults, true).await;
    assert_fails_exactly(
        &report,
        &["pull-changes-after-cursor", "pull-long-poll-wakes"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_foreign_token_or_a_restart_hook_those_checks_skip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Restartable::start(dir.path(), Faults::default(), true).await;
    let mut target = server.target();
    target.foreign_token = None;
    target.restart = None;
    let report = cpc_conformance::run_selected(
        &target,
        &["forbidden-client", "durable-after-restart", "health"],
    )
    .await;
    server.shutdown().await;
    assert_eq!(
        report.to_string(),
        "PASS health\n\
         SKIP forbidden-client: no foreign token (--foreign-token)\n\
         SKIP durable-after-restart: no restart hook (--restart-cmd)\n\
         1 passed, 0 failed, 2 skipped"
    );
}

#[tokio::test]
async fn a_server_that_is_not_there_fails_every_check_it_runs() {
    // A port nothing listens on: bind one, then let it go.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let target = cpc_conformance::Target::new(format!("http://{addr}"), "t", "dev-1");
    let report =
        cpc_conformance::run_selected(&target, &["health", "replay-already-applied"]).await;
    assert_eq!(report.failed(), 2, "{report}");
    assert!(
        report.to_string().contains("FAIL health: GET /v1/health: "),
        "{report}"
    );
    let bad = cpc_conformance::Target::new("ftp://example.invalid", "t", "dev-1");
    let report = cpc_conformance::run_selected(&bad, &["health"]).await;
    assert!(report.to_string().contains("http or https"), "{report}");
}
