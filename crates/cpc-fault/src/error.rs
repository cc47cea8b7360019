//! The error type of `cpc-fault`.

/// A value of the world refused: a fault plan, a schedule or the remote's
/// options out of range or inconsistent with another. Reading a scenario
/// file, and its own fields, is `cpc-sim`'s (`cpc_sim::ScenarioError`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value is out of range or inconsistent with another.
    #[error("invalid scenario field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field (`faults.drop`, `schedule.windows[2]`).
        field: String,
        /// Why it was refused.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Invalid`]: `field` (its dotted path) is refused for
    /// `reason`.
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
