//! Reading `llvm-cov export -format=text` JSON (what `cargo llvm-cov
//! --json` writes): per-file summaries, and per-line execution counts from
//! the segments.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::scan::crate_of;
use crate::XtaskError;

#[derive(Debug, Deserialize)]
struct Export {
    data: Vec<ExportData>,
}

#[derive(Debug, Deserialize)]
struct ExportData {
    files: Vec<ExportFile>,
}

#[derive(Debug, Deserialize)]
struct ExportFile {
    filename: String,
    summary: Summary,
    #[serde(default)]
    segments: Vec<Segment>,
}

#[derive(Debug, Deserialize)]
struct Summary {
    lines: Counts,
    functions: Counts,
}

/// Covered out of total, as llvm-cov counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Counts {
    /// Instrumented lines (or functions).
    pub count: u64,
    /// Of them, executed at least once.
    pub covered: u64,
}

impl Counts {
    /// The percentage covered; 100 when nothing is instrumented.
    pub fn percent(&self) -> f64 {
        if self.count == 0 {
            100.0
        } else {
            self.covered as f64 * 100.0 / self.count as f64
        }
    }

    fn add(&mut self, other: Counts) {
        self.count += other.count;
        self.covered += other.covered;
    }
}

/// `[line, col, count, has_count, is_region_entry, is_gap_region]`.
type Segment = (usize, usize, u64, bool, bool, bool);

/// One source file of the workspace's packages.
#[derive(Debug)]
pub struct FileCoverage {
    /// Workspace-relative path.
    pub rel: String,
    /// Its package.
    pub krate: String,
    /// Line summary.
    pub lines: Counts,
    /// Function summary.
    pub functions: Counts,
    /// Execution count of every instrumented line.
    pub line_counts: HashMap<usize, u64>,
}

/// The files of `crates/*/src/` in an export; others (dependencies, tests/
/// directories, other packages) are dropped.
pub fn parse(json: &str, root: &Path) -> Result<Vec<FileCoverage>, XtaskError> {
    let export: Export = serde_json::from_str(json).map_err(|e| {
        XtaskError::StepFailed(format!("the coverage JSON is not an llvm-cov export: {e}"))
    })?;
    let roots: Vec<String> = [Some(root.to_path_buf()), root.canonicalize().ok()]
        .into_iter()
        .flatten()
        .map(|r| format!("{}/", r.display()))
        .collect();
    let mut out = Vec::new();
    for file in export.data.into_iter().flat_map(|d| d.files) {
        let Some(rel) = roots
            .iter()
            .find_map(|r| file.filename.strip_prefix(r.as_str()))
        else {
            continue;
        };
        let Some(krate) = crate_of(rel) else {
            continue;
        };
        out.push(FileCoverage {
            rel: rel.to_owned(),
            krate: krate.to_owned(),
            lines: file.summary.lines,
            functions: file.summary.functions,
            line_counts: line_counts(&file.segments),
        });
    }
    Ok(out)
}

/// Execution count per line, the way `llvm-cov` computes its line view
/// (LineCoverageStats): a line is instrumented if a counted region starts
/// on it or a counted region runs into it, and its count is the largest of
/// the region running into it and the non-gap regions starting on it.
pub fn line_counts(segments: &[Segment]) -> HashMap<usize, u64> {
    let mut out = HashMap::new();
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return out;
    };
    let mut wrapped: Option<&Segment> = None;
    let mut next = 0;
    for line in first.0..=last.0 {
        let start = next;
        while segments.get(next).is_some_and(|s| s.0 == line) {
            next += 1;
        }
        let on_line = &segments[start..next];
        let starts_region = |s: &&Segment| s.3 && s.4 && !s.5;
        let skipped = on_line.first().is_some_and(|s| !s.3 && s.4);
        let mut mapped =
            !skipped && (wrapped.is_some_and(|w| w.3) || on_line.iter().any(|s| starts_region(&s)));
        mapped |= on_line.iter().any(|s| s.4 && s.3);
        if mapped {
            let from_regions = on_line.iter().filter(starts_region).map(|s| s.2).max();
            let count = wrapped.map_or(0, |w| w.2).max(from_regions.unwrap_or(0));
            out.insert(line, count);
        }
        if let Some(last_on_line) = on_line.last() {
            wrapped = Some(last_on_line);
        }
    }
    out
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateRow {
    /// The package.
    pub krate: String,
    /// Lines covered of instrumented.
    pub lines: Counts,
    /// Functions covered of instrumented.
    pub functions: Counts,
    /// Whether any of its files is in the export.
    pub has_data: bool,
}

