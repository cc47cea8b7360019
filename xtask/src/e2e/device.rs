//! The child processes of an e2e run: `xtask e2e-serve` (a `cpc-server`)
//! and `xtask e2e-client` (one device: an engine on a SQLite queue with
//! `HttpTransport`, pushing what it submits and pulling everyone's changes
//! into a sink saved to a file, so that it survives a SIGKILL with the
//! cursor the engine persisted after it).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cpc_sync::core::{EntityKey, HeldEntity, MemorySink, RemoteSink, SinkError, SinkPage};

use super::fleet::{acked, io};
use super::TOKEN;
use crate::XtaskError;

/// Records per device.
const RECORDS: u64 = 25;
/// How long converging (pulling up to the head) may take at most.
const CONVERGE_LIMIT: Duration = Duration::from_secs(120);

/// `xtask e2e-serve`: a `cpc-server` on `listen` over `data`, its address
/// on stdout, until stdin closes.
pub fn serve(
    data: Option<PathBuf>,
    database: Option<String>,
    listen: SocketAddr,
    no_dedupe: bool,
) -> Result<(), XtaskError> {
    // Warnings and errors only, on stderr (a failed commit says why).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting a runtime"))?;
    runtime.block_on(async {
        let tokens = cpc_server::Tokens::single(TOKEN, &["dev-*"]);
        let mut config = match (data, database) {
            (Some(data), _) => cpc_server::ServerConfig::new(data, tokens),
            (None, Some(url)) => cpc_server::ServerConfig::with_postgres(
                cpc_server::PostgresConfig::new(url),
                tokens,
            ),
            (None, None) => {
                return Err(XtaskError::Usage("--data or CPC_DATABASE_URL".into()));
            }
        };
        config.listen = listen;
        config.rate = cpc_server::RateLimit {
            per_second: 1e6,
            burst: 1e6,
        };
        config.faults.no_dedupe = no_dedupe;
        let server = cpc_server::start(config)
            .await
            .map_err(|e| XtaskError::StepFailed(format!("cpc-server: {e}")))?;
        println!("{}", server.addr());
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        })
        .await;
        server
            .shutdown()
            .await
            .map_err(|e| XtaskError::StepFailed(format!("cpc-server: {e}")))
    })
}

/// The arguments of `xtask e2e-client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long)]
    url: String,
    /// Other instances of the same store, to fail over to.
    #[arg(long)]
    failover_url: Vec<String>,
    /// The device's name (its client id).
    #[arg(long)]
    name: String,
    /// Its queue directory.
    #[arg(long)]
    queue: PathBuf,
    /// Its acknowledgement log.
    #[arg(long)]
    log: PathBuf,
    /// Operations to submit in all.
    #[arg(long)]
    ops: u64,
    /// Pause between two submits, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// Allow plain http to a host that is not loopback (a test network
    /// namespace's address).
    #[arg(long)]
    allow_plain_http: bool,
    /// Push only: no sink, no convergence.
    #[arg(long)]
    no_pull: bool,
    /// A broken sink, for the convergence check's negative control: it
    /// drops every change to a record whose id starts with this.
    #[arg(long)]
    test_sink_ignores: Option<String>,
    /// Keep acknowledged operations for re-pushing after a restore of the
    /// server (`retain_acked`).
    #[arg(long)]
    retain_acked: bool,
}

