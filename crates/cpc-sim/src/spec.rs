//! Scenario files as the harness reads them: `cpc-fault`'s [`Scenario`]
//! plus an optional `[harness]` table with what only the harness knows
//! (storage backend, how the application submits, engine batch size, quick
//! sizes), and the built-in suites.
//!
//! ```toml
//! [harness]
//! storage = "sqlite"          # sqlite | sled | memory (--storage overrides)
//! submit_batch = 1            # ops due at the same instant per submit call
//! batch_size = 64             # engine batch size
//! dead_head = "block"         # block | skip (what a dead letter does to its record)
//! drain_cap = "1h"            # simulated time allowed for draining after the run
//!
//! [harness.quick]             # sizes for --quick (each optional)
//! per_device = 20
//! devices = 2
//! entities = 10
//! rate = 0.5                  # arrival rate of a uniform/poisson workload
//! duration = "5m"
//! batch_size = 32
//! submit_batch = 100
//! ```
//!
//! The `[harness]` tables are cut out of the text line by line (blank lines
//! keep the numbering), so errors in the rest still name the right line.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::scenario::{Scenario, ScenarioError};
use crate::Error;

/// The built-in suites, in the order `all` runs them.
pub const SUITES: &[(&str, &str)] = &[
    ("steady", include_str!("../scenarios/steady.toml")),
    ("flaky-30", include_str!("../scenarios/flaky-30.toml")),
    ("lost-acks", include_str!("../scenarios/lost-acks.toml")),
    (
        "hostile-answers",
        include_str!("../scenarios/hostile-answers.toml"),
    ),
    (
        "partition-heal",
        include_str!("../scenarios/partition-heal.toml"),
    ),
    ("flapping", include_str!("../scenarios/flapping.toml")),
    (
        "rate-limited",
        include_str!("../scenarios/rate-limited.toml"),
    ),
    (
        "thundering-herd",
        include_str!("../scenarios/thundering-herd.toml"),
    ),
    ("poison", include_str!("../scenarios/poison.toml")),
    ("conflicts", include_str!("../scenarios/conflicts.toml")),
    (
        "priority-storm",
        include_str!("../scenarios/priority-storm.toml"),
    ),
    (
        "crash-restart",
        include_str!("../scenarios/crash-restart.toml"),
    ),
    ("huge-queue", include_str!("../scenarios/huge-queue.toml")),
    ("two-way", include_str!("../scenarios/two-way.toml")),
    (
        "initial-sync",
        include_str!("../scenarios/initial-sync.toml"),
    ),
    (
        "server-restore",
        include_str!("../scenarios/server-restore.toml"),
    ),
    ("edit-storm", include_str!("../scenarios/edit-storm.toml")),
];

/// The storage backend of every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// `SqliteStorage` in a temp dir per device (the engine's default).
    Sqlite,
    /// `SledStorage` in a temp dir per device.
    Sled,
    /// `MemoryStorage` (no durability; refused with crash points).
    Memory,
}

impl StorageKind {
    /// Parses a `--storage` value.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "sqlite" => Ok(StorageKind::Sqlite),
            "sled" => Ok(StorageKind::Sled),
            "memory" => Ok(StorageKind::Memory),
            other => Err(Error::Spec(format!(
                "--storage: unknown backend {other:?} (sqlite, sled or memory)"
            ))),
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Sqlite => "sqlite",
            StorageKind::Sled => "sled",
            StorageKind::Memory => "memory",
        }
    }
}

/// What a dead head does to the rest of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadHead {
    /// The engine's default: the record waits for the application.
    #[default]
    Block,
    /// The next operation of the record proceeds.
    Skip,
}

/// The `[harness]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarnessOptions {
    /// Backend (default sqlite; `--storage` overrides).
    pub storage: Option<StorageKind>,
    /// Most operations due at the same instant handed to one
    /// `submit_batch` call (1: one `submit` per operation).
    pub submit_batch: usize,
    /// The engine's batch size (default: the engine's).
    pub batch_size: Option<usize>,
    /// What a dead letter does to the later operations of its record.
    pub dead_head: DeadHead,
    /// Simulated time allowed for draining after the scenario's duration
    /// and last outage; what is left then is reported lost.
    #[serde(with = "cpc_fault::duration::humane")]
    pub drain_cap: Duration,
    /// Sizes for `--quick`.
    pub quick: QuickSizes,
    /// Devices (by index) whose engine coalesces queued edits of a record
    /// (`StandardCoalescer` on every collection of the workload; see
    /// `SyncEngineBuilder::coalesce`). Default none. Their merged and
    /// cancelled operations count as `coalesced`.
    pub coalesce: Vec<u32>,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        HarnessOptions {
            storage: None,
            submit_batch: 1,
            batch_size: None,
            dead_head: DeadHead::Block,
            drain_cap: Duration::from_secs(3600),
            quick: QuickSizes::default(),
            coalesce: Vec::new(),
        }
    }
}