/// A row per package in `crates` (in that order; those absent from the
/// export have `has_data: false`), and the sum of them.
pub fn per_crate(files: &[FileCoverage], crates: &[String]) -> (Vec<CrateRow>, CrateRow) {
    let mut by_crate: BTreeMap<&str, (Counts, Counts)> = BTreeMap::new();
    for f in files {
        let e = by_crate.entry(f.krate.as_str()).or_default();
        e.0.add(f.lines);
        e.1.add(f.functions);
    }
    let mut total = CrateRow {
        krate: "total".to_owned(),
        lines: Counts::default(),
        functions: Counts::default(),
        has_data: !files.is_empty(),
    };
    let rows = crates
        .iter()
        .map(|k| {
            let (lines, functions) = by_crate.get(k.as_str()).copied().unwrap_or_default();
            total.lines.add(lines);
            total.functions.add(functions);
            CrateRow {
                krate: k.clone(),
                lines,
                functions,
                has_data: by_crate.contains_key(k.as_str()),
            }
        })
        .collect();
    (rows, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = r#"{"type":"llvm.coverage.json.export","version":"2.0.1","data":[{"files":[
      {"filename":"/ws/crates/cpc-a/src/lib.rs",
       "summary":{"lines":{"count":10,"covered":9,"percent":90.0},"functions":{"count":2,"covered":2,"percent":100.0},"regions":{"count":1,"covered":1}},
       "segments":[[1,1,5,true,true,false],[2,5,0,true,true,false],[2,9,5,true,false,false],[4,1,0,true,true,true],[5,1,0,false,false,false],[7,1,3,true,true,false],[7,10,0,false,false,false]],
       "branches":[],"expansions":[]},
      {"filename":"/ws/crates/cpc-a/src/error.rs",
       "summary":{"lines":{"count":10,"covered":1,"percent":10.0},"functions":{"count":2,"covered":0,"percent":0.0}},
       "segments":[]},
      {"filename":"/ws/crates/cpc-b/src/lib.rs",
       "summary":{"lines":{"count":5,"covered":5,"percent":100.0},"functions":{"count":1,"covered":1,"percent":100.0}},
       "segments":[]},
      {"filename":"/ws/crates/cpc-b/tests/it.rs",
       "summary":{"lines":{"count":50,"covered":50,"percent":100.0},"functions":{"count":5,"covered":5,"percent":100.0}},
       "segments":[]},
      {"filename":"/home/u/.cargo/registry/src/x/lib.rs",
       "summary":{"lines":{"count":50,"covered":0,"percent":0.0},"functions":{"count":5,"covered":0,"percent":0.0}},
       "segments":[]}
    ],"totals":{}}]}"#;

    #[test]
    fn aggregates_per_crate_and_drops_other_files() {
        let files = parse(FIXTURE, Path::new("/ws")).unwrap();
        let rels: Vec<&str> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            rels,
            [
                "crates/cpc-a/src/lib.rs",
                "crates/cpc-a/src/error.rs",
                "crates/cpc-b/src/lib.rs"
            ]
        );
        let crates = ["cpc-a", "cpc-b", "cpc-c"].map(String::from);
        let (rows, total) = per_crate(&files, &crates);
        assert_eq!(
            rows[0].lines,
            Counts {
                count: 20,
                covered: 10
            }
        );
        assert_eq!(rows[0].functions.percent(), 50.0);
        assert_eq!(rows[1].lines.percent(), 100.0);
        assert!(!rows[2].has_data);
        assert_eq!(
            total.lines,
            Counts {
                count: 25,
                covered: 15
            }
        );
    }

    #[test]
    fn line_counts_follow_llvm_line_view() {
        let files = parse(FIXTURE, Path::new("/ws")).unwrap();
        let counts = &files[0].line_counts;
        // Line 1 starts a region run 5 times; line 2 starts one run 0
        // times but the region running into it ran 5 times.
        assert_eq!(counts.get(&1), Some(&5));
        assert_eq!(counts.get(&2), Some(&5));
        // Line 3 is inside the region resumed at 2:9 (5).
        assert_eq!(counts.get(&3), Some(&5));
        // Line 4 starts a gap region only: the count that runs into it.
        assert_eq!(counts.get(&4), Some(&5));
        // Line 5 is still in the gap region (0); the segment closing there
        // has no count, so line 6 is not instrumented.
        assert_eq!(counts.get(&5), Some(&0));
        assert_eq!(counts.get(&6), None);
        assert_eq!(counts.get(&7), Some(&3));
        assert!(files[1].line_counts.is_empty());
    }
}
