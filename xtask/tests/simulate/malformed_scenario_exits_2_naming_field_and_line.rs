//! A malformed scenario file is a usage error (exit 2) naming the field and
//! the line.

use super::support::{simulate, stderr};

fn run_file(text: &str) -> std::process::Output {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("mine.toml");
    std::fs::write(&path, text).expect("write scenario");
    simulate(
        &["--scenario", path.to_str().expect("utf-8 path"), "--quick"],
        &[],
    )
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
    assert!(text.contains("mine"), "{text}");
}
