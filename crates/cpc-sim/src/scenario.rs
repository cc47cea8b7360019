//! `Scenario`: everything a simulated run needs, readable from TOML and
//! JSON, and the deterministic workload generator.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cpc_fault::duration::{humane, humane_vec, signed_ms_vec};
use cpc_fault::{
    splitmix64, CheckOptions, ExpectedBounds, FaultPlan, FaultyTransport, RemoteOptions, Schedule,
    SimClock, SimulatedRemote, MAX_DURATION,
};
use cpc_sync::core::{
    EntityKey, HybridClock, ManualWallClock, NodeId, Operation, OperationKind, OperationPriority,
    Transport, DEFAULT_MAX_PAYLOAD,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

mod error;
mod locate;
mod pull;
mod validate;
mod workload;

pub(crate) use self::error::Result;
use self::error::ScenarioError as Error;
pub use self::error::{ParseSource, ScenarioError, ScenarioFormat};
pub use self::pull::{
    CompactionPlan, PullPlan, RestorePlan, SinkKind, MAX_INITIAL_RECORDS, MAX_RECORD_BYTES,
};
pub use self::workload::Workload;

/// Wall-clock reading (ms since the Unix epoch) at simulated time zero,
/// unless a scenario sets `epoch_ms`: 2023-11-14T22:13:20Z.
pub const DEFAULT_EPOCH_MS: u64 = 1_700_000_000_000;

/// Most devices in one scenario (each is a full engine with its own store).
pub const MAX_DEVICES: u32 = 1_000;
/// Most operations per device.
pub const MAX_OPS_PER_DEVICE: u64 = 10_000_000;
/// Most distinct records per device.
pub const MAX_ENTITIES: u64 = 10_000_000;
/// Largest clock skew of a device, either way: 1 year.
pub const MAX_CLOCK_SKEW_MS: u64 = 365 * 24 * 3600 * 1000;
/// Latest `epoch_ms` (the year 3000).
pub const MAX_EPOCH_MS: u64 = 32_503_680_000_000;
/// Most collections, and longest collection name in bytes.
pub const MAX_COLLECTIONS: usize = 1_000;
/// Longest collection name in bytes.
pub const MAX_COLLECTION_NAME: usize = 256;
/// Most crash points (explicit plus random).
pub const MAX_CRASHES: u64 = 10_000;
/// Highest arrival rate, operations per second per device.
pub const MAX_RATE: f64 = 1e9;
/// Memory a scenario may need, by [`Scenario::estimated_memory`]: 4 GiB.
pub const MEMORY_BUDGET: u64 = 4 << 30;
/// Bookkeeping of one submitted operation while a run lasts (what was
/// submitted, the remote's apply log, the transport's first attempts, the
/// answers): measured 840 B (peak RSS of `steady` with 200,000 operations
/// on one device less that with 2,000, per operation), rounded up.
pub const BYTES_PER_OP: u64 = 1024;
/// Memory of one device's engine and store besides its operations.
pub const BYTES_PER_DEVICE: u64 = 4 << 20;
/// Largest scenario file read: 1 MiB (10,000 windows take about 600 KB).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;

/// A simulated run: seed, length, devices, workload, remote behaviour,
/// faults, outages, clock skews, crash points and expected bounds.
///
/// Every table but `name` has defaults, so a scenario file says only what
/// matters to it. Unknown keys are refused with their line. Durations are
/// humane strings (`"500ms"`, `"10m"`, `"1h30m"`; signed for skews).
///
/// ```
/// let scenario = cpc_sim::Scenario::from_toml_str(r#"
/// name = "lost-acks"
/// seed = 7
/// duration = "10m"
///
/// [ops]
/// per_device = 500
/// entities = 50
///
/// [faults]
/// lost_ack = 0.2
/// "#)?;
/// assert_eq!(scenario.seed, 7);
/// assert_eq!(scenario.workload(0)?.len(), 500);
/// # Ok::<(), cpc_sim::ScenarioError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, printed in reports (`lost-acks`).
    pub name: String,
    /// One line saying what the scenario shows.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Seed of every random choice of the run (workload, faults, crashes).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How long the run lasts in simulated time (arrivals and outages fit
    /// in it; the harness may keep draining after it).
    #[serde(with = "humane", default = "default_duration")]
    pub duration: Duration,
    /// Number of devices (engines), each with its own workload and clock.
    #[serde(default = "default_devices")]
    pub devices: u32,
    /// Wall-clock reading at simulated time zero, ms since the Unix epoch.
    #[serde(default = "default_epoch")]
    pub epoch_ms: u64,
    /// Clock skew of each device's wall clock (`["-10m", "+10m"]`); devices
    /// beyond the list have none.
    #[serde(default, with = "signed_ms_vec", skip_serializing_if = "Vec::is_empty")]
    pub clock_skew: Vec<i64>,
    /// The operations each device submits.
    #[serde(default)]
    pub ops: OperationMix,
    /// How the remote behaves.
    #[serde(default)]
    pub remote: RemoteOptions,
    /// Faults injected per request.
    #[serde(default)]
    pub faults: FaultPlan,
    /// Scheduled outages and flapping.
    #[serde(default)]
    pub schedule: Schedule,
    /// When the harness crashes the engine (drops it without shutdown).
    #[serde(default)]
    pub crash: CrashPlan,
    /// Bounds the run must meet.
    #[serde(default)]
    pub expect: ExpectedBounds,
    /// Two-way sync: pulls, sinks and convergence (off by default).
    #[serde(default, skip_serializing_if = "PullPlan::is_default")]
    pub pull: PullPlan,
}

