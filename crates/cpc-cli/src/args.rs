//! The command line's grammar (clap derive): every subcommand, its
//! arguments, and an example in its `--help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// See what is stuck in a cpc-sync queue, and repair it.
///
/// Reading commands open the queue read-only and work beside a running
/// engine. Writing commands refuse while another process holds the queue
/// (exit 3), and ask for --yes before destroying anything.
#[derive(Debug, Parser)]
#[command(name = "cpc-sync", version, about, long_about = None)]
#[command(
    after_help = "Exit status: 0 ok, 1 verify or export found damaged records, \
2 bad input (not a queue, a bad id, a bad import line), 3 the queue is in use.\n\
Colours only on a terminal, never with NO_COLOR set."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Counts by state and priority, the oldest pending operation, sizes,
    /// format, pull cursor, known server position, acked journal, regressions.
    #[command(
        after_help = "Example:\n  cpc-sync status ./queue\n  cpc-sync status ./queue --json"
    )]
    Status {
        /// The queue directory.
        dir: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One line per operation: id, entity, kind, priority, attempts, next
    /// attempt, last error, payload size.
    #[command(after_help = "Example:\n  cpc-sync list ./queue --state dead\n  \
cpc-sync list ./queue --entity notes/n1 --limit 20 --json")]
    List {
        /// The queue directory.
        dir: PathBuf,
        /// Only operations in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        /// Only this entity, as COLLECTION/ID.
        #[arg(long, value_name = "COLLECTION/ID")]
        entity: Option<String>,
        /// At most this many lines.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Print payloads too (UTF-8, or hex): off by default, so that
        /// support logs do not carry user data.
        #[arg(long)]
        show_payload: bool,
    },
    /// A live view of the counts, refreshed like `top`, beside a running
    /// engine (read-only: it never blocks it). Ctrl-C stops it.
    #[command(after_help = "Example:\n  cpc-sync watch ./queue --interval-ms 500")]
    Watch {
        /// The queue directory.
        dir: PathBuf,
        /// Time between refreshes.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
        interval_ms: u64,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Decodes every record; names the damaged and quarantined ones.
    /// Exit 1 if any.
    #[command(after_help = "Example:\n  cpc-sync verify ./queue")]
    Verify {
        /// The queue directory.
        dir: PathBuf,
    },
    /// Brings dead (or deferred) operations back as ready, attempts reset.
    #[command(
        after_help = "Example:\n  cpc-sync revive ./queue 01J9Z3K4M5N6P7Q8R9S0T1V2W3\n  \
cpc-sync revive ./queue --all-dead"
    )]
    Revive {
        /// The queue directory.
        dir: PathBuf,
        /// The operations.
        #[arg(required_unless_present = "all_dead")]
        ids: Vec<String>,
        /// Every dead operation.
        #[arg(long, conflicts_with = "ids")]
        all_dead: bool,
        /// The application's queue options.
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Removes operations for good (they are never sent). Needs --yes.
    #[command(after_help = "Example:\n  cpc-sync drop ./queue 01J9Z3K4M5N6P7Q8R9S0T1V2W3 --yes")]
    Drop {
        /// The queue directory.
        dir: PathBuf,
        /// The operations.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Yes, destroy them.
        #[arg(long)]
        yes: bool,
        /// The application's queue options.
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Settles a deferred conflict: keep the local change (sent again on
    /// top of the remote's version) or the remote's (the local one is
    /// dropped).
    #[command(
        after_help = "Example:\n  cpc-sync settle ./queue 01J9Z3K4M5N6P7Q8R9S0T1V2W3 --keep local"
    )]
    Settle {
        /// The queue directory.
        dir: PathBuf,
        /// The deferred operation.
        id: String,
        /// Which side wins.
        #[arg(long, value_enum)]
        keep: Keep,
        /// Yes, drop the local change (needed with `--keep remote`).
        #[arg(long)]
        yes: bool,
        /// The application's queue options.
        #[command(flatten)]
        write: WriteArgs,
    },
    /// The manual repair after a server restore: puts the acknowledged
    /// operations the queue retained back in the queue (same ids; the
    /// server answers already_applied for those it still has); counts as
    /// lost the ones only known by id that were applied above SEQ. Needs --yes.
    #[command(after_help = "Example:\n  cpc-sync requeue-acked ./queue --since 1200 --yes")]
    RequeueAcked {
        /// The queue directory.
        dir: PathBuf,
        /// The restored server's head seq.
        #[arg(long)]
        since: u64,
        /// Yes, empty the acked journal into the queue.
        #[arg(long)]
        yes: bool,
        /// The application's queue options.
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Writes every stored operation as JSON lines (to move pending work
    /// between devices or versions); damaged ones are named on stderr.
    #[command(after_help = "Example:\n  cpc-sync export ./queue > ops.jsonl")]
    Export {
        /// The queue directory.
        dir: PathBuf,
    },
    /// Reads JSON lines (as `export` writes them) from stdin and queues
    /// them, ready. Every line is checked first: nothing is written unless
    /// all are valid; the first bad line is named by number.
    #[command(after_help = "Example:\n  cpc-sync import ./queue < ops.jsonl")]
    Import {
        /// The queue directory (created if it does not exist).
        dir: PathBuf,
        /// The app's payload limit (`QueueOptions::max_payload`): a larger
        /// payload is refused here rather than quarantined by the app.
        #[arg(long, default_value_t = cpc_core::DEFAULT_MAX_PAYLOAD)]
        max_payload: usize,
        /// The application's queue options.
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Prints a completion script for SHELL.
    #[command(
        after_help = "Example:\n  cpc-sync completions bash > /etc/bash_completion.d/cpc-sync"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// What a write command needs to know of the application's queue options.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteArgs {
    /// The application's dead-head policy (it decides which operation of
    /// an entity is claimable next): block (the default) or skip.
    #[arg(long, value_enum, default_value_t = DeadHead::Block)]
    pub dead_head: DeadHead,
}

/// `--dead-head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeadHead {
    /// A dead operation blocks its entity.
    Block,
    /// The entity's next operation proceeds.
    Skip,
}

/// `--keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Keep {
    /// The local change wins.
    Local,
    /// The remote's record wins.
    Remote,
}

/// `list --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Claimable, or waiting behind its entity's head.
    Ready,
    /// Claimed, lease not ended.
    #[value(alias = "in-flight")]
    InFlight,
    /// Waiting for a retry.
    Waiting,
    /// Dead letters (quarantined ones included).
    Dead,
    /// Deferred conflicts.
    Deferred,
    /// Dead letters whose record is damaged.
    Quarantined,
}
