//! `Workload`: one device's operations, generated as they are read.

use super::*;

/// One device's operations, generated as they are read (see
/// [`Scenario::workload_iter`]). Arrival instants are clamped to
/// [`MAX_DURATION`] (a Poisson draw may reach past it).
#[derive(Debug)]
pub struct Workload {
    pub(super) device: u32,
    pub(super) mix: OperationMix,
    pub(super) rng: StdRng,
    pub(super) base_wall: u64,
    pub(super) wall: ManualWallClock,
    pub(super) clock: HybridClock,
    /// Per record: (exists, versions this device believes it has written).
    pub(super) records: HashMap<u64, (bool, u64)>,
    pub(super) next_at: Duration,
    pub(super) i: u64,
}

/// `secs` as a `Duration`, clamped to [`MAX_DURATION`] (and to zero below).
pub(super) fn clamped_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs)
        .unwrap_or(MAX_DURATION)
        .min(MAX_DURATION)
}

impl Iterator for Workload {
    type Item = Result<PlannedOp>;

    fn next(&mut self) -> Option<Result<PlannedOp>> {
        let mix = &self.mix;
        if self.i >= mix.per_device {
            return None;
        }
        let i = self.i;
        self.i += 1;
        let rng = &mut self.rng;
        let at = match mix.arrival {
            Arrival::Burst { at } => at,
            Arrival::Uniform { rate, start } => start
                .saturating_add(clamped_secs(i as f64 / rate))
                .min(MAX_DURATION),
            Arrival::Poisson { rate, .. } => {
                let u: f64 = rng.gen();
                let gap = -(1.0 - u).ln() / rate;
                let at = self.next_at;
                self.next_at = self
                    .next_at
                    .saturating_add(clamped_secs(gap))
                    .min(MAX_DURATION);
                at
            }
        };
        self.wall
            .set(self.base_wall.saturating_add(cpc_sync::core::millis(at)));
        let index = rng.gen_range(0..mix.entities.max(1));
        let collections = mix.collections.len().max(1) as u64;
        let collection = mix
            .collections
            .get((index % collections) as usize)
            .cloned()
            .unwrap_or_default();
        let id = if mix.shared_entities {
            index.to_string()
        } else {
            format!("d{}-{index}", self.device)
        };
        let state = self.records.entry(index).or_insert((false, 0));
        let kind = match (pick_kind(rng, mix.kinds), state.0) {
            (_, false) => OperationKind::Create,
            (OperationKind::Create, true) => OperationKind::Update,
            (kind, true) => kind,
        };
        let priority = pick_priority(rng, mix.priorities);
        let payload = match kind {
            OperationKind::Delete => Vec::new(),
            _ => {
                let (min, max) = (mix.payload.min, mix.payload.max.max(mix.payload.min));
                let len = rng.gen_range(min..=max);
                (0..len).map(|_| b'a' + rng.gen_range(0..26u8)).collect()
            }
        };
        let mut builder = Operation::builder(EntityKey::new(collection, id), kind.clone())
            .payload(payload)
            .priority(priority);
        if mix.base_versions && state.0 {
            builder = builder.base_version(state.1);
        }
        state.0 = kind != OperationKind::Delete;
        state.1 += 1;
        let timestamp = match self.clock.now() {
            Ok(t) => t,
            Err(e) => return Some(Err(e.into())),
        };
        let op = builder.build_at(timestamp, rng);
        Some(Ok(PlannedOp {
            device: self.device,
            at,
            op,
        }))
    }
}

pub(super) fn pick_kind(rng: &mut StdRng, w: KindWeights) -> OperationKind {
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

pub(super) fn pick_priority(rng: &mut StdRng, w: PriorityWeights) -> OperationPriority {
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
