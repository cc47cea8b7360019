//! Rows to bookkeeping and back: the SQL of the hot paths, the state
//! codes, and how a row is read into an `OpMeta` (or refused as damaged).

use super::*;

/// Maps a SQLite error: full disk → `StorageFull`, busy/locked → `Locked`,
/// I/O failure → `Io` (which poisons the handle inside a transaction).
pub(super) fn classify(dir: &Path, context: &'static str, e: rusqlite::Error) -> StorageError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            ErrorCode::DiskFull => {
                return StorageError::StorageFull(io::Error::new(io::ErrorKind::StorageFull, e))
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return StorageError::Locked {
                    path: dir.to_path_buf(),
                }
            }
            ErrorCode::SystemIoFailure => {
                return StorageError::Io {
                    context,
                    source: io::Error::other(e),
                }
            }
            _ => {}
        }
    }
    StorageError::Sqlite {
        context,
        source: Box::new(e),
    }
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Bodies at least this large are written into their row through SQLite's
/// incremental blob I/O, which copies them into pages directly, instead of
/// being bound as a value, which first builds a whole record in memory.
pub(super) const LARGE_BODY: usize = 64 * 1024;
// `SQL_DUE` spells it out as a literal.
const _: () = assert!(LARGE_BODY == 65536);

/// The context of the salvage transaction (never salvaged again itself).
pub(super) const SALVAGE: &str = "salvage";

pub(super) const STATE_READY: i64 = 0;
pub(super) const STATE_IN_FLIGHT: i64 = 1;
pub(super) const STATE_WAITING: i64 = 2;
pub(super) const STATE_DEAD: i64 = 3;
pub(super) const STATE_DEFERRED: i64 = 4;

/// The columns `read_row` expects, over `ops o`, `entities e` and the
/// (possibly absent: LEFT JOIN) `hot h` row of an operation.
macro_rules! meta_cols {
    () => {
        "o.seq, o.id, e.key, o.priority, h.state, h.wake_at, h.ready_at, o.enqueued_at, \
         h.attempts, h.last_error, h.dead_reason, o.payload_len, h.hk, h.eff, h.aging, o.nxt, \
         h.claimed"
    };
}

/// Operations by a condition on their own row (`o`), with their hot row if any.
macro_rules! from_ops {
    () => {
        " FROM ops o CROSS JOIN entities e ON e.eid = o.eid LEFT JOIN hot h ON h.seq = o.seq "
    };
}

/// Operations by a condition on their hot row (`h`): heads, leases, parked.
macro_rules! from_hot {
    () => {
        " FROM hot h CROSS JOIN ops o ON o.seq = h.seq CROSS JOIN entities e ON e.eid = o.eid "
    };
}

// The statements of the claim and completion paths (checked for index use
// by `tests::hot_paths_use_indexes`).
/// One operation by id.
/// One operation by id, with its entity's row (columns 17–19), which the
/// acknowledgement that usually follows unlinks it from.
pub(super) const SQL_BY_ID: &str = concat!(
    "SELECT ",
    meta_cols!(),
    ", e.eid, e.first, e.last",
    from_ops!(),
    "WHERE o.id = ?1"
);
/// One operation by seq when its entity's key (`?2`) is known: no
/// entity look-up.
pub(super) const SQL_BY_SEQ_IN: &str =
    "SELECT o.seq, o.id, ?2, o.priority, h.state, h.wake_at, h.ready_at, o.enqueued_at, \
     h.attempts, h.last_error, h.dead_reason, o.payload_len, h.hk, h.eff, h.aging, o.nxt, \
     h.claimed FROM ops o LEFT JOIN hot h ON h.seq = o.seq WHERE o.seq = ?1";
/// Due heads, claim order, with their bodies (column 17: the claim loads
/// every one of them).
pub(super) const SQL_DUE: &str = concat!(
    "SELECT ",
    meta_cols!(),
    // Large bodies (LARGE_BODY, 64 KiB) are read apart, through blob I/O.
    ", CASE WHEN length(o.body) < 65536 THEN o.body END",
    from_hot!(),
    "WHERE h.hk = 0 ORDER BY h.eff DESC, h.seq LIMIT ?1"
);
/// Timed heads that are due.
pub(super) const SQL_TIMED: &str = concat!(
    "SELECT ",
    meta_cols!(),
    from_hot!(),
    "WHERE h.hk = 1 AND h.wake_at <= ?1 ORDER BY h.wake_at, h.seq LIMIT ?2"
);
/// Due heads old enough to be promoted.
pub(super) const SQL_AGING: &str = concat!(
    "SELECT ",
    meta_cols!(),
    from_hot!(),
    "WHERE h.hk = 0 AND h.aging = 1 AND h.ready_at <= ?1 \
                 ORDER BY h.ready_at, h.seq LIMIT ?2"
);
/// Ended leases.
pub(super) const SQL_EXPIRED: &str = concat!(
    "SELECT ",
    meta_cols!(),
    from_hot!(),
    "WHERE h.state = 1 AND h.wake_at <= ?1 ORDER BY h.wake_at, h.seq"
);
/// An entity's row by key.
pub(super) const SQL_ENTITY: &str = "SELECT eid, first, last FROM entities WHERE key = ?1";

