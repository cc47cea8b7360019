//! The same seed prints the same bytes; another seed prints others.

use super::support::{simulate, stdout};

#[test]
fn same_seed_prints_the_same_bytes_and_another_seed_does_not() {
    let args = |seed: &'static str| {
        [
            "--suite",
            "lost-acks",
            "--quick",
            "--no-wall",
            "--seed",
            seed,
        ]
    };
    let first = simulate(&args("7"), &[]);
    let second = simulate(&args("7"), &[]);
    let other = simulate(&args("8"), &[]);
    assert!(first.status.success(), "{}", stdout(&first));
    assert!(other.status.success(), "{}", stdout(&other));
    assert!(stdout(&first).starts_with("seed 7\n"), "{}", stdout(&first));
    assert_eq!(stdout(&first), stdout(&second), "same seed, same output");
    assert_ne!(stdout(&first), stdout(&other), "another seed, another run");
}

#[test]
fn json_reports_are_identical_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    for path in [&a, &b] {
        let out = simulate(
            &[
                "--suite",
                "crash-restart,conflicts",
                "--quick",
                "--no-wall",
                "--seed",
                "11",
                "--json",
                path.to_str().expect("utf-8 path"),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", stdout(&out));
    }
    let a = std::fs::read_to_string(a).expect("json written");
    let b = std::fs::read_to_string(b).expect("json written");
    assert!(a.contains("\"suite\": \"crash-restart\""), "{a}");
    assert_eq!(a, b);
}