fn default_seed() -> u64 {
    1
}
fn default_duration() -> Duration {
    Duration::from_secs(600)
}
fn default_devices() -> u32 {
    1
}
fn default_epoch() -> u64 {
    DEFAULT_EPOCH_MS
}

/// The operations of each device.
///
/// ```toml
/// [ops]
/// per_device = 10000
/// entities = 500
/// shared_entities = false
/// collections = ["notes", "tasks"]
/// priorities = { critical = 1, high = 10, normal = 70, background = 19 }
/// kinds = { create = 20, update = 70, delete = 10 }
/// payload = { min = 64, max = 512 }
/// arrival = { process = "poisson", rate = 20.0 }
/// base_versions = false
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationMix {
    /// Operations submitted by each device.
    pub per_device: u64,
    /// Distinct records each device touches.
    pub entities: u64,
    /// All devices touch the same records (`"7"`) instead of their own
    /// (`"d0-7"`): set it to provoke conflicts between devices.
    pub shared_entities: bool,
    /// Collections; record `i` lives in `collections[i % len]`.
    pub collections: Vec<String>,
    /// Relative weights of the priorities.
    pub priorities: PriorityWeights,
    /// Relative weights of the kinds. A create drawn for an existing record
    /// becomes an update, an update or delete drawn for a missing (or
    /// deleted) record becomes a create.
    pub kinds: KindWeights,
    /// Payload sizes in bytes, uniform in `[min, max]` (deletes carry none).
    pub payload: SizeRange,
    /// When operations are submitted.
    pub arrival: Arrival,
    /// Stamp each operation with the version its device believes the
    /// record has (its own earlier operations on it), so concurrent edits
    /// by other devices surface as conflicts.
    pub base_versions: bool,
}

impl Default for OperationMix {
    fn default() -> Self {
        OperationMix {
            per_device: 1_000,
            entities: 100,
            shared_entities: false,
            collections: vec!["items".to_owned()],
            priorities: PriorityWeights::default(),
            kinds: KindWeights::default(),
            payload: SizeRange { min: 64, max: 256 },
            arrival: Arrival::default(),
            base_versions: false,
        }
    }
}

