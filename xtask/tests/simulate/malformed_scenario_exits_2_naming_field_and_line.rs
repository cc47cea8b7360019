//! A malformed scenario file is a usage error (exit 2) naming the field and
//! the line.

use super::support::{simulate, stderr};

fn run_file(text: &str) -> std::process::Output {
    run_named("mine.toml", text)
}

fn run_named(name: &str, text: &str) -> std::process::Output {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write scenario");
    simulate(
        &["--scenario", path.to_str().expect("utf-8 path"), "--quick"],
        &[],
    )
}

/// Exit 2, and stderr names `field` and `line N`.
fn refused(out: &std::process::Output, field: &str, line: usize) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("`{field}`")) && err.contains(&format!("line {line},")),
        "expected field `{field}` at line {line}: {err}"
    );
}

#[test]
fn huge_counts_and_durations_are_refused_with_field_and_line() {
    refused(
        &run_file("name = \"mine\"\ndevices = 100000\n"),
        "devices",
        2,
    );
    refused(
        &run_file("name = \"mine\"\n[ops]\nper_device = 1000000000000\n"),
        "ops.per_device",
        3,
    );
    refused(
        &run_file("name = \"mine\"\nduration = \"99999999h\"\n"),
        "duration",
        2,
    );
}

#[test]
fn a_tiny_rate_is_refused_not_a_panic() {
    for process in ["uniform", "poisson"] {
        let toml = format!(
            "name = \"mine\"\n[ops]\narrival = {{ process = \"{process}\", rate = 1e-300 }}\n"
        );
        refused(&run_file(&toml), "ops.arrival.rate", 3);
        let json = format!(
            "{{\"name\": \"mine\",\n \"ops\": {{\"arrival\": {{\"process\": \"{process}\", \"rate\": 1e-300}}}}}}"
        );
        refused(&run_named("mine.json", &json), "ops.arrival.rate", 2);
    }
}

#[test]
fn a_wrong_json_type_names_the_field() {
    let json = "{\n  \"name\": \"mine\",\n  \"ops\": {\n    \"per_device\": \"many\"\n  }\n}\n";
    refused(&run_named("mine.json", json), "ops.per_device", 4);
}

#[test]
fn an_inverted_window_is_reported_at_its_own_line() {
    let toml = "name = \"mine\"\n[[schedule.windows]]\nfrom = \"1m\"\nto = \"2m\"\nstate = \"offline\"\n[[schedule.windows]]\nfrom = \"9m\"\nto = \"3m\"\nstate = \"offline\"\n";
    refused(&run_file(toml), "schedule.windows[1]", 6);
}

#[test]
fn a_fifty_megabyte_file_is_refused_quickly() {
    let window = "[[schedule.windows]]\nfrom = \"1m\"\nto = \"2m\"\nstate = \"offline\"\n";
    let text = format!("name = \"mine\"\n{}", window.repeat(820_000));
    assert!(text.len() > 50_000_000);
    let out = run_file(&text);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // Refused by its size, before it is read whole or parsed.
    assert!(err.contains("limit of 1048576 bytes"), "{err}");
}

#[test]
fn an_out_of_range_probability_names_field_and_line() {
    let out = run_file("name = \"mine\"\n\n[faults]\nlost_ack = 0.2\ndrop = 1.5\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("drop"), "{err}");
}

#[test]
fn an_unknown_key_names_field_and_line() {
    let out = run_file("name = \"mine\"\n[ops]\nper_device = 10\nper_devise = 10\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("line 4") && err.contains("per_devise"),
        "{err}"
    );
}

#[test]
fn an_inconsistent_value_names_field_and_line() {
    let out =
        run_file("name = \"mine\"\nduration = \"1m\"\n\n[faults]\ndrop = 0.6\nlost_ack = 0.6\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 4") && err.contains("faults"), "{err}");
}

#[test]
fn a_bad_harness_table_names_field_and_line() {
    let out = run_file("name = \"mine\"\n[harness]\nstorage = \"floppy\"\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("line 3") && err.contains("harness.storage"),
        "{err}"
    );
}

#[test]
fn a_valid_user_file_runs() {
    let out = run_file(
        "name = \"mine\"\nseed = 5\nduration = \"1m\"\n[ops]\nper_device = 20\n[faults]\nlost_ack = 0.1\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("seed 5\n"), "{text}");
    // Its row: the fate columns (applied .. lost) add up to ops.
    let row: Vec<u64> = text
        .lines()
        .find(|l| l.starts_with("mine "))
        .expect("a row for the scenario")
        .split_whitespace()
        .skip(2)
        .take(8)
        .map(|c| c.parse().expect("a count"))
        .collect();
    assert_eq!(row[0], 20, "{text}");
    assert_eq!(row[1..].iter().sum::<u64>(), row[0], "{text}");
}
