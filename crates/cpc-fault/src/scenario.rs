//! `Scenario`: everything a simulated run needs, readable from TOML and
//! JSON, and the deterministic workload generator.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cpc_core::{
    EntityKey, HybridClock, ManualWallClock, NodeId, Operation, OperationKind, OperationPriority,
    Transport, DEFAULT_MAX_PAYLOAD,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::checker::{CheckOptions, ExpectedBounds};
use crate::clock::SimClock;
use crate::duration::{humane, humane_vec, signed_ms_vec};
use crate::error::{Error, ParseSource, Result, ScenarioFormat};
use crate::faulty::{FaultPlan, FaultyTransport};
use crate::remote::{splitmix64, RemoteOptions, SimulatedRemote};
use crate::schedule::Schedule;

/// Wall-clock reading (ms since the Unix epoch) at simulated time zero,
/// unless a scenario sets `epoch_ms`: 2023-11-14T22:13:20Z.
pub const DEFAULT_EPOCH_MS: u64 = 1_700_000_000_000;

/// A simulated run: seed, length, devices, workload, remote behaviour,
/// faults, outages, clock skews, crash points and expected bounds.
///
/// Every table but `name` has defaults, so a scenario file says only what
/// matters to it. Unknown keys are refused with their line. Durations are
/// humane strings (`"500ms"`, `"10m"`, `"1h30m"`; signed for skews).
///
/// ```
/// let scenario = cpc_fault::Scenario::from_toml_str(r#"
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
/// # Ok::<(), cpc_fault::Error>(())
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
        }
    }

    /// Starts a builder.
    pub fn builder(name: impl Into<String>) -> ScenarioBuilder {
        ScenarioBuilder {
            scenario: Scenario::new(name),
        }
    }

    /// Parses and validates a TOML scenario.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| toml_error(text, e))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Parses and validates a JSON scenario.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let scenario: Scenario = serde_json::from_str(text).map_err(json_error)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads a scenario file: JSON if the name ends in `.json`, TOML
    /// otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Scenario::from_json_str(&text)
        } else {
            Scenario::from_toml_str(&text)
        }
    }

    /// The TOML form (reads back to an equal scenario).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Serialize(e.to_string()))
    }

    /// The JSON form (pretty-printed).
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Serialize(e.to_string()))
    }

    /// Checks the values serde cannot: counts, ranges, sums.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if self.duration.is_zero() {
            return Err(Error::invalid("duration", "must be longer than zero"));
        }
        if self.devices == 0 {
            return Err(Error::invalid("devices", "at least one device is needed"));
        }
        if self.clock_skew.len() > self.devices as usize {
            return Err(Error::invalid(
                "clock_skew",
                format!(
                    "{} skews for {} devices",
                    self.clock_skew.len(),
                    self.devices
                ),
            ));
        }
        let ops = &self.ops;
        if ops.entities == 0 {
            return Err(Error::invalid(
                "ops.entities",
                "at least one record is needed",
            ));
        }
        if ops.collections.is_empty() || ops.collections.iter().any(|c| c.is_empty()) {
            return Err(Error::invalid(
                "ops.collections",
                "needs at least one non-empty collection name",
            ));
        }
        let p = ops.priorities;
        if u64::from(p.critical) + u64::from(p.high) + u64::from(p.normal) + u64::from(p.background)
            == 0
        {
            return Err(Error::invalid("ops.priorities", "all weights are zero"));
        }
        let k = ops.kinds;
        if u64::from(k.create) + u64::from(k.update) + u64::from(k.delete) == 0 {
            return Err(Error::invalid("ops.kinds", "all weights are zero"));
        }
        if ops.payload.min > ops.payload.max {
            return Err(Error::invalid("ops.payload", "`min` is above `max`"));
        }
        if ops.payload.max > DEFAULT_MAX_PAYLOAD {
            return Err(Error::invalid(
                "ops.payload.max",
                format!("above the engine's default limit of {DEFAULT_MAX_PAYLOAD} bytes"),
            ));
        }
        match ops.arrival {
            Arrival::Uniform { rate, .. } | Arrival::Poisson { rate, .. }
                if !(rate.is_finite() && rate > 0.0) =>
            {
                return Err(Error::invalid(
                    "ops.arrival.rate",
                    format!("{rate} is not a positive rate"),
                ));
            }
            _ => {}
        }
        self.faults.validate()?;
        if let Some(a) = self.remote.admission {
            if !(a.rate.is_finite() && a.rate > 0.0) || a.burst == 0 {
                return Err(Error::invalid(
                    "remote.admission",
                    "needs a positive `rate` and a `burst` of at least 1",
                ));
            }
        }
        if let Some(r) = self.remote.op_rate {
            if !(r.rate.is_finite() && r.rate > 0.0) || r.burst == 0 {
                return Err(Error::invalid(
                    "remote.op_rate",
                    "needs a positive `rate` and a `burst` of at least 1",
                ));
            }
        }
        if let Some(max) = self.expect.max_retry_amplification {
            if !(max.is_finite() && max >= 0.0) {
                return Err(Error::invalid(
                    "expect.max_retry_amplification",
                    format!("{max} is not a non-negative number"),
                ));
            }
        }
        Ok(())
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
        }
    }

    /// The crash instants: the explicit ones plus `crash.random` drawn from
    /// the seed, uniformly in `(0, duration)`, sorted.
    pub fn crash_times(&self) -> Vec<Duration> {
        let mut rng = StdRng::seed_from_u64(self.derived_seed(0xC4A5_4000));
        let span = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX);
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
    /// ids included.
    pub fn workload(&self, device: u32) -> Result<Vec<PlannedOp>> {
        if device >= self.devices {
            return Err(Error::NoSuchDevice {
                device,
                devices: self.devices,
            });
        }
        let mix = &self.ops;
        let mut rng = StdRng::seed_from_u64(self.derived_seed(0xD0_0000 + u64::from(device)));
        let base_wall = self.epoch_ms.saturating_add_signed(self.skew_ms(device));
        let wall = ManualWallClock::new(base_wall);
        let clock = HybridClock::with_wall_clock(Scenario::node(device), Arc::new(wall.clone()));
        // Per record: (exists, versions this device believes it has written).
        let mut records: HashMap<u64, (bool, u64)> = HashMap::new();
        let count = usize::try_from(mix.per_device).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(count.min(1 << 24));
        let mut next_at = match mix.arrival {
            Arrival::Burst { at } => at,
            Arrival::Uniform { start, .. } | Arrival::Poisson { start, .. } => start,
        };
        for i in 0..mix.per_device {
            let at = match mix.arrival {
                Arrival::Burst { at } => at,
                Arrival::Uniform { rate, start } => {
                    start + Duration::from_secs_f64(i as f64 / rate)
                }
                Arrival::Poisson { rate, .. } => {
                    let u: f64 = rng.gen();
                    let gap = -(1.0 - u).ln() / rate;
                    let at = next_at;
                    next_at += Duration::from_secs_f64(gap);
                    at
                }
            };
            wall.set(base_wall.saturating_add(u64::try_from(at.as_millis()).unwrap_or(u64::MAX)));
            let index = rng.gen_range(0..mix.entities);
            let collection = &mix.collections[(index % mix.collections.len() as u64) as usize];
            let id = if mix.shared_entities {
                index.to_string()
            } else {
                format!("d{device}-{index}")
            };
            let state = records.entry(index).or_insert((false, 0));
            let kind = match (pick_kind(&mut rng, mix.kinds), state.0) {
                (_, false) => OperationKind::Create,
                (OperationKind::Create, true) => OperationKind::Update,
                (kind, true) => kind,
            };
            let priority = pick_priority(&mut rng, mix.priorities);
            let payload = match kind {
                OperationKind::Delete => Vec::new(),
                _ => {
                    let len = rng.gen_range(mix.payload.min..=mix.payload.max);
                    (0..len).map(|_| b'a' + rng.gen_range(0..26u8)).collect()
                }
            };
            let mut builder =
                Operation::builder(EntityKey::new(collection.clone(), id), kind.clone())
                    .payload(payload)
                    .priority(priority);
            if mix.base_versions && state.0 {
                builder = builder.base_version(state.1);
            }
            state.0 = kind != OperationKind::Delete;
            state.1 += 1;
            let op = builder.build_at(clock.now()?, &mut rng);
            out.push(PlannedOp { device, at, op });
        }
        Ok(out)
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

fn pick_kind(rng: &mut StdRng, w: KindWeights) -> OperationKind {
    let total = u64::from(w.create) + u64::from(w.update) + u64::from(w.delete);
    let x = rng.gen_range(0..total.max(1));
    if x < u64::from(w.create) {
        OperationKind::Create
    } else if x < u64::from(w.create) + u64::from(w.update) {
        OperationKind::Update
    } else {
        OperationKind::Delete
    }
}

fn pick_priority(rng: &mut StdRng, w: PriorityWeights) -> OperationPriority {
    let weights = [
        (w.critical, OperationPriority::Critical),
        (w.high, OperationPriority::High),
        (w.normal, OperationPriority::Normal),
        (w.background, OperationPriority::Background),
    ];
    let total: u64 = weights.iter().map(|(w, _)| u64::from(*w)).sum();
    let mut x = rng.gen_range(0..total.max(1));
    for (weight, p) in weights {
        if x < u64::from(weight) {
            return p;
        }
        x -= u64::from(weight);
    }
    OperationPriority::Normal
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
    /// Validates and returns the scenario.
    pub fn build(self) -> Result<Scenario> {
        self.scenario.validate()?;
        Ok(self.scenario)
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// The field a parser message names (`unknown field `x``, `missing field
/// `x``, `... for key `a.b``), if any.
fn field_in_message(message: &str) -> Option<String> {
    for marker in [
        "unknown field `",
        "missing field `",
        "for key `",
        "duplicate key `",
    ] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_owned());
            }
        }
    }
    None
}

