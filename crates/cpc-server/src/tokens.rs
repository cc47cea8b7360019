//! Bearer tokens from a file, each bound to the client ids it may act for.
//! Compared in constant time, never logged. A file others may read, a
//! secret under 16 characters or a secret listed twice is refused.
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

/// The shortest secret a tokens file may hold, in bytes: 16 characters of
/// the RFC 6750 alphabet are about 96 bits when random, out of reach of
/// guessing even without the failed-authentication limit. (A token checked
/// at a request may be any length: a short one is simply unknown.)
pub const MIN_SECRET_BYTES: usize = 16;

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
    /// A token breaks a rule (shorter than [`MIN_SECRET_BYTES`], too long,
    /// bad characters, no clients).
    #[error("tokens file {path}: token {index}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Its position in the file, from 1.
        index: usize,
        /// The rule.
        reason: &'static str,
    },
    /// Two tokens have the same secret: which one a request authenticates
    /// as, and so which clients it may act for, would depend on the order
    /// of the file. The lines are named, never the secret.
    #[error("tokens file {path}: the secret on line {line} repeats the one on line {first_line}")]
    Duplicate {
        /// The file.
        path: String,
        /// The line of the first occurrence, from 1.
        first_line: usize,
        /// The line of the repeat, from 1.
        line: usize,
    },
    /// The metrics token breaks the rules of a secret.
    #[error(
        "the metrics token must be 16 to 4096 characters of A-Z a-z 0-9 - . _ ~ + / and trailing ="
    )]
    MetricsToken,
    /// The file may be read or written by other users (mode bits for
    /// "other", or group write): its secrets are not secret.
    #[error(
        "tokens file {path}: mode {mode:04o} lets other users read or change it; \
         chmod 600 (or 640 with a group of the server's own)"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
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
    /// Spanned: a repeated secret is reported by its line.
    secret: toml::Spanned<String>,
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
    /// Reads a tokens file: refused when other users may read it, or any
    /// but its owner and group may change it (docs/deploy.md, "Tokens").
    pub fn from_file(path: &Path) -> Result<Tokens, TokensError> {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let shown = path.display().to_string();
        let read = |source| TokensError::Read {
            path: shown.clone(),
            source,
        };
        // The mode of the file opened, not of the path: no window in which
        // the path could be swapped between the check and the read.
        let mut file = std::fs::File::open(path).map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode() & 0o7777;
        if mode & OPEN_MODE_BITS != 0 {
            return Err(TokensError::Permissions { path: shown, mode });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read)?;
        Tokens::parse(&text, &shown)
    }

    /// Parses a tokens file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, TokensError> {
        let file: TokensFile = toml::from_str(text).map_err(|e| TokensError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut known: Vec<Known> = Vec::with_capacity(file.token.len());
        // The line of each secret so far, by digest, for the duplicate check.
        let mut lines: Vec<usize> = Vec::with_capacity(file.token.len());
        for (i, entry) in file.token.into_iter().enumerate() {
            let invalid = |reason| TokensError::Invalid {
                path: origin.to_owned(),
                index: i + 1,
                reason,
            };
            let line = line_of(text, entry.secret.span().start);
            let secret = entry.secret.into_inner();
            if !valid_token(&secret) {
                return Err(invalid(
                    "a secret is 1 to 4096 characters of A-Z a-z 0-9 - . _ ~ + / and trailing =",
                ));
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(invalid(
                    "a secret is at least 16 characters (use a random one: openssl rand -base64 24)",
                ));
            }
            let d = digest(secret.as_bytes());
            if let Some(first) = known.iter().position(|k| k.digest == d) {
                return Err(TokensError::Duplicate {
                    path: origin.to_owned(),
                    first_line: lines.get(first).copied().unwrap_or(0),
                    line,
                });
            }
            if entry.clients.is_empty() || entry.clients.iter().any(|c| c.is_empty()) {
                return Err(invalid(
                    "clients lists at least one non-empty client id or prefix*",
                ));
            }
            known.push(Known {
                digest: d,
                clients: entry.clients,
            });
            lines.push(line);
        }
        Ok(Tokens { known })
    }

    /// One token for every client (tests, examples). Not held to the
    /// rules of a tokens file (any length).
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

/// The bearer token `GET /metrics` asks for: a scraper's credential, apart
/// from the clients' tokens (a device's token must not read the server's
/// counters, nor a scraper's push). Held as a digest, compared in constant
/// time; its `Debug` shows no secret.
#[derive(Clone)]
pub struct MetricsToken {
    digest: [u8; 32],
}

impl fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MetricsToken(redacted)")
    }
}

impl MetricsToken {
    /// A metrics token, held to the rules of a tokens file's secrets (the
    /// RFC 6750 alphabet, [`MIN_SECRET_BYTES`] to [`MAX_TOKEN_BYTES`]).
    pub fn new(secret: &str) -> Result<MetricsToken, TokensError> {
        if !valid_token(secret) || secret.len() < MIN_SECRET_BYTES {
            return Err(TokensError::MetricsToken);
        }
        Ok(MetricsToken {
            digest: digest(secret.as_bytes()),
        })
    }

    /// Whether an `Authorization` header value carries this token.
    pub(crate) fn matches(&self, header: &str) -> bool {
        bearer_token(header)
            .filter(|t| valid_token(t))
            .is_some_and(|t| bool::from(self.digest.ct_eq(&digest(t.as_bytes()))))
    }
}

