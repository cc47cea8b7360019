//! The embedded store: SQLite in a locked data directory, written by one
//! thread with group commit (`writer.rs`), read for pulls on a pool of
//! read-only connections (`read.rs`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cpc_protocol::{Limits, OpId, OpOutcome, Position, PullRequest, WireOp};
use tokio::sync::{mpsc, oneshot, watch};

use super::page::PullPage;
use super::read::{self, Readers};
use super::schema::{self, DirLock};
use super::writer::{CompactJob, Job, PushJob, Writer};
use super::StoreError;

/// Rows one compaction step touches at most.
const COMPACT_STEP: u64 = 20_000;

/// Pushes queued for the writer at most; a push beyond waits for room.
const QUEUE: usize = 256;

/// The embedded store: a handle on the writer thread and the readers.
#[derive(Debug)]
pub(crate) struct Embedded {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Readers>,
    head: watch::Receiver<u64>,
    store_id: String,
    dir: std::path::PathBuf,
    /// Held until [`Embedded::close`]: a handler still finishing after
    /// shutdown keeps the `Arc` alive, and must not keep the directory
    /// from the next server (a restart on the same data).
    lock: Mutex<Option<DirLock>>,
}

impl Embedded {
    /// Opens (creating or migrating) the store in `dir` and starts its
    /// writer; a store created now gets `new_id` (checked by the caller).
    /// Refuses a directory another server holds.
    pub(crate) fn open(
        dir: &Path,
        limits: Limits,
        new_id: Option<&str>,
    ) -> Result<Embedded, StoreError> {
        let lock = schema::lock_dir(dir)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let conn = schema::open(dir, now, new_id)?;
        let (store_id, _, _) = schema::read_head(&conn)?;
        // Checked against the change log's last row: a store a crash or a
        // bug left inconsistent is refused here, not written on.
        let head = super::writer::stored_head(&conn)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (head_tx, head_rx) = watch::channel(head.seq);
        let writer = Writer {
            conn,
            head,
            store_id: store_id.clone(),
            limits,
            head_tx,
            head_stale: false,
        };
        let handle = std::thread::Builder::new()
            .name("cpc-server-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io("starting the writer thread", e))?;
        Ok(Embedded {
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            readers: Arc::new(Readers::new(dir)),
            head: head_rx,
            store_id,
            dir: dir.to_path_buf(),
            lock: Mutex::new(Some(lock)),
        })
    }

    pub(crate) fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Bytes of the data directory's files.
    pub(crate) fn size_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>, StoreError> {
        self.jobs
            .lock()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)
    }

    pub(crate) async fn push(
        &self,
        client_id: String,
        ops: Vec<WireOp>,
        known: Option<Position>,
        low_water: Option<OpId>,
        #[cfg(feature = "test-faults")] faults: crate::faults::Faults,
    ) -> Result<(Vec<OpOutcome>, Position), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender()?
            .send(Job::Push(PushJob {
                client_id,
                ops,
                known,
                low_water,
                reply,
                #[cfg(feature = "test-faults")]
                faults,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn pull(
        &self,
        request: PullRequest,
        skip_first: bool,
    ) -> Result<PullPage, StoreError> {
        let store_id = self.store_id.clone();
        self.readers
            .read(move |conn| read::read_page(conn, &store_id, &request, skip_first))
            .await
    }

    pub(crate) fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    /// Compacts in steps of [`COMPACT_STEP`] rows, between pushes.
    pub(crate) async fn compact(&self, before_ms: u64) -> Result<u64, StoreError> {
        loop {
            let (reply, answer) = oneshot::channel();
            self.sender()?
                .send(Job::Compact(CompactJob {
                    before_ms,
                    max_rows: COMPACT_STEP,
                    reply,
                }))
                .await
                .map_err(|_| StoreError::Closed)?;
            let (horizon, more) = answer.await.map_err(|_| StoreError::Closed)??;
            if !more {
                return Ok(horizon);
            }
        }
    }

    /// Stops the writer after the pushes already queued, and waits for it.
    pub(crate) fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        self.readers.close();
        // The writer is joined: nothing writes any more, so the next
        // server may take the directory.
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.close();
    }
}
