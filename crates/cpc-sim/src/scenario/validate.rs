//! The checks serde cannot make: every count, length and rate against
//! its documented maximum, and the memory estimate against the budget.

use super::*;

impl Scenario {
    /// Checks the values serde cannot: counts, ranges, sums.
    pub fn validate(&self) -> Result<()> {
        self.pull.validate()?;
        if self.name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if self.duration.is_zero() {
            return Err(Error::invalid("duration", "must be longer than zero"));
        }
        not_later("duration", self.duration)?;
        if self.devices == 0 {
            return Err(Error::invalid("devices", "at least one device is needed"));
        }
        at_most("devices", u64::from(self.devices), u64::from(MAX_DEVICES))?;
        if self.epoch_ms > MAX_EPOCH_MS {
            return Err(Error::invalid(
                "epoch_ms",
                format!(
                    "{} is later than the limit of {MAX_EPOCH_MS}",
                    self.epoch_ms
                ),
            ));
        }
        if let Some((i, skew)) = self
            .clock_skew
            .iter()
            .enumerate()
            .find(|(_, s)| s.unsigned_abs() > MAX_CLOCK_SKEW_MS)
        {
            return Err(Error::invalid(
                format!("clock_skew[{i}]"),
                format!("{skew} ms is more than the limit of {MAX_CLOCK_SKEW_MS} ms either way"),
            ));
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
        at_most("ops.per_device", ops.per_device, MAX_OPS_PER_DEVICE)?;
        if ops.entities == 0 {
            return Err(Error::invalid(
                "ops.entities",
                "at least one record is needed",
            ));
        }
        at_most("ops.entities", ops.entities, MAX_ENTITIES)?;
        if ops.collections.is_empty() || ops.collections.iter().any(|c| c.is_empty()) {
            return Err(Error::invalid(
                "ops.collections",
                "needs at least one non-empty collection name",
            ));
        }
        if ops.collections.len() > MAX_COLLECTIONS
            || ops
                .collections
                .iter()
                .any(|c| c.len() > MAX_COLLECTION_NAME)
        {
            return Err(Error::invalid(
                "ops.collections",
                format!("at most {MAX_COLLECTIONS} names of at most {MAX_COLLECTION_NAME} bytes"),
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
                if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) =>
            {
                return Err(Error::invalid(
                    "ops.arrival.rate",
                    format!("{rate:e} is not a rate in (0, {MAX_RATE:e}] per second"),
                ));
            }
            Arrival::Uniform { rate, start } | Arrival::Poisson { rate, start } => {
                // The arrivals must fit in the longest run (a Poisson
                // process's mean span; its draws are clamped to the limit).
                let span = ops.per_device as f64 / rate;
                if start > MAX_DURATION || span > MAX_DURATION.as_secs_f64() {
                    return Err(Error::invalid(
                        "ops.arrival.rate",
                        format!(
                            "{} operations at {rate:e} per second from {} do not fit in {}",
                            ops.per_device,
                            cpc_fault::duration::format(start),
                            cpc_fault::duration::format(MAX_DURATION)
                        ),
                    ));
                }
            }
            Arrival::Burst { at } => not_later("ops.arrival.at", at)?,
        }
        let crashes = self.crash.at.len() as u64 + u64::from(self.crash.random);
        if crashes > MAX_CRASHES {
            return Err(Error::invalid(
                "crash",
                format!("{crashes} crash points is more than the limit of {MAX_CRASHES}"),
            ));
        }
        for (i, at) in self.crash.at.iter().enumerate() {
            not_later(&format!("crash.at[{i}]"), *at)?;
        }
        not_later("crash.restart_after", self.crash.restart_after)?;
        let need = self.estimated_memory(false);
        if need > MEMORY_BUDGET {
            return Err(Error::invalid(
                "ops.per_device",
                format!(
                    "{} devices x {} operations need about {} MiB, more than the budget of {} MiB: \
                     fewer devices or operations",
                    self.devices,
                    ops.per_device,
                    need >> 20,
                    MEMORY_BUDGET >> 20
                ),
            ));
        }
        self.faults.validate()?;
        // At least one token in the longest run, at most MAX_RATE a second.
        let min_rate = 1.0 / MAX_DURATION.as_secs_f64();
        let rate_ok = |rate: f64| rate.is_finite() && (min_rate..=MAX_RATE).contains(&rate);
        if let Some(a) = self.remote.admission {
            if !rate_ok(a.rate) || a.burst == 0 {
                return Err(Error::invalid(
                    "remote.admission",
                    format!(
                        "needs a `rate` in [{min_rate:e}, {MAX_RATE:e}] per second and a `burst` of at least 1"
                    ),
                ));
            }
        }
        if let Some(r) = self.remote.op_rate {
            if !rate_ok(r.rate) || r.burst == 0 {
                return Err(Error::invalid(
                    "remote.op_rate",
                    format!(
                        "needs a `rate` in [{min_rate:e}, {MAX_RATE:e}] per second and a `burst` of at least 1"
                    ),
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

    /// About how much memory a run of this scenario needs: each device's
    /// engine and store, each operation's bookkeeping ([`BYTES_PER_OP`]),
    /// the remote's latest record of every entity, and with
    /// `payloads_in_memory` (an in-memory store) every payload. Checked
    /// against [`MEMORY_BUDGET`] by [`validate`](Self::validate), which
    /// counts payloads as on disk; the harness checks again for memory
    /// stores.
    pub fn estimated_memory(&self, payloads_in_memory: bool) -> u64 {
        let ops = &self.ops;
        let devices = u64::from(self.devices);
        let total = devices.saturating_mul(ops.per_device);
        let payload = (ops.payload.min as u64 + ops.payload.max as u64) / 2;
        let records = if ops.shared_entities {
            ops.entities
        } else {
            ops.entities.saturating_mul(devices)
        }
        .min(total);
        let mut need = devices
            .saturating_mul(BYTES_PER_DEVICE)
            .saturating_add(total.saturating_mul(BYTES_PER_OP))
            .saturating_add(records.saturating_mul(payload.saturating_add(128)));
        if payloads_in_memory {
            need = need.saturating_add(total.saturating_mul(payload));
        }
        need
    }
}

/// Refuses `value` above `max` for `field`.
pub(super) fn at_most(field: &str, value: u64, max: u64) -> Result<()> {
    if value > max {
        return Err(Error::invalid(
            field,
            format!("{value} is more than the limit of {max}"),
        ));
    }
    Ok(())
}

/// Refuses a duration or instant past [`MAX_DURATION`] for `field`.
pub(super) fn not_later(field: &str, at: Duration) -> Result<()> {
    if at > MAX_DURATION {
        return Err(Error::invalid(
            field,
            format!(
                "{} is past the limit of {}",
                cpc_fault::duration::format(at),
                cpc_fault::duration::format(MAX_DURATION)
            ),
        ));
    }
    Ok(())
}
