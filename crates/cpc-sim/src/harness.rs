//! One scenario run: the full engine per device against the shared
//! simulated remote, on a paused current-thread runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use cpc_fault::{
    check_with, Abandoned, ConflictCounts, FaultyTransport, InvariantReport, QueueEnd,
    ScriptedNetwork, SimClock, SimulatedRemote, SubmitOutcome, SubmittedRecord,
};
use cpc_sync::backoff::{CircuitBreaker, CircuitBreakerConfig};
use cpc_sync::core::{
    error_chain, Operation, OperationId, Resolution, StandardCoalescer, Transport,
};
use cpc_sync::network::{MonitorConfig, NetworkMonitor};
use cpc_sync::storage::{
    ConflictFilter, DeadHeadPolicy, Durability, Enqueued, ListFilter, MemoryStorage, OpState,
    QueueOptions, QueueStorage, SledStorage, SqliteStorage,
};
use cpc_sync::worker::StorageCalls;
use cpc_sync::{SyncEngine, SyncEngineBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::auth::{AnswerLog, BearerTransport, FinalAnswer, Secret};
use crate::converge::{self, DeviceSink, Quiescence, SimSink};
use crate::gate::{Gate, GatedStorage};
use crate::records::{self, engine_readiness, LastEdits};
use crate::scenario::{PlannedOp, Scenario};
use crate::spec::{DeadHead, Spec, StorageKind};
use crate::timeline::{self, DeviceLine, Timeline};
use crate::Error;

/// How a run is set up beyond its scenario.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Backend of every device.
    pub storage: StorageKind,
    /// Durability of the durable backends.
    pub durability: Durability,
    /// Prefixed to every non-empty payload (the canary test).
    pub payload_canary: Option<Vec<u8>>,
    /// Prefixed to every record id (the canary test for entity ids).
    pub entity_canary: Option<String>,
    /// The bearer token every device's transport carries.
    pub bearer: Secret,
    /// Where the per-device store directories go.
    pub tmp_root: PathBuf,
    /// How the engine calls its store: inline on the runtime thread (exact
    /// replay by construction), or on the blocking pool through the gate.
    pub storage_calls: StorageCalls,
    /// Record what the timeline picture needs.
    pub timeline: bool,
    /// The application's engine configuration, applied to every device's
    /// builder after the harness's own settings (store, transport,
    /// network, node id, seeds), so it can change batch sizes, retry
    /// policies, resolvers… The harness's store, transport and network
    /// must stay: replacing them takes the device out of the simulation.
    pub configure: Option<EngineConfig>,
}

impl RunSettings {
    /// The defaults of `cargo xtask simulate`: SQLite stores under
    /// `tmp_root` with `Durability::Immediate`, storage calls inline (exact
    /// replay), no canaries, no timeline, the harness's engine
    /// configuration.
    pub fn new(tmp_root: impl Into<PathBuf>) -> Self {
        RunSettings {
            storage: StorageKind::Sqlite,
            durability: Durability::Immediate,
            payload_canary: None,
            entity_canary: None,
            bearer: Secret::new("sim-token"),
            tmp_root: tmp_root.into(),
            storage_calls: StorageCalls::Inline,
            timeline: false,
            configure: None,
        }
    }
}

/// A change to every device's [`SyncEngineBuilder`], for
/// [`RunSettings::configure`].
#[derive(Clone)]
pub struct EngineConfig(Arc<dyn Fn(SyncEngineBuilder) -> SyncEngineBuilder + Send + Sync>);

impl EngineConfig {
    /// Wraps the change.
    pub fn new(
        configure: impl Fn(SyncEngineBuilder) -> SyncEngineBuilder + Send + Sync + 'static,
    ) -> Self {
        EngineConfig(Arc::new(configure))
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineConfig(..)")
    }
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The checker's verdict.
    pub report: InvariantReport,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// The run as a picture needs it, when asked for.
    pub timeline: Option<Timeline>,
}

/// File descriptors one device's store holds open: measured 6 for SQLite
/// (database, WAL, shared memory, two connections, the lock) and 3–4 for
/// sled, with headroom.
const FDS_PER_DEVICE: u64 = 8;
/// File descriptors kept for everything else (stdio, the runtime, logs).
const FDS_RESERVED: u64 = 64;

