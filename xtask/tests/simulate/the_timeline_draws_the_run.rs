//! `--timeline FILE.svg` writes a well-formed SVG (no script) with the
//! scenario's outage windows, a queue-depth line per device, the seed and
//! the scenario in the title, and the same bytes for the same seed.

use super::support::{builtin, simulate, stdout};

/// The suite's scenario without its `[harness]` table, as `cpc_sim::Scenario`
/// reads it.
fn scenario(name: &str) -> cpc_sim::Scenario {
    let mut doc: toml::Table = toml::from_str(&builtin(name)).expect("suite parses");
    doc.remove("harness");
    cpc_sim::Scenario::from_toml_str(&toml::to_string(&doc).expect("re-encodes"))
        .expect("suite is valid")
}

#[test]
fn the_timeline_shows_the_windows_and_a_line_per_device() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("run.svg");
    let args = [
        "--suite",
        "partition-heal",
        "--quick",
        "--no-wall",
        "--timeline",
        path.to_str().expect("utf-8 path"),
    ];
    let out = simulate(&args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let svg = std::fs::read_to_string(&path).expect("the picture was written");
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(!svg.contains("<script"), "no script");

    let windows: Vec<(u128, u128)> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("window"))
        .map(|n| {
            let ms = |a| n.attribute(a).and_then(|v| v.parse().ok()).expect("ms");
            (ms("data-from-ms"), ms("data-to-ms"))
        })
        .collect();
    let want: Vec<(u128, u128)> = scenario("partition-heal")
        .schedule
        .segments()
        .iter()
        .map(|s| (s.from.as_millis(), s.to.as_millis()))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(windows, want);

    let lines = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("depth"))
        .count();
    assert_eq!(lines, 2, "one queue-depth line per device");
    assert!(svg.contains("partition-heal") && svg.contains("seed 42"));

    // Same seed, same picture.
    let again = dir.path().join("again.svg");
    let mut args2 = args;
    args2[5] = again.to_str().expect("utf-8 path");
    assert_eq!(simulate(&args2, &[]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&again).expect("written"), svg);
}