/// Whether an operation needs a `hot` row: anything but a fresh, unmarked,
/// ready operation does. Fresh non-head operations (the bulk of a backlog)
/// have none, so claiming and acknowledging write only the small `hot`
/// table and the acknowledged rows, never the rows of waiting operations.
pub(super) fn needs_hot(m: &OpMeta) -> bool {
    m.head.is_some()
        || m.state != OpState::Ready
        || m.attempts != 0
        || m.last_error.is_some()
        || m.ready_at != m.enqueued_at
        || m.claimed
}

/// The `hot` columns of one `OpMeta`.
pub(super) struct HotRow {
    pub(super) state: i64,
    pub(super) wake_at: Option<i64>,
    pub(super) dead_reason: Option<String>,
    pub(super) hk: Option<i64>,
    pub(super) eff: Option<i64>,
    pub(super) aging: Option<i64>,
}

pub(super) fn hot_row(m: &OpMeta) -> HotRow {
    let (state, wake_at, dead_reason) = match &m.state {
        OpState::Ready => (STATE_READY, None, None),
        OpState::InFlight { lease_until } => (STATE_IN_FLIGHT, Some(to_i64(*lease_until)), None),
        OpState::Waiting { until } => (STATE_WAITING, Some(to_i64(*until)), None),
        OpState::Dead { reason } => (STATE_DEAD, None, Some(reason.clone())),
        OpState::Deferred => (STATE_DEFERRED, None, None),
    };
    let (hk, eff, aging) = match m.head {
        None => (None, None, None),
        Some(Head::Due { eff, aging }) => {
            (Some(0), Some(i64::from(eff.rank())), Some(i64::from(aging)))
        }
        Some(Head::Timed) => (Some(1), None, None),
        Some(Head::Blocked) => (Some(2), None, None),
    };
    HotRow {
        state,
        wake_at,
        dead_reason,
        hk,
        eff,
        aging,
    }
}

pub(super) fn bad(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, what.to_owned().into())
}

/// One operation's bookkeeping and the link to the next operation of its
/// entity.
pub(super) struct MetaLink {
    pub(super) meta: OpMeta,
    pub(super) next: Option<u64>,
}

pub(super) fn read_row(r: &Row<'_>) -> rusqlite::Result<MetaLink> {
    let id: Vec<u8> = r.get(1)?;
    let id: [u8; 16] = id.try_into().map_err(|_| bad(1, "id is not 16 bytes"))?;
    let priority: i64 = r.get(3)?;
    let priority = u8::try_from(priority)
        .ok()
        .and_then(OperationPriority::from_rank)
        .ok_or_else(|| bad(3, "priority out of range"))?;
    let enqueued_at = to_u64(r.get(7)?);
    let wake_at: Option<i64> = r.get(5)?;
    let wake = || {
        wake_at
            .map(to_u64)
            .ok_or_else(|| bad(5, "missing wake time"))
    };
    // No hot row: a fresh ready operation, not a head.
    let state = match r.get::<_, Option<i64>>(4)? {
        None | Some(STATE_READY) => OpState::Ready,
        Some(STATE_IN_FLIGHT) => OpState::InFlight {
            lease_until: wake()?,
        },
        Some(STATE_WAITING) => OpState::Waiting { until: wake()? },
        Some(STATE_DEAD) => OpState::Dead {
            reason: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
        },
        Some(STATE_DEFERRED) => OpState::Deferred,
        Some(_) => return Err(bad(4, "state out of range")),
    };
    let head = match r.get::<_, Option<i64>>(12)? {
        None => None,
        Some(0) => {
            let eff: i64 = r
                .get::<_, Option<i64>>(13)?
                .unwrap_or(priority.rank().into());
            let eff = u8::try_from(eff)
                .ok()
                .and_then(OperationPriority::from_rank)
                .ok_or_else(|| bad(13, "effective priority out of range"))?;
            Some(Head::Due {
                eff,
                aging: r.get::<_, Option<i64>>(14)?.unwrap_or(0) != 0,
            })
        }
        Some(1) => Some(Head::Timed),
        Some(2) => Some(Head::Blocked),
        Some(_) => return Err(bad(12, "head kind out of range")),
    };
    let meta = OpMeta {
        seq: to_u64(r.get(0)?),
        id: OperationId::from_be_bytes(id),
        entity: r.get(2)?,
        priority,
        state,
        ready_at: r.get::<_, Option<i64>>(6)?.map_or(enqueued_at, to_u64),
        enqueued_at,
        attempts: r
            .get::<_, Option<i64>>(8)?
            .map_or(0, |a| u32::try_from(a).unwrap_or(u32::MAX)),
        last_error: r.get(9)?,
        payload_len: to_u64(r.get(11)?),
        head,
        claimed: r.get::<_, Option<i64>>(16)?.unwrap_or(0) != 0,
    };
    let next = r.get::<_, Option<i64>>(15)?.map(to_u64);
    Ok(MetaLink { meta, next })
}

pub(super) fn read_meta(r: &Row<'_>) -> rusqlite::Result<OpMeta> {
    read_row(r).map(|m| m.meta)
}

/// An entity's row: its interned id and the ends of its operation chain.
#[derive(Clone, Copy)]
pub(super) struct EntityRow {
    pub(super) eid: i64,
    pub(super) first: u64,
    pub(super) last: u64,
}
