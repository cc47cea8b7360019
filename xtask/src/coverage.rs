//! `cargo xtask coverage`: the workspace's tests under `cargo llvm-cov`
//! (PostgreSQL tests on when `CPC_TEST_DATABASE_URL` is set), then a table
//! of line and function coverage per package and the `thiserror` variants
//! that no test makes non-test code construct. Writes
//! `target/coverage/coverage.json` (the llvm-cov export) and
//! `target/coverage/report.md`.
//!
//! The variant list comes from a textual scan (`coverage/scan.rs`, whose
//! doc lists its blind spots) crossed with the executed lines of the
//! export (`coverage/llvm.rs`).

mod lex;
mod llvm;
mod scan;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{cargo, run_step, workspace_root, XtaskError};
use llvm::{CrateRow, FileCoverage};
use scan::{Scan, Variant};

/// Packages below this share of lines covered are marked in the table.
const LINE_TARGET: f64 = 90.0;

/// Packages whose tests are not run: automation, benches and examples are
/// not the product, and counting them would dilute the table.
const EXCLUDED: [&str; 3] = ["xtask", "cpc-benches", "cpc-examples"];

/// What `--report-only` reads to say how the run that wrote the export
/// went.
const RUN_INFO: &str = "run-info.txt";

/// How the run went; `None` where `--report-only` finds no record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RunInfo {
    /// Whether CPC_TEST_DATABASE_URL was set (PostgreSQL tests ran).
    postgres: Option<bool>,
    /// Whether every test passed.
    tests_passed: Option<bool>,
    /// When the instrumented build started (Unix seconds): a source file
    /// changed later may not match the coverage data line for line.
    started: Option<u64>,
}

impl RunInfo {
    fn to_text(self) -> String {
        let word = |v: Option<bool>, yes: &str, no: &str| match v {
            Some(true) => yes.to_owned(),
            Some(false) => no.to_owned(),
            None => "unknown".to_owned(),
        };
        let started = self.started.map_or("unknown".to_owned(), |t| t.to_string());
        format!(
            "postgres={}\ntests={}\nstarted={started}\n",
            word(self.postgres, "on", "off"),
            word(self.tests_passed, "passed", "failed")
        )
    }

    fn parse(text: &str) -> RunInfo {
        let mut info = RunInfo::default();
        for line in text.lines() {
            match line.trim() {
                "postgres=on" => info.postgres = Some(true),
                "postgres=off" => info.postgres = Some(false),
                "tests=passed" => info.tests_passed = Some(true),
                "tests=failed" => info.tests_passed = Some(false),
                other => {
                    if let Some(t) = other.strip_prefix("started=") {
                        info.started = t.parse().ok();
                    }
                }
            }
        }
        info
    }

    fn postgres_line(self) -> &'static str {
        match self.postgres {
            Some(true) => "PostgreSQL: on (CPC_TEST_DATABASE_URL is set)",
            Some(false) => {
                "PostgreSQL: off (CPC_TEST_DATABASE_URL is not set; its tests skip, see CONTRIBUTING.md)"
            }
            None => "PostgreSQL: unknown (no target/coverage/run-info.txt)",
        }
    }

    fn tests_line(self) -> &'static str {
        match self.tests_passed {
            Some(true) => "Tests: all passed.",
            Some(false) => {
                "Tests: some FAILED (see the run's output); the figures count what ran, \
                 a failed test stops where it failed."
            }
            None => "Tests: unknown (no target/coverage/run-info.txt).",
        }
    }
}