/// File descriptors a run may use: the process's limit, raised to its hard
/// limit first, less a reserve.
pub fn fd_budget() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = match (limit.current, limit.maximum) {
        (Some(current), max) if max.is_none_or(|m| current < m) => {
            let raised = Rlimit {
                current: max,
                maximum: max,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => max.unwrap_or(u64::MAX),
                Err(_) => current,
            }
        }
        (Some(current), _) => current,
        (None, _) => u64::MAX,
    };
    soft.saturating_sub(FDS_RESERVED).max(FDS_PER_DEVICE)
}

/// File descriptors one run of `spec` holds at once.
pub fn fds_needed(spec: &Spec, settings: &RunSettings) -> u64 {
    match settings.storage {
        StorageKind::Memory => 0,
        _ => u64::from(spec.scenario.devices) * FDS_PER_DEVICE,
    }
}

/// Refuses a run that cannot mean anything or cannot fit: crash points on
/// memory storage, more stores than file descriptors, payloads in memory
/// beyond the memory budget.
pub fn check(spec: &Spec, settings: &RunSettings) -> Result<(), Error> {
    let scenario = &spec.scenario;
    let memory = settings.storage == StorageKind::Memory;
    if memory && !scenario.crash_times().is_empty() {
        return Err(Error::Spec(format!(
            "{}: memory storage cannot survive the scenario's crash points; use sqlite or sled",
            scenario.name
        )));
    }
    let (need, budget) = (fds_needed(spec, settings), fd_budget());
    if need > budget {
        return Err(Error::Spec(format!(
            "{}: {} devices need about {need} file descriptors for their stores, more than \
             the {budget} this process may open (ulimit -n); use fewer devices or memory storage",
            scenario.name, scenario.devices
        )));
    }
    let bytes = scenario.estimated_memory(memory);
    if bytes > crate::MEMORY_BUDGET {
        return Err(Error::Spec(format!(
            "{}: about {} MiB with every payload in memory, more than the budget of {} MiB; \
             use sqlite or sled storage, or fewer operations",
            scenario.name,
            bytes >> 20,
            crate::MEMORY_BUDGET >> 20
        )));
    }
    Ok(())
}

/// Runs `spec` on a fresh paused runtime and checks it.
pub fn run(spec: &Spec, settings: &RunSettings) -> Result<RunResult, Error> {
    check(spec, settings)?;
    let started = WallInstant::now();
    let gate = Gate::new();
    let (on_park, on_unpark) = (Arc::clone(&gate), Arc::clone(&gate));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        // One blocking thread: storage calls run one at a time, in the
        // order the runtime spawned them (see `gate`).
        .max_blocking_threads(1)
        .on_thread_park(move || on_park.on_park())
        .on_thread_unpark(move || on_unpark.on_unpark())
        .build()
        .map_err(|e| Error::Io("building the simulation runtime", e))?;
    gate.attach(runtime.handle().clone(), std::thread::current().id());
    let result = runtime.block_on(simulate(spec, settings, &gate));
    // Crashed engines may have left blocking calls behind: let them through,
    // then drop whatever tasks remain.
    gate.close();
    runtime.shutdown_timeout(Duration::from_secs(10));
    let (report, timeline) = result.map_err(Error::Run)?;
    Ok(RunResult {
        report,
        wall: started.elapsed(),
        timeline,
    })
}

/// Everything the device tasks share.
struct World {
    scenario: Scenario,
    harness: super::spec::HarnessOptions,
    settings: RunSettings,
    gate: Arc<Gate>,
    clock: SimClock,
    remote: SimulatedRemote,
    crash_times: Vec<Duration>,
    aging_after: Option<Duration>,
    /// Devices stop waiting for a drain at this instant.
    deadline: Duration,
    /// With `[pull]`: when every device is done pushing.
    quiescence: Option<Quiescence>,
}

/// What a device hands back.
struct DeviceOut {
    records: Vec<SubmittedRecord>,
    end: EndOfRun,
    transport: FaultyTransport<SimulatedRemote>,
    /// Its line of the timeline, when one is drawn (applies added later).
    line: Option<DeviceLine>,
    /// With `[pull]`: its sink, and whether it pulled through the end.
    pulled: Option<DeviceSink>,
    /// A coalescing device: what its last acknowledged edit of each record
    /// leaves at the remote (`None`: deleted); records with an edit of
    /// unknown outcome (a crash during submit) are left out.
    last_edits: Option<LastEdits>,
}

