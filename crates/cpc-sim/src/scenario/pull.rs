//! Two-way sync in a scenario (`[pull]`): devices pull the remote's
//! changes into a sink, the remote may hold records before the run (an
//! initial sync), compact its feed, or be restored from a backup mid-run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use cpc_fault::duration::humane;

use super::error::{Result, ScenarioError as Error};

/// Most records a remote holds before the run.
pub const MAX_INITIAL_RECORDS: u64 = 1_000_000;
/// Largest preloaded record.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// What each device's sink does with a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// The contract: newer versions on change pages, replace semantics on
    /// snapshot pages (`MemorySink`).
    #[default]
    Replace,
    /// A broken sink that applies snapshot pages like change pages (keeps
    /// what a snapshot does not list): the negative control of
    /// convergence, which must then fail after a restore or a compaction.
    IgnoreSnapshots,
    /// A broken sink that skips deletions on change pages.
    IgnoreDeletes,
    /// A broken sink that answers `Ok` for every tenth page without
    /// applying it (work acknowledged, then lost).
    DropPages,
}

/// The remote loses its most recent changes at `at`, as a restore from a
/// backup would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorePlan {
    /// When (simulated time).
    #[serde(with = "humane")]
    pub at: Duration,
    /// How many of the latest changes are lost (fewer if the feed is
    /// shorter).
    pub lose: u64,
}

/// The remote compacts its feed every `every`, dropping the payloads of
/// changes older than `retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionPlan {
    /// How often.
    #[serde(with = "humane")]
    pub every: Duration,
    /// How old a change must be.
    #[serde(with = "humane")]
    pub retention: Duration,
}

/// The `[pull]` table.
///
/// ```toml
/// [pull]
/// enabled = true
/// initial_records = 100000
/// record_bytes = 256
/// page = 1000
/// sink = "replace"
/// restore = { at = "5m", lose = 200 }
/// compaction = { every = "1m", retention = "5m" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullPlan {
    /// Devices pull into a sink, and the run checks convergence.
    pub enabled: bool,
    /// Records the remote holds before the run (collection `seed`).
    pub initial_records: u64,
    /// Payload bytes of each of them.
    pub record_bytes: usize,
    /// Changes per page a device asks for.
    pub page: u32,
    /// What the sinks do.
    pub sink: SinkKind,
    /// A restore of the remote mid-run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestorePlan>,
    /// Compaction of the remote's feed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionPlan>,
    /// Devices keep acknowledged operations whole
    /// (`QueueOptions::retain_acked`), so that a restore of the remote
    /// loses none of them: they are pushed again after its `409`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retain_acked: bool,
}

impl Default for PullPlan {
    fn default() -> Self {
        PullPlan {
            enabled: false,
            initial_records: 0,
            record_bytes: 256,
            page: 1000,
            sink: SinkKind::Replace,
            restore: None,
            compaction: None,
            retain_acked: false,
        }
    }
}

impl PullPlan {
    /// Whether the table is all defaults (and left out of a written
    /// scenario).
    pub fn is_default(&self) -> bool {
        *self == PullPlan::default()
    }

    /// Checks the ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.initial_records > MAX_INITIAL_RECORDS {
            return Err(Error::invalid(
                "pull.initial_records",
                format!("at most {MAX_INITIAL_RECORDS}"),
            ));
        }
        if self.record_bytes > MAX_RECORD_BYTES {
            return Err(Error::invalid(
                "pull.record_bytes",
                format!("at most {MAX_RECORD_BYTES}"),
            ));
        }
        if !(1..=10_000).contains(&self.page) {
            return Err(Error::invalid("pull.page", "1 to 10000"));
        }
        if let Some(c) = &self.compaction {
            if c.every.is_zero() {
                return Err(Error::invalid("pull.compaction.every", "must be above 0"));
            }
        }
        let needs_pull =
            self.initial_records > 0 || self.restore.is_some() || self.compaction.is_some();
        if needs_pull && !self.enabled {
            return Err(Error::invalid(
                "pull.enabled",
                "initial_records, restore and compaction need enabled = true",
            ));
        }
        Ok(())
    }
}