/// Relative weights of the four priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityWeights {
    /// Weight of `Critical`.
    pub critical: u32,
    /// Weight of `High`.
    pub high: u32,
    /// Weight of `Normal`.
    pub normal: u32,
    /// Weight of `Background`.
    pub background: u32,
}

impl Default for PriorityWeights {
    fn default() -> Self {
        PriorityWeights {
            critical: 1,
            high: 10,
            normal: 70,
            background: 19,
        }
    }
}

/// Relative weights of the kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindWeights {
    /// Weight of `Create`.
    pub create: u32,
    /// Weight of `Update`.
    pub update: u32,
    /// Weight of `Delete`.
    pub delete: u32,
}

impl Default for KindWeights {
    fn default() -> Self {
        KindWeights {
            create: 10,
            update: 85,
            delete: 5,
        }
    }
}

/// An inclusive size range in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeRange {
    /// Smallest payload.
    pub min: usize,
    /// Largest payload.
    pub max: usize,
}

/// When a device submits its operations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "process", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrival {
    /// Everything at once at `at` (default 0): `{ process = "burst" }`.
    Burst {
        /// When.
        #[serde(default, with = "humane")]
        at: Duration,
    },
    /// Evenly spaced, `rate` per second from `start`:
    /// `{ process = "uniform", rate = 50.0 }`.
    Uniform {
        /// Operations per second.
        rate: f64,
        /// First arrival.
        #[serde(default, with = "humane")]
        start: Duration,
    },
    /// A Poisson process of `rate` per second from `start` (exponential
    /// gaps): `{ process = "poisson", rate = 50.0 }`.
    Poisson {
        /// Mean operations per second.
        rate: f64,
        /// Start of the process.
        #[serde(default, with = "humane")]
        start: Duration,
    },
}

impl Default for Arrival {
    fn default() -> Self {
        Arrival::Burst { at: Duration::ZERO }
    }
}

/// When the harness crashes the engine: explicit instants plus `random`
/// more drawn from the seed, uniformly over the run.
///
/// ```toml
/// [crash]
/// at = ["30s", "2m"]
/// random = 5
/// restart_after = "1s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrashPlan {
    /// Explicit crash instants.
    #[serde(with = "humane_vec", skip_serializing_if = "Vec::is_empty")]
    pub at: Vec<Duration>,
    /// How many more crash instants to draw from the seed.
    pub random: u32,
    /// How long the engine stays down before it is reopened.
    #[serde(with = "humane")]
    pub restart_after: Duration,
}

/// One operation of a workload: who submits it, when, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOp {
    /// The device (0-based).
    pub device: u32,
    /// When to submit it, since the start of the run.
    pub at: Duration,
    /// The operation, stamped by the device's clock at `at` (plus skew).
    pub op: Operation,
}

impl Scenario {
    /// A scenario with every default (1 device, 1,000 operations over 100
    /// records submitted at once, a well-behaved remote, no faults).
    pub fn new(name: impl Into<String>) -> Self {
        Scenario {
            name: name.into(),
            description: String::new(),
            seed: default_seed(),
            duration: default_duration(),
            devices: default_devices(),
            epoch_ms: DEFAULT_EPOCH_MS,
            clock_skew: Vec::new(),
            ops: OperationMix::default(),
            remote: RemoteOptions::default(),
            faults: FaultPlan::default(),
            schedule: Schedule::default(),
            crash: CrashPlan::default(),
            expect: ExpectedBounds::default(),
            pull: PullPlan::default(),
        }
    }

    /// Starts a builder.
    pub fn builder(name: impl Into<String>) -> ScenarioBuilder {
        ScenarioBuilder {
            scenario: Scenario::new(name),
        }
    }

