//! `cargo xtask crash [--cycles N]`: the kill -9 loops. Runs the storage
//! crash test (every durable backend) and the engine's kill -9 test with the
//! requested number of cycles, then sums their summary lines into one:
//! `cycles N, acknowledged A, lost 0, duplicated 0, reordered 0`.

use crate::{cargo, XtaskError};

/// The crash tests: (package, test target, env var holding the cycle count).
const LOOPS: &[(&str, &str, &str)] = &[
    ("cpc-storage", "crash", "CPC_CRASH_CYCLES"),
    ("cpc-sync", "kill9", "CPC_KILL9_CYCLES"),
];

/// Totals parsed from the tests' summary lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Kill/restart cycles.
    pub cycles: u64,
    /// Acknowledged submissions checked.
    pub acknowledged: u64,
    /// Acknowledged but missing.
    pub lost: u64,
    /// Present or applied more than once.
    pub duplicated: u64,
    /// Out of per-entity order.
    pub reordered: u64,
}

/// `cargo xtask crash [--cycles N]`.
pub fn main(cycles: u64) -> Result<(), XtaskError> {
    let mut total = Totals::default();
    for (package, test, var) in LOOPS {
        println!("==> {package} --test {test} with {var}={cycles}");
        let output = cargo()
            .args([
                "test",
                "--release",
                "-p",
                package,
                "--test",
                test,
                "--",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(var, cycles.to_string())
            // The storage loop's startup crash loop (every run killed
            // 20-300 ms after start): 200 cycles, or fewer if asked.
            .env("CPC_WAL_CYCLES", cycles.min(200).to_string())
            .output()
            .map_err(|e| XtaskError::Io("running a crash test", e))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut seen = false;
        for line in stdout.lines().chain(stderr.lines()) {
            // The startup crash loop's per-cycle WAL size and open time.
            if line.contains("wal loop cycle") {
                println!("    {}", line.trim());
            }
            if let Some(t) = parse_summary(line) {
                println!("    {}", line.trim());
                total.cycles += t.cycles;
                total.acknowledged += t.acknowledged;
                total.lost += t.lost;
                total.duplicated += t.duplicated;
                total.reordered += t.reordered;
                seen = true;
            }
        }
        if !output.status.success() {
            eprintln!("{stdout}\n{stderr}");
            return Err(XtaskError::StepFailed(format!("{package} --test {test}")));
        }
        if !seen {
            return Err(XtaskError::StepFailed(format!(
                "{package} --test {test} printed no summary line"
            )));
        }
    }
    println!(
        "cycles {}, acknowledged {}, lost {}, duplicated {}, reordered {}",
        total.cycles, total.acknowledged, total.lost, total.duplicated, total.reordered
    );
    if total.lost + total.duplicated + total.reordered > 0 {
        return Err(XtaskError::Invariant(
            "the crash loop lost, duplicated or reordered work".into(),
        ));
    }
    Ok(())
}

/// Parses a line holding `cycles N, acknowledged A, lost L` and optionally
/// `duplicated D, reordered R` (in any order, any prefix before `cycles`).
pub fn parse_summary(line: &str) -> Option<Totals> {
    let start = line.find("cycles ")?;
    let mut t = Totals::default();
    let mut have = (false, false, false);
    for part in line[start..].split(',') {
        let mut words = part.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(v) = value
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u64>()
        else {
            continue;
        };
        match key {
            "cycles" => {
                t.cycles = v;
                have.0 = true;
            }
            "acknowledged" => {
                t.acknowledged = v;
                have.1 = true;
            }
            "lost" => {
                t.lost = v;
                have.2 = true;
            }
            "duplicated" => t.duplicated = v,
            "reordered" => t.reordered = v,
            _ => {}
        }
    }
    (have.0 && have.1 && have.2).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summary_lines() {
        let t = parse_summary("sqlite immediate: cycles 50, acknowledged 1234, lost 0").unwrap();
        assert_eq!((t.cycles, t.acknowledged, t.lost), (50, 1234, 0));
        let t =
            parse_summary("cycles 20, acknowledged 9, lost 1, duplicated 2, reordered 3").unwrap();
        assert_eq!((t.lost, t.duplicated, t.reordered), (1, 2, 3));
        assert!(parse_summary("running 1 test").is_none());
        assert!(parse_summary("cycles 5, lost 0").is_none());
    }
}