/// Mode bits that refuse a tokens file: any for other users, and group
/// write. Group read stays allowed: a file `root:cpc 0640` is the usual
/// way to hand a service a secret it must not be able to change.
const OPEN_MODE_BITS: u32 = 0o027;

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.bytes().filter(|b| *b == b'\n').count() + 1
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
            "[[token]]\nsecret = \"s3cret-0123456789ab\"\nclients = [\"dev-1\", \"alice-*\"]\n\
             [[token]]\nsecret = \"other-0123456789ab\"\nclients = [\"bob\"]\n",
            "t.toml",
        )
        .map_err(|e| e.to_string());
        let Ok(tokens) = tokens else {
            panic!("{tokens:?}")
        };
        let t = tokens.authenticate("Bearer s3cret-0123456789ab");
        assert_eq!(t, Some(TokenId(0)));
        let t = t.unwrap_or(TokenId(99));
        assert!(tokens.allows(t, "dev-1"));
        assert!(tokens.allows(t, "alice-phone"));
        assert!(!tokens.allows(t, "bob"));
        assert!(!tokens.allows(t, "dev-10"));
        assert_eq!(
            tokens.authenticate("Bearer other-0123456789ab"),
            Some(TokenId(1))
        );
        assert_eq!(tokens.authenticate("Bearer nope"), None);
        assert_eq!(tokens.authenticate("s3cret-0123456789ab"), None);
        assert_eq!(tokens.authenticate("Basic s3cret-0123456789ab"), None);
        // RFC 7235 §2.1: the scheme is case-insensitive and one or more
        // spaces may follow it.
        assert_eq!(
            tokens.authenticate("bearer s3cret-0123456789ab"),
            Some(TokenId(0))
        );
        assert_eq!(
            tokens.authenticate("BEARER s3cret-0123456789ab"),
            Some(TokenId(0))
        );
        assert_eq!(
            tokens.authenticate("Bearer  s3cret-0123456789ab"),
            Some(TokenId(0))
        );
        assert_eq!(tokens.authenticate("Bearers3cret-0123456789ab"), None);
        assert_eq!(tokens.authenticate("Bearer "), None);
        assert_eq!(tokens.authenticate("Bearer"), None);
        assert_eq!(tokens.authenticate("Bearer\ts3cret-0123456789ab"), None);
        assert_eq!(tokens.authenticate("Beare\u{e9} s3cret-0123456789ab"), None);
        assert!(!format!("{tokens:?}").contains("s3cret-0123456789ab"));
    }

    #[test]
    fn a_bad_file_names_the_token_and_the_rule() {
        let e = Tokens::parse("[[token]]\nsecret = \"\"\nclients = [\"a\"]\n", "t.toml")
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.contains("token 1")), "{e:?}");
        let e = Tokens::parse(
            "[[token]]\nsecret = \"x-long-enough-secret\"\nclients = []\n",
            "t.toml",
        )
        .err()
        .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.contains("clients")), "{e:?}");
        assert!(Tokens::parse("[[token]]\nsecrt = \"x\"\n", "t.toml").is_err());
    }

    #[test]
    fn a_short_secret_is_refused() {
        let file = |secret: &str| format!("[[token]]\nsecret = \"{secret}\"\nclients = [\"a\"]\n");
        let e = Tokens::parse(&file("x"), "t.toml")
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("token 1") && e.contains("at least 16")),
            "{e:?}"
        );
        assert!(Tokens::parse(&file(&"y".repeat(MIN_SECRET_BYTES - 1)), "t.toml").is_err());
        assert!(Tokens::parse(&file(&"y".repeat(MIN_SECRET_BYTES)), "t.toml").is_ok());
    }

    #[test]
    fn a_repeated_secret_is_refused_by_its_lines_never_its_text() {
        let text = "[[token]]\nsecret = \"same-secret-0123456789\"\nclients = [\"a\"]\n\
                    [[token]]\nsecret = \"other-secret-0123456789\"\nclients = [\"b\"]\n\
                    [[token]]\nclients = [\"c\"]\nsecret = \"same-secret-0123456789\"\n";
        let e = Tokens::parse(text, "t.toml").err();
        assert!(
            matches!(
                e,
                Some(TokensError::Duplicate {
                    first_line: 2,
                    line: 9,
                    ..
                })
            ),
            "{e:?}"
        );
        let shown = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            shown.contains("line 9") && shown.contains("line 2"),
            "{shown}"
        );
        assert!(!shown.contains("same-secret"), "{shown}");
    }

    #[test]
    fn a_tokens_file_others_may_read_or_change_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temporary directory")
        };
        let path = dir.path().join("tokens.toml");
        let written = std::fs::write(
            &path,
            "[[token]]\nsecret = \"a-secret-of-sixteen\"\nclients = [\"a\"]\n",
        );
        assert!(written.is_ok());
        for (mode, accepted) in [
            (0o644, false),
            (0o604, false),
            (0o660, false),
            (0o602, false),
            (0o600, true),
            (0o640, true),
            (0o400, true),
        ] {
            let set = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
            assert!(set.is_ok());
            let read = Tokens::from_file(&path);
            assert_eq!(read.is_ok(), accepted, "mode {mode:o}: {read:?}");
            if let Err(e) = read {
                assert!(matches!(e, TokensError::Permissions { .. }), "{e}");
                assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
            }
        }
    }
}