    /// Parses and validates a TOML scenario. Errors name the field (its
    /// dotted path) and the line: for a bad schedule window, that window's
    /// own line.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        locate::check_size(text)?;
        let scenario: Scenario = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| locate::toml_error(text, e))?;
        scenario
            .validate()
            .map_err(|e| locate::with_line(text, ScenarioFormat::Toml, e))?;
        Ok(scenario)
    }

    /// Parses and validates a JSON scenario; errors name the field and the
    /// line as for TOML.
    pub fn from_json_str(text: &str) -> Result<Self> {
        locate::check_size(text)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let scenario: Scenario = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            locate::json_error(text, Some(path), e.into_inner())
        })?;
        de.end().map_err(|e| locate::json_error(text, None, e))?;
        scenario
            .validate()
            .map_err(|e| locate::with_line(text, ScenarioFormat::Json, e))?;
        Ok(scenario)
    }

    /// Reads a scenario file: JSON if the name ends in `.json`, TOML
    /// otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = Scenario::read_text(path)?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Scenario::from_json_str(&text)
        } else {
            Scenario::from_toml_str(&text)
        }
    }

    /// Reads a scenario file's text, refusing one larger than
    /// [`MAX_SCENARIO_BYTES`] without reading it whole.
    pub fn read_text(path: &Path) -> Result<String> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_SCENARIO_BYTES + 1),
            &mut text,
        )
        .map_err(io)?;
        if text.len() as u64 > MAX_SCENARIO_BYTES {
            return Err(Error::invalid(
                "(file)",
                format!(
                    "{} is larger than the limit of {MAX_SCENARIO_BYTES} bytes",
                    path.display()
                ),
            ));
        }
        Ok(text)
    }

    /// The TOML form (reads back to an equal scenario).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Serialize(e.to_string()))
    }

    /// The JSON form (pretty-printed).
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Serialize(e.to_string()))
    }

    /// The node id of `device`: `device + 1` (node 0 is left for "unset").
    pub fn node(device: u32) -> NodeId {
        NodeId(u64::from(device) + 1)
    }

    /// The clock skew of `device` in ms (0 if not listed).
    pub fn skew_ms(&self, device: u32) -> i64 {
        self.clock_skew.get(device as usize).copied().unwrap_or(0)
    }

    /// A seed for one purpose of this run, derived from the scenario seed
    /// (so the faults, each device's workload and the crash points draw
    /// from independent streams).
    pub fn derived_seed(&self, purpose: u64) -> u64 {
        splitmix64(self.seed ^ splitmix64(purpose))
    }

    /// The seed of the fault plan's RNG.
    pub fn fault_seed(&self) -> u64 {
        self.derived_seed(0xFA_0175)
    }

    /// A remote configured as the scenario says, on `clock`.
    pub fn remote(&self, clock: SimClock) -> SimulatedRemote {
        SimulatedRemote::new(self.remote.clone(), clock)
    }

    /// Wraps `inner` with the scenario's fault plan, schedule and fault seed.
    pub fn faulty<T: Transport>(&self, inner: T, clock: SimClock) -> FaultyTransport<T> {
        FaultyTransport::new(inner, self.faults.clone(), self.fault_seed())
            .with_schedule(self.schedule.clone())
            .with_clock(clock)
    }

    /// Checker options for this scenario: name, seed, last outage end and
    /// bounds. The harness adds the transport counters.
    pub fn check_options(&self) -> CheckOptions {
        CheckOptions {
            scenario: self.name.clone(),
            seed: self.seed,
            last_outage_end: self.schedule.last_outage_end(),
            transport_calls: None,
            ops_sent: None,
            bounds: self.expect.clone(),
            max_listed: 0,
            conflicts: Default::default(),
        }
    }

    /// The crash instants: the explicit ones plus `crash.random` drawn from
    /// the seed, uniformly in `(0, duration)`, sorted.
    pub fn crash_times(&self) -> Vec<Duration> {
        let mut rng = StdRng::seed_from_u64(self.derived_seed(0xC4A5_4000));
        let span = cpc_sync::core::millis(self.duration);
        let mut out = self.crash.at.clone();
        for _ in 0..self.crash.random {
            out.push(Duration::from_millis(rng.gen_range(1..span.max(2))));
        }
        out.sort_unstable();
        out
    }

    /// The operations `device` submits, in submission order, each stamped
    /// by the device's hybrid clock (a manual wall clock at
    /// `epoch_ms + skew + at`). Same scenario, same seed: same operations,
    /// ids included. Built whole: for a large scenario read them one at a
    /// time with [`workload_iter`](Self::workload_iter).
    pub fn workload(&self, device: u32) -> Result<Vec<PlannedOp>> {
        self.workload_iter(device)?.collect()
    }

    /// The same operations as [`workload`](Self::workload), generated one
    /// at a time as they are read: memory stays flat however many
    /// operations a device submits.
    pub fn workload_iter(&self, device: u32) -> Result<Workload> {
        if device >= self.devices {
            return Err(Error::NoSuchDevice {
                device,
                devices: self.devices,
            });
        }
        let mix = self.ops.clone();
        let rng = StdRng::seed_from_u64(self.derived_seed(0xD0_0000 + u64::from(device)));
        let base_wall = self.epoch_ms.saturating_add_signed(self.skew_ms(device));
        let wall = ManualWallClock::new(base_wall);
        let clock = HybridClock::with_wall_clock(Scenario::node(device), Arc::new(wall.clone()));
        let next_at = match mix.arrival {
            Arrival::Burst { at } => at,
            Arrival::Uniform { start, .. } | Arrival::Poisson { start, .. } => start,
        };
        Ok(Workload {
            device,
            mix,
            rng,
            base_wall,
            wall,
            clock,
            records: HashMap::new(),
            next_at,
            i: 0,
        })
    }

    /// Every device's workload, merged in submission time order (ties by
    /// device, then by the device's own order).
    pub fn workloads(&self) -> Result<Vec<PlannedOp>> {
        let mut all = Vec::new();
        for device in 0..self.devices {
            all.extend(self.workload(device)?);
        }
        // A stable sort keeps each device's own order among equal times.
        all.sort_by_key(|p| (p.at, p.device));
        Ok(all)
    }
}

