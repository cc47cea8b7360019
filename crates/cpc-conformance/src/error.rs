//! The suite's errors: what kept it from talking to the server at all.
//! A server that answers wrongly is not an error: it is a failed check.

/// Why the suite could not exchange with the server, or restart it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The base URL is not an `http://` or `https://` URL.
    #[error("the server URL {url:?} is not usable: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// A request got no answer (connection refused, reset, timeout).
    #[error("{what}: {detail}")]
    Request {
        /// The request, as `METHOD /path`.
        what: String,
        /// The transport's error and its causes.
        detail: String,
    },
    /// The server kept answering `429`/`503` past the suite's patience.
    #[error("{what}: still answered {status} after waiting {waited_ms} ms in total")]
    Busy {
        /// The request, as `METHOD /path`.
        what: String,
        /// The last status (429 or 503).
        status: u16,
        /// How long the suite waited, honouring the server's hints.
        waited_ms: u64,
    },
    /// The restart hook failed, or the server did not come back.
    #[error("restart: {0}")]
    Restart(String),
}

/// An error and its causes on one line: reqwest's own message leaves out
/// the cause that matters ("connection refused").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
