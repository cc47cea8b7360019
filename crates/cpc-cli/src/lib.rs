//! The `cpc-sync` command line: see what is stuck in a device's queue, and
//! repair it, without writing code.
//!
//! Support staff get a queue directory from a field device. `status`,
//! `list`, `watch`, `verify` and `export` open it read-only (no lock,
//! nothing written; beside a running engine if there is one) and never
//! print a payload unless `--show-payload` asks. `revive`, `drop`,
//! `settle`, `requeue-acked` and `import` take the queue's lock, refuse
//! while an engine holds it (exit 3, naming the process), and ask for
//! `--yes` before destroying anything. SQLite queues (the engine's
//! default store) only.
//!
//! The binary is a thin `main` over [`run`], which tests and tools can
//! call with their own streams:
//!
//! ```
//! use cpc_core::{EntityKey, HybridClock, NodeId, Operation, OperationKind};
//! use cpc_storage::{QueueOptions, QueueStorageExt, SqliteStorage};
//!
//! let dir = tempfile::tempdir()?;
//! let queue = dir.path().join("queue");
//! {
//!     let store = SqliteStorage::open(&queue, QueueOptions::default())?;
//!     let hlc = HybridClock::new(NodeId(1));
//!     let op = Operation::builder(EntityKey::new("notes", "n1"), OperationKind::Update)
//!         .payload(b"hello".to_vec())
//!         .build(&hlc)?;
//!     store.enqueue(op, 1_000)?;
//! }
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! let args = ["cpc-sync", "status", queue.to_str().unwrap_or_default()];
//! let code = cpc_cli::run(args, &mut std::io::empty(), &mut out, &mut err, cpc_cli::Style::default());
//! assert_eq!(code, 0);
//! let text = String::from_utf8(out)?;
//! assert!(text.lines().any(|l| l.starts_with("ready") && l.ends_with(" 1")), "{text}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsString;
use std::io::{BufRead, Write};

use clap::{CommandFactory, Parser};

mod args;
mod lines;
mod open;
mod read;
mod render;
mod write;

pub use args::{Cli, Command};
pub use lines::Line;
pub use open::holder;
pub use render::Style;

/// Exit status: `verify` or `export` found damaged records.
pub const EXIT_DAMAGED: i32 = 1;
/// Exit status: bad input (not a queue, a newer format, a bad id or
/// import line, a missing `--yes`).
pub const EXIT_INPUT: i32 = 2;
/// Exit status: another process holds the queue.
pub const EXIT_LOCKED: i32 = 3;

/// Why a command stopped: its exit status and what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The exit status.
    pub code: i32,
    /// The message (no payload data).
    pub message: String,
}

pub(crate) fn io_failure(e: std::io::Error) -> Failure {
    Failure {
        code: EXIT_INPUT,
        message: format!("writing the output: {e}"),
    }
}

/// Runs the command line `args` (the program name first): reads `stdin`
/// (`import`), writes to `out` and `err`; answers the exit status.
pub fn run<I, T>(
    args: I,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    style: Style,
) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_INPUT } else { 0 };
            let text = if style.color {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let _ = if e.use_stderr() {
                write!(err, "{text}")
            } else {
                write!(out, "{text}")
            };
            return code;
        }
    };
    match dispatch(cli.command, stdin, out, err, &style) {
        Ok(code) => code,
        Err(f) => {
            let _ = writeln!(err, "cpc-sync: {}", f.message);
            f.code
        }
    }
}

fn dispatch(
    command: Command,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    style: &Style,
) -> Result<i32, Failure> {
    match command {
        Command::Status { dir, json } => read::status(&dir, json, out, style),
        Command::List {
            dir,
            state,
            entity,
            limit,
            json,
            show_payload,
        } => read::list(
            &dir,
            state,
            entity.as_deref(),
            limit,
            json,
            show_payload,
            out,
            style,
        ),
        Command::Watch {
            dir,
            interval_ms,
            count,
        } => read::watch(&dir, interval_ms, count, out, style),
        Command::Verify { dir } => read::verify(&dir, out, style),
        Command::Export { dir } => read::export(&dir, out, err),
        Command::Revive {
            dir,
            ids,
            all_dead,
            write,
        } => write::revive(&dir, &ids, all_dead, &write, out),
        Command::Drop {
            dir,
            ids,
            yes,
            write,
        } => write::drop_ops(&dir, &ids, yes, &write, out),
        Command::Settle {
            dir,
            id,
            keep,
            yes,
            write,
        } => write::settle(&dir, &id, keep, yes, &write, out),
        Command::RequeueAcked {
            dir,
            since,
            yes,
            write,
        } => write::requeue_acked(&dir, since, yes, &write, out),
        Command::Import {
            dir,
            max_payload,
            write,
        } => write::import(&dir, max_payload, &write, stdin, out),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cpc-sync", out);
            Ok(0)
        }
    }
}
