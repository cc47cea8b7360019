//! Running the xtask binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `xtask simulate <args>` with `envs` set.
pub fn simulate(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("simulate").args(args);
    cmd.env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("xtask runs")
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A built-in scenario file's text.
pub fn builtin(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/cpc-sim/scenarios")
        .join(format!("{name}.toml"));
    std::fs::read_to_string(path).expect("scenario file exists")
}

/// The value of `key N` in a checker report line (`duplicated 3: ...`).
pub fn report_count(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(' ')?;
        rest.split([' ', ':']).next()?.parse().ok()
    })
}
