//! The error type of `cpc-fault`.

use std::path::PathBuf;

/// The format a scenario was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioFormat {
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
}

impl std::fmt::Display for ScenarioFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScenarioFormat::Toml => "toml",
            ScenarioFormat::Json => "json",
        })
    }
}

/// The parser error behind [`Error::Parse`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseSource {
    /// From the `toml` crate.
    #[error(transparent)]
    Toml(Box<toml::de::Error>),
    /// From `serde_json`.
    #[error(transparent)]
    Json(Box<serde_json::Error>),
}

/// Errors of the simulator: reading and validating scenarios, generating
/// workloads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A scenario file could not be parsed. `line`/`column` are 1-based and
    /// `field` names the offending key when the parser said which.
    #[error("invalid {format} scenario{}: {message}", location(*line, *column, field.as_deref()))]
    Parse {
        /// The format being read.
        format: ScenarioFormat,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column of the error, when known.
        column: Option<usize>,
        /// The offending field (dotted path or bare name), when known.
        field: Option<String>,
        /// The parser's message, one line.
        message: String,
        /// The parser's error.
        #[source]
        source: ParseSource,
    },
    /// A scenario parsed but one of its values is out of range or
    /// inconsistent with another.
    #[error("invalid scenario field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field (`faults.drop`, `schedule.windows[2]`).
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// As [`Error::Invalid`], in a scenario file, with where the field is.
    #[error(
        "invalid {format} scenario at line {line}, column {column} (field `{field}`): {reason}"
    )]
    InvalidAt {
        /// The format being read.
        format: ScenarioFormat,
        /// Dotted path of the field.
        field: String,
        /// Why it was refused.
        reason: String,
        /// 1-based line of the field.
        line: usize,
        /// 1-based column of the field.
        column: usize,
    },
    /// A scenario file could not be read.
    #[error("cannot read scenario file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A scenario could not be serialized (a value TOML cannot express).
    #[error("cannot serialize scenario: {0}")]
    Serialize(String),
    /// A device index beyond the scenario's device count.
    #[error("device {device} out of range: the scenario has {devices} devices")]
    NoSuchDevice {
        /// The requested device.
        device: u32,
        /// The scenario's device count.
        devices: u32,
    },
    /// A device task of the reference client ended without a result.
    #[error("reference client task of device {device} failed: {reason}")]
    Driver {
        /// The device.
        device: u32,
        /// What the runtime said.
        reason: String,
    },
    /// The operation model refused something (clock exhausted, invalid
    /// operation).
    #[error("operation model")]
    Core(#[from] cpc_core::Error),
}

impl Error {
    /// An [`Error::Invalid`]: `field` (its dotted path) is refused for
    /// `reason`. Public so that a crate reading scenarios of this world
    /// (`cpc-sim`) refuses its own fields in the same words.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn location(line: Option<usize>, column: Option<usize>, field: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!(" at line {line}"));
        if let Some(column) = column {
            out.push_str(&format!(", column {column}"));
        }
    }
    if let Some(field) = field {
        out.push_str(&format!(" (field `{field}`)"));
    }
    out
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
