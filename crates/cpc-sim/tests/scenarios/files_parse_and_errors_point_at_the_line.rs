use std::path::PathBuf;
use std::time::Duration;

use cpc_fault::LinkCondition;
use cpc_sim::{Scenario, ScenarioError, ScenarioFormat};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_example_scenario_file_parses_and_round_trips() {
    let mut seen = 0;
    for entry in std::fs::read_dir(crate_dir().join("tests/scenarios/files")).unwrap() {
        let path = entry.unwrap().path();
        let scenario =
            Scenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let toml = scenario.to_toml_string().unwrap();
        assert_eq!(Scenario::from_toml_str(&toml).unwrap(), scenario, "{toml}");
        let json = scenario.to_json_string().unwrap();
        assert_eq!(Scenario::from_json_str(&json).unwrap(), scenario);
        seen += 1;
    }
    assert!(seen >= 3);
}

#[test]
fn the_scenarios_in_the_docs_parse() {
    let doc = std::fs::read_to_string(crate_dir().join("../../docs/simulation.md")).unwrap();
    let mut blocks = 0;
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        let block = &body[..end];
        if block.lines().any(|l| l.starts_with("name = ")) {
            Scenario::from_toml_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
            blocks += 1;
        }
        rest = &body[end..];
    }
    assert!(blocks >= 2, "found {blocks} scenario blocks");
}

#[test]
fn the_tour_file_sets_what_it_says() {
    let s = Scenario::from_file(crate_dir().join("tests/scenarios/files/everything.toml")).unwrap();
    assert_eq!(s.clock_skew, vec![-600_000, 0, 600_000]);
    assert_eq!(s.skew_ms(2), 600_000);
    assert_eq!(
        s.schedule.condition_at(Duration::from_secs(6 * 60)),
        LinkCondition::Offline
    );
    assert_eq!(
        s.schedule.condition_at(Duration::from_secs(21 * 60)),
        LinkCondition::Degraded(0.5)
    );
    assert!(!s.remote.conflicts_in("audit"));
    assert_eq!(s.crash_times().len(), 4);
    assert_eq!(s.crash_times(), s.crash_times());
}

