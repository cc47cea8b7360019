//! The error type of `cpc-core`.

use std::time::Duration;

/// Errors produced by the operation model, the clock and the envelope codec.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A text form of an [`OperationId`](crate::OperationId) could not be parsed.
    #[error("invalid operation id {text:?}: {reason}")]
    InvalidId {
        /// The offending text (ids are not secrets).
        text: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A remote timestamp is further ahead of the local wall clock than allowed.
    #[error("remote timestamp {remote_ms} ms is {ahead:?} ahead of local wall clock, more than max drift {max_drift:?}")]
    ClockDrift {
        /// The remote wall-clock component in ms since the epoch.
        remote_ms: u64,
        /// How far ahead of the local wall clock it is.
        ahead: Duration,
        /// The configured limit.
        max_drift: Duration,
    },
    /// The clock reached the end of its range (wall time near `u64::MAX` ms).
    #[error("hybrid logical clock exhausted its range")]
    ClockExhausted,
    /// An operation payload is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Size of the refused payload.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A field of an operation is invalid (empty collection name, ...).
    #[error("invalid operation: {0}")]
    InvalidOperation(&'static str),
    /// An encoded envelope could not be decoded.
    #[error("envelope: {0}")]
    Envelope(#[from] EnvelopeError),
}

/// Why an encoded envelope was refused. Every variant is checked before any
/// allocation that depends on the input.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Fewer bytes than the fixed header.
    #[error("truncated header: {got} bytes, need {need}")]
    TruncatedHeader {
        /// Bytes present.
        got: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// The magic bytes do not match: not an envelope.
    #[error("bad magic bytes")]
    BadMagic,
    /// Written by a newer (or unknown) format version.
    #[error("unsupported format version {found} (this build reads up to {supported})")]
    UnsupportedVersion {
        /// Version found in the header.
        found: u8,
        /// Highest version this build reads.
        supported: u8,
    },
    /// The declared body length exceeds the configured maximum.
    #[error("declared body length {declared} exceeds limit {max}")]
    TooLarge {
        /// Declared length.
        declared: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The declared body length does not match the bytes present.
    #[error("declared body length {declared} but {present} bytes present")]
    LengthMismatch {
        /// Declared length.
        declared: u64,
        /// Bytes actually present after the header.
        present: u64,
    },
    /// The CRC32 of the body does not match the header.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the body.
        computed: u32,
    },
    /// The body passed the checks but is not a valid encoding of the type.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The value could not be encoded.
    #[error("encode failed: {0}")]
    Encode(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources on one line, `outer: inner: innermost`: how
/// every crate of cpc-sync puts an error into an event or a log line (error
/// texts carry ids and contexts, never payloads).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_each_source_outermost_first() {
        let e = Error::Envelope(EnvelopeError::Checksum {
            stored: 1,
            computed: 2,
        });
        let inner = EnvelopeError::Checksum {
            stored: 1,
            computed: 2,
        }
        .to_string();
        assert_eq!(error_chain(&e), format!("envelope: {inner}: {inner}"));
        // No source: the error's own text.
        let e = Error::InvalidOperation("empty collection name");
        assert_eq!(error_chain(&e), "invalid operation: empty collection name");
    }
}
