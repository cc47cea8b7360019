//! The error type of `cpc-conflict`.

/// Errors of the conflict resolvers' helpers.
///
/// Resolving itself never fails (a resolver always answers with a
/// [`Resolution`](crate::Resolution)); these errors come from encoding and
/// decoding field maps with the default [`PostcardFieldCodec`](crate::PostcardFieldCodec).
/// Messages never contain payload data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A payload is not a postcard-encoded field map.
    #[error("payload of {len} bytes is not a postcard field map")]
    DecodeFields {
        /// Length of the refused payload.
        len: usize,
        /// The decoder's complaint (about structure, never the contents).
        #[source]
        source: postcard::Error,
    },
    /// A field map could not be encoded.
    #[error("field map of {fields} fields could not be encoded")]
    EncodeFields {
        /// Number of fields in the map.
        fields: usize,
        /// The encoder's complaint.
        #[source]
        source: postcard::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
