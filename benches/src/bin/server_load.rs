//! Server load: many clients pushing batches to `cpc-server`, ops/s and
//! p50/p99 batch latency. Two modes.
//!
//! **The load tool** (`cargo xtask load`, which runs this in release):
//!
//! ```text
//! cargo xtask load --clients 200 --ops 100000 --server URL --token T
//! cargo xtask load --clients 16 --ops 50000 --database postgres://... --instances 2
//! ```
//! Against `--server URL` (repeatable: clients are spread over the URLs;
//! the token must be bound to `load-*`), or an in-process server on a
//! scratch store: the embedded one by default, PostgreSQL with `--database`
//! (an administrator URL: a scratch database is made and dropped), with
//! `--instances N` servers on it.
//!
//! **The bench figures** (no arguments; `cargo xtask bench` runs it):
//! embedded vs PostgreSQL at 16 and 200 clients; the PostgreSQL figure
//! against raw inserts of the same rows from 16 connections, no HTTP, no
//! JSON, no rules, written as the server writes them (one multi-row
//! statement per table under the counter row; target ≥ 0.5×); two instances vs one on one database.
//! PostgreSQL figures need `CPC_TEST_DATABASE_URL`; they are skipped,
//! saying so, without it.

use std::time::{Duration, Instant};

use cpc_protocol::{EntityKey, Hex64, Kind, OpId, Payload, PushRequest, Timestamp, WireOp};
use cpc_server::{PostgresConfig, RunningServer, ScratchDatabase, ServerConfig, Tokens};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const TOKEN: &str = "load-token";

/// What one load run does.
#[derive(Debug, Clone)]
struct Load {
    clients: usize,
    ops: usize,
    batch: usize,
    payload: usize,
}

/// What one load run measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    ops_per_s: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9.0} ops/s, batch p50 {:>6.1} ms, p99 {:>6.1} ms",
            self.ops_per_s,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )?;
        if self.failed > 0 {
            write!(f, ", {} batches failed", self.failed)?;
        }
        Ok(())
    }
}