/// Runs the tests under coverage (unless `report_only`) and prints and
/// writes the report. Fails after writing it if a test failed.
pub fn main(report_only: bool) -> Result<(), XtaskError> {
    let started = Instant::now();
    let root = workspace_root();
    let out_dir = root.join("target").join("coverage");
    let json_path = out_dir.join("coverage.json");
    let info = if report_only {
        if !json_path.is_file() {
            return Err(XtaskError::Usage(format!(
                "{} does not exist: run `cargo xtask coverage` without --report-only first",
                json_path.display()
            )));
        }
        std::fs::read_to_string(out_dir.join(RUN_INFO))
            .map(|text| RunInfo::parse(&text))
            .unwrap_or_default()
    } else {
        run(&out_dir, &json_path)?
    };

    let json = std::fs::read_to_string(&json_path)
        .map_err(|e| XtaskError::Io("reading target/coverage/coverage.json", e))?;
    let files = llvm::parse(&json, &root)?;
    drop(json);
    let crates = crate_names(&root)?;
    let (rows, total) = llvm::per_crate(&files, &crates);
    let (sources, modified) = source_files(&root)?;
    let scan = scan::scan_sources(&sources);
    let verdicts = classify(&scan, &files);
    // The scan reads today's sources; the counts are of the build's.
    let changed: Vec<String> = modified
        .into_iter()
        .filter(|(_, m)| info.started.is_some_and(|started| *m > started))
        .map(|(rel, _)| rel)
        .collect();
    let report = Report {
        info,
        rows: &rows,
        total: &total,
        verdicts: &verdicts,
        changed: &changed,
    };

    print!("{}", render_text(&report));
    let md_path = out_dir.join("report.md");
    std::fs::write(&md_path, render_markdown(&report))
        .map_err(|e| XtaskError::Io("writing target/coverage/report.md", e))?;
    println!("report: {}", md_path.display());
    println!("coverage: done in {}", minutes(started.elapsed().as_secs()));
    if !report_only && info.tests_passed == Some(false) {
        return Err(XtaskError::StepFailed(
            "some tests failed (see above); the report covers what ran".to_owned(),
        ));
    }
    Ok(())
}

/// Runs the tests instrumented, then exports the JSON.
fn run(out_dir: &Path, json_path: &Path) -> Result<RunInfo, XtaskError> {
    check_llvm_cov()?;
    let postgres = std::env::var_os("CPC_TEST_DATABASE_URL").is_some_and(|v| !v.is_empty());
    let mut info = RunInfo {
        postgres: Some(postgres),
        tests_passed: None,
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
    };
    println!("{}", info.postgres_line());
    std::fs::create_dir_all(out_dir).map_err(|e| XtaskError::Io("creating target/coverage", e))?;
    // A report must never pair a new run with an old export: remove it
    // first, so a failed run leaves none behind.
    if json_path.exists() {
        std::fs::remove_file(json_path)
            .map_err(|e| XtaskError::Io("removing the previous coverage.json", e))?;
    }
    // The workspace's own instrumented binaries go first: llvm-cov reads
    // every test binary it finds, and one built from older source counts
    // its never-run copies of moved lines as uncovered (a crate seen at
    // 82% that its own tests cover at 99%). Dependencies stay built.
    run_step(
        "cargo llvm-cov clean --workspace (stale instrumented binaries)",
        cargo().args(["llvm-cov", "clean", "--workspace"]),
    )?;
    // Default features, as `cargo test --workspace` runs them: features
    // such as cpc-server's `test-faults` are off in the normal run. One
    // exception: cpc-fault's `proxy` (the fault proxy `cargo xtask e2e`
    // drives), whose own tests need it on and which no other package of
    // this run turns on. The environment is inherited, so
    // CPC_TEST_DATABASE_URL reaches the tests.
    // Two steps (`--no-report`, then `report`) with --no-fail-fast: one
    // failing test in a run of tens of minutes still leaves a report, and
    // the command still fails.
    let mut test = cargo();
    test.args(["llvm-cov", "--no-report", "--no-fail-fast", "--workspace"]);
    test.args(["--features", "cpc-fault/proxy"]);
    for package in EXCLUDED {
        test.args(["--exclude", package]);
    }
    let passed = match run_step(
        "cargo llvm-cov --no-report (the workspace's tests)",
        &mut test,
    ) {
        Ok(()) => true,
        Err(XtaskError::StepFailed(what)) => {
            eprintln!("coverage: tests failed ({what}); reporting what ran");
            false
        }
        Err(e) => return Err(e),
    };
    info.tests_passed = Some(passed);
    std::fs::write(out_dir.join(RUN_INFO), info.to_text())
        .map_err(|e| XtaskError::Io("writing target/coverage/run-info.txt", e))?;
    // --skip-functions: the per-function records are most of an export's
    // size, and the report needs only the files' summaries and segments.
    let mut report = cargo();
    report
        .args([
            "llvm-cov",
            "report",
            "--skip-functions",
            "--json",
            "--output-path",
        ])
        .arg(json_path);
    run_step("cargo llvm-cov report (coverage.json)", &mut report)?;
    Ok(info)
}

