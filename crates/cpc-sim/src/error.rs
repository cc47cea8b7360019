//! The one error type of a simulation run.

/// Why a scenario could not be run (a failed invariant is not an error: it
/// is in the [`InvariantReport`](cpc_fault::InvariantReport)).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scenario file, or the settings of a run, are not usable; the text
    /// names the file, the field and its line where it can.
    #[error("{0}")]
    Spec(String),
    /// The run itself failed (a store did not open, an engine did not
    /// start, a device task failed).
    #[error("run failed: {0}")]
    Run(String),
    /// An I/O error outside the stores.
    #[error("i/o error while {0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
}
