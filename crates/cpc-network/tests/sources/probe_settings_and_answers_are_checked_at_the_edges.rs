//! The probe's configuration refuses each setting that cannot work, naming
//! the field, and `validate_answer` judges answers cut or out of range at
//! their edges. Pure: no socket.

use std::time::Duration;

use cpc_network::{
    validate_answer, ConfigError, Error, FailureKind, HttpCheck, ProbeConfig, ProbeSource, Verdict,
    MAX_RESPONSE_LIMIT,
};

fn http(check: HttpCheck) -> ProbeConfig {
    ProbeConfig::http("probe.example:80", check)
}

#[test]
fn each_unworkable_setting_is_refused_with_its_field_named() {
    let with_host = |host: &str| HttpCheck {
        host_header: Some(host.to_owned()),
        ..HttpCheck::new("/health")
    };
    let cases: Vec<(ProbeConfig, ConfigError, &str)> = vec![
        (
            ProbeConfig {
                interval: Duration::ZERO,
                jitter: Duration::ZERO,
                ..ProbeConfig::tcp("h:80")
            },
            ConfigError::ZeroDuration { field: "interval" },
            "interval must be greater than zero",
        ),
        (
            ProbeConfig {
                timeout: Duration::ZERO,
                ..ProbeConfig::tcp("h:80")
            },
            ConfigError::ZeroDuration { field: "timeout" },
            "timeout must be greater than zero",
        ),
        (
            ProbeConfig {
                jitter: Duration::from_secs(11),
                ..ProbeConfig::tcp("h:80")
            },
            ConfigError::OutOfRange {
                field: "jitter",
                reason: "must not exceed interval",
            },
            "jitter is out of range: must not exceed interval",
        ),
        (
            ProbeConfig::tcp("h"),
            ConfigError::InvalidTarget { target: "h".into() },
            "probe target \"h\" is not host:port",
        ),
        (
            http(HttpCheck::new("health")),
            ConfigError::InvalidPath {
                path: "health".into(),
            },
            "probe path \"health\" must start with '/' and contain no whitespace",
        ),
        (
            http(with_host("")),
            ConfigError::OutOfRange {
                field: "host_header",
                reason: "must be non-empty without whitespace or control characters",
            },
            "host_header is out of range: must be non-empty without whitespace or control characters",
        ),
        (
            http(with_host("a.example\r\nX-Injected: 1")),
            ConfigError::OutOfRange {
                field: "host_header",
                reason: "must be non-empty without whitespace or control characters",
            },
            "host_header is out of range: must be non-empty without whitespace or control characters",
        ),
        (
            http(HttpCheck::new("/").expect_status(99)),
            ConfigError::OutOfRange {
                field: "expect_status",
                reason: "must be an HTTP status in 100..=599",
            },
            "expect_status is out of range: must be an HTTP status in 100..=599",
        ),
        (
            http(HttpCheck::new("/").expect_status(600)),
            ConfigError::OutOfRange {
                field: "expect_status",
                reason: "must be an HTTP status in 100..=599",
            },
            "expect_status is out of range: must be an HTTP status in 100..=599",
        ),
        (
            http(HttpCheck::new("/").expect_body("")),
            ConfigError::OutOfRange {
                field: "expect_body",
                reason: "must be non-empty and shorter than max_response_bytes",
            },
            "expect_body is out of range: must be non-empty and shorter than max_response_bytes",
        ),
        (
            ProbeConfig {
                max_response_bytes: 64,
                ..http(HttpCheck::new("/").expect_body("x".repeat(64)))
            },
            ConfigError::OutOfRange {
                field: "expect_body",
                reason: "must be non-empty and shorter than max_response_bytes",
            },
            "expect_body is out of range: must be non-empty and shorter than max_response_bytes",
        ),
        (
            ProbeConfig {
                max_response_bytes: 63,
                ..ProbeConfig::tcp("h:80")
            },
            ConfigError::OutOfRange {
                field: "max_response_bytes",
                reason: "must be in 64..=1048576",
            },
            "max_response_bytes is out of range: must be in 64..=1048576",
        ),
        (
            ProbeConfig {
                max_response_bytes: MAX_RESPONSE_LIMIT + 1,
                ..ProbeConfig::tcp("h:80")
            },
            ConfigError::OutOfRange {
                field: "max_response_bytes",
                reason: "must be in 64..=1048576",
            },
            "max_response_bytes is out of range: must be in 64..=1048576",
        ),
    ];
    for (config, refusal, text) in cases {
        assert_eq!(config.validate(), Err(refusal.clone()), "{config:?}");
        assert_eq!(refusal.to_string(), text);
        assert_eq!(ProbeSource::new(config).unwrap_err(), refusal);
        // As a crate error it is a configuration problem, not a network one.
        let err = Error::from(refusal);
        assert_eq!(err.to_string(), "invalid configuration");
        assert_eq!(err.failure_kind(), None);
        assert_eq!(
            std::error::Error::source(&err).map(ToString::to_string),
            Some(text.to_owned())
        );
    }
}

