//! §2.1: `https://` except to loopback, unless the application opts in;
//! tokens never print.

use std::sync::Arc;

use cpc_http::{ConfigError, Error, HttpConfig, HttpTransport, StaticToken, Token};

#[test]
fn plain_http_to_a_non_loopback_host_is_refused() {
    let config = HttpConfig::new("http://sync.example.com:8080", "dev-7f3a");
    match HttpTransport::new(config, Arc::new(StaticToken::new("t"))) {
        Err(Error::Config(e @ ConfigError::PlainHttp { .. })) => {
            assert_eq!(e.field(), "base_url");
            assert!(e.to_string().contains("allow_plain_http"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn plain_http_is_allowed_to_loopback_and_when_opted_in() {
    for base in [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ] {
        let config = HttpConfig::new(base, "dev-7f3a");
        assert!(
            HttpTransport::new(config, Arc::new(StaticToken::new("t"))).is_ok(),
            "{base}"
        );
    }
    let lan = HttpConfig {
        allow_plain_http: true,
        ..HttpConfig::new("http://192.168.1.20:8080", "dev-7f3a")
    };
    assert!(HttpTransport::new(lan, Arc::new(StaticToken::new("t"))).is_ok());
}

#[test]
fn a_token_debug_prints_redacted() {
    let token = Token::new("tok-dev-7f3a-3d9f1c2b8e");
    assert_eq!(format!("{token:?}"), "[redacted]");
    assert_eq!(format!("{token}"), "[redacted]");
    assert_eq!(format!("{:?}", Some(&token)), "Some([redacted])");
}

#[test]
fn a_transport_debug_shows_no_credentials() {
    let config = HttpConfig::new("https://sync.example.com", "dev-7f3a");
    let transport = HttpTransport::new(
        config,
        Arc::new(StaticToken::new("tok-dev-7f3a-3d9f1c2b8e")),
    )
    .unwrap();
    let shown = format!("{transport:?}");
    assert!(shown.contains("dev-7f3a"), "{shown}");
    assert!(!shown.contains("tok-dev"), "{shown}");
}
