//! The process's file descriptor limit: every connection costs one, and the
//! common soft limit of 1,024 is far below what a server needs (with it,
//! about a thousand half-open connections made `accept` fail with `EMFILE`
//! and the health check stop answering).
//!
//! [`raise_fd_limit`] is for the binary, not for [`crate::start`]: a limit
//! is the whole process's, and a program that embeds the server (or runs
//! several, as the tests do) decides about it itself. Whatever the limit,
//! `start` keeps its connection cap below it ([`connection_cap`]).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use crate::ServerError;

/// The soft limit of open files before and after [`raise_fd_limit`], and
/// the hard one (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found.
    pub before: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit: the most an unprivileged process may raise its soft
    /// limit to.
    pub hard: Option<u64>,
}

/// What a soft limit is raised to when the hard one is unlimited and the
/// system refuses "unlimited" (macOS caps open files per process at
/// `OPEN_MAX`, 10,240).
const UNLIMITED_FALLBACK: u64 = 10_240;

/// Raises the soft limit of open files to the hard one, and logs both at
/// INFO. Unprivileged: any process may raise its soft limit up to its hard
/// limit. The binary calls it at start; a library user decides for its own
/// process.
pub fn raise_fd_limit() -> Result<FdLimit, ServerError> {
    let found = getrlimit(Resource::Nofile);
    if found.current != found.maximum {
        let raised = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: found.maximum,
                maximum: found.maximum,
            },
        );
        match raised {
            Ok(()) => {}
            Err(_) if found.maximum.is_none() && found.current < Some(UNLIMITED_FALLBACK) => {
                setrlimit(
                    Resource::Nofile,
                    Rlimit {
                        current: Some(UNLIMITED_FALLBACK),
                        maximum: None,
                    },
                )
                .map_err(|e| ServerError::Io("raising the open files limit", e.into()))?;
            }
            Err(e) => {
                return Err(ServerError::Io("raising the open files limit", e.into()));
            }
        }
    }
    let now = getrlimit(Resource::Nofile);
    let limit = FdLimit {
        before: found.current,
        soft: now.current,
        hard: now.maximum,
    };
    tracing::info!(
        target: "cpc_server",
        before = %shown(limit.before),
        soft = %shown(limit.soft),
        hard = %shown(limit.hard),
        "open files limit"
    );
    Ok(limit)
}

/// Descriptors kept for everything but client connections: the listener,
/// the store (SQLite's files and its reader connections, or the PostgreSQL
/// pool and its listener), the tokens file and logs, and room for a
/// connection accepted over the cap only to be answered `503`.
const FD_RESERVE: u64 = 256;

/// The connection cap to use: `max_connections`, lowered (with a warning)
/// to stay below the current soft limit of open files, so that the cap and
/// not `EMFILE` is what a flood meets.
pub(crate) fn connection_cap(max_connections: usize) -> usize {
    let soft = getrlimit(Resource::Nofile).current;
    let room = soft.map_or(usize::MAX, |soft| {
        let room = if soft > 2 * FD_RESERVE {
            soft - FD_RESERVE
        } else {
            soft / 2
        };
        usize::try_from(room.max(1)).unwrap_or(usize::MAX)
    });
    if max_connections > room {
        tracing::warn!(
            target: "cpc_server",
            max_connections,
            lowered_to = room,
            open_files_limit = %shown(soft),
            "max_connections lowered below the open files limit (raise it: ulimit -n, or LimitNOFILE= under systemd)"
        );
        return room;
    }
    tracing::info!(target: "cpc_server", max_connections, open_files_limit = %shown(soft), "connection cap");
    max_connections
}

fn shown(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let found = getrlimit(Resource::Nofile);
        // Lower the soft limit a little first (allowed unprivileged), so
        // the raise has something to do; a little only, because the other
        // tests of this binary run in the same process.
        let lowered = found
            .maximum
            .and_then(|h| h.checked_sub(16))
            .filter(|&l| l >= 512);
        if let Some(lowered) = lowered {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(lowered),
                    maximum: found.maximum,
                },
            )
            .unwrap();
        }
        let limit = raise_fd_limit().unwrap();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(
            now.current, now.maximum,
            "soft limit raised to the hard one"
        );
        assert_eq!(limit.soft, now.current);
        assert_eq!(limit.hard, now.maximum);
        if lowered.is_some() {
            assert_eq!(limit.before, lowered);
        }
        // A second call finds nothing to do.
        let again = raise_fd_limit().unwrap();
        assert_eq!(again.before, again.soft);
    }

    #[test]
    fn the_connection_cap_stays_below_the_open_files_limit() {
        let soft = getrlimit(Resource::Nofile).current;
        assert_eq!(connection_cap(10), 10);
        if let Some(soft) = soft {
            let cap = connection_cap(usize::MAX) as u64;
            assert!(cap < soft, "cap {cap} with {soft} open files allowed");
            assert!(cap >= soft / 2);
        }
    }
}
