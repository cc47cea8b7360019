//! The engine's pull side: starting and stopping the pull loop, and the
//! calls an application makes about it (`pull_now`, `pull_once`,
//! `pulled_through`, the cursor). The loop itself is `cpc_worker::Puller`.

use std::sync::Arc;

use cpc_core::{PullCursor, RemotePosition};
use cpc_worker::{PageApplied, Puller};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::SyncEngine;
use crate::error::{Error, Result};

/// A running pull loop.
#[derive(Debug)]
pub(crate) struct PullTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SyncEngine {
    fn puller(&self) -> Result<&Arc<Puller>> {
        self.inner.puller.as_ref().ok_or(Error::NoRemoteSink)
    }

    /// Starts the pull loop if there is a sink and it is not running.
    pub(crate) fn start_pulling(&self) {
        let Some(puller) = &self.inner.puller else {
            return;
        };
        let mut slot = self
            .inner
            .pull_task
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|t| !t.task.is_finished()) {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(puller).run(stopped));
        *slot = Some(PullTask { stop, task });
    }

    /// Stops the pull loop and waits for it (a page being applied is
    /// abandoned before its cursor is persisted: it comes again).
    pub(crate) async fn stop_pulling(&self) {
        let running = self
            .inner
            .pull_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(running) = running {
            let _ = running.stop.send(true);
            let _ = running.task.await;
        }
    }

    /// Pulls now: cuts short whatever the pull loop waits for (the idle
    /// interval, a backoff). Errors without a sink.
    pub fn pull_now(&self) -> Result<()> {
        self.puller()?.pull_now();
        Ok(())
    }

    /// Pulls and applies one page now, without waiting for changes, beside
    /// the loop (for tests and manual syncs; prefer the loop). Errors
    /// without a sink, and with the page's failure.
    pub async fn pull_once(&self) -> Result<PageApplied> {
        Ok(self.puller()?.pull_page(std::time::Duration::ZERO).await?)
    }

    /// Resolves once every change up to the server's `seq` is in the sink
    /// (the persisted cursor is at or past it, outside a snapshot): for an
    /// application that pushed and wants to read its own write back, or
    /// waits for another device's. Errors without a sink.
    pub async fn pulled_through(&self, seq: u64) -> Result<()> {
        self.puller()?.pulled_through(seq).await;
        Ok(())
    }

    /// The pull cursor persisted (none before the first page).
    pub async fn pull_cursor(&self) -> Result<Option<PullCursor>> {
        Ok(self.puller()?.cursor().await?)
    }

    /// The highest server position this device has seen.
    pub async fn known_position(&self) -> Result<Option<RemotePosition>> {
        Ok(self.puller()?.known().await?)
    }
}
