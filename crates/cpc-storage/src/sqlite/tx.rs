//! `SqlTx`: the queue rules' `Tx` over one SQLite transaction.

use super::*;

/// The queue rules' table interface over one SQLite transaction.
///
/// Layout (format 3; format 2 differs only in its bodies):
/// - `entities`: one row per entity with queued operations, interning its
///   key as a small integer `eid` and holding the ends (`first`, `last`)
///   of the chain of its operations in `seq` order;
/// - `ops`: the operations (rowid = `seq`), immutable but for the link
///   `nxt` to the entity's next operation, the deferred remote record and
///   a replaced body; `ops_id` finds one by id;
/// - `hot`: the mutable bookkeeping (state, lease, attempts, errors, head
///   mark) of the operations that have any (see [`needs_hot`]), with the
///   partial indexes the claim path reads.
///
/// So the entity FIFO needs no index over all operations: the head of an
/// entity is `entities.first`, the next one `ops.nxt`, and acknowledging a
/// head touches its own row, its entity's row and the new head's `hot` row.
pub(super) struct SqlTx<'c> {
    pub(super) conn: &'c Connection,
    pub(super) path: &'c Path,
    pub(super) counters: &'c mut Counters,
    /// The last entity row read or written by key in this transaction
    /// (`None` inside: no such entity): an enqueue asks for its entity's
    /// head and then appends to it, an acknowledgement unlinks its head
    /// and then looks for the next one, each time by the same key.
    pub(super) entity: Option<(Vec<u8>, Option<EntityRow>)>,
    /// Bodies read with the last `due_heads`, by seq, for the claim's
    /// `load_op` calls that follow.
    pub(super) bodies: Vec<(u64, Vec<u8>)>,
    /// Largest record body decoded ([`rules::body_limit`] of the store's
    /// `max_payload`).
    pub(super) body_limit: u32,
    pub(super) notices: Vec<QuarantineNotice>,
}

impl<'c> SqlTx<'c> {
    pub(super) fn new(
        conn: &'c Connection,
        path: &'c Path,
        counters: &'c mut Counters,
        body_limit: u32,
    ) -> Self {
        SqlTx {
            conn,
            path,
            counters,
            entity: None,
            bodies: Vec::new(),
            body_limit,
            notices: Vec::new(),
        }
    }

    pub(super) fn remember_entity(&mut self, key: &[u8], row: Option<EntityRow>) {
        match &mut self.entity {
            Some((k, r)) if k.as_slice() == key => *r = row,
            slot => *slot = Some((key.to_vec(), row)),
        }
    }

