//! The SQLite side of the acked journal (`acked` table) and of putting a
//! journaled operation back in its entity's chain.

use super::*;
use crate::rules::JournalRow;

impl SqlTx<'_> {
    /// Writes operation `meta`'s rows (`ops`, and `hot` when it needs
    /// one), linked to `nxt` in entity `eid`'s chain.
    pub(super) fn write_op_row(
        &mut self,
        meta: &OpMeta,
        body: &[u8],
        eid: i64,
        nxt: Option<u64>,
    ) -> Result<()> {
        let path = self.path;
        let err = |e| classify(path, "insert operation", e);
        let seq = to_i64(meta.seq);
        self.conn
            .prepare_cached(
                "INSERT INTO ops (seq, eid, nxt, id, priority, enqueued_at, payload_len, \
                 remote, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)",
            )
            .and_then(|mut st| {
                // A large body is written into its row in place (below):
                // bound as a value, SQLite would first copy it whole into
                // a record of its own.
                let large = body.len() >= LARGE_BODY;
                let zero = rusqlite::blob::ZeroBlob(i32::try_from(body.len()).unwrap_or(i32::MAX));
                let value: &dyn rusqlite::ToSql = if large { &zero } else { &body };
                st.execute(params![
                    seq,
                    eid,
                    nxt.map(to_i64),
                    meta.id.to_be_bytes().as_slice(),
                    i64::from(meta.priority.rank()),
                    to_i64(meta.enqueued_at),
                    to_i64(meta.payload_len),
                    value,
                ])
            })
            .map_err(&err)?;
        if body.len() >= LARGE_BODY {
            let mut blob = self
                .conn
                .blob_open(rusqlite::DatabaseName::Main, "ops", "body", seq, false)
                .map_err(&err)?;
            blob.write_at(body, 0).map_err(&err)?;
        }
        if needs_hot(meta) {
            self.write_hot(meta)?;
        }
        Ok(())
    }

    /// Links `seq`, below `row.last`, into the entity's chain in seq
    /// order; answers the link the new operation's row takes (the seq
    /// after it). A chain walk from the oldest: entities are short.
    pub(super) fn link_before(&mut self, key: &[u8], row: EntityRow, seq: u64) -> Result<u64> {
        let path = self.path;
        if row.first > seq {
            self.conn
                .prepare_cached("UPDATE entities SET first = ?2 WHERE eid = ?1")
                .and_then(|mut st| st.execute(params![row.eid, to_i64(seq)]))
                .map_err(|e| classify(path, "link operation", e))?;
            self.remember_entity(key, Some(EntityRow { first: seq, ..row }));
            return Ok(row.first);
        }
        let mut prev = row.first;
        loop {
            match self.next_of(prev)? {
                Some(next) if next > seq => {
                    self.set_next(prev, Some(seq))?;
                    return Ok(next);
                }
                Some(next) if next > prev => prev = next,
                // `row.last > seq`, so the walk cannot end before passing
                // `seq`; anything else is a damaged chain.
                _ => return Err(broken_chain(prev)),
            }
        }
    }

    /// The newest journal entry's `n`; when the journal is empty, the last
    /// one it ever held (kept in `meta` when it was emptied), so an `n`
    /// is never reused and a listing cursor stays valid.
    pub(super) fn journal_last_n(&mut self) -> Result<u64> {
        self.conn
            .prepare_cached(
                "SELECT COALESCE((SELECT MAX(n) FROM acked), \
                 (SELECT CAST(v AS INTEGER) FROM meta WHERE k = 'acked_last'), 0)",
            )
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map(to_u64)
            .map_err(self.err("read acked journal"))
    }

    pub(super) fn journal_insert(&mut self, n: u64, at: EpochMillis, body: &[u8]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO acked (n, at, body) VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![to_i64(n), to_i64(at), body]))
            .map(drop)
            .map_err(self.err("write acked journal"))
    }

    pub(super) fn journal_rows(
        &mut self,
        after: u64,
        limit: usize,
        bodies: bool,
    ) -> Result<Vec<JournalRow>> {
        let sql = if bodies {
            "SELECT n, at, body FROM acked WHERE n > ?1 ORDER BY n LIMIT ?2"
        } else {
            "SELECT n, at, x'' FROM acked WHERE n > ?1 ORDER BY n LIMIT ?2"
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(sql)
            .and_then(|mut st| {
                st.query_map(params![to_i64(after), limit], |r| {
                    Ok(JournalRow {
                        n: to_u64(r.get(0)?),
                        at: to_u64(r.get(1)?),
                        body: r.get(2)?,
                    })
                })?
                .collect()
            })
            .map_err(self.err("read acked journal"))
    }

    pub(super) fn journal_delete_upto(&mut self, upto: u64) -> Result<()> {
        let last = self.journal_last_n()?;
        if upto >= last && last > 0 {
            // Emptied: remember where it was.
            self.conn
                .prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES ('acked_last', ?1)")
                .and_then(|mut st| st.execute(params![to_i64(last)]))
                .map_err(self.err("prune acked journal"))?;
        }
        self.conn
            .prepare_cached("DELETE FROM acked WHERE n <= ?1")
            .and_then(|mut st| st.execute(params![to_i64(upto)]))
            .map(drop)
            .map_err(self.err("prune acked journal"))
    }
}
