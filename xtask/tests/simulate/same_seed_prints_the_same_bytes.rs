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
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("temp dir");
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

#[test]
fn a_hundred_devices_racing_at_one_instant_replay_identically() {
    // Every device submits at t=0 over the same records with no latency,
    // so requests meet at the remote within one simulated instant and
    // their order decides the conflicts: the storage-call gate must make
    // that order a function of the seed alone.
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("race.toml");
    std::fs::write(
        &path,
        "name = \"race\"\nduration = \"1m\"\ndevices = 100\n\n[ops]\nper_device = 20\n\
         entities = 5\nshared_entities = true\nbase_versions = true\n\
         arrival = { process = \"burst\" }\n\n[harness]\nstorage = \"memory\"\n",
    )
    .expect("write scenario");
    let path = path.to_str().expect("utf-8 path");
    // Inline storage calls (the default) and blocking-pool calls through
    // the harness's gate must each replay exactly.
    for mode in ["inline", "blocking"] {
        let args = ["--scenario", path, "--no-wall", "--storage-calls", mode];
        let first = simulate(&args, &[]);
        assert!(first.status.success(), "{}", stdout(&first));
        for _ in 0..3 {
            let again = simulate(&args, &[]);
            assert_eq!(stdout(&first), stdout(&again), "{mode} storage calls");
        }
    }
}