    pub(super) fn err(
        &self,
        context: &'static str,
    ) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
        move |e| classify(self.path, context, e)
    }

    pub(super) fn metas(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        context: &'static str,
    ) -> Result<Vec<OpMeta>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| st.query_map(params, read_meta)?.collect())
            .map_err(self.err(context))
    }

    /// One operation of the entity `key` by seq, with its link.
    pub(super) fn link_in(&self, key: &[u8], seq: u64) -> Result<Option<MetaLink>> {
        self.conn
            .prepare_cached(SQL_BY_SEQ_IN)
            .and_then(|mut st| st.query_row(params![to_i64(seq), key], read_row).optional())
            .map_err(self.err("find operation"))
    }

    pub(super) fn entity_row(&mut self, key: &[u8]) -> Result<Option<EntityRow>> {
        if let Some((k, row)) = &self.entity {
            if k.as_slice() == key {
                return Ok(*row);
            }
        }
        let row = self.read_entity_row(key)?;
        self.remember_entity(key, row);
        Ok(row)
    }

    pub(super) fn read_entity_row(&self, key: &[u8]) -> Result<Option<EntityRow>> {
        self.conn
            .prepare_cached(SQL_ENTITY)
            .and_then(|mut st| {
                st.query_row(params![key], |r| {
                    Ok(EntityRow {
                        eid: r.get(0)?,
                        first: to_u64(r.get(1)?),
                        last: to_u64(r.get(2)?),
                    })
                })
                .optional()
            })
            .map_err(self.err("find entity"))
    }

    /// The link of operation `seq` (`Err` if it does not exist: the chain
    /// of its entity is broken).
    pub(super) fn next_of(&self, seq: u64) -> Result<Option<u64>> {
        let next: Option<Option<i64>> = self
            .conn
            .prepare_cached("SELECT nxt FROM ops WHERE seq = ?1")
            .and_then(|mut st| st.query_row(params![to_i64(seq)], |r| r.get(0)).optional())
            .map_err(self.err("follow entity chain"))?;
        match next {
            Some(n) => Ok(n.map(to_u64)),
            None => Err(broken_chain(seq)),
        }
    }

    pub(super) fn set_next(&self, seq: u64, next: Option<u64>) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE ops SET nxt = ?2 WHERE seq = ?1")
            .and_then(|mut st| st.execute(params![to_i64(seq), next.map(to_i64)]))
            .map(drop)
            .map_err(self.err("link operation"))
    }

    /// Takes operation `seq` (whose link is `next`) out of its entity's
    /// chain, deleting the entity row when it was the last operation.
    /// O(1) for the entity's oldest operation; a later one walks the chain
    /// from the oldest to find its predecessor.
    pub(super) fn unlink(
        &mut self,
        key: &[u8],
        eid: i64,
        seq: u64,
        next: Option<u64>,
    ) -> Result<()> {
        let path = self.path;
        let cached = match &self.entity {
            Some((k, Some(row))) if k.as_slice() == key && row.eid == eid => Some(*row),
            _ => None,
        };
        let row = match cached {
            Some(row) => row,
            None => {
                let ends: Option<(i64, i64)> = self
                    .conn
                    .prepare_cached("SELECT first, last FROM entities WHERE eid = ?1")
                    .and_then(|mut st| {
                        st.query_row(params![eid], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(|e| classify(path, "find entity", e))?;
                let Some((first, last)) = ends else {
                    return Err(broken_chain(seq));
                };
                EntityRow {
                    eid,
                    first: to_u64(first),
                    last: to_u64(last),
                }
            }
        };
        let err = |e| classify(path, "unlink operation", e);
        if row.first == seq {
            let after = match next {
                None => {
                    self.conn
                        .prepare_cached("DELETE FROM entities WHERE eid = ?1")
                        .and_then(|mut st| st.execute(params![eid]))
                        .map_err(err)?;
                    None
                }
                Some(n) => {
                    self.conn
                        .prepare_cached("UPDATE entities SET first = ?2 WHERE eid = ?1")
                        .and_then(|mut st| st.execute(params![eid, to_i64(n)]))
                        .map_err(err)?;
                    Some(EntityRow { first: n, ..row })
                }
            };
            self.remember_entity(key, after);
            return Ok(());
        }
        let mut prev = row.first;
        loop {
            match self.next_of(prev)? {
                Some(n) if n == seq => break,
                Some(n) if n < seq => prev = n,
                _ => return Err(broken_chain(seq)),
            }
        }
        self.set_next(prev, next)?;
        let mut last = row.last;
        if last == seq {
            self.conn
                .prepare_cached("UPDATE entities SET last = ?2 WHERE eid = ?1")
                .and_then(|mut st| st.execute(params![eid, to_i64(prev)]))
                .map_err(err)?;
            last = prev;
        }
        self.remember_entity(key, Some(EntityRow { last, ..row }));
        Ok(())
    }

    pub(super) fn write_hot(&self, m: &OpMeta) -> Result<()> {
        let err = self.err("update operation");
        if !needs_hot(m) {
            return self
                .conn
                .prepare_cached("DELETE FROM hot WHERE seq = ?1")
                .and_then(|mut st| st.execute(params![to_i64(m.seq)]))
                .map(drop)
                .map_err(err);
        }
        let row = hot_row(m);
        self.conn
            .prepare_cached(
                // An upsert, not INSERT OR REPLACE: a replace deletes and
                // re-inserts the row in every index, an update touches only
                // the indexes whose columns changed.
                "INSERT INTO hot (seq, state, wake_at, ready_at, attempts, \
                 last_error, dead_reason, hk, eff, aging, claimed) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (seq) DO UPDATE SET state = ?2, wake_at = ?3, ready_at = ?4, \
                 attempts = ?5, last_error = ?6, dead_reason = ?7, hk = ?8, eff = ?9, \
                 aging = ?10, claimed = ?11",
            )
            .and_then(|mut st| {
                st.execute(params![
                    to_i64(m.seq),
                    row.state,
                    row.wake_at,
                    to_i64(m.ready_at),
                    i64::from(m.attempts),
                    m.last_error,
                    row.dead_reason,
                    row.hk,
                    row.eff,
                    row.aging,
                    i64::from(m.claimed),
                ])
            })
            .map(drop)
            .map_err(err)
    }

    pub(super) fn blob(
        &self,
        sql: &str,
        seq: u64,
        context: &'static str,
    ) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| {
                st.query_row(params![to_i64(seq)], |r| r.get::<_, Option<Vec<u8>>>(0))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(self.err(context))
    }

    pub(super) fn quarantine_row(
        &self,
        key: &str,
        reason: &str,
        raw: &[u8],
        at: EpochMillis,
    ) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO quarantine (key, reason, raw, at) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut st| st.execute(params![key, reason, raw, to_i64(at)]))
            .map(drop)
            .map_err(self.err("quarantine"))
    }

    /// The sync state stored under `name` (`sync/<key>` in `meta`).
    pub(super) fn sync_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let raw: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT v FROM meta WHERE k = ?1")
            .and_then(|mut st| st.query_row([name], |r| r.get(0)).optional())
            .map_err(self.err("load sync state"))?;
        raw.map(|raw| {
            envelope::decode(
                RecordKind::Meta,
                &raw,
                crate::api::MAX_SYNC_STATE_BYTES as u32 + 16,
            )
            .map_err(|source| StorageError::Corrupt {
                key: format!("meta/{name}"),
                source,
            })
        })
        .transpose()
    }

    pub(super) fn clock_mark(&self) -> Result<Option<HlcTimestamp>> {
        let raw: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT v FROM meta WHERE k = 'clock_mark'")
            .and_then(|mut st| st.query_row([], |r| r.get(0)).optional())
            .map_err(self.err("load clock mark"))?;
        raw.map(|raw| {
            envelope::decode(RecordKind::Meta, &raw, 1024).map_err(|source| StorageError::Corrupt {
                key: "meta/clock_mark".into(),
                source,
            })
        })
        .transpose()
    }
}

