//! Reading an answer body with a byte cap. reqwest reads whatever a server
//! sends; a broken or hostile server must not make the client allocate
//! more than its cap (protocol §2.6).

use reqwest::Response;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The answer is larger than the cap (announced or counted).
    TooLarge {
        /// The cap.
        cap: usize,
    },
    /// The connection failed while the body was arriving.
    Broken(reqwest::Error),
}

/// Reads the whole body of `response`, at most `cap` bytes.
///
/// A `Content-Length` over the cap is refused before a byte is read;
/// otherwise (chunked, or a length that lies) the chunks are counted as
/// they arrive and reading stops at the first one that crosses the cap.
pub(crate) async fn read_capped(response: &mut Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    let cap_u64 = u64::try_from(cap).unwrap_or(u64::MAX);
    let announced = response.content_length();
    if announced.is_some_and(|len| len > cap_u64) {
        return Err(BodyError::TooLarge { cap });
    }
    // Reserve what the server announced (already known to fit the cap),
    // not more: a chunked answer grows as it comes.
    let reserve = announced
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(0);
    let mut body = Vec::with_capacity(reserve);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Broken)? {
        if chunk.len() > cap - body.len() {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a 200 answer is expected to be, for the error that says it is not.
pub(crate) struct Expecting {
    /// `push` or `pull`.
    pub kind: &'static str,
    /// The limit its size is held to.
    pub limit: &'static str,
    /// What it should decode as.
    pub noun: &'static str,
}

/// Reads a 200 answer as JSON of type `T`, at most `cap` bytes: a body that
/// is not `application/json` (a captive portal's page, §9.3), over the cap,
/// broken off, or not a `T` is an error. Serde's message is not passed on:
/// it may quote the body, payloads included. Answers the value and the
/// bytes read.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    response: &mut Response,
    cap: usize,
    expecting: &Expecting,
) -> Result<(T, usize), cpc_core::TransportError> {
    use cpc_core::TransportError;
    if !crate::status::has_media_type(response.headers(), "application/json") {
        return Err(TransportError::Protocol(format!(
            "a 200 {} answer that is not application/json",
            expecting.kind
        )));
    }
    let body = read_capped(response, cap).await.map_err(|e| match e {
        BodyError::TooLarge { cap } => TransportError::Protocol(format!(
            "the {} answer exceeds {} ({cap})",
            expecting.kind, expecting.limit
        )),
        BodyError::Broken(e) => crate::status::request_error(&e),
    })?;
    let value = serde_json::from_slice(&body).map_err(|e| {
        TransportError::Protocol(format!(
            "the 200 answer is not a {} ({:?} error at line {}, column {})",
            expecting.noun,
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    Ok((value, body.len()))
}

/// Reads a body whose content only refines the status (a problem object),
/// at most `cap` bytes. `None` when it is too large or broke off: the
/// status alone then decides (§2.4), so neither is an error.
pub(crate) async fn read_optional(response: &mut Response, cap: usize) -> Option<Vec<u8>> {
    read_capped(response, cap).await.ok()
}