/// The key assigned on the line of `offset` (`key = value`), if any.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |p| p + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |p| offset + p);
    let line = &text[start..end];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then(|| key.to_owned())
}

fn toml_error(text: &str, e: toml::de::Error) -> Error {
    let message = e.message().trim().to_owned();
    let span = e.span();
    let (line, column) = match span.as_ref().map(|s| line_column(text, s.start)) {
        Some((l, c)) => (Some(l), Some(c)),
        None => (None, None),
    };
    let field =
        field_in_message(&message).or_else(|| span.and_then(|s| key_on_line(text, s.start)));
    Error::Parse {
        format: ScenarioFormat::Toml,
        line,
        column,
        field,
        message,
        source: ParseSource::Toml(Box::new(e)),
    }
}

fn json_error(e: serde_json::Error) -> Error {
    let full = e.to_string();
    // serde_json appends " at line L column C"; the fields carry that.
    let message = match full.rfind(" at line ") {
        Some(p) => full[..p].to_owned(),
        None => full,
    };
    let (line, column) = if e.line() > 0 {
        (Some(e.line()), Some(e.column()))
    } else {
        (None, None)
    };
    Error::Parse {
        format: ScenarioFormat::Json,
        line,
        column,
        field: field_in_message(&message),
        message,
        source: ParseSource::Json(Box::new(e)),
    }
}