/// Fails with how to install cargo-llvm-cov when it does not run.
fn check_llvm_cov() -> Result<(), XtaskError> {
    let ok = cargo()
        .args(["llvm-cov", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(())
    } else {
        Err(XtaskError::Usage(
            "`cargo llvm-cov --version` failed: install it with \
             `rustup component add llvm-tools-preview` and \
             `cargo install cargo-llvm-cov --locked`"
                .to_owned(),
        ))
    }
}

fn minutes(secs: u64) -> String {
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// The packages under `crates/`, sorted.
fn crate_names(root: &Path) -> Result<Vec<String>, XtaskError> {
    let entries =
        std::fs::read_dir(root.join("crates")).map_err(|e| XtaskError::Io("listing crates/", e))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("src").is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Every `crates/*/src/**/*.rs` as (workspace-relative path, text), sorted,
/// and when each was last modified (Unix seconds).
type Sources = (Vec<(String, String)>, Vec<(String, u64)>);

fn source_files(root: &Path) -> Result<Sources, XtaskError> {
    let mut paths = Vec::new();
    for krate in crate_names(root)? {
        rust_files(&root.join("crates").join(krate).join("src"), &mut paths)?;
    }
    paths.sort();
    let (mut out, mut modified) = (Vec::new(), Vec::new());
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| XtaskError::Io("reading a source file", e))?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        if let Some(mtime) = mtime {
            modified.push((rel.clone(), mtime.as_secs()));
        }
        out.push((rel, text));
    }
    Ok((out, modified))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), XtaskError> {
    let entries = std::fs::read_dir(dir).map_err(|e| XtaskError::Io("listing a src dir", e))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// What the run says of one variant that no test was seen to construct.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// It has construction sites and none of their lines ran.
    NotRun { sites: usize },
    /// No non-test code builds it by name.
    NoSite,
    /// No construction site, but a `#[from]` field: `?` may build it, and
    /// the scan cannot see that.
    FromOnly,
}

/// The variants without an executed construction site, in definition
/// order. A site counts as executed when llvm-cov's count of its line is
/// above zero.
fn classify<'a>(scan: &'a Scan, files: &[FileCoverage]) -> Vec<(&'a Variant, Verdict)> {
    let executed = |file: &str, line: usize| {
        files
            .iter()
            .find(|f| f.rel == file)
            .and_then(|f| f.line_counts.get(&line))
            .is_some_and(|&count| count > 0)
    };
    let mut out = Vec::new();
    for v in &scan.variants {
        let sites = scan.sites.get(&v.key()).map_or(&[][..], Vec::as_slice);
        if sites.iter().any(|s| executed(&s.file, s.line)) {
            continue;
        }
        let verdict = match (sites.len(), v.has_from) {
            (0, true) => Verdict::FromOnly,
            (0, false) => Verdict::NoSite,
            (n, _) => Verdict::NotRun { sites: n },
        };
        out.push((v, verdict));
    }
    out
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::NotRun { sites: 1 } => "1 construction site, not run".to_owned(),
        Verdict::NotRun { sites } => format!("{sites} construction sites, none run"),
        Verdict::NoSite => "no construction site at all".to_owned(),
        Verdict::FromOnly => "#[from]: only built by `?` conversions".to_owned(),
    }
}