/// What a device's engine held and had decided when its run ended.
#[derive(Default)]
struct EndOfRun {
    /// Operations it legitimately gave up on.
    abandoned: BTreeMap<OperationId, Abandoned>,
    /// Operations still in its queue, and where.
    left: BTreeMap<OperationId, QueueEnd>,
    /// Operations whose conflict was settled by a merge.
    merged: BTreeSet<OperationId>,
    /// Its conflict log, counted by resolution.
    conflicts: ConflictCounts,
    /// When each logged conflict was resolved, on its wall clock (ms).
    resolved_at_ms: Vec<u64>,
}

async fn simulate(
    spec: &Spec,
    settings: &RunSettings,
    gate: &Arc<Gate>,
) -> Result<(InvariantReport, Option<Timeline>), String> {
    let scenario = spec.scenario.clone();
    let clock = SimClock::start_now();
    let remote = scenario.remote(clock);
    let pull = scenario.pull.clone();
    converge::preload(&remote, &pull, scenario.derived_seed(0x0051_EED0));
    let horizon = scenario
        .duration
        .max(scenario.schedule.last_outage_end().unwrap_or_default());
    let aging_after = scenario
        .expect
        .aging_after
        .or(QueueOptions::default().aging_after);
    let world = Arc::new(World {
        crash_times: scenario.crash_times(),
        deadline: horizon.saturating_add(spec.harness.drain_cap),
        scenario,
        harness: spec.harness.clone(),
        settings: settings.clone(),
        gate: Arc::clone(gate),
        clock,
        remote: remote.clone(),
        aging_after,
        quiescence: pull
            .enabled
            .then(|| Quiescence::new(scenario_devices(spec))),
    });
    let remote_faults = pull.enabled.then(|| {
        tokio::spawn(converge::remote_faults(
            remote.clone(),
            pull.clone(),
            clock,
            world.deadline,
        ))
    });

    let mut handles = Vec::with_capacity(world.scenario.devices as usize);
    for device in 0..world.scenario.devices {
        // Generated as it is submitted, never held whole.
        let workload = world
            .scenario
            .workload_iter(device)
            .map_err(|e| format!("workload of device {device}: {e}"))?;
        let entity_canary = world.settings.entity_canary.clone();
        let payload_canary = world.settings.payload_canary.clone();
        let workload = workload.map(move |planned| {
            let mut planned = planned.map_err(|e| format!("workload of device {device}: {e}"))?;
            if let Some(canary) = &entity_canary {
                planned.op.entity.id = format!("{canary}{}", planned.op.entity.id);
            }
            if let Some(canary) = &payload_canary {
                if !planned.op.payload.is_empty() {
                    let mut payload = canary.clone();
                    payload.extend_from_slice(&planned.op.payload);
                    planned.op.payload = payload;
                }
            }
            Ok(planned)
        });
        let world = Arc::clone(&world);
        handles.push(tokio::spawn(run_device(world, device, workload)));
    }

    let mut submitted = Vec::new();
    let mut conflicts = BTreeMap::new();
    let mut lines = Vec::new();
    let mut sinks = Vec::new();
    let (mut calls, mut ops_sent) = (0u64, 0u64);
    let mut coalesced: Option<cpc_fault::CoalescedState> = None;
    for (device, handle) in handles.into_iter().enumerate() {
        let out = handle
            .await
            .map_err(|e| format!("device {device} task failed: {e}"))??;
        let first = out.transport.first_attempts();
        let counters = out.transport.counters();
        calls += counters.calls;
        ops_sent += counters.ops_sent;
        let out_len = out.records.len();
        for mut rec in out.records {
            rec.first_attempt_at = first.get(&rec.op_id).copied();
            // Coalesced at submit, else what the queue says at the end.
            if rec.abandoned.is_none() {
                rec.abandoned = out.end.abandoned.get(&rec.op_id).copied();
            }
            rec.left_in_queue = out.end.left.get(&rec.op_id).copied();
            rec.merged = out.end.merged.contains(&rec.op_id);
            submitted.push(rec);
        }
        if let Some(last) = out.last_edits {
            let state = coalesced.get_or_insert_with(Default::default);
            last.check(&submitted[submitted.len() - out_len..], &remote, state);
        }
        conflicts.insert(
            Scenario::node(u32::try_from(device).unwrap_or(u32::MAX)),
            out.end.conflicts,
        );
        lines.extend(out.line);
        sinks.extend(out.pulled);
    }

    let mut options = world.scenario.check_options();
    options.conflicts = conflicts;
    options.transport_calls = Some(calls);
    options.ops_sent = Some(ops_sent);
    options.bounds.aging_after = world.aging_after;
    let applies = remote.apply_log();
    let timeline = world.settings.timeline.then(|| {
        for apply in &applies {
            let device = usize::try_from(apply.node.0.saturating_sub(1)).unwrap_or(usize::MAX);
            if let Some(line) = lines.get_mut(device) {
                line.applies.push(apply.at);
            }
        }
        Timeline {
            scenario: world.scenario.name.clone(),
            seed: world.scenario.seed,
            schedule: world.scenario.schedule.clone(),
            devices: lines,
        }
    });
    let mut report = check_with(&applies, &submitted, &options);
    if let Some(state) = coalesced {
        report = report.with_coalesced_state(state);
    }
    if let Some(task) = remote_faults {
        // Done at its last scheduled fault, or cut short now.
        task.abort();
        report = report.with_convergence(converge::convergence(
            &remote,
            &sinks,
            remote.restore_losses(),
            options.max_listed.max(20),
        ));
    }
    Ok((report, timeline))
}

