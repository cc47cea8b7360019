//! The server under test: where it is, how to authenticate, and how to
//! restart it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a restart function returns: `Err` says why the restart failed.
pub type RestartFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How the suite restarts the server for `durable-after-restart`. After
/// the hook returns, the suite waits (up to a minute) for `GET /v1/health`
/// to answer again, so the hook only has to return once the old process
/// stopped answering.
#[derive(Clone)]
pub enum RestartHook {
    /// A shell command, run with `sh -c` (`systemctl restart cpc-server`,
    /// `docker restart ...`); a non-zero exit fails the check.
    Command(String),
    /// A function, for servers the caller runs itself (in-process servers
    /// in tests).
    Function(Arc<dyn Fn() -> RestartFuture + Send + Sync>),
}

impl RestartHook {
    /// A hook calling `f`, e.g. one that shuts an in-process server down
    /// and starts it again on the same address and data.
    pub fn function<F, Fut>(f: F) -> RestartHook
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        RestartHook::Function(Arc::new(move || Box::pin(f()) as RestartFuture))
    }

    /// Runs the hook once.
    pub(crate) async fn restart(&self) -> Result<(), String> {
        match self {
            RestartHook::Command(cmd) => {
                let status = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .kill_on_drop(true)
                    .status()
                    .await
                    .map_err(|e| format!("cannot run `sh -c {cmd}`: {e}"))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("`{cmd}` exited with {status}"))
                }
            }
            RestartHook::Function(f) => f().await,
        }
    }
}

impl fmt::Debug for RestartHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartHook::Command(cmd) => f.debug_tuple("Command").field(cmd).finish(),
            RestartHook::Function(_) => f.write_str("Function(..)"),
        }
    }
}

/// A server of protocol v1 to check.
#[derive(Clone)]
pub struct Target {
    /// Its base URL, without `/v1` (`http://127.0.0.1:8080`).
    pub base_url: String,
    /// A bearer token the server accepts for `client_id`.
    pub token: String,
    /// The client id the suite pushes as (1 to 64 of `A-Z a-z 0-9 . _ -`).
    pub client_id: String,
    /// A valid token **not** bound to `client_id`, for `forbidden-client`
    /// (skipped without one).
    pub foreign_token: Option<String>,
    /// How to restart the server, for `durable-after-restart` (skipped
    /// without one).
    pub restart: Option<RestartHook>,
    /// Whether the suite is the server's only writer while it runs (the
    /// default). Only then can `seq-concurrent-pushes` tell a gap in the
    /// change log from another client's write: with `false` that check
    /// requires distinct seqs only.
    pub exclusive: bool,
}

impl Target {
    /// A target with no foreign token and no restart hook, written to by
    /// the suite alone.
    pub fn new(
        base_url: impl Into<String>,
        token: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Target {
        Target {
            base_url: base_url.into(),
            token: token.into(),
            client_id: client_id.into(),
            foreign_token: None,
            restart: None,
            exclusive: true,
        }
    }
}

impl fmt::Debug for Target {
    // Tokens are secrets: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .field("client_id", &self.client_id)
            .field(
                "foreign_token",
                &self.foreign_token.as_ref().map(|_| "[redacted]"),
            )
            .field("restart", &self.restart)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}