const SCAN_NOTE: &str = "a textual scan: `Enum::Variant`/`Self::Variant` paths in non-test code \
of crates/*/src (not #[cfg(test)] items, not patterns), counted as constructed when llvm-cov \
ran the path's line (its line count, as llvm-cov's line view computes it, is above 0)";

fn below(row: &CrateRow) -> bool {
    row.has_data && row.lines.percent() < LINE_TARGET
}

/// A variant no test was seen to construct, and why.
type Listed<'a> = (&'a Variant, Verdict);

/// Everything a report shows.
#[derive(Debug)]
struct Report<'a> {
    info: RunInfo,
    rows: &'a [CrateRow],
    total: &'a CrateRow,
    verdicts: &'a [Listed<'a>],
    /// Sources modified after the run started.
    changed: &'a [String],
}

impl Report<'_> {
    /// The variants listed, and those only `?` may build.
    fn split(&self) -> (Vec<&Listed<'_>>, Vec<&Listed<'_>>) {
        self.verdicts
            .iter()
            .partition(|(_, v)| *v != Verdict::FromOnly)
    }

    fn changed_line(&self) -> Option<String> {
        (!self.changed.is_empty()).then(|| {
            format!(
                "Warning: {} source file(s) changed after the run started; their lines may \
                 not match the coverage data (run again on a quiet tree): {}",
                self.changed.len(),
                self.changed.join(", ")
            )
        })
    }
}

fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n{}\n{}", r.info.postgres_line(), r.info.tests_line());
    if let Some(line) = r.changed_line() {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "\n{:<18} {:>15} {:>7} {:>10}",
        "crate", "lines", "lines%", "functions%"
    );
    for row in r.rows.iter().chain([r.total]) {
        if !row.has_data {
            let _ = writeln!(s, "{:<18} {:>15}", row.krate, "no data");
            continue;
        }
        let _ = writeln!(
            s,
            "{:<18} {:>15} {:>6.1}% {:>9.1}%{}",
            row.krate,
            format!("{}/{}", row.lines.covered, row.lines.count),
            row.lines.percent(),
            row.functions.percent(),
            if below(row) {
                format!("  < {LINE_TARGET}% of lines")
            } else {
                String::new()
            }
        );
    }
    let (unbuilt, from_only) = r.split();
    let _ = writeln!(
        s,
        "\nError variants no test constructs: {} ({SCAN_NOTE})",
        unbuilt.len()
    );
    for (v, verdict) in &unbuilt {
        let _ = writeln!(
            s,
            "  {:<16} {:<40} {}:{}  {}",
            v.krate,
            format!("{}::{}", v.enum_name, v.name),
            v.file,
            v.line,
            verdict_text(verdict)
        );
    }
    let _ = writeln!(
        s,
        "\nBuilt only by `?` conversions (#[from], no construction site; not checked): {}",
        from_only.len()
    );
    for (v, _) in &from_only {
        let _ = writeln!(
            s,
            "  {:<16} {:<40} {}:{}",
            v.krate,
            format!("{}::{}", v.enum_name, v.name),
            v.file,
            v.line
        );
    }
    s
}