#[test]
fn the_bounds_themselves_are_accepted() {
    for config in [
        ProbeConfig {
            max_response_bytes: 64,
            ..http(HttpCheck::new("/").expect_body("x".repeat(63)))
        },
        ProbeConfig {
            max_response_bytes: MAX_RESPONSE_LIMIT,
            ..ProbeConfig::tcp("h:80")
        },
        http(HttpCheck::new("/").expect_status(100)),
        http(HttpCheck::new("/").expect_status(599)),
        ProbeConfig {
            jitter: Duration::from_secs(10),
            ..ProbeConfig::tcp("h:80")
        },
    ] {
        assert_eq!(config.validate(), Ok(()), "{config:?}");
    }
}

#[test]
fn an_empty_body_token_would_accept_a_login_page_so_configs_refuse_it() {
    // validate_answer on its own takes the check as given: an empty token
    // is found in any body, which is why ProbeConfig refuses it (above).
    let login = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n<form></form>";
    assert!(matches!(
        validate_answer(login, &HttpCheck::new("/").expect_body(""), true, 8192),
        Verdict::Pass
    ));
    assert!(http(HttpCheck::new("/").expect_body(""))
        .validate()
        .is_err());
}

#[test]
fn an_answer_cut_inside_its_status_line_is_malformed_or_too_large() {
    let check = HttpCheck::new("/health");
    let cut = b"HTTP/1.1 200 OK";
    assert!(matches!(
        validate_answer(cut, &check, false, 8192),
        Verdict::NeedMore
    ));
    let Verdict::Fail(err) = validate_answer(cut, &check, true, 8192) else {
        panic!("a complete answer without a status line end must fail");
    };
    assert!(matches!(
        err,
        Error::MalformedResponse {
            reason: "answer ended inside its status line"
        }
    ));
    assert_eq!(
        err.to_string(),
        "malformed probe answer: answer ended inside its status line"
    );
    assert_eq!(err.failure_kind(), Some(FailureKind::InvalidAnswer));
    // Cut because the limit was reached: the answer is too large.
    let Verdict::Fail(err) = validate_answer(cut, &check, true, cut.len()) else {
        panic!("an answer at the limit without a status line end must fail");
    };
    assert!(matches!(err, Error::ResponseTooLarge { limit: 15 }));
    assert_eq!(err.to_string(), "probe answer headers exceed 15 bytes");
    assert_eq!(err.failure_kind(), Some(FailureKind::InvalidAnswer));
}

#[test]
fn a_status_outside_100_to_599_is_malformed() {
    for line in [&b"HTTP/1.1 600 Nope\r\n"[..], b"HTTP/1.1 099 Early\r\n"] {
        let Verdict::Fail(err) = validate_answer(line, &HttpCheck::new("/"), false, 8192) else {
            panic!("{line:?} must fail");
        };
        assert!(
            matches!(
                err,
                Error::MalformedResponse {
                    reason: "status code out of range"
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "malformed probe answer: status code out of range"
        );
    }
    // A 4xx is a wrong answer, a 5xx an unavailable server.
    let not_found = Error::UnexpectedStatus {
        expected: 200,
        got: 404,
    };
    assert_eq!(
        not_found.to_string(),
        "probe answered status 404, expected 200"
    );
    assert_eq!(not_found.failure_kind(), Some(FailureKind::InvalidAnswer));
}
