//! `Cpc-Request-Id` (docs/protocol.md §2.1): a client's fresh id for each
//! HTTP request, echoed by the server, so that the two sides' logs of one
//! request can be matched.

/// The header carrying a request's id, in requests and in answers.
pub const REQUEST_ID_HEADER: &str = "cpc-request-id";
/// Longest request id a server echoes, in ASCII characters.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether `id` is a well-formed request id: 1 to 64 characters of
/// `A-Z a-z 0-9 - . _ ~`. A server echoes only such an id: anything else
/// could smuggle text into its logs or break a header on the way back.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A request id made of 64 random bits: 16 lowercase hex digits. The
/// caller draws the bits (this crate does no I/O and holds no RNG).
pub fn request_id_from(random: u64) -> String {
    format!("{random:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_ids_and_not() {
        for ok in ["a", "0123456789abcdef", "A-Z.a_z~09", &"x".repeat(64)] {
            assert!(valid_request_id(ok), "{ok}");
        }
        for bad in ["", &"x".repeat(65), "a b", "a\nb", "a/b", "é", "a:b"] {
            assert!(!valid_request_id(bad), "{bad:?}");
        }
        let id = request_id_from(0xabc);
        assert_eq!(id, "0000000000000abc");
        assert!(valid_request_id(&id));
        assert_eq!(request_id_from(u64::MAX).len(), 16);
    }
}