fn render_markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Coverage (`cargo xtask coverage`)\n");
    let _ = writeln!(s, "{}\n\n{}\n", r.info.postgres_line(), r.info.tests_line());
    if let Some(line) = r.changed_line() {
        let _ = writeln!(s, "**{line}**\n");
    }
    let _ = writeln!(s, "| crate | lines | lines % | functions % | |");
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    for row in r.rows.iter().chain([r.total]) {
        if !row.has_data {
            let _ = writeln!(s, "| `{}` | no data | | | |", row.krate);
            continue;
        }
        let _ = writeln!(
            s,
            "| `{}` | {}/{} | {:.1}% | {:.1}% | {} |",
            row.krate,
            row.lines.covered,
            row.lines.count,
            row.lines.percent(),
            row.functions.percent(),
            if below(row) {
                format!("below {LINE_TARGET}%")
            } else {
                String::new()
            }
        );
    }
    let (unbuilt, from_only) = r.split();
    let _ = writeln!(s, "\n## Error variants no test constructs\n");
    let _ = writeln!(s, "{}: {SCAN_NOTE}.\n", unbuilt.len());
    if !unbuilt.is_empty() {
        let _ = writeln!(s, "| crate | variant | defined at | |");
        let _ = writeln!(s, "|---|---|---|---|");
        for (v, verdict) in &unbuilt {
            let _ = writeln!(
                s,
                "| `{}` | `{}::{}` | `{}:{}` | {} |",
                v.krate,
                v.enum_name,
                v.name,
                v.file,
                v.line,
                verdict_text(verdict)
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Built only by `?` conversions\n\n{} variants with a `#[from]` field and no \
         construction site by name: `?` builds them through `From`, which the scan cannot see.\n",
        from_only.len()
    );
    for (v, _) in &from_only {
        let _ = writeln!(
            s,
            "- `{}` `{}::{}` (`{}:{}`)",
            v.krate, v.enum_name, v.name, v.file, v.line
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, text: &str) -> (String, String) {
        (rel.to_owned(), text.to_owned())
    }

    #[test]
    fn a_variant_counts_as_constructed_only_when_a_site_line_ran() {
        let scan = scan::scan_sources(&[file(
            "crates/cpc-a/src/lib.rs",
            "#[derive(Debug, thiserror::Error)]\npub enum Error {\n    #[error(\"\")] Ran,\n    #[error(\"\")] NotRun,\n    #[error(\"\")] Never,\n    #[error(\"\")] Wrapped(#[from] std::io::Error),\n}\npub fn f(x: u8) -> Error {\n    if x == 0 { return Error::Ran; }\n    Error::NotRun\n}\n",
        )]);
        let coverage = FileCoverage {
            rel: "crates/cpc-a/src/lib.rs".to_owned(),
            krate: "cpc-a".to_owned(),
            lines: llvm::Counts::default(),
            functions: llvm::Counts::default(),
            line_counts: [(9, 1), (10, 0)].into_iter().collect(),
        };
        let verdicts: Vec<(String, Verdict)> = classify(&scan, &[coverage])
            .into_iter()
            .map(|(v, verdict)| (v.name.clone(), verdict))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("NotRun".to_owned(), Verdict::NotRun { sites: 1 }),
                ("Never".to_owned(), Verdict::NoSite),
                ("Wrapped".to_owned(), Verdict::FromOnly),
            ]
        );
        let rows = [CrateRow {
            krate: "cpc-a".to_owned(),
            lines: llvm::Counts {
                count: 10,
                covered: 8,
            },
            functions: llvm::Counts {
                count: 1,
                covered: 1,
            },
            has_data: true,
        }];
        let verdicts = classify(&scan, &[]);
        let info = RunInfo::parse("postgres=on\ntests=passed\nstarted=100\n");
        assert_eq!(info.started, Some(100));
        assert_eq!(RunInfo::parse(&info.to_text()), info);
        let changed = ["crates/cpc-a/src/lib.rs".to_owned()];
        let report = Report {
            info,
            rows: &rows,
            total: &rows[0],
            verdicts: &verdicts,
            changed: &changed,
        };
        let text = render_text(&report);
        assert!(text.contains("PostgreSQL: on"), "{text}");
        assert!(text.contains("8/10   80.0%"), "{text}");
        assert!(text.contains("< 90% of lines"), "{text}");
        assert!(text.contains("Error::Never"), "{text}");
        assert!(text.contains("changed after the run started"), "{text}");
        let md = render_markdown(&Report {
            info: RunInfo::default(),
            changed: &[],
            ..report
        });
        assert!(
            md.contains("| `cpc-a` | 8/10 | 80.0% | 100.0% | below 90% |"),
            "{md}"
        );
        assert!(md.contains("PostgreSQL: unknown"), "{md}");
    }
}
