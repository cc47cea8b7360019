//! The names that go into tracing fields and the transition reasons' text
//! are a stable vocabulary: log queries and dashboards match on them.

use std::time::Duration;

use cpc_network::{FailureKind, NetworkStatus, Observation, Signal, SourceName, TransitionReason};

#[test]
fn statuses_have_stable_lowercase_names_that_honour_padding() {
    let names: Vec<&str> = NetworkStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["unknown", "online", "degraded", "offline"]);
    for status in NetworkStatus::ALL {
        assert_eq!(status.to_string(), status.as_str());
    }
    assert_eq!(format!("[{:>8}]", NetworkStatus::Online), "[  online]");
    assert_eq!(format!("[{:<9}]", NetworkStatus::Offline), "[offline  ]");
}

#[test]
fn failure_kinds_have_stable_names_that_honour_padding() {
    let kinds = [
        (FailureKind::Dns, "dns"),
        (FailureKind::Connect, "connect"),
        (FailureKind::Timeout, "timeout"),
        (FailureKind::InvalidAnswer, "invalid_answer"),
        (FailureKind::Io, "io"),
        (FailureKind::Server, "server"),
        (FailureKind::Other, "other"),
    ];
    for (kind, name) in kinds {
        assert_eq!(kind.as_str(), name);
        assert_eq!(kind.to_string(), name);
    }
    assert_eq!(format!("[{:^6}]", FailureKind::Io), "[  io  ]");
}

#[test]
fn signals_are_named_by_what_was_seen_not_by_failure_kind() {
    let seen = [
        (Observation::success("probe"), "success"),
        (Observation::failure("probe", FailureKind::Dns), "failure"),
        (
            Observation::failure("probe", FailureKind::Server),
            "failure",
        ),
        (Observation::link_down("os"), "link_down"),
        (Observation::link_up("os"), "link_up"),
    ];
    for (observation, name) in seen {
        assert_eq!(observation.signal.as_str(), name, "{observation:?}");
    }
    assert_eq!(Signal::Success.as_str(), "success");
}

#[test]
fn every_transition_reason_reads_as_a_sentence() {
    let reasons = [
        (
            TransitionReason::LinkDown {
                source: SourceName::from(String::from("wifi")),
            },
            "link down reported by wifi",
        ),
        (TransitionReason::LinkRestored, "link restored and stable"),
        (
            TransitionReason::FailureStreak {
                count: 3,
                last: FailureKind::Timeout,
            },
            "3 consecutive failures (last: timeout)",
        ),
        (
            TransitionReason::SuccessStreak { count: 2 },
            "2 consecutive successes",
        ),
        (
            TransitionReason::FailureRatio {
                failures: 5,
                samples: 8,
            },
            "5 of 8 recent checks failed",
        ),
        (
            TransitionReason::RatioRecovered {
                failures: 1,
                samples: 8,
            },
            "failure ratio recovered (1 of 8)",
        ),
        (
            TransitionReason::EvidenceExpired {
                silent_for: Duration::from_secs(30),
            },
            "no observation for 30s; offline evidence expired",
        ),
    ];
    for (reason, text) in reasons {
        assert_eq!(reason.to_string(), text);
    }
}

#[test]
fn a_source_name_shows_quoted_in_debug_and_bare_in_display() {
    let owned = SourceName::from(String::from("wifi"));
    let borrowed = SourceName::from("wifi");
    assert_eq!(owned, borrowed, "same name, however it was made");
    assert_eq!(format!("{owned:?}"), "\"wifi\"");
    assert_eq!(format!("{owned}"), "wifi");
    assert_eq!(SourceName::passive().as_str(), "passive");
    assert!(SourceName::new("a") < SourceName::new("b"));
}
