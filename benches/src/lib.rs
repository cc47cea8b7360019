//! Benchmarks of cpc-sync (criterion, `harness = false`), each beside a
//! baseline measured in the same run; see `cargo xtask bench`.

use cpc_core::{EntityKey, HlcTimestamp, NodeId, Operation, OperationKind, OperationPriority};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Payload size of every benchmark operation, in bytes (the issues' figures
/// are for 256 B operations).
pub const PAYLOAD: usize = 256;

/// The `n`th benchmark operation: a 256-byte payload, entity `n % entities`
/// of `collection`, the four priorities in turn, and an id and timestamp
/// that depend only on `n`, so every run stores the same bytes.
pub fn bench_op(collection: &str, n: u64, entities: u64) -> Operation {
    Operation::builder(
        EntityKey::new(collection, format!("e{}", n % entities.max(1))),
        OperationKind::Update,
    )
    .payload(vec![(n % 251) as u8; PAYLOAD])
    .priority(OperationPriority::from_rank((n % 4) as u8).unwrap_or_default())
    .build_at(
        HlcTimestamp::new(1_700_000_000_000 + n, 0, NodeId(1)),
        &mut StdRng::seed_from_u64(n),
    )
}

/// Peak resident set size of this process (VmHWM), KiB; 0 where
/// `/proc/self/status` cannot be read.
pub fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs this program again with `args` (one phase of a figure, in a fresh
/// process so its peak RSS is its own) and returns what it printed.
pub fn phase(args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("phase {args:?} failed: {}", out.status).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
