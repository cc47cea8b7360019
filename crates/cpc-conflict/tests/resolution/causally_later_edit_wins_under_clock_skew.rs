//! Two devices whose wall clocks differ by ten minutes edit one record in
//! turn, each after seeing the other's edit. Under `LastWriterWins` on hybrid
//! logical clock timestamps the causally later edit always wins; with plain
//! wall-clock timestamps the same rule keeps the older edit whenever the
//! later editor's clock is behind.

use std::sync::Arc;

use cpc_conflict::{ConflictResolver, LastWriterWins, Resolution};
use cpc_core::{HlcTimestamp, HybridClock, ManualWallClock, NodeId, WallClock};

use crate::support::Version;

const TEN_MINUTES_MS: i64 = 10 * 60 * 1000;
const START_MS: u64 = 1_800_000_000_000;

struct Device {
    node: NodeId,
    wall: ManualWallClock,
    clock: HybridClock,
}

impl Device {
    fn new(node: u64, skew_ms: i64) -> Self {
        let wall = ManualWallClock::new(START_MS.saturating_add_signed(skew_ms));
        let clock = HybridClock::with_wall_clock(NodeId(node), Arc::new(wall.clone()));
        Device {
            node: NodeId(node),
            wall,
            clock,
        }
    }
}

/// The edits of one run, each with its HLC timestamp and the raw wall-clock
/// reading a plain LWW would have used.
struct Edit {
    hlc: Version,
    wall: Version,
}

/// Devices 1 and 2 take turns: before each edit the editor observes the
/// previous edit's timestamp (it synced and saw it), then edits a little
/// later by real time.
fn run(skew_of_device_2_ms: i64, rounds: u64) -> Vec<Edit> {
    let devices = [Device::new(1, 0), Device::new(2, skew_of_device_2_ms)];
    let mut edits: Vec<Edit> = Vec::new();
    for round in 0..rounds {
        let editor = &devices[(round % 2) as usize];
        // One real second passes between edits, on both devices.
        for d in &devices {
            d.wall.shift(1_000);
        }
        if let Some(prev) = edits.last() {
            editor.clock.observe(prev.hlc.timestamp).unwrap();
        }
        let content = Some(format!("edit {round} by {}", editor.node.0).into_bytes());
        edits.push(Edit {
            hlc: Version {
                timestamp: editor.clock.now().unwrap(),
                content: content.clone(),
                version: round + 1,
            },
            wall: Version {
                timestamp: HlcTimestamp::new(editor.wall.now_ms(), 0, editor.node),
                content,
                version: round + 1,
            },
        });
    }
    edits
}

/// True if LWW keeps `later` over `earlier`, asked on either device.
fn later_wins(earlier: &Version, later: &Version) -> bool {
    let lww = LastWriterWins;
    let on_later_device = lww.resolve(&later.as_local(), &earlier.as_remote());
    let on_earlier_device = lww.resolve(&earlier.as_local(), &later.as_remote());
    assert_eq!(
        on_later_device == Resolution::KeepLocal,
        on_earlier_device == Resolution::KeepRemote,
        "the two devices disagree"
    );
    on_later_device == Resolution::KeepLocal
}

#[test]
fn hlc_lww_keeps_every_causally_later_edit_with_clocks_ten_minutes_apart() {
    for skew in [TEN_MINUTES_MS, -TEN_MINUTES_MS] {
        let edits = run(skew, 8);
        for pair in edits.windows(2) {
            assert!(
                later_wins(&pair[0].hlc, &pair[1].hlc),
                "skew {skew} ms: edit {:?} lost to the earlier {:?}",
                pair[1].hlc.timestamp,
                pair[0].hlc.timestamp
            );
        }
        // And the last edit beats every earlier one, not just its predecessor.
        let last = &edits[edits.len() - 1].hlc;
        for earlier in &edits[..edits.len() - 1] {
            assert!(later_wins(&earlier.hlc, last));
        }
    }
}

#[test]
fn plain_wall_clock_lww_keeps_the_older_edit_when_the_later_editor_is_behind() {
    for skew in [TEN_MINUTES_MS, -TEN_MINUTES_MS] {
        let edits = run(skew, 8);
        let wrong: Vec<u64> = edits
            .windows(2)
            .filter(|pair| !later_wins(&pair[0].wall, &pair[1].wall))
            .map(|pair| pair[1].wall.version)
            .collect();
        // Each edit of the device that runs behind loses to the edit it was
        // made on (three or four of the seven hand-overs).
        let behind = if skew > 0 { 1 } else { 2 };
        let expected: Vec<u64> = (2..=8).filter(|v| (v - 1) % 2 == behind - 1).collect();
        assert_eq!(wrong, expected, "skew {skew} ms");
        assert!(!wrong.is_empty());
    }
}

#[test]
fn hlc_timestamps_stay_near_real_time_despite_the_skew() {
    // The HLC follows the fastest clock it has seen, not beyond: every edit's
    // wall component is within the skew of the real time.
    let edits = run(TEN_MINUTES_MS, 8);
    for (i, e) in edits.iter().enumerate() {
        let real = START_MS + 1_000 * (i as u64 + 1);
        let lead = e.hlc.timestamp.wall_ms - real;
        assert!(lead <= TEN_MINUTES_MS as u64, "edit {i} leads by {lead} ms");
    }
}
