//! `cpc-conformance`: a black-box conformance suite for any server of the
//! cpc-sync HTTP protocol v1 (`docs/protocol.md`). It talks to a server
//! over HTTP only, as any client would, and checks what the protocol says
//! a server MUST do: health and info, `Cache-Control: no-store` on every
//! answer, problem answers, authentication, versions, strict request
//! validation, size limits, and the per-operation rules of a push
//! (replays, reused ids, conflicts with the full remote record, nothing
//! cached but `applied`, order within a batch, tombstones, `seq` gapless
//! in commit order, durability across a restart). Pull (§7, §8) is not
//! checked yet: no server serves it.
//!
//! Each check has a stable kebab-case name ([`CHECKS`]) and ends PASS,
//! FAIL or SKIP (it could not run: no foreign token, no restart hook; a
//! skip is not a pass). Every check uses fresh operation ids and entity
//! keys, so the suite runs again and again against the same server, and
//! it needs no access to the server beyond its URL and tokens. It
//! assumes it is the server's only writer while it runs
//! ([`Target::exclusive`]) to tell a gap in the change log from another
//! client's write. A rate-limited answer (`429`, `503`) is waited out as
//! its hint says, never counted against the server.
//!
//! The `cpc-conformance` command runs the suite from a shell and exits 1
//! when a check fails:
//!
//! ```text
//! cpc-conformance --server http://127.0.0.1:8080 --token T --client-id dev-1 \
//!     [--foreign-token T2] [--restart-cmd 'systemctl restart cpc-server'] [--only NAME]...
//! ```
//!
//! As a library, against the reference server started in-process:
//!
//! ```
//! use cpc_conformance::{run_selected, Target};
//! use cpc_server::{ServerConfig, Tokens};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let tokens = Tokens::single("s3cret", &["dev-*"]);
//! let server = cpc_server::start(ServerConfig::new(dir.path(), tokens)).await?;
//!
//! let target = Target::new(format!("http://{}", server.addr()), "s3cret", "dev-1");
//! let checks = ["health", "forbidden-client", "replay-already-applied"];
//! let report = run_selected(&target, &checks).await;
//! // Without a foreign token, `forbidden-client` cannot run: a skip, not a pass.
//! assert_eq!(
//!     report.to_string(),
//!     "PASS health\n\
//!      SKIP forbidden-client: no foreign token (--foreign-token)\n\
//!      PASS replay-already-applied\n\
//!      2 passed, 0 failed, 1 skipped"
//! );
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod checks;
mod error;
mod harness;
mod http;
mod raw;
mod report;
mod target;

use std::time::Duration;

pub use checks::CHECKS;
pub use error::Error;
pub use report::{CheckResult, Report};
pub use target::{RestartFuture, RestartHook, Target};

use harness::{Ctx, NotPassed};

/// The longest one check may take: a server that stops answering fails
/// the check instead of hanging the suite.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs every check against `target`, in the order of [`CHECKS`].
pub async fn run(target: &Target) -> Report {
    run_selected(target, CHECKS).await
}

/// Runs the checks named in `names` (in the order of [`CHECKS`]; a name
/// that is no check is reported failed).
pub async fn run_selected(target: &Target, names: &[&str]) -> Report {
    let mut report = Report::default();
    for unknown in names.iter().filter(|n| !CHECKS.contains(n)) {
        report.checks.push(CheckResult::fail(
            *unknown,
            "there is no check of that name",
        ));
    }
    let selected: Vec<&str> = CHECKS
        .iter()
        .copied()
        .filter(|c| names.contains(c))
        .collect();
    let http = match http::Http::new(&target.base_url) {
        Ok(http) => http,
        Err(e) => {
            let why = e.to_string();
            report
                .checks
                .extend(selected.iter().map(|name| CheckResult::fail(*name, &why)));
            return report;
        }
    };
    let cx = Ctx::new(target, http).await;
    for name in selected {
        let result = match tokio::time::timeout(CHECK_TIMEOUT, checks::dispatch(name, &cx)).await {
            Err(_) => Err(NotPassed::Failed(format!(
                "no verdict within {} s",
                CHECK_TIMEOUT.as_secs()
            ))),
            Ok(None) => Err(NotPassed::Failed("there is no check of that name".into())),
            Ok(Some(result)) => result,
        };
        report.checks.push(match result {
            Ok(()) => CheckResult::pass(name),
            Err(NotPassed::Failed(why)) => CheckResult::fail(name, why),
            Err(NotPassed::Skipped(why)) => CheckResult::skip(name, why),
        });
    }
    report
}