/// The chain of an entity's operations does not hold together.
pub(super) fn broken_chain(seq: u64) -> StorageError {
    StorageError::Corrupt {
        key: rules::record_key(seq),
        source: cpc_core::EnvelopeError::Malformed("the entity's operation chain is broken".into()),
    }
}

impl Tx for SqlTx<'_> {
    fn meta_by_id(&mut self, id: OperationId) -> Result<Option<OpMeta>> {
        let found = self
            .conn
            .prepare_cached(SQL_BY_ID)
            .and_then(|mut st| {
                st.query_row(params![id.to_be_bytes().as_slice()], |r| {
                    let row = EntityRow {
                        eid: r.get(17)?,
                        first: to_u64(r.get(18)?),
                        last: to_u64(r.get(19)?),
                    };
                    Ok((read_meta(r)?, row))
                })
                .optional()
            })
            .map_err(self.err("find operation"))?;
        Ok(found.map(|(meta, row)| {
            self.remember_entity(&meta.entity, Some(row));
            meta
        }))
    }

    fn contains_id(&mut self, id: OperationId) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM ops WHERE id = ?1)")
            .and_then(|mut st| st.query_row(params![id.to_be_bytes().as_slice()], |r| r.get(0)))
            .map_err(self.err("find operation"))
    }

    fn has_head(&mut self, entity: &[u8], skip_dead: bool) -> Result<bool> {
        if skip_dead {
            return Ok(self.first_in_entity(entity, true)?.is_some());
        }
        // Every stored operation is in its entity's chain.
        Ok(self.entity_row(entity)?.is_some())
    }

    fn first_in_entity(&mut self, entity: &[u8], skip_dead: bool) -> Result<Option<OpMeta>> {
        let Some(row) = self.entity_row(entity)? else {
            return Ok(None);
        };
        let mut seq = row.first;
        loop {
            let Some(link) = self.link_in(entity, seq)? else {
                return Err(broken_chain(seq));
            };
            if !(skip_dead && matches!(link.meta.state, OpState::Dead { .. })) {
                return Ok(Some(link.meta));
            }
            match link.next {
                Some(n) if n > seq => seq = n,
                Some(_) => return Err(broken_chain(seq)),
                None => return Ok(None),
            }
        }
    }

    fn last_in_entity(&mut self, entity: &[u8]) -> Result<Option<OpMeta>> {
        let Some(row) = self.entity_row(entity)? else {
            return Ok(None);
        };
        match self.link_in(entity, row.last)? {
            Some(link) => Ok(Some(link.meta)),
            None => Err(broken_chain(row.last)),
        }
    }

    fn list_metas(&mut self, f: MetaFilter<'_>) -> Result<Vec<OpMeta>> {
        let limit = f.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        // seqs start at 1: 0 means no cursor.
        let after = f.after.map_or(0, to_i64);
        if f.deferred_only {
            return self.metas(
                concat!(
                    "SELECT ",
                    meta_cols!(),
                    from_hot!(),
                    "WHERE h.state >= 3 AND h.state = 4 AND h.seq > ?2 ORDER BY h.seq LIMIT ?1"
                ),
                params![limit, after],
                "list deferred",
            );
        }
        let dead = f.dead.map(i64::from);
        match (f.entity, f.dead) {
            (Some(entity), _) => {
                // Walk the entity's chain (seq order).
                let mut out = Vec::new();
                let Some(row) = self.entity_row(entity)? else {
                    return Ok(out);
                };
                let max = f.limit.unwrap_or(usize::MAX);
                let mut next = Some(row.first);
                while let Some(seq) = next {
                    if out.len() >= max {
                        break;
                    }
                    let Some(link) = self.link_in(entity, seq)? else {
                        return Err(broken_chain(seq));
                    };
                    next = match link.next {
                        Some(n) if n > seq => Some(n),
                        Some(_) => return Err(broken_chain(seq)),
                        None => None,
                    };
                    let is_dead = matches!(link.meta.state, OpState::Dead { .. });
                    if f.dead.is_none_or(|d| d == is_dead) && f.after.is_none_or(|a| seq > a) {
                        out.push(link.meta);
                    }
                }
                Ok(out)
            }
            (None, Some(true)) => self.metas(
                concat!(
                    "SELECT ",
                    meta_cols!(),
                    from_hot!(),
                    "WHERE h.state >= 3 AND h.state = 3 AND h.seq > ?2 ORDER BY h.seq LIMIT ?1"
                ),
                params![limit, after],
                "list",
            ),
            (None, _) => self.metas(
                concat!(
                    "SELECT ",
                    meta_cols!(),
                    from_ops!(),
                    "WHERE o.seq > ?3 AND (?1 IS NULL OR (COALESCE(h.state, 0) = 3) = ?1) \
                     ORDER BY o.seq LIMIT ?2"
                ),
                params![dead, limit, after],
                "list",
            ),
        }
    }

    fn insert(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        let body = compact::encode(op)?;
        let path = self.path;
        let err = |e| classify(path, "insert operation", e);
        let seq = to_i64(meta.seq);
        let row = match self.entity_row(&meta.entity)? {
            Some(row) => {
                if row.last >= meta.seq {
                    return Err(broken_chain(row.last));
                }
                self.set_next(row.last, Some(meta.seq))?;
                self.conn
                    .prepare_cached("UPDATE entities SET last = ?2 WHERE eid = ?1")
                    .and_then(|mut st| st.execute(params![row.eid, seq]))
                    .map_err(err)?;
                EntityRow {
                    last: meta.seq,
                    ..row
                }
            }
            None => EntityRow {
                eid: self
                    .conn
                    .prepare_cached("INSERT INTO entities (key, first, last) VALUES (?1, ?2, ?2)")
                    .and_then(|mut st| st.insert(params![meta.entity, seq]))
                    .map_err(err)?,
                first: meta.seq,
                last: meta.seq,
            },
        };
        self.remember_entity(&meta.entity, Some(row));
        self.write_op_row(meta, &body, row.eid, None)
    }

    fn insert_in_order(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        match self.entity_row(&meta.entity)? {
            Some(row) if row.last > meta.seq => {
                let body = compact::encode(op)?;
                let next = self.link_before(&meta.entity, row, meta.seq)?;
                self.write_op_row(meta, &body, row.eid, Some(next))
            }
            _ => self.insert(meta, op),
        }
    }

    fn journal_last(&mut self) -> Result<u64> {
        self.journal_last_n()
    }

    fn journal_put(&mut self, n: u64, at: EpochMillis, body: Vec<u8>) -> Result<()> {
        self.journal_insert(n, at, &body)
    }

    fn journal_scan(&mut self, after: u64, limit: usize, bodies: bool) -> Result<Vec<JournalRow>> {
        self.journal_rows(after, limit, bodies)
    }

    fn journal_remove_upto(&mut self, upto: u64) -> Result<()> {
        self.journal_delete_upto(upto)
    }

    fn update(&mut self, old: &OpMeta, new: &OpMeta) -> Result<()> {
        if old.payload_len != new.payload_len {
            self.conn
                .prepare_cached("UPDATE ops SET payload_len = ?2 WHERE seq = ?1")
                .and_then(|mut st| st.execute(params![to_i64(new.seq), to_i64(new.payload_len)]))
                .map_err(self.err("update operation"))?;
        }
        self.write_hot(new)
    }

    fn update_op(&mut self, meta: &OpMeta, op: &Operation) -> Result<()> {
        let body = compact::encode(op)?;
        self.conn
            .prepare_cached(
                "UPDATE ops SET body = ?2, payload_len = ?3, priority = ?4 WHERE seq = ?1",
            )
            .and_then(|mut st| {
                st.execute(params![
                    to_i64(meta.seq),
                    body,
                    to_i64(op.payload.len() as u64),
                    i64::from(op.priority.rank()),
                ])
            })
            .map(drop)
            .map_err(self.err("update operation"))
    }

    fn set_remote(&mut self, meta: &OpMeta, remote: Option<&RemoteRecord>) -> Result<()> {
        let blob = remote
            .map(|r| envelope::encode(RecordKind::Deferred, r))
            .transpose()
            .map_err(StorageError::Encode)?;
        self.conn
            .prepare_cached("UPDATE ops SET remote = ?2 WHERE seq = ?1")
            .and_then(|mut st| st.execute(params![to_i64(meta.seq), blob]))
            .map(drop)
            .map_err(self.err("store deferred remote"))
    }

    fn delete(&mut self, meta: &OpMeta) -> Result<()> {
        let path = self.path;
        let err = |e| classify(path, "delete operation", e);
        let gone: Option<(i64, Option<i64>)> = self
            .conn
            .prepare_cached("DELETE FROM ops WHERE seq = ?1 RETURNING eid, nxt")
            .and_then(|mut st| {
                st.query_row(params![to_i64(meta.seq)], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(&err)?;
        let Some((eid, next)) = gone else {
            return Ok(());
        };
        {
            self.conn
                .prepare_cached("DELETE FROM hot WHERE seq = ?1")
                .and_then(|mut st| st.execute(params![to_i64(meta.seq)]))
                .map_err(&err)?;
        }
        self.unlink(&meta.entity, eid, meta.seq, next.map(to_u64))
    }

    fn load_op(&mut self, meta: &OpMeta) -> Result<Loaded<Operation>> {
        let raw = match self.bodies.iter().position(|(seq, _)| *seq == meta.seq) {
            Some(pos) => self.bodies.swap_remove(pos).1,
            None => self.raw_op(meta)?,
        };
        Ok(compact::decode(raw, meta, self.body_limit))
    }

    fn load_remote(&mut self, meta: &OpMeta) -> Result<Option<Loaded<RemoteRecord>>> {
        Ok(self
            .blob(
                "SELECT remote FROM ops WHERE seq = ?1",
                meta.seq,
                "load deferred remote",
            )?
            .map(|raw| rules::decode_remote(raw, self.body_limit)))
    }

    fn raw_op(&mut self, meta: &OpMeta) -> Result<Vec<u8>> {
        let len: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT CASE typeof(body) WHEN 'blob' THEN length(body) END FROM ops WHERE seq = ?1",
            )
            .and_then(|mut st| {
                st.query_row(params![to_i64(meta.seq)], |r| r.get(0))
                    .optional()
            })
            .map(Option::flatten)
            .map_err(self.err("load operation"))?;
        match len.and_then(|n| usize::try_from(n).ok()) {
            // Read page by page into a buffer of its size: a plain SELECT
            // would have SQLite hold a whole copy of it first.
            Some(n) if n >= LARGE_BODY => {
                let mut body = vec![0u8; n];
                self.conn
                    .blob_open(
                        rusqlite::DatabaseName::Main,
                        "ops",
                        "body",
                        to_i64(meta.seq),
                        true,
                    )
                    .and_then(|blob| blob.read_at_exact(&mut body, 0))
                    .map_err(self.err("load operation"))?;
                Ok(body)
            }
            _ => Ok(self
                .blob(
                    "SELECT body FROM ops WHERE seq = ?1",
                    meta.seq,
                    "load operation",
                )?
                .unwrap_or_default()),
        }
    }

    fn purge_quarantine(&mut self) -> Result<u64> {
        self.conn
            .execute("DELETE FROM quarantine", [])
            .map(|n| n as u64)
            .map_err(|e| classify(self.path, "purge quarantined", e))
    }

    fn quarantine(
        &mut self,
        meta: &OpMeta,
        raw: Vec<u8>,
        reason: String,
        at: EpochMillis,
    ) -> Result<()> {
        self.quarantine_row(&rules::quarantine_key(meta), &reason, &raw, at)
    }

    fn due_heads(&mut self, limit: usize) -> Result<Vec<OpMeta>> {
        let rows: Vec<(OpMeta, Option<Vec<u8>>)> = self
            .conn
            .prepare_cached(SQL_DUE)
            .and_then(|mut st| {
                st.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                    Ok((read_meta(r)?, r.get(17)?))
                })?
                .collect()
            })
            .map_err(self.err("claim"))?;
        self.bodies.clear();
        let mut metas = Vec::with_capacity(rows.len());
        for (meta, body) in rows {
            if let Some(body) = body {
                self.bodies.push((meta.seq, body));
            }
            metas.push(meta);
        }
        Ok(metas)
    }

    fn timed_heads_upto(&mut self, now: EpochMillis, limit: usize) -> Result<Vec<OpMeta>> {
        self.metas(
            SQL_TIMED,
            params![to_i64(now), i64::try_from(limit).unwrap_or(i64::MAX)],
            "claim",
        )
    }

    fn aging_heads_upto(&mut self, cutoff: EpochMillis, limit: usize) -> Result<Vec<OpMeta>> {
        self.metas(
            SQL_AGING,
            params![to_i64(cutoff), i64::try_from(limit).unwrap_or(i64::MAX)],
            "claim",
        )
    }

    fn min_timed(&mut self) -> Result<Option<EpochMillis>> {
        self.conn
            .prepare_cached("SELECT MIN(wake_at) FROM hot WHERE hk = 1")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, Option<i64>>(0)))
            .map(|v| v.map(to_u64))
            .map_err(self.err("next wakeup"))
    }

    fn expired_leases(&mut self, now: EpochMillis) -> Result<Vec<OpMeta>> {
        self.metas(SQL_EXPIRED, params![to_i64(now)], "recover")
    }

    fn counters(&mut self) -> &mut Counters {
        self.counters
    }

    fn notices(&mut self) -> &mut Vec<QuarantineNotice> {
        &mut self.notices
    }
}