fn batch(client: usize, n: usize, size: usize, payload: usize, run: u64) -> Vec<u8> {
    let ops: Vec<WireOp> = (0..size)
        .map(|i| WireOp {
            id: OpId(
                (u128::from(run) << 96)
                    | ((client as u128) << 64)
                    | ((n as u128) << 16)
                    | i as u128
                    | (1 << 120),
            ),
            entity: EntityKey {
                collection: "load".into(),
                id: format!("c{client}-e{i}"),
            },
            kind: Kind::Update,
            payload: Payload(vec![(i % 251) as u8; payload]),
            base_version: None,
            timestamp: Timestamp {
                wall_ms: 1_767_225_600_000 + n as u64,
                logical: i as u32,
                node: Hex64(client as u64 + 1),
            },
        })
        .collect();
    serde_json::to_vec(&PushRequest {
        protocol: 1,
        client_id: format!("load-{client}"),
        known: None,
        low_water: None,
        ops,
    })
    .unwrap_or_default()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `load.clients` clients, each pushing its share of `load.ops` in batches,
/// one after the other, to `bases[client % bases.len()]`.
async fn run_load(bases: &[String], token: &str, load: &Load) -> Res<Figures> {
    let run: u64 = rand::random::<u32>().into();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(load.clients)
        .build()?;
    let batches_per_client = load.ops.div_ceil(load.batch * load.clients).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..load.clients {
        let http = http.clone();
        let url = format!("{}/v1/push", bases[c % bases.len()]);
        let token = token.to_owned();
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(batches_per_client);
            let mut failed = 0usize;
            for n in 0..batches_per_client {
                let body = batch(c, n, load.batch, load.payload, run);
                let t = Instant::now();
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => failed += 1,
                }
                latencies.push(t.elapsed());
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = (batches_per_client * load.clients * load.batch) as f64;
    Ok(Figures {
        ops_per_s: ops / elapsed,
        p50: percentile(&mut latencies, 0.5),
        p99: percentile(&mut latencies, 0.99),
        failed,
    })
}

/// A server in this process on `config`'s store, unlimited rate.
async fn server(mut config: ServerConfig) -> Res<RunningServer> {
    config.rate = cpc_server::RateLimit {
        per_second: 1e9,
        burst: 1e9,
    };
    config.max_concurrent_pushes = 1024;
    Ok(cpc_server::start(config).await?)
}

fn tokens() -> Tokens {
    Tokens::single(TOKEN, &["load-*"])
}

/// `n` in-process servers on one PostgreSQL database.
async fn pg_servers(url: &str, n: usize) -> Res<Vec<RunningServer>> {
    let mut servers = Vec::new();
    for _ in 0..n {
        let mut pg = PostgresConfig::new(url);
        pg.pool_size = 32;
        servers.push(server(ServerConfig::with_postgres(pg, tokens())).await?);
    }
    Ok(servers)
}

fn bases(servers: &[RunningServer]) -> Vec<String> {
    servers
        .iter()
        .map(|s| format!("http://{}", s.addr()))
        .collect()
}

async fn shutdown(servers: Vec<RunningServer>) -> Res<()> {
    for s in servers {
        s.shutdown().await?;
    }
    Ok(())
}

/// Load on a fresh embedded store.
async fn embedded(load: &Load) -> Res<Figures> {
    let dir = tempfile::tempdir()?;
    let s = server(ServerConfig::new(dir.path(), tokens())).await?;
    let figures = run_load(&bases(std::slice::from_ref(&s)), TOKEN, load).await?;
    s.shutdown().await?;
    Ok(figures)
}

/// Load on a fresh PostgreSQL database behind `instances` servers.
async fn postgres(admin: &str, instances: usize, load: &Load) -> Res<Figures> {
    let db = ScratchDatabase::create(admin).await?;
    let servers = pg_servers(db.url(), instances).await?;
    let figures = run_load(&bases(&servers), TOKEN, load).await?;
    shutdown(servers).await?;
    Ok(figures)
}

/// The baseline: the rows a push writes, inserted straight by `connections`
/// connections, one transaction per batch taking the counter row first, as
/// the server does; no HTTP, no JSON, no rules.
async fn raw_inserts(admin: &str, connections: usize, load: &Load) -> Res<Figures> {
    let db = ScratchDatabase::create(admin).await?;
    // The schema, as the server makes it.
    let schema = cpc_server::Store::connect(
        &PostgresConfig::new(db.url()),
        cpc_protocol::Limits::default(),
        None,
    )
    .await?;
    schema.close();
    let batches_per_conn = load.ops.div_ceil(load.batch * connections).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let url = db.url().to_owned();
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let (mut client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            // Prepared once per connection, as the server's pool does.
            let entities = client
                .prepare(
                    "INSERT INTO cpc_entities (collection, id, version, wall_ms, logical, node,
                           payload, deleted, last_seq)
                         SELECT 'load', k.id, 1, 0, 0, 0, k.payload, false, k.seq
                         FROM UNNEST($1::text[], $2::bytea[], $3::bigint[]) AS k(id, payload, seq)
                         ON CONFLICT (collection, id) DO UPDATE SET
                           version = cpc_entities.version + 1, payload = excluded.payload,
                           last_seq = excluded.last_seq",
                )
                .await?;
            let changes = client
                .prepare(
                    "INSERT INTO cpc_changes (seq, fp, collection, id, version, deleted, kind,
                           payload, wall_ms, logical, node, origin_client, origin_op, committed_at_ms)
                         SELECT k.seq, 0, 'load', k.id, 1, false, 'update', k.payload, 0, 0, 0,
                           'raw', k.op, 0
                         FROM UNNEST($1::bigint[], $2::text[], $3::bytea[], $4::text[])
                           AS k(seq, id, payload, op)",
                )
                .await?;
            let applied = client
                .prepare(
                    "INSERT INTO cpc_applied_ops (client_id, op_id, version, seq, content_hash)
                         SELECT 'raw', k.op, 1, k.seq, '\\x00'
                         FROM UNNEST($1::text[], $2::bigint[]) AS k(op, seq)
                         ON CONFLICT DO NOTHING",
                )
                .await?;
            let mut latencies = Vec::new();
            let payload = vec![7u8; load.payload];
            for n in 0..batches_per_conn {
                let t = Instant::now();
                let tx = client.transaction().await?;
                let row = tx
                    .query_one(
                        "SELECT head_seq FROM cpc_meta WHERE id = 1 FOR UPDATE",
                        &[],
                    )
                    .await?;
                let first: i64 = row.get(0);
                let seqs: Vec<i64> = (1..=load.batch as i64).map(|k| first + k).collect();
                let seq = first + load.batch as i64;
                let ids: Vec<String> = (0..load.batch).map(|i| format!("c{c}-e{i}")).collect();
                let ops: Vec<String> = (0..load.batch).map(|i| format!("{c}-{n}-{i}")).collect();
                let payloads: Vec<&[u8]> = vec![payload.as_slice(); load.batch];
                // The same rows the server writes, the way it writes them:
                // one multi-row statement per table, prepared once.
                                tx.execute(&entities, &[&ids, &payloads, &seqs]).await?;
                                tx.execute(&changes, &[&seqs, &ids, &payloads, &ops]).await?;
                                tx.execute(&applied, &[&ops, &seqs]).await?;
                tx.execute("UPDATE cpc_meta SET head_seq = $1 WHERE id = 1", &[&seq])
                    .await?;
                tx.commit().await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, tokio_postgres::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = (batches_per_conn * connections * load.batch) as f64;
    Ok(Figures {
        ops_per_s: ops / elapsed,
        p50: percentile(&mut latencies, 0.5),
        p99: percentile(&mut latencies, 0.99),
        failed: 0,
    })
}

/// The bench figures (no arguments).
async fn figures() -> Res<()> {
    let at = |clients: usize| Load {
        clients,
        ops: 40_000,
        batch: 64,
        payload: 256,
    };
    println!("server load, batches of 64 x 256 B, about 40,000 ops per figure:");
    let e16 = embedded(&at(16)).await?;
    let e200 = embedded(&at(200)).await?;
    println!("  embedded,   16 clients: {e16}");
    println!("  embedded,  200 clients: {e200}");
    let Ok(admin) = std::env::var("CPC_TEST_DATABASE_URL") else {
        println!("  PostgreSQL: skipped, CPC_TEST_DATABASE_URL is not set (see CONTRIBUTING.md)");
        return Ok(());
    };
    let p16 = postgres(&admin, 1, &at(16)).await?;
    let p200 = postgres(&admin, 1, &at(200)).await?;
    let raw = raw_inserts(&admin, 16, &at(16)).await?;
    let two = postgres(&admin, 2, &at(16)).await?;
    println!("  PostgreSQL, 16 clients: {p16}");
    println!("  PostgreSQL,200 clients: {p200}");
    println!("  raw inserts of the same rows, 16 connections (baseline): {raw}");
    println!(
        "  ratio: PostgreSQL 16 clients / raw inserts = {:.2}x (target >= 0.5x)",
        p16.ops_per_s / raw.ops_per_s
    );
    println!("  two instances, 16 clients: {two}");
    println!(
        "  ratio: two instances / one = {:.2}x (every push takes the counter row: one database, one commit order)",
        two.ops_per_s / p16.ops_per_s
    );
    Ok(())
}

/// The load tool's arguments.
struct Args {
    load: Load,
    servers: Vec<String>,
    token: String,
    database: Option<String>,
    instances: usize,
}

fn parse(args: &[String]) -> Res<Args> {
    let mut load = Load {
        clients: 16,
        ops: 50_000,
        batch: 64,
        payload: 256,
    };
    let (mut servers, mut token, mut database, mut instances) =
        (Vec::new(), TOKEN.to_owned(), None, 1usize);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => load.clients = value()?.parse()?,
            "--ops" => load.ops = value()?.parse()?,
            "--batch" => load.batch = value()?.parse()?,
            "--payload" => load.payload = value()?.parse()?,
            "--server" => servers.push(value()?),
            "--token" => token = value()?,
            "--database" => database = Some(value()?),
            "--instances" => instances = value()?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if load.clients == 0 || load.batch == 0 || load.ops == 0 || instances == 0 {
        return Err("--clients, --ops, --batch and --instances must be above 0".into());
    }
    Ok(Args {
        load,
        servers,
        token,
        database,
        instances,
    })
}

async fn tool(args: &[String]) -> Res<()> {
    let Args {
        load,
        servers,
        token,
        database,
        instances,
    } = parse(args)?;
    let figures = match (servers.is_empty(), database) {
        (false, _) => run_load(&servers, &token, &load).await?,
        (true, Some(admin)) => postgres(&admin, instances, &load).await?,
        (true, None) => embedded(&load).await?,
    };
    println!(
        "load: clients {}, ops {}, batches of {} x {} B: {figures}",
        load.clients, load.ops, load.batch, load.payload
    );
    if figures.failed > 0 {
        return Err(format!("{} batches failed", figures.failed).into());
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.is_empty() {
        rt.block_on(figures())
    } else {
        rt.block_on(tool(&args))
    }
}
