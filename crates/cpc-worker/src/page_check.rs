//! The engine's own check of a pulled page against the query it answers,
//! before anything of it is applied.
//!
//! The `Transport` contract says a transport checks its pages (cpc-http
//! does, on the wire), but the engine must not trust it to: a transport
//! that answered the same page with "more to come" while its cursor never
//! advanced made the puller ask 2,000 times in no time, handing the sink
//! every copy; one whose cursor went 5 → 3 → 5 got cursor 3 persisted and a
//! thousand pulls from it, nothing reported. Here a page that does not
//! advance, goes back, or leaves its range is refused: the cursor stays,
//! the puller reports `PullFailed` and backs off.

use cpc_core::{PullPage, PullQuery};

/// Why `page` cannot answer `query`, or `Ok`.
pub(crate) fn check_page(query: &PullQuery, page: &PullPage) -> Result<(), String> {
    let to = &page.cursor;
    if page.head.store_id != to.position.store_id {
        return Err("the cursor and the head name different stores".into());
    }
    if page.head.seq < to.position.seq {
        return Err(format!(
            "the cursor ({}) is beyond the head ({})",
            to.position.seq, page.head.seq
        ));
    }
    match &page.snapshot {
        None => check_changes(query, page),
        Some(range) => {
            let continuing = query
                .cursor
                .as_ref()
                .and_then(|c| c.after.as_ref().map(|after| (c, after)));
            match (&range.reset, continuing) {
                (Some(_), Some((from, _))) if from.position == to.position => {
                    Err("a snapshot started over from the same base position".into())
                }
                (Some(_), _) => check_snapshot_keys(page, None),
                (None, Some((from, after))) => {
                    if from.position != to.position {
                        return Err("a snapshot's base position changed mid-snapshot".into());
                    }
                    if range.from.as_ref() != Some(after) {
                        return Err(
                            "the snapshot page does not start where the cursor stands".into()
                        );
                    }
                    if to.after.as_ref().is_some_and(|next| next <= after) {
                        return Err("a snapshot page that does not advance".into());
                    }
                    check_snapshot_keys(page, Some(after))
                }
                (None, None) => {
                    Err("a snapshot page without a reset answers a change cursor".into())
                }
            }
        }
    }
}

/// A change page: in `seq` order, above the query's cursor, up to its own
/// cursor, which never goes back and advances when there is more.
fn check_changes(query: &PullQuery, page: &PullPage) -> Result<(), String> {
    let to = &page.cursor;
    if to.after.is_some() {
        return Err("a change page with a snapshot cursor".into());
    }
    let from = match &query.cursor {
        None => 0,
        Some(c) if c.after.is_some() => {
            return Err("a change page answers a snapshot in progress".into());
        }
        Some(c) if c.position.store_id != to.position.store_id => {
            return Err(
                "a change page from another store (a new feed starts with a snapshot)".into(),
            );
        }
        Some(c) => {
            let (from, seq) = (c.position.seq, to.position.seq);
            if seq < from {
                return Err(format!("the cursor went back from {from} to {seq}"));
            }
            if seq == from && c.position.fp != to.position.fp {
                return Err(format!("the history's fingerprint at {seq} changed"));
            }
            if page.has_more && seq == from {
                return Err(format!(
                    "more to come with a cursor that did not advance from {from}"
                ));
            }
            from
        }
    };
    let mut last = from;
    for c in &page.changes {
        if c.seq <= last {
            return Err(format!(
                "change at seq {} after {last}: out of order or repeated",
                c.seq
            ));
        }
        last = c.seq;
    }
    if last > to.position.seq {
        return Err(format!(
            "a change at seq {last} beyond the cursor {}",
            to.position.seq
        ));
    }
    Ok(())
}