/// The `[harness.quick]` table: what `--quick` changes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuickSizes {
    /// Operations per device.
    pub per_device: Option<u64>,
    /// Devices.
    pub devices: Option<u32>,
    /// Records per device.
    pub entities: Option<u64>,
    /// Length of the run.
    #[serde(with = "cpc_fault::duration::humane_opt")]
    pub duration: Option<Duration>,
    /// Arrival rate (per second) of a uniform or Poisson workload.
    pub rate: Option<f64>,
    /// Engine batch size.
    pub batch_size: Option<usize>,
    /// Submit batch.
    pub submit_batch: Option<usize>,
    /// Records the remote holds before the run (`[pull]`).
    pub initial_records: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HarnessFile {
    harness: HarnessOptions,
}

/// A scenario with its harness options.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The scenario.
    pub scenario: Scenario,
    /// The harness options.
    pub harness: HarnessOptions,
}

impl Spec {
    /// Parses a scenario file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Spec, Error> {
        let (rest, harness_text) = split_harness(text);
        let harness: HarnessFile = toml::from_str(&harness_text)
            .map_err(|e| Error::Spec(describe_toml_error(origin, &harness_text, &e)))?;
        if harness.harness.submit_batch == 0 {
            return Err(usage_at(
                origin,
                text,
                "harness.submit_batch",
                "must be at least 1",
            ));
        }
        if harness.harness.batch_size == Some(0) || harness.harness.quick.batch_size == Some(0) {
            return Err(usage_at(
                origin,
                text,
                "harness.batch_size",
                "must be at least 1",
            ));
        }
        let scenario =
            Scenario::from_toml_str(&rest).map_err(|e| scenario_error(origin, text, &e))?;
        Ok(Spec {
            scenario,
            harness: harness.harness,
        })
    }

    /// Reads a scenario file: TOML (with an optional `[harness]` table), or
    /// JSON (the scenario alone) if the name ends in `.json`.
    pub fn from_file(path: &Path) -> Result<Spec, Error> {
        let text = Scenario::read_text(path).map_err(|e| {
            Error::Spec(format!(
                "{}: {}",
                path.display(),
                cpc_sync::core::error_chain(&e)
            ))
        })?;
        let origin = path.display().to_string();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            let scenario = Scenario::from_json_str(&text)
                .map_err(|e| Error::Spec(format!("{origin}: {e}")))?;
            return Ok(Spec {
                scenario,
                harness: HarnessOptions::default(),
            });
        }
        Spec::parse(&text, &origin)
    }

    /// A built-in suite by name.
    pub fn builtin(name: &str) -> Result<Spec, Error> {
        let (_, text) = SUITES.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<&str> = SUITES.iter().map(|(n, _)| *n).collect();
            Error::Spec(format!(
                "unknown suite {name:?}; suites: {}, all",
                names.join(", ")
            ))
        })?;
        Spec::parse(text, &format!("crates/cpc-sim/scenarios/{name}.toml"))
    }

    /// Applies the `[harness.quick]` sizes.
    pub fn quick(&mut self) {
        let q = &self.harness.quick;
        if let Some(n) = q.per_device {
            self.scenario.ops.per_device = n;
        }
        if let Some(n) = q.devices {
            self.scenario.devices = n;
            self.scenario.clock_skew.truncate(n as usize);
        }
        if let Some(n) = q.entities {
            self.scenario.ops.entities = n;
        }
        if let Some(d) = q.duration {
            self.scenario.duration = d;
        }
        if let Some(r) = q.rate {
            use crate::scenario::Arrival;
            match &mut self.scenario.ops.arrival {
                Arrival::Uniform { rate, .. } | Arrival::Poisson { rate, .. } => *rate = r,
                Arrival::Burst { .. } => {}
            }
        }
        if let Some(n) = q.batch_size {
            self.harness.batch_size = Some(n);
        }
        if let Some(n) = q.submit_batch {
            self.harness.submit_batch = n;
        }
        if let Some(n) = q.initial_records {
            self.scenario.pull.initial_records = n;
        }
    }
}

/// True for a TOML table header line: `[a.b]` or `[[a.b]]`.
fn header_name(line: &str) -> Option<&str> {
    let t = line.trim();
    let t = match t.find('#') {
        Some(p) if !t[..p].contains('"') => t[..p].trim_end(),
        _ => t,
    };
    let inner = t
        .strip_prefix("[[")
        .and_then(|s| s.strip_suffix("]]"))
        .or_else(|| t.strip_prefix('[').and_then(|s| s.strip_suffix(']')))?;
    let inner = inner.trim();
    let ok = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | ' '));
    ok.then_some(inner)
}