/// Builds a [`Scenario`] in code.
#[derive(Debug, Clone)]
pub struct ScenarioBuilder {
    scenario: Scenario,
}

impl ScenarioBuilder {
    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.scenario.description = text.into();
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.scenario.seed = seed;
        self
    }
    /// Sets the simulated length of the run.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.scenario.duration = duration;
        self
    }
    /// Sets the number of devices.
    pub fn devices(mut self, devices: u32) -> Self {
        self.scenario.devices = devices;
        self
    }
    /// Sets the clock skews (ms, per device).
    pub fn clock_skew(mut self, skews_ms: Vec<i64>) -> Self {
        self.scenario.clock_skew = skews_ms;
        self
    }
    /// Sets the operation mix.
    pub fn ops(mut self, ops: OperationMix) -> Self {
        self.scenario.ops = ops;
        self
    }
    /// Sets the remote's behaviour.
    pub fn remote(mut self, remote: RemoteOptions) -> Self {
        self.scenario.remote = remote;
        self
    }
    /// Sets the fault plan.
    pub fn faults(mut self, faults: FaultPlan) -> Self {
        self.scenario.faults = faults;
        self
    }
    /// Sets the outage schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.scenario.schedule = schedule;
        self
    }
    /// Sets the crash plan.
    pub fn crash(mut self, crash: CrashPlan) -> Self {
        self.scenario.crash = crash;
        self
    }
    /// Sets the expected bounds.
    pub fn expect(mut self, expect: ExpectedBounds) -> Self {
        self.scenario.expect = expect;
        self
    }
    /// Sets the two-way sync plan.
    pub fn pull(mut self, pull: PullPlan) -> Self {
        self.scenario.pull = pull;
        self
    }
    /// Validates and returns the scenario.
    pub fn build(self) -> Result<Scenario> {
        self.scenario.validate()?;
        Ok(self.scenario)
    }
}