/// A snapshot page's keys: ascending, after `after`, inside the range.
fn check_snapshot_keys(page: &PullPage, after: Option<&cpc_core::EntityKey>) -> Result<(), String> {
    let Some(range) = &page.snapshot else {
        return Ok(());
    };
    let mut previous = after.or(range.from.as_ref());
    for c in &page.changes {
        if previous.is_some_and(|p| c.entity <= *p) {
            return Err("snapshot keys out of order or outside the range".into());
        }
        if range.through.as_ref().is_some_and(|t| c.entity > *t) {
            return Err("a snapshot key beyond the range".into());
        }
        previous = Some(&c.entity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpc_core::{
        EntityKey, HlcTimestamp, NodeId, PullCursor, PulledChange, RemotePosition, ResetReason,
        SnapshotRange,
    };
    use std::time::Duration;

    fn pos(seq: u64) -> RemotePosition {
        RemotePosition {
            store_id: "s".into(),
            seq,
            fp: seq * 3,
        }
    }

    fn change(seq: u64, id: &str) -> PulledChange {
        PulledChange {
            seq,
            entity: EntityKey::new("n", id),
            version: 1,
            payload: Some(vec![1]),
            timestamp: HlcTimestamp::new(1, 0, NodeId(1)),
            own_op: None,
        }
    }

    fn query(cursor: Option<PullCursor>) -> PullQuery {
        PullQuery {
            cursor,
            known: None,
            wait: Duration::ZERO,
            limit: 100,
            collections: None,
        }
    }

    fn at(seq: u64) -> Option<PullCursor> {
        Some(PullCursor {
            position: pos(seq),
            after: None,
        })
    }

    fn changes(seqs: &[u64], cursor: u64, has_more: bool) -> PullPage {
        PullPage {
            changes: seqs.iter().map(|s| change(*s, &format!("e{s}"))).collect(),
            cursor: PullCursor {
                position: pos(cursor),
                after: None,
            },
            has_more,
            snapshot: None,
            head: pos(cursor + 10),
            bytes: 1,
        }
    }

    fn snapshot(
        keys: &[&str],
        from: Option<&str>,
        next: Option<&str>,
        reset: bool,
        base: u64,
    ) -> PullPage {
        PullPage {
            changes: keys.iter().map(|k| change(base, k)).collect(),
            cursor: PullCursor {
                position: pos(base),
                after: next.map(|k| EntityKey::new("n", k)),
            },
            has_more: next.is_some(),
            snapshot: Some(SnapshotRange {
                from: from.map(|k| EntityKey::new("n", k)),
                through: next.map(|k| EntityKey::new("n", k)),
                reset: reset.then_some(ResetReason::Initial),
            }),
            head: pos(base),
            bytes: 1,
        }
    }

    #[test]
    fn honest_pages_pass() {
        assert!(check_page(&query(None), &changes(&[1, 2], 2, true)).is_ok());
        assert!(check_page(&query(at(2)), &changes(&[3], 3, false)).is_ok());
        assert!(check_page(&query(at(3)), &changes(&[], 3, false)).is_ok());
        let first = snapshot(&["a", "b"], None, Some("b"), true, 7);
        assert!(check_page(&query(None), &first).is_ok());
        let next = snapshot(&["c"], Some("b"), Some("c"), false, 7);
        assert!(check_page(&query(Some(first.cursor.clone())), &next).is_ok());
        // A snapshot may start over from a change cursor (compacted).
        assert!(check_page(&query(at(2)), &first).is_ok());
    }

    #[test]
    fn a_page_that_does_not_advance_or_goes_back_is_refused() {
        let same = check_page(&query(at(5)), &changes(&[], 5, true)).unwrap_err();
        assert!(same.contains("did not advance"), "{same}");
        let back = check_page(&query(at(5)), &changes(&[], 3, false)).unwrap_err();
        assert!(back.contains("went back from 5 to 3"), "{back}");
        let repeated = check_page(&query(at(5)), &changes(&[5], 5, false)).unwrap_err();
        assert!(repeated.contains("out of order or repeated"), "{repeated}");
        let beyond = check_page(&query(at(5)), &changes(&[6, 9], 7, false)).unwrap_err();
        assert!(beyond.contains("beyond the cursor"), "{beyond}");
        let mut page = changes(&[], 9, false);
        page.head = pos(8);
        assert!(check_page(&query(at(5)), &page).is_err());
        let mut other = changes(&[6], 6, false);
        other.cursor.position.store_id = "t".into();
        other.head.store_id = "t".into();
        assert!(check_page(&query(at(5)), &other).is_err());
        let mut forked = changes(&[], 5, false);
        forked.cursor.position.fp += 1;
        assert!(check_page(&query(at(5)), &forked).is_err());
    }

    #[test]
    fn a_snapshot_that_does_not_advance_or_restarts_in_place_is_refused() {
        let first = snapshot(&["a", "b"], None, Some("b"), true, 7);
        let mid = query(Some(first.cursor.clone()));
        assert!(check_page(&mid, &first).is_err(), "restart in place");
        let stuck = snapshot(&[], Some("b"), Some("b"), false, 7);
        assert!(check_page(&mid, &stuck).is_err());
        let elsewhere = snapshot(&["d"], Some("c"), Some("d"), false, 7);
        assert!(check_page(&mid, &elsewhere).is_err());
        let moved = snapshot(&["c"], Some("b"), Some("c"), false, 8);
        assert!(check_page(&mid, &moved).is_err());
        let unordered = snapshot(&["d", "c"], Some("b"), Some("d"), false, 7);
        assert!(check_page(&mid, &unordered).is_err());
        assert!(check_page(&query(at(3)), &snapshot(&["a"], None, None, false, 3)).is_err());
        assert!(check_page(&mid, &changes(&[8], 8, false)).is_err());
    }
}