/// `xtask e2e-client`: one device: submits `ops` operations (resuming
/// after the ones its log already holds), logs each acknowledged one,
/// waits until everything is pushed and says `drained`; then waits for
/// `converge` on stdin, pulls up to the head and says `state N DIGEST`
/// (its live entities, [`digest`]) and `retries N`.
pub fn client(args: ClientArgs) -> Result<(), XtaskError> {
    let ClientArgs {
        url,
        failover_url,
        name,
        queue,
        log,
        ops,
        pace_ms,
        allow_plain_http,
        no_pull,
        test_sink_ignores,
        retain_acked,
    } = args;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("starting a runtime"))?;
    runtime.block_on(async {
        let failed = |e: &dyn std::fmt::Display| XtaskError::StepFailed(format!("{name}: {e}"));
        let mut http = cpc_http::HttpConfig::new(url, name.clone());
        http.request_timeout = Duration::from_secs(2);
        http.allow_plain_http = allow_plain_http;
        http.failover_urls = failover_url;
        let transport =
            cpc_http::HttpTransport::new(http, Arc::new(cpc_http::StaticToken::new(TOKEN)))
                .map_err(|e| failed(&e))?;
        let mut sink = FileSink::open(queue.with_extension("state"))?;
        sink.ignores = test_sink_ignores;
        let sink = Arc::new(sink);
        let mut builder = cpc_sync::SyncEngine::builder();
        if !no_pull {
            builder = builder.remote_sink(Arc::clone(&sink) as Arc<dyn RemoteSink>);
        }
        if retain_acked {
            builder = builder.retain_acked(Some(cpc_sync::storage::RetainAcked::default()));
        }
        let engine = builder
            .path(queue)
            .transport(transport)
            .push_timeout(Duration::from_secs(3))
            .start()
            .await
            .map_err(|e| failed(&e))?;
        let retries = Arc::new(AtomicU64::new(0));
        let regressed = Arc::new(AtomicU64::new(0));
        let mut events = engine.subscribe();
        let counted = Arc::clone(&retries);
        let seen_regress = Arc::clone(&regressed);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(cpc_sync::worker::WorkerEvent::RetryScheduled { .. })
                    | Ok(cpc_sync::worker::WorkerEvent::BatchFailed { .. }) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    // The server went back in time (a restore).
                    Ok(cpc_sync::worker::WorkerEvent::RemoteRegressed { .. }) => {
                        seen_regress.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        });
        let already = acked(&log).len() as u64;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io("opening the acknowledgement log"))?;
        for i in already..ops {
            let record = format!("{name}-r{}", i % RECORDS);
            let id = engine
                .operation(
                    EntityKey::new("e2e", record.clone()),
                    cpc_sync::core::OperationKind::Update,
                )
                .payload(format!("{name} {i}"))
                .submit()
                .await
                .map_err(|e| failed(&e))?;
            // Written once `submit` returned: the operation is durably
            // queued; a kill before this line leaves it unlogged, never
            // logged and missing.
            writeln!(file, "{id} {record}").map_err(io("writing the acknowledgement log"))?;
            if pace_ms > 0 {
                tokio::time::sleep(Duration::from_millis(pace_ms)).await;
            }
        }
        tokio::time::timeout(Duration::from_secs(300), engine.drained())
            .await
            .map_err(|_| failed(&"did not drain in 300 s"))?
            .map_err(|e| failed(&e))?;
        println!("drained");
        if no_pull {
            engine.shutdown().await.map_err(|e| failed(&e))?;
            println!("regressed {}", regressed.load(Ordering::Relaxed));
            println!("retries {}", retries.load(Ordering::Relaxed));
            return Ok(());
        }
        // Every device drained: the head is final.
        let mut line = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line))
            .await
            .map_err(|e| failed(&e))?
            .map_err(io("waiting for converge"))?;
        converge(&engine)
            .await
            .map_err(|e| failed(&format!("did not converge: {e}")))?;
        let live = sink.inner.live();
        let listing = live.iter().filter_map(|(k, h)| {
            Some((
                k.collection.as_str(),
                k.id.as_str(),
                h.version,
                h.payload.as_deref()?,
            ))
        });
        println!("state {} {}", live.len(), digest(listing));
        engine.shutdown().await.map_err(|e| failed(&e))?;
        println!("regressed {}", regressed.load(Ordering::Relaxed));
        println!("retries {}", retries.load(Ordering::Relaxed));
        Ok(())
    })
}

/// Pulls pages until one says the remote has no more, retrying failures
/// (the faults go on), for [`CONVERGE_LIMIT`] at most.
async fn converge(engine: &cpc_sync::SyncEngine) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + CONVERGE_LIMIT;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match engine.pull_once().await {
            Ok(page) if !page.has_more => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(format!(
        "still behind after {} s ({last})",
        CONVERGE_LIMIT.as_secs()
    ))
}

/// The digest both sides of the convergence check compute: FNV-1a 64 over
/// the live entities' canonical listing, `collection TAB id TAB version
/// TAB base64(payload) NL`, in key order.
pub(crate) fn digest<'a>(live: impl Iterator<Item = (&'a str, &'a str, u64, &'a [u8])>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (collection, id, version, payload) in live {
        let line = format!(
            "{collection}\t{id}\t{version}\t{}\n",
            base64::engine::general_purpose::STANDARD.encode(payload)
        );
        for b in line.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// A [`MemorySink`] saved to a file after every page (written aside,
/// synced, renamed), so that what it holds is never behind the cursor the
/// engine persists once `apply` returned: an application's sink in a
/// dozen lines.
#[derive(Debug)]
struct FileSink {
    inner: MemorySink,
    path: PathBuf,
    /// The negative control's defect: changes to records whose id starts
    /// with this are dropped.
    ignores: Option<String>,
}

impl FileSink {
    /// The sink saved at `path`, or an empty one.
    fn open(path: PathBuf) -> Result<FileSink, XtaskError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(XtaskError::Io("reading a device's state", e)),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut held = BTreeMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let (Some(c), Some(i), Some(v), Some(p)) = (f.first(), f.get(1), f.get(2), f.get(3))
            else {
                return Err(XtaskError::StepFailed(format!("a bad state line {line:?}")));
            };
            let version = v
                .parse()
                .map_err(|_| XtaskError::StepFailed(format!("a bad version in {line:?}")))?;
            let payload = match *p {
                "-" => None,
                p => Some(
                    b64.decode(p)
                        .map_err(|_| XtaskError::StepFailed(format!("bad base64 in {line:?}")))?,
                ),
            };
            held.insert(EntityKey::new(*c, *i), HeldEntity { version, payload });
        }
        Ok(FileSink {
            inner: MemorySink::with_held(held),
            path,
            ignores: None,
        })
    }

    fn save(&self) -> std::io::Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut text = String::new();
        for (k, h) in self.inner.held() {
            let payload = h.payload.map_or_else(|| "-".to_owned(), |p| b64.encode(p));
            text.push_str(&format!(
                "{}\t{}\t{}\t{payload}\n",
                k.collection, k.id, h.version
            ));
        }
        let aside = self.path.with_extension("state.tmp");
        let mut file = std::fs::File::create(&aside)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&aside, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RemoteSink for FileSink {
    async fn apply(&self, page: &SinkPage) -> Result<(), SinkError> {
        match &self.ignores {
            None => self.inner.apply(page).await?,
            Some(prefix) => {
                let mut broken = page.clone();
                broken
                    .changes
                    .retain(|c| !c.change.entity.id.starts_with(prefix.as_str()));
                self.inner.apply(&broken).await?;
            }
        }
        self.save()
            .map_err(|e| SinkError(format!("saving the device's state: {e}")))
    }
}
