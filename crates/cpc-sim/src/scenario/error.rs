//! The error type of reading a scenario: parsing, validating, generating
//! its workloads and running the reference client.

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

/// The parser error behind [`ScenarioError::Parse`].
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

/// Errors of a scenario: reading and validating it, generating its
/// workloads, running the reference client over it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
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
    /// As [`ScenarioError::Invalid`], in a scenario file, with where the
    /// field is.
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
    Core(#[from] cpc_sync::core::Error),
    /// Another refusal of `cpc-fault`'s world, in its own words (its
    /// [`Invalid`](cpc_fault::Error::Invalid) becomes
    /// [`ScenarioError::Invalid`]).
    #[error(transparent)]
    World(cpc_fault::Error),
}

impl From<cpc_fault::Error> for ScenarioError {
    fn from(e: cpc_fault::Error) -> Self {
        match e {
            cpc_fault::Error::Invalid { field, reason } => ScenarioError::Invalid { field, reason },
            other => ScenarioError::World(other),
        }
    }
}

impl ScenarioError {
    /// A [`ScenarioError::Invalid`]: `field` (its dotted path) is refused
    /// for `reason`.
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ScenarioError::Invalid {
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

/// `Result` with [`ScenarioError`].
pub(crate) type Result<T, E = ScenarioError> = std::result::Result<T, E>;