/// Splits `text` into (everything but the `[harness*]` tables, only them),
/// each with the other part's lines blanked so line numbers still match.
fn split_harness(text: &str) -> (String, String) {
    let mut rest = String::with_capacity(text.len());
    let mut harness = String::new();
    let mut in_harness = false;
    for line in text.split_inclusive('\n') {
        if let Some(name) = header_name(line) {
            let first = name
                .split('.')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            in_harness = first == "harness";
        }
        let newline = if line.ends_with('\n') { "\n" } else { "" };
        if in_harness {
            harness.push_str(line);
            rest.push_str(newline);
        } else {
            rest.push_str(line);
            harness.push_str(newline);
        }
    }
    (rest, harness)
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |p| p + 1);
    (line, before[start..].chars().count() + 1)
}

fn describe_toml_error(origin: &str, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let field = ["unknown field `", "missing field `", "for key `"]
        .iter()
        .find_map(|m| {
            let start = message.find(m)? + m.len();
            let end = message[start..].find('`')?;
            Some(message[start..start + end].to_owned())
        })
        .or_else(|| {
            let span = e.span()?;
            let line_start = text[..span.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |p| p + 1);
            let line = text[line_start..].lines().next()?;
            let (key, _) = line.split_once('=')?;
            Some(key.trim().to_owned())
        });
    let mut out = format!("{origin}: invalid harness table");
    if let Some(span) = e.span() {
        let (line, column) = line_column(text, span.start);
        out.push_str(&format!(" at line {line}, column {column}"));
    }
    if let Some(field) = field {
        out.push_str(&format!(
            " (field `harness.{}`)",
            field.trim_start_matches("harness.")
        ));
    }
    out.push_str(&format!(": {message}"));
    out
}

/// The 1-based line where the dotted `field` (`faults.drop`,
/// `schedule.windows[2]`) is assigned or its table starts, best effort.
fn find_field_line(text: &str, field: &str) -> Option<usize> {
    let parts: Vec<&str> = field
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .collect();
    let (key, tables) = parts.split_last()?;
    let table = tables.join(".");
    let mut current = String::new();
    let mut table_line = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(name) = header_name(line) {
            current = name.replace(' ', "");
            if current == table || (tables.is_empty() && current == *key) {
                table_line.get_or_insert(i + 1);
            }
            if tables.is_empty() && current == *key {
                return Some(i + 1);
            }
            continue;
        }
        let assigned = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"'))
            .is_some_and(|k| k == *key);
        if assigned && current == table {
            return Some(i + 1);
        }
    }
    table_line
}

fn usage_at(origin: &str, text: &str, field: &str, reason: &str) -> Error {
    let line = find_field_line(text, field)
        .map(|l| format!(" at line {l}"))
        .unwrap_or_default();
    Error::Spec(format!(
        "{origin}: invalid scenario{line} (field `{field}`): {reason}"
    ))
}

fn scenario_error(origin: &str, text: &str, e: &ScenarioError) -> Error {
    match e {
        ScenarioError::Invalid { field, reason } => usage_at(origin, text, field, reason),
        // The parse error's own message already holds line, column and field.
        other => Error::Spec(format!("{origin}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_suite_parses() {
        for (name, _) in SUITES {
            let spec = Spec::builtin(name).unwrap();
            assert_eq!(
                spec.scenario.name, *name,
                "file name and scenario name agree"
            );
            assert!(
                !spec.scenario.description.is_empty(),
                "{name} has a description"
            );
        }
    }

    #[test]
    fn harness_table_is_cut_out_and_lines_are_kept() {
        let text = "name = \"x\"\n[harness]\nstorage = \"memory\"\n[harness.quick]\nper_device = 3\n[ops]\nper_device = 7\nbogus = 1\n";
        let err = Spec::parse(text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("line 8"), "{err}");
        assert!(err.contains("bogus"), "{err}");
        let ok = "name = \"x\"\n[harness]\nstorage = \"memory\"\n[harness.quick]\nper_device = 3\n[ops]\nper_device = 7\n";
        let mut spec = Spec::parse(ok, "t.toml").unwrap();
        assert_eq!(spec.harness.storage, Some(StorageKind::Memory));
        assert_eq!(spec.scenario.ops.per_device, 7);
        spec.quick();
        assert_eq!(spec.scenario.ops.per_device, 3);
    }

    #[test]
    fn errors_name_field_and_line() {
        let bad_harness = "name = \"x\"\n\n[harness]\nstorage = \"floppy\"\n";
        let err = Spec::parse(bad_harness, "t.toml").unwrap_err().to_string();
        assert!(
            err.contains("line 4") && err.contains("harness.storage"),
            "{err}"
        );

        let invalid = "name = \"x\"\n[faults]\ndrop = 0.7\nlost_ack = 0.7\n";
        let err = Spec::parse(invalid, "t.toml").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`faults`"), "{err}");

        let typed = "name = \"x\"\n[faults]\ndrop = \"lots\"\n";
        let err = Spec::parse(typed, "t.toml").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("drop"), "{err}");
    }
}
