//! The PostgreSQL schema, its versioned migrations (run at start under an
//! advisory lock, so instances starting together take turns), and the
//! durability check.
//!
//! Tables are prefixed `cpc_`, so the store can share a database with an
//! application's own. Keys are compared byte for byte (`COLLATE "C"`),
//! as the embedded store and the protocol's snapshot ranges compare them:
//! a database's default collation (say `en_US`) would order keys
//! differently and a resumed snapshot would skip or repeat entities.

use tokio_postgres::GenericClient;

use super::super::schema::from_sql;
use super::super::StoreError;
use super::pg_err;

/// The schema this build writes; a newer database is refused.
pub(crate) const SCHEMA_VERSION: i32 = 2;

/// Version 2: compaction reclaims the change rows at or below the horizon,
/// keeping each `seq` and its fingerprint (for §8) in `cpc_history`.
const MIGRATE_V2: &str = r#"
CREATE TABLE cpc_history(seq BIGINT PRIMARY KEY, fp BIGINT NOT NULL);
"#;

/// The advisory lock key of the migrations ("cpc-sync" in ASCII).
const MIGRATION_LOCK: i64 = 0x6370_632d_7379_6e63;

const SCHEMA_V1: &str = r#"
CREATE TABLE cpc_meta(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  store_id TEXT NOT NULL,
  head_seq BIGINT NOT NULL,
  head_fp BIGINT NOT NULL,
  created_at_ms BIGINT NOT NULL,
  compacted_through BIGINT NOT NULL DEFAULT 0);
CREATE TABLE cpc_entities(
  collection TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL,
  version BIGINT NOT NULL,
  wall_ms BIGINT NOT NULL, logical BIGINT NOT NULL, node BIGINT NOT NULL,
  payload BYTEA,
  deleted BOOLEAN NOT NULL,
  last_seq BIGINT NOT NULL,
  PRIMARY KEY (collection, id));
CREATE TABLE cpc_changes(
  seq BIGINT PRIMARY KEY,
  fp BIGINT NOT NULL,
  collection TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL,
  version BIGINT NOT NULL,
  deleted BOOLEAN NOT NULL,
  kind TEXT NOT NULL,
  payload BYTEA,
  wall_ms BIGINT NOT NULL, logical BIGINT NOT NULL, node BIGINT NOT NULL,
  origin_client TEXT NOT NULL, origin_op TEXT NOT NULL,
  committed_at_ms BIGINT NOT NULL);
CREATE TABLE cpc_applied_ops(
  client_id TEXT NOT NULL, op_id TEXT NOT NULL,
  version BIGINT NOT NULL, seq BIGINT NOT NULL,
  content_hash BYTEA NOT NULL,
  PRIMARY KEY (client_id, op_id));
CREATE TABLE cpc_clients(
  client_id TEXT PRIMARY KEY,
  first_seen_ms BIGINT NOT NULL,
  last_seen_ms BIGINT NOT NULL);
"#;

/// Refuses a database whose commits are not durable when acknowledged
/// (`synchronous_commit = off`, unless allowed), or whose encoding is not
/// UTF-8 (keys would not order as the protocol says).
pub(crate) async fn check_durable(
    client: &impl GenericClient,
    allow_async_commit: bool,
) -> Result<(), StoreError> {
    let row = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .map_err(pg_err)?;
    let setting: String = row.try_get(0).map_err(pg_err)?;
    if setting == "off" && !allow_async_commit {
        return Err(StoreError::Unsafe(
            "synchronous_commit is off: the server would answer before commits are durable \
             and a database crash would lose acknowledged operations; turn it on (the \
             default), or pass --allow-async-commit to accept that"
                .into(),
        ));
    }
    // Keys are compared bytewise (`COLLATE "C"`), which is the protocol's
    // UTF-8 order only when the database stores UTF-8.
    let encoding: String = client
        .query_one("SHOW server_encoding", &[])
        .await
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    if encoding != "UTF8" {
        return Err(StoreError::Unsafe(format!(
            "the database's encoding is {encoding}, not UTF8: keys would not order as the \
             protocol says; create the database with ENCODING 'UTF8'"
        )));
    }
    if setting == "off" {
        tracing::warn!(target: "cpc_server", "synchronous_commit is off (allowed): a database crash can lose acknowledged operations");
    }
    Ok(())
}

/// Creates or migrates the schema, one transaction under the migration
/// lock; a store created now gets `new_id` (or a random one).
pub(crate) async fn migrate(
    client: &mut deadpool_postgres::Client,
    now_ms: u64,
    new_id: Option<&str>,
) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_err)?;
    // Released at commit or rollback.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cpc_schema(
           id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    )
    .await
    .map_err(pg_err)?;
    let version: i32 = tx
        .query_opt("SELECT version FROM cpc_schema WHERE id = 1", &[])
        .await
        .map_err(pg_err)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(pg_err)?
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::Schema(i64::from(version)));
    }
    if version < 1 {
        tx.batch_execute(SCHEMA_V1).await.map_err(pg_err)?;
        let id = new_id.map_or_else(|| format!("{:032x}", rand::random::<u128>()), str::to_owned);
        tx.execute(
            "INSERT INTO cpc_meta (id, store_id, head_seq, head_fp, created_at_ms)
             VALUES (1, $1, 0, 0, $2)",
            &[&id, &(now_ms as i64)],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "INSERT INTO cpc_schema (id, version) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET version = 1",
            &[],
        )
        .await
        .map_err(pg_err)?;
        tracing::info!(target: "cpc_server", "PostgreSQL schema created (version 1)");
    }
    if version < 2 {
        tx.batch_execute(MIGRATE_V2).await.map_err(pg_err)?;
        tx.execute(
            "INSERT INTO cpc_schema (id, version) VALUES (1, 2)
             ON CONFLICT (id) DO UPDATE SET version = 2",
            &[],
        )
        .await
        .map_err(pg_err)?;
        tracing::info!(target: "cpc_server", "PostgreSQL schema migrated to version 2");
    }
    tx.commit().await.map_err(pg_err)
}

/// The head as stored: `(store_id, seq, fp)`.
pub(crate) async fn read_head(
    client: &impl GenericClient,
) -> Result<(String, u64, u64), StoreError> {
    let row = client
        .query_opt(
            "SELECT store_id, head_seq, head_fp FROM cpc_meta WHERE id = 1",
            &[],
        )
        .await
        .map_err(pg_err)?
        .ok_or(StoreError::Corrupt("the meta row is missing"))?;
    let seq: i64 = row.try_get(1).map_err(pg_err)?;
    let fp: i64 = row.try_get(2).map_err(pg_err)?;
    Ok((row.try_get(0).map_err(pg_err)?, from_sql(seq)?, fp as u64))
}
