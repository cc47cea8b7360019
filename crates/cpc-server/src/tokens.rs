//! Bearer tokens from a file, each bound to the client ids it may act for.
//! Compared in constant time, never logged.
//!
//! ```toml
//! [[token]]
//! secret = "a-long-random-string"
//! clients = ["dev-1", "alice-*"]   # exact ids, or a prefix ending in *
//! ```

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a tokens file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("tokens file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with its line.
        message: String,
    },
    /// A token breaks a rule (empty, too long, bad characters, no clients).
    #[error("tokens file {path}: token {index}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Its position in the file, from 1.
        index: usize,
        /// The rule.
        reason: &'static str,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    secret: String,
    clients: Vec<String>,
}

struct Known {
    digest: [u8; 32],
    clients: Vec<String>,
}

/// The tokens a server accepts.
pub struct Tokens {
    known: Vec<Known>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} tokens, secrets redacted)", self.known.len())
    }
}

/// Which token authenticated a request (its index in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub usize);

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// RFC 6750 token characters.
fn valid_token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && t.len() <= MAX_TOKEN_BYTES
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

impl Tokens {
    /// Reads a tokens file.
    pub fn from_file(path: &Path) -> Result<Tokens, TokensError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: shown.clone(),
            source,
        })?;
        Tokens::parse(&text, &shown)
    }

    /// Parses a tokens file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, TokensError> {
        let file: TokensFile = toml::from_str(text).map_err(|e| TokensError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut known = Vec::with_capacity(file.token.len());
        for (i, entry) in file.token.into_iter().enumerate() {
            let invalid = |reason| TokensError::Invalid {
                path: origin.to_owned(),
                index: i + 1,
                reason,
            };
            if !valid_token(&entry.secret) {
                return Err(invalid(
                    "a secret is 1 to 4096 characters of A-Z a-z 0-9 - . _ ~ + / and trailing =",
                ));
            }
            if entry.clients.is_empty() || entry.clients.iter().any(|c| c.is_empty()) {
                return Err(invalid(
                    "clients lists at least one non-empty client id or prefix*",
                ));
            }
            known.push(Known {
                digest: digest(entry.secret.as_bytes()),
                clients: entry.clients,
            });
        }
        Ok(Tokens { known })
    }

    /// One token for every client (tests, examples).
    pub fn single(secret: &str, clients: &[&str]) -> Tokens {
        Tokens {
            known: vec![Known {
                digest: digest(secret.as_bytes()),
                clients: clients.iter().map(|c| (*c).to_owned()).collect(),
            }],
        }
    }

    /// The token of an `Authorization` header value, if it is one of ours.
    /// Every known token is compared, in constant time over digests, so
    /// neither which token nor how much of it matched shows in the timing.
    pub fn authenticate(&self, header: &str) -> Option<TokenId> {
        let token = bearer_token(header)?;
        if !valid_token(token) {
            return None;
        }
        let d = digest(token.as_bytes());
        let mut found = None;
        for (i, k) in self.known.iter().enumerate() {
            if bool::from(k.digest.ct_eq(&d)) {
                found = Some(TokenId(i));
            }
        }
        found
    }

    /// Whether `token` may act for `client_id`.
    pub fn allows(&self, token: TokenId, client_id: &str) -> bool {
        self.known.get(token.0).is_some_and(|k| {
            k.clients
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => client_id.starts_with(prefix),
                    None => pattern == client_id,
                })
        })
    }
}

/// The token of a `Bearer` credential, if `header` is one. RFC 7235 §2.1
/// makes the scheme name case-insensitive and separates it from the
/// credentials by one or more spaces, so `bearer x` and `Bearer  x` are as
/// valid as `Bearer x`; clients and proxies do send those forms.
fn bearer_token(header: &str) -> Option<&str> {
    const SCHEME: &str = "Bearer";
    // `get` rather than slicing: a multi-byte character straddling the
    // scheme's length must not panic, it is simply not our scheme.
    let scheme = header.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = header.get(SCHEME.len()..)?;
    let token = rest.trim_start_matches(' ');
    // At least one space: "Bearerx" is another scheme, not ours.
    if token.len() == rest.len() {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_and_binds_to_its_clients() {
        let tokens = Tokens::parse(
            "[[token]]\nsecret = \"s3cret\"\nclients = [\"dev-1\", \"alice-*\"]\n\
             [[token]]\nsecret = \"other\"\nclients = [\"bob\"]\n",
            "t.toml",
        )
        .map_err(|e| e.to_string());
        let Ok(tokens) = tokens else {
            panic!("{tokens:?}")
        };
        let t = tokens.authenticate("Bearer s3cret");
        assert_eq!(t, Some(TokenId(0)));
        let t = t.unwrap_or(TokenId(99));
        assert!(tokens.allows(t, "dev-1"));
        assert!(tokens.allows(t, "alice-phone"));
        assert!(!tokens.allows(t, "bob"));
        assert!(!tokens.allows(t, "dev-10"));
        assert_eq!(tokens.authenticate("Bearer other"), Some(TokenId(1)));
        assert_eq!(tokens.authenticate("Bearer nope"), None);
        assert_eq!(tokens.authenticate("s3cret"), None);
        assert_eq!(tokens.authenticate("Basic s3cret"), None);
        // RFC 7235 §2.1: the scheme is case-insensitive and one or more
        // spaces may follow it.
        assert_eq!(tokens.authenticate("bearer s3cret"), Some(TokenId(0)));
        assert_eq!(tokens.authenticate("BEARER s3cret"), Some(TokenId(0)));
        assert_eq!(tokens.authenticate("Bearer  s3cret"), Some(TokenId(0)));
        assert_eq!(tokens.authenticate("Bearers3cret"), None);
        assert_eq!(tokens.authenticate("Bearer "), None);
        assert_eq!(tokens.authenticate("Bearer"), None);
        assert_eq!(tokens.authenticate("Bearer\ts3cret"), None);
        assert_eq!(tokens.authenticate("Beare\u{e9} s3cret"), None);
        assert!(!format!("{tokens:?}").contains("s3cret"));
    }

    #[test]
    fn a_bad_file_names_the_token_and_the_rule() {
        let e = Tokens::parse("[[token]]\nsecret = \"\"\nclients = [\"a\"]\n", "t.toml")
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.contains("token 1")), "{e:?}");
        let e = Tokens::parse("[[token]]\nsecret = \"x\"\nclients = []\n", "t.toml")
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.contains("clients")), "{e:?}");
        assert!(Tokens::parse("[[token]]\nsecrt = \"x\"\n", "t.toml").is_err());
    }
}