/// The devices of a run.
fn scenario_devices(spec: &Spec) -> u32 {
    spec.scenario.devices
}

/// A seed for one purpose of one device.
fn device_seed(scenario: &Scenario, device: u32, purpose: u64) -> u64 {
    scenario.derived_seed(0x5EED_0000_0000 ^ (u64::from(device) << 8) ^ purpose)
}

/// One incarnation of a device's engine.
struct Live {
    engine: SyncEngine,
    storage: Arc<GatedStorage>,
}

struct Device {
    world: Arc<World>,
    index: u32,
    dir: Option<tempfile::TempDir>,
    wire: Arc<dyn Transport>,
    monitor: NetworkMonitor,
    incarnation: u64,
    /// With `[pull]`: the application's sink (it outlives crashes, as an
    /// application's database does).
    sink: Option<Arc<SimSink>>,
    /// The final answers (pull completions are added to it).
    answers: AnswerLog,
}

impl Device {
    fn seed(&self, purpose: u64) -> u64 {
        device_seed(&self.world.scenario, self.index, purpose)
    }

    fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("queue"))
    }

    /// Opens the store and starts an engine on it; `fence` is the next
    /// crash instant, from which the store refuses every call.
    async fn open(&mut self, fence: Option<Duration>) -> Result<Live, String> {
        let world = &self.world;
        let scenario = &world.scenario;
        let now = world.clock.elapsed();
        let wall_ms = scenario
            .epoch_ms
            .saturating_add_signed(scenario.skew_ms(self.index))
            .saturating_add(cpc_sync::core::millis(now));
        let options = QueueOptions {
            durability: world.settings.durability,
            aging_after: world.aging_after,
            dead_head: match world.harness.dead_head {
                DeadHead::Block => DeadHeadPolicy::BlockEntity,
                DeadHead::Skip => DeadHeadPolicy::SkipEntityHead,
            },
            retain_acked: scenario
                .pull
                .retain_acked
                .then(cpc_sync::storage::RetainAcked::default),
            ..QueueOptions::default()
        };
        let store: Arc<dyn QueueStorage> = match (world.settings.storage, self.path()) {
            (StorageKind::Memory, _) | (_, None) => Arc::new(MemoryStorage::new(options.clone())),
            (StorageKind::Sqlite, Some(path)) => Arc::new(
                open_dir(&path, |p| {
                    SqliteStorage::open_at(p, options.clone(), wall_ms)
                })
                .map_err(|e| format!("device {}: cannot open sqlite store: {e}", self.index))?,
            ),
            (StorageKind::Sled, Some(path)) => Arc::new(
                open_dir(&path, |p| SledStorage::open_at(p, options.clone(), wall_ms))
                    .map_err(|e| format!("device {}: cannot open sled store: {e}", self.index))?,
            ),
        };
        let storage = Arc::new(GatedStorage::new(store, Arc::clone(&world.gate)));
        storage.set_fence(fence.map(|at| world.clock.instant_at(at)));
        let breaker = CircuitBreaker::new(CircuitBreakerConfig::default())
            .map_err(|e| format!("circuit breaker: {e}"))?
            .with_seed(self.seed(0xB4EA_0000 + self.incarnation));
        let mut builder = SyncEngine::builder()
            .storage(Arc::clone(&storage) as Arc<dyn QueueStorage>)
            .transport_arc(Arc::clone(&self.wire))
            .network(self.monitor.clone())
            .node_id(Scenario::node(self.index))
            .start_time_ms(wall_ms)
            .seed(self.seed(0x3047_0000 + self.incarnation))
            .circuit_breaker(Some(breaker))
            .storage_calls(world.settings.storage_calls);
        if let Some(sink) = &self.sink {
            builder = builder
                .remote_sink(Arc::clone(sink) as Arc<dyn cpc_sync::core::RemoteSink>)
                .pull_config(converge::pull_config(
                    &world.scenario.pull,
                    self.seed(0x9011_0000 + self.incarnation),
                ));
        }
        if let Some(n) = world.harness.batch_size {
            builder = builder.batch_size(n);
        }
        if world.harness.coalesce.contains(&self.index) {
            let collections = &world.scenario.ops.collections;
            // The workload's default collection is the empty name.
            let names = if collections.is_empty() {
                vec![String::new()]
            } else {
                collections.clone()
            };
            for name in names {
                builder = builder.coalesce(name, StandardCoalescer::new());
            }
        }
        if let Some(configure) = &world.settings.configure {
            builder = (configure.0)(builder);
        }
        let engine = builder.start().await.map_err(|e| {
            format!(
                "device {}: engine did not start: {}",
                self.index,
                error_chain(&e)
            )
        })?;
        if self.sink.is_some() {
            converge::watch_pull_completions(&engine, self.answers.clone(), world.clock);
        }
        Ok(Live { engine, storage })
    }

    /// Drops the engine without shutdown (its store refuses every call from
    /// now on), closes the store, waits `restart_after` and reopens. Crash
    /// points that fall while the engine is down are skipped.
    async fn crash(&mut self, live: Live, crashes: &mut Crashes) -> Result<Live, String> {
        let world = Arc::clone(&self.world);
        live.storage.set_fence(Some(tokio::time::Instant::now()));
        // The dead worker may still hold the wrapper; the real store goes.
        drop(live.storage.take());
        drop(live);
        self.incarnation += 1;
        tracing::debug!(
            device = self.index,
            incarnation = self.incarnation,
            "engine crashed"
        );
        tokio::time::sleep(world.scenario.crash.restart_after).await;
        let now = world.clock.elapsed();
        while crashes.next_if(|ct| *ct <= now).is_some() {}
        self.open(crashes.peek().copied()).await
    }
}

