//! With the remote's dedupe off, lost acks make the engine's resends apply
//! twice: the checker must say so and the run must fail.

use super::support::{builtin, report_count, simulate, stdout};

#[test]
fn lost_acks_without_dedupe_fail_with_duplicates() {
    let text = builtin("lost-acks");
    assert!(
        text.contains("dedupe = true"),
        "the suite states its dedupe"
    );
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("no-dedupe.toml");
    std::fs::write(&path, text.replace("dedupe = true", "dedupe = false")).expect("write");
    let out = simulate(
        &[
            "--scenario",
            path.to_str().expect("utf-8 path"),
            "--quick",
            "--no-wall",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = stdout(&out);
    let duplicated = report_count(&report, "duplicated").expect("the report has a duplicated line");
    assert!(duplicated > 0, "{report}");
    // Every apply is checked for order, resends included.
    assert!(
        report_count(&report, "reordered").is_some(),
        "the report has a reordered line: {report}"
    );
    assert!(report.contains("verdict FAIL"), "{report}");

    // The same file with dedupe on passes: the duplicates come from the switch.
    std::fs::write(&path, builtin("lost-acks")).expect("write");
    let out = simulate(
        &["--scenario", path.to_str().expect("utf-8 path"), "--quick"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}