#[test]
fn an_unknown_key_is_refused_with_its_name_and_line() {
    let text = "name = \"x\"\nseed = 1\n\n[faults]\ndrop = 0.1\nlost_acks = 0.2\n";
    let err = Scenario::from_toml_str(text).unwrap_err();
    match &err {
        ScenarioError::Parse {
            format,
            line,
            field,
            ..
        } => {
            assert_eq!(*format, ScenarioFormat::Toml);
            assert_eq!(*line, Some(6), "{err}");
            assert_eq!(field.as_deref(), Some("faults.lost_acks"), "{err}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("line 6") && msg.contains("lost_acks"), "{msg}");
}

#[test]
fn a_bad_value_names_its_key_and_line() {
    let text = "name = \"x\"\nduration = \"10 minutes\"\n";
    let err = Scenario::from_toml_str(text).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("line 2") && msg.contains("duration"), "{msg}");

    let text = "name = \"x\"\n[faults]\ndrop = 1.5\n";
    let msg = Scenario::from_toml_str(text).unwrap_err().to_string();
    assert!(msg.contains("line 3") && msg.contains("drop"), "{msg}");

    let text = "name = \"x\"\nduration = 600\n";
    let msg = Scenario::from_toml_str(text).unwrap_err().to_string();
    assert!(msg.contains("ambiguous") && msg.contains("line 2"), "{msg}");
}

#[test]
fn semantic_errors_name_the_field() {
    let text = "name = \"x\"\n[faults]\ndrop = 0.6\nlost_ack = 0.6\n";
    let err = Scenario::from_toml_str(text).unwrap_err();
    assert!(
        matches!(&err, ScenarioError::InvalidAt { field, line: 2, .. } if field == "faults"),
        "{err}"
    );

    let text =
        "name = \"x\"\n[[schedule.windows]]\nfrom = \"5m\"\nto = \"1m\"\nstate = \"offline\"\n";
    let msg = Scenario::from_toml_str(text).unwrap_err().to_string();
    assert!(msg.contains("schedule.windows[0]"), "{msg}");

    let text = "name = \"x\"\ndevices = 1\nclock_skew = [\"1s\", \"2s\"]\n";
    let msg = Scenario::from_toml_str(text).unwrap_err().to_string();
    assert!(msg.contains("clock_skew"), "{msg}");
}

#[test]
fn json_errors_carry_line_and_field() {
    let text = "{\n  \"name\": \"x\",\n  \"sede\": 3\n}";
    let err = Scenario::from_json_str(text).unwrap_err();
    match &err {
        ScenarioError::Parse { line, field, .. } => {
            assert_eq!(*line, Some(3));
            assert_eq!(field.as_deref(), Some("sede"));
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn the_builder_validates() {
    assert!(Scenario::builder("").build().is_err());
    assert!(Scenario::builder("ok").devices(0).build().is_err());
    let s = Scenario::builder("ok").seed(3).devices(2).build().unwrap();
    assert_eq!((s.seed, s.devices), (3, 2));
}

/// A wrong type in JSON names the field by its path, not only its line.
#[test]
fn a_wrong_json_type_names_the_field() {
    let text = "{\n  \"name\": \"x\",\n  \"ops\": {\n    \"arrival\": {\"process\": \"uniform\", \"rate\": \"fast\"}\n  }\n}";
    let err = Scenario::from_json_str(text).unwrap_err();
    match &err {
        ScenarioError::Parse { line, field, .. } => {
            assert_eq!(*line, Some(4), "{err}");
            assert_eq!(field.as_deref(), Some("ops.arrival.rate"), "{err}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let text = "{\"name\": \"x\", \"devices\": \"four\"}";
    let msg = Scenario::from_json_str(text).unwrap_err().to_string();
    assert!(msg.contains("`devices`"), "{msg}");
}

/// An inverted window is reported at its own line, in both formats, not
/// at the line of the schedule's first window.
#[test]
fn an_inverted_window_is_reported_at_its_own_line() {
    let text = "name = \"x\"\n\n[[schedule.windows]]\nfrom = \"1m\"\nto = \"2m\"\nstate = \"offline\"\n\n[[schedule.windows]]\nfrom = \"9m\"\nto = \"3m\"\nstate = \"offline\"\n";
    let err = Scenario::from_toml_str(text).unwrap_err();
    match &err {
        ScenarioError::Parse { line, field, .. } => {
            assert_eq!(*line, Some(8), "{err}");
            assert_eq!(field.as_deref(), Some("schedule.windows[1]"), "{err}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let json = "{\n  \"name\": \"x\",\n  \"schedule\": {\"windows\": [\n    {\"from\": \"1m\", \"to\": \"2m\", \"state\": \"offline\"},\n    {\"from\": \"9m\", \"to\": \"3m\", \"state\": \"offline\"}\n  ]}\n}";
    let err = Scenario::from_json_str(json).unwrap_err();
    match &err {
        ScenarioError::Parse { line, field, .. } => {
            assert_eq!(*line, Some(5), "{err}");
            assert_eq!(field.as_deref(), Some("schedule.windows[1]"), "{err}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

/// Every count, length and rate has a maximum, refused with the field and
/// its line before anything is built.
#[test]
fn counts_durations_and_rates_are_bounded() {
    let refused = |text: &str, field: &str, line: usize| {
        let err = Scenario::from_toml_str(text).unwrap_err();
        match &err {
            ScenarioError::InvalidAt {
                field: f, line: l, ..
            } => {
                assert_eq!((f.as_str(), *l), (field, line), "{err}");
            }
            other => panic!("{text}: expected a located error, got {other:?}"),
        }
    };
    refused("name = \"x\"\ndevices = 100000\n", "devices", 2);
    refused(
        "name = \"x\"\n[ops]\nper_device = 1000000000000\n",
        "ops.per_device",
        3,
    );
    refused("name = \"x\"\nduration = \"99999999h\"\n", "duration", 2);
    refused(
        "name = \"x\"\n[ops]\narrival = { process = \"poisson\", rate = 1e-300 }\n",
        "ops.arrival.rate",
        3,
    );
    refused(
        "name = \"x\"\n[ops]\narrival = { process = \"uniform\", rate = 1e-300 }\n",
        "ops.arrival.rate",
        3,
    );
    // Within each limit alone, together too large for the memory budget.
    refused(
        "name = \"x\"\ndevices = 1000\n[ops]\nper_device = 1000000\n",
        "ops.per_device",
        4,
    );
    let json =
        "{\"name\": \"x\",\n \"ops\": {\"arrival\": {\"process\": \"uniform\", \"rate\": 1e-300}}}";
    let msg = Scenario::from_json_str(json).unwrap_err().to_string();
    assert!(
        msg.contains("ops.arrival.rate") && msg.contains("line 2"),
        "{msg}"
    );
}

/// A scenario file over the size limit is refused before it is parsed.
#[test]
fn a_huge_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    let window = "[[schedule.windows]]\nfrom = \"1m\"\nto = \"2m\"\nstate = \"offline\"\n";
    let text = format!("name = \"x\"\n{}", window.repeat(40_000));
    std::fs::write(&path, &text).unwrap();
    let msg = Scenario::from_file(&path).unwrap_err().to_string();
    assert!(msg.contains("limit"), "{msg}");
    // Within the size limit, over the count limit.
    let text = format!("name = \"x\"\n{}", window.repeat(10_001));
    let msg = Scenario::from_toml_str(&text).unwrap_err().to_string();
    assert!(msg.contains("10000"), "{msg}");
}