type Crashes = std::iter::Peekable<std::vec::IntoIter<Duration>>;

/// Opens a store; the store creates its directory (mode 0700) itself.
fn open_dir<S, E: std::fmt::Display>(
    path: &Path,
    open: impl FnOnce(&Path) -> Result<S, E>,
) -> Result<S, String> {
    open(path).map_err(|e| e.to_string())
}

async fn run_device(
    world: Arc<World>,
    index: u32,
    workload: impl Iterator<Item = Result<PlannedOp, String>>,
) -> Result<DeviceOut, String> {
    let scenario = &world.scenario;
    let transport = FaultyTransport::new(
        world.remote.as_client(Scenario::node(index)),
        scenario.faults.clone(),
        device_seed(scenario, index, 0x00FA_0175),
    )
    .with_schedule(scenario.schedule.clone())
    .with_clock(world.clock);
    let bearer = BearerTransport::new(
        transport.clone(),
        world.settings.bearer.clone(),
        world.clock,
    );
    let answers = bearer.answers();
    let wire: Arc<dyn Transport> = Arc::new(bearer);
    let monitor = NetworkMonitor::new(MonitorConfig {
        seed: Some(device_seed(scenario, index, 0x0E70_0000)),
        ..MonitorConfig::default()
    })
    .map_err(|e| format!("network monitor: {e}"))?;
    monitor
        .attach(ScriptedNetwork::new(scenario.schedule.clone(), world.clock))
        .map_err(|e| format!("network source: {e}"))?;
    let dir = match world.settings.storage {
        StorageKind::Memory => None,
        _ => Some(
            tempfile::Builder::new()
                .prefix("cpc-simulate-")
                .tempdir_in(&world.settings.tmp_root)
                .map_err(|e| format!("temp dir: {e}"))?,
        ),
    };
    let mut device = Device {
        world: Arc::clone(&world),
        index,
        dir,
        wire,
        monitor,
        incarnation: 0,
        answers: answers.clone(),
        sink: scenario
            .pull
            .enabled
            .then(|| Arc::new(SimSink::new(scenario.pull.sink))),
    };
    let mut crashes: Crashes = world.crash_times.clone().into_iter().peekable();
    let mut coin = StdRng::seed_from_u64(device.seed(0xC014));
    let mut live = device.open(crashes.peek().copied()).await?;
    let mut records: Vec<SubmittedRecord> = Vec::new();
    let batch_limit = world.harness.submit_batch.max(1);
    let mut last_edits = (world.harness.coalesce.contains(&index)
        && !world.scenario.ops.shared_entities)
        .then(LastEdits::default);

    let mut workload = workload.peekable();
    let mut last_submit = Duration::ZERO;
    while let Some(first) = workload.next() {
        let first = first?;
        let at = first.at;
        last_submit = at;
        // Crashes strictly before this arrival happen while the app is idle.
        while let Some(ct) = crashes.next_if(|ct| ct_before(*ct, at)) {
            world.clock.sleep_until(ct).await;
            live = device.crash(live, &mut crashes).await?;
        }
        world.clock.sleep_until(at).await;
        // Operations of the same instant go in one submit, up to the limit.
        let mut batch = vec![first];
        while batch.len() < batch_limit {
            match workload.next_if(|p| p.as_ref().is_ok_and(|p| p.at == at)) {
                Some(next) => batch.push(next?),
                None => break,
            }
        }
        let ops: Vec<Operation> = batch.iter().map(|p| p.op.clone()).collect();
        let submitted_at = world.clock.elapsed();
        // A crash point within the millisecond of this submission hits it
        // in progress: a seeded coin says whether the write landed before
        // the process died; either way the application never heard back.
        let in_progress = crashes
            .next_if(|ct| !ct_before(*ct, at) && ct_before(*ct, at + Duration::from_millis(1)));
        let mut stored = true;
        let done;
        let outcome = if in_progress.is_some() {
            let landed = coin.gen_bool(0.5);
            live.storage
                .set_fence((!landed).then(tokio::time::Instant::now));
            // What the store did counts even though the app never heard
            // back: a landed delete may have cancelled an acknowledged create.
            done = submit(&live.engine, ops).await;
            stored = done.is_some();
            live = device.crash(live, &mut crashes).await?;
            SubmitOutcome::Unknown
        } else {
            done = submit(&live.engine, ops).await;
            match done {
                Some(_) => SubmitOutcome::Acknowledged,
                None => SubmitOutcome::Failed,
            }
        };
        for (i, planned) in batch.iter().enumerate() {
            if let Some(last) = &mut last_edits {
                last.note(&planned.op, outcome);
            }
            let mut record = SubmittedRecord::new(&planned.op, submitted_at, outcome);
            if !stored {
                // Never reached the queue: never eligible to send, so
                // nothing sent meanwhile passes it over.
                record.ready_at = Duration::MAX;
            }
            records::note_submit(
                &mut records,
                &mut record,
                done.as_ref().and_then(|d| d.get(i)),
            );
            records.push(record);
        }
    }

    // Drain: after the last outage, until nothing is pending (crash points
    // still apply), bounded by the deadline.
    let heal = scenario.schedule.last_outage_end().unwrap_or_default();
    // Arrivals may run past the scenario's duration (a long workload at a
    // low rate): the drain allowance then counts from the last one.
    let deadline_at = world
        .deadline
        .max(last_submit.saturating_add(world.harness.drain_cap));
    loop {
        let next_crash = crashes.peek().copied();
        let wait = async {
            world.clock.sleep_until(heal).await;
            let deadline = world.clock.instant_at(deadline_at);
            tokio::time::timeout_at(deadline, live.engine.drained()).await
        };
        match next_crash {
            Some(ct) => {
                let crashed = tokio::select! {
                    biased;
                    _ = wait => false,
                    _ = world.clock.sleep_until(ct) => true,
                };
                if crashed {
                    crashes.next();
                    live = device.crash(live, &mut crashes).await?;
                    continue;
                }
            }
            None => {
                let _ = wait.await;
            }
        }
        break;
    }

    let pulled = match (&world.quiescence, &device.sink) {
        (Some(q), Some(sink)) => {
            let through = q
                .settle(
                    &live.engine,
                    &world.remote,
                    world.clock,
                    world.harness.drain_cap,
                )
                .await;
            Some(DeviceSink {
                sink: Arc::clone(sink),
                stalled: !through,
            })
        }
        _ => None,
    };
    let end = end_of_run(&live.engine, &answers).await?;
    if let Err(e) = live.engine.shutdown().await {
        tracing::debug!(device = index, error = %error_chain(&e), "engine shutdown failed");
    }
    drop(live);
    engine_readiness(&mut records, &answers);
    let line = world.settings.timeline.then(|| {
        timeline::device_line(
            &world.scenario,
            index,
            &records,
            &answers,
            &end.resolved_at_ms,
        )
    });
    Ok(DeviceOut {
        records,
        end,
        transport,
        line,
        pulled,
        last_edits,
    })
}

