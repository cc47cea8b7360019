//! The reference server in-process, correct or with faults, restartable
//! on its address and data.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cpc_conformance::{RestartHook, Target};
use cpc_server::{Faults, RateLimit, RunningServer, ServerConfig, Tokens};
use tokio::sync::Mutex;

pub const TOKEN: &str = "conformance-token";
pub const FOREIGN_TOKEN: &str = "foreign-token-0123456789";
pub const CLIENT: &str = "dev-conformance";

/// `TOKEN` for every `dev-*` client; `FOREIGN_TOKEN` valid, but for
/// other clients only.
pub fn tokens() -> Tokens {
    Tokens::parse(
        &format!(
            "[[token]]\nsecret = \"{TOKEN}\"\nclients = [\"dev-*\"]\n\
             [[token]]\nsecret = \"{FOREIGN_TOKEN}\"\nclients = [\"other-*\"]\n"
        ),
        "test",
    )
    .unwrap()
}

/// How a test server runs: the default limits; `fast` lifts the rate
/// limit (the default one is left where a test wants the suite to wait
/// out 429s).
pub fn config(dir: &Path, postgres: Option<&str>, faults: Faults, fast: bool) -> ServerConfig {
    let mut config = match postgres {
        None => ServerConfig::new(dir, tokens()),
        Some(url) => ServerConfig::with_postgres(cpc_server::PostgresConfig::new(url), tokens()),
    };
    config.faults = faults;
    if fast {
        config.rate = RateLimit {
            per_second: 10_000.0,
            burst: 10_000.0,
        };
    }
    config
}

/// A server that a [`RestartHook`] can stop and start again on the same
/// address and store (a data directory, or a PostgreSQL database).
pub struct Restartable {
    pub addr: SocketAddr,
    dir: PathBuf,
    postgres: Option<String>,
    faults: Faults,
    fast: bool,
    server: Mutex<Option<RunningServer>>,
}

impl Restartable {
    pub async fn start(dir: &Path, faults: Faults, fast: bool) -> Arc<Restartable> {
        Restartable::start_at(dir, None, faults, fast).await
    }

    /// The same on the PostgreSQL database `url`.
    pub async fn start_on_postgres(url: &str, faults: Faults, fast: bool) -> Arc<Restartable> {
        Restartable::start_at(Path::new(""), Some(url), faults, fast).await
    }

    async fn start_at(
        dir: &Path,
        postgres: Option<&str>,
        faults: Faults,
        fast: bool,
    ) -> Arc<Restartable> {
        let server = cpc_server::start(config(dir, postgres, faults, fast))
            .await
            .unwrap();
        Arc::new(Restartable {
            addr: server.addr(),
            dir: dir.to_owned(),
            postgres: postgres.map(str::to_owned),
            faults,
            fast,
            server: Mutex::new(Some(server)),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the server down gracefully and starts it again.
    pub async fn restart(&self) -> Result<(), String> {
        let mut slot = self.server.lock().await;
        if let Some(server) = slot.take() {
            server.shutdown().await.map_err(|e| e.to_string())?;
        }
        let mut config = config(&self.dir, self.postgres.as_deref(), self.faults, self.fast);
        config.listen = self.addr;
        *slot = Some(cpc_server::start(config).await.map_err(|e| e.to_string())?);
        Ok(())
    }

    pub async fn shutdown(&self) {
        if let Some(server) = self.server.lock().await.take() {
            server.shutdown().await.unwrap();
        }
    }

    /// A target with the foreign token and a restart hook on this server.
    pub fn target(self: &Arc<Self>) -> Target {
        let mut target = Target::new(self.base_url(), TOKEN, CLIENT);
        target.foreign_token = Some(FOREIGN_TOKEN.to_owned());
        let me = Arc::clone(self);
        target.restart = Some(RestartHook::function(move || {
            let me = Arc::clone(&me);
            async move { me.restart().await }
        }));
        target
    }
}
