//! The verdicts: one per check, and their text form.

use std::fmt;

/// The verdict on one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's stable name (one of [`crate::CHECKS`]).
    pub name: String,
    /// The server did what the protocol requires. Never true with
    /// `skipped`.
    pub passed: bool,
    /// The check could not run (no foreign token, no restart hook, a limit
    /// too large to exercise); neither passed nor failed.
    pub skipped: bool,
    /// Why it failed or was skipped (one line); empty when it passed.
    pub detail: String,
}

impl CheckResult {
    /// A check that passed.
    pub fn pass(name: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            passed: true,
            skipped: false,
            detail: String::new(),
        }
    }

    /// A check that failed, saying why.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            passed: false,
            skipped: false,
            detail: one_line(detail.into()),
        }
    }

    /// A check that could not run, saying why.
    pub fn skip(name: impl Into<String>, detail: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            passed: false,
            skipped: true,
            detail: one_line(detail.into()),
        }
    }

    /// Failed: neither passed nor skipped.
    pub fn failed(&self) -> bool {
        !self.passed && !self.skipped
    }
}

/// A report's lines are one per check: details lose their line breaks.
fn one_line(text: String) -> String {
    if text.contains(['\n', '\r']) {
        text.split(['\n', '\r'])
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        text
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.passed, self.skipped) {
            (true, _) => write!(f, "PASS {}", self.name),
            (false, true) => write!(f, "SKIP {}: {}", self.name, self.detail),
            (false, false) => write!(f, "FAIL {}: {}", self.name, self.detail),
        }
    }
}

/// The verdicts of one run, in the order the checks ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One per check run.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// How many checks passed.
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| c.failed()).count()
    }

    /// How many checks could not run.
    pub fn skipped(&self) -> usize {
        self.checks.iter().filter(|c| c.skipped).count()
    }

    /// The names of the failed checks, in run order.
    pub fn failed_names(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c.failed())
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The verdict on check `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// One line per check (`PASS <name>`, `FAIL <name>: <why>`, `SKIP <name>:
/// <why>`), then `N passed, M failed` (and `, K skipped` when some were).
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())?;
        match self.skipped() {
            0 => Ok(()),
            n => write!(f, ", {n} skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_has_a_line_per_check_then_the_counts() {
        let report = Report {
            checks: vec![
                CheckResult::pass("health"),
                CheckResult::fail("info", "no store_id\nat all"),
                CheckResult::skip("forbidden-client", "no foreign token"),
            ],
        };
        assert_eq!(
            report.to_string(),
            "PASS health\nFAIL info: no store_id at all\n\
             SKIP forbidden-client: no foreign token\n1 passed, 1 failed, 1 skipped"
        );
        assert_eq!(
            (report.passed(), report.failed(), report.skipped()),
            (1, 1, 1)
        );
        assert_eq!(report.failed_names(), vec!["info"]);
        let clean = Report {
            checks: vec![CheckResult::pass("health")],
        };
        assert_eq!(clean.to_string(), "PASS health\n1 passed, 0 failed");
    }
}