/// `a` falls in an earlier millisecond than `b`.
fn ct_before(a: Duration, b: Duration) -> bool {
    a.as_millis() < b.as_millis()
}

/// Submits one or more operations; what the store did with each if the
/// engine acknowledged them.
async fn submit(engine: &SyncEngine, ops: Vec<Operation>) -> Option<Vec<Enqueued>> {
    match engine.submit_batch_with_outcomes(ops).await {
        Ok(done) => Some(done.into_iter().map(|(_, d)| d).collect()),
        Err(e) => {
            tracing::debug!(error = %error_chain(&e), "submit failed");
            None
        }
    }
}

/// What the engine holds and decided at the end of the run. Given up
/// legitimately: dead letters the remote refused for good, and conflicts
/// resolved in favour of the remote. A dead letter the engine parked after
/// running out of attempts on failures that said nothing about the
/// operation is not: it is left in the queue as `Dead` (exhausted), which
/// fails the run. Still-live operations are left as pending or deferred.
async fn end_of_run(engine: &SyncEngine, answers: &AnswerLog) -> Result<EndOfRun, String> {
    let mut end = EndOfRun::default();
    let dead = engine
        .dead_letters()
        .await
        .map_err(|e| format!("dead letters: {}", error_chain(&e)))?;
    for stored in dead {
        match answers.get(stored.op.id) {
            Some((_, FinalAnswer::Rejected)) => {
                end.abandoned.insert(stored.op.id, Abandoned::DeadLettered);
            }
            _ => {
                tracing::debug!(op = %stored.op.id, "dead letter without a refusal: exhausted");
                end.left.insert(stored.op.id, QueueEnd::Dead);
            }
        }
    }
    let live = engine
        .list(ListFilter {
            dead: Some(false),
            ..ListFilter::default()
        })
        .await
        .map_err(|e| format!("queue: {}", error_chain(&e)))?;
    for stored in live {
        let state = match stored.state {
            OpState::Deferred => QueueEnd::Deferred,
            _ => QueueEnd::Pending,
        };
        end.left.insert(stored.op.id, state);
    }
    let log = engine
        .conflict_log(ConflictFilter::default())
        .await
        .map_err(|e| format!("conflict log: {}", error_chain(&e)))?;
    for entry in log {
        end.resolved_at_ms.push(entry.resolved_at_ms);
        match entry.resolution {
            Resolution::KeepLocal => end.conflicts.keep_local += 1,
            Resolution::KeepRemote => {
                end.conflicts.keep_remote += 1;
                end.abandoned
                    .entry(entry.op_id)
                    .or_insert(Abandoned::ConflictKeptRemote);
            }
            Resolution::Merged(_) => {
                end.conflicts.merged += 1;
                end.merged.insert(entry.op_id);
            }
            Resolution::Defer => end.conflicts.deferred += 1,
        }
    }
    Ok(end)
}
