//! `LastWriterWins` gives the same winner on every device: device A holding
//! `a` and receiving `b` agrees with device B holding `b` and receiving `a`.

use cpc_conflict::{ConflictResolver, LastWriterWins, Resolution};
use cpc_core::{HlcTimestamp, NodeId};
use proptest::prelude::*;

use crate::support::Version;

/// Small ranges so equal wall times, equal counters and equal nodes (the
/// tie-breaking paths) come up often.
fn version() -> impl Strategy<Value = Version> {
    (
        0u64..4,
        0u32..3,
        1u64..4,
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..3)),
        1u64..10,
    )
        .prop_map(|(wall_ms, logical, node, content, version)| Version {
            timestamp: HlcTimestamp::new(wall_ms, logical, NodeId(node)),
            content,
            version,
        })
}

/// Which version a device ends up with after resolving `local` against `remote`.
fn winner<'a>(r: &Resolution, local: &'a Version, remote: &'a Version) -> &'a Version {
    match r {
        Resolution::KeepLocal => local,
        Resolution::KeepRemote => remote,
        other => panic!("LastWriterWins answered {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn both_devices_keep_the_same_winner(a in version(), b in version()) {
        let lww = LastWriterWins;
        let on_a = lww.resolve(&a.as_local(), &b.as_remote());
        let on_b = lww.resolve(&b.as_local(), &a.as_remote());
        let (wa, wb) = (winner(&on_a, &a, &b), winner(&on_b, &b, &a));
        // Same winner by content and identity (equal versions are the same value).
        prop_assert_eq!(&wa.timestamp, &wb.timestamp);
        prop_assert_eq!(&wa.content, &wb.content);
        // Antisymmetric: for distinct versions exactly one device keeps its own.
        if (a.timestamp, &a.content) != (b.timestamp, &b.content) {
            prop_assert_ne!(on_a == Resolution::KeepLocal, on_b == Resolution::KeepLocal);
        }
        // And the winner is the later timestamp whenever the timestamps differ.
        if a.timestamp != b.timestamp {
            prop_assert_eq!(wa.timestamp, a.timestamp.max(b.timestamp));
        }
    }

    #[test]
    fn resolution_is_deterministic(a in version(), b in version()) {
        let first = LastWriterWins.resolve(&a.as_local(), &b.as_remote());
        for _ in 0..3 {
            prop_assert_eq!(&LastWriterWins.resolve(&a.as_local(), &b.as_remote()), &first);
        }
        // The remote's version number plays no part in the decision.
        let mut renumbered = b.as_remote();
        renumbered.version = renumbered.version.wrapping_add(1000);
        prop_assert_eq!(LastWriterWins.resolve(&a.as_local(), &renumbered), first);
    }

    #[test]
    fn the_winner_of_three_does_not_depend_on_arrival_order(
        a in version(), b in version(), c in version()
    ) {
        // Fold the versions pairwise in two different orders: the survivor
        // is the same (LWW is a total order, so the max is well defined).
        let survive = |x: &Version, y: &Version| -> Version {
            winner(&LastWriterWins.resolve(&x.as_local(), &y.as_remote()), x, y).clone()
        };
        let left = survive(&survive(&a, &b), &c);
        let right = survive(&a, &survive(&c, &b));
        prop_assert_eq!(left.timestamp, right.timestamp);
        prop_assert_eq!(left.content, right.content);
    }
}
