//! Bearer tokens and where they come from: the application implements
//! [`CredentialsProvider`]; [`StaticToken`] serves a fixed token.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// The most bytes of a token the protocol allows (§5).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A bearer token. It never prints: `Debug` and `Display` both show
/// `[redacted]`, so a token cannot leak through a log line or an error
/// text by accident. Read it with [`Token::secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        Token(secret.into())
    }

    /// The token's text, to put in a header. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether the token has the form the protocol allows (§5): 1 to 4096
    /// bytes of `A-Z a-z 0-9 - . _ ~ + /`, then optional `=` padding. A
    /// token that is not is never sent (it could not be a valid header, or
    /// would be refused anyway).
    pub fn is_well_formed(&self) -> bool {
        let body = self.0.trim_end_matches('=');
        !body.is_empty()
            && self.0.len() <= MAX_TOKEN_BYTES
            && body.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
            })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the transport gets its bearer token.
///
/// # Contract
/// - [`token`](Self::token) is asked before every request; it may refresh a
///   short-lived token (it is async for that). `None` means there is no
///   usable credential: the push fails with `TransportError::Unauthorized`
///   without sending anything, and the worker pauses until the application
///   resumes it.
/// - On a `401` the transport calls [`invalidate`](Self::invalidate) with
///   the refused token, asks [`token`](Self::token) **once** more and resends
///   the request **once** (protocol §5.1). A second `401` is
///   `Unauthorized`, and that token is invalidated too. The transport never
///   asks in a loop.
/// - A `403` (the token is not bound to this `client_id`) invalidates
///   nothing: a refresh would not help.
#[async_trait]
pub trait CredentialsProvider: Send + Sync {
    /// The token to send now, or `None` when there is none.
    async fn token(&self) -> Option<Token>;

    /// The server refused `token` (`401`): do not hand it out again.
    fn invalidate(&self, token: &Token);
}

#[async_trait]
impl<P: CredentialsProvider + ?Sized> CredentialsProvider for Arc<P> {
    async fn token(&self) -> Option<Token> {
        (**self).token().await
    }

    fn invalidate(&self, token: &Token) {
        (**self).invalidate(token);
    }
}

/// A fixed token: for long-lived device tokens, tests and tools.
///
/// [`invalidate`](CredentialsProvider::invalidate) does nothing: there is no
/// other token to offer, and the server side may be fixed later (the token
/// added to its tokens file), after which the application resumes the
/// worker and the same token works. After a `401` the transport resends
/// once with the same token, then reports `Unauthorized`.
#[derive(Clone)]
pub struct StaticToken(Token);

impl StaticToken {
    /// A provider that always answers `token`.
    pub fn new(token: impl Into<String>) -> Self {
        StaticToken(Token::new(token))
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticToken").field(&self.0).finish()
    }
}

#[async_trait]
impl CredentialsProvider for StaticToken {
    async fn token(&self) -> Option<Token> {
        Some(self.0.clone())
    }

    fn invalidate(&self, _token: &Token) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_prints() {
        let token = Token::new("tok-dev-7f3a-3d9f1c2b8e");
        assert_eq!(format!("{token:?}"), "[redacted]");
        assert_eq!(token.to_string(), "[redacted]");
        let provider = StaticToken::new("tok-dev-7f3a-3d9f1c2b8e");
        let shown = format!("{provider:?}");
        assert!(!shown.contains("tok-dev"), "{shown}");
        assert_eq!(token.secret(), "tok-dev-7f3a-3d9f1c2b8e");
    }

    #[test]
    fn only_bearer_token_characters_are_well_formed() {
        for ok in [
            "tok-dev-7f3a",
            "a.b_c~d+e/f==",
            "eyJhbGciOi.eyJzdWIi.SflKxw",
        ] {
            assert!(Token::new(ok).is_well_formed(), "{ok}");
        }
        let too_long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for bad in [
            "",
            "==",
            "tok en",
            "tok\r\nX-Evil: 1",
            "t=k",
            "tök",
            &too_long,
        ] {
            assert!(!Token::new(bad).is_well_formed(), "{bad:?}");
        }
    }
}
