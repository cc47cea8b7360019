//! The server's door for push bodies: every malformed body is a problem
//! with the right code and pointer, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cpc_protocol::{
    parse_push, EntityKey, Hex64, Kind, Limits, OpId, Payload, Position, Problem, PushRequest,
    Timestamp, WireOp, MAX_CLIENT_ID_LEN, MAX_KEY_BYTES, MAX_SAFE_INTEGER, MAX_STORE_ID_LEN,
    MAX_WALL_MS, OP_ENVELOPE_BYTES,
};
use proptest::prelude::*;

const ID: &str = "01KDVH35M00000002Y98FGS6SQ";
const ID2: &str = "01KDVH35M00000002Y98FGS6SR";

fn op(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","entity":{{"collection":"notes","id":"n1"}},"kind":"update","payload":"aGk=","base_version":null,"timestamp":{{"wall_ms":5,"logical":0,"node":"0000000000000001"}}}}"#
    )
}

fn push(ops: &[String]) -> String {
    format!(
        r#"{{"protocol":1,"client_id":"dev-1","ops":[{}]}}"#,
        ops.join(",")
    )
}

fn problem(body: &str) -> Box<Problem> {
    parse_push(body.as_bytes(), &Limits::default()).expect_err("must be refused")
}

#[test]
fn a_good_body_parses() {
    let r = parse_push(push(&[op(ID), op(ID2)]).as_bytes(), &Limits::default()).unwrap();
    assert_eq!(r.ops.len(), 2);
    assert_eq!(r.ops[0].base_version, None);
}

#[test]
fn each_malformation_names_its_member() {
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("not json".into(), "bad_request", Some("")),
        ("[1,2]".into(), "bad_request", Some("")),
        // An array where an object belongs, at any depth.
        (
            push(&[op(ID).replace(r#"{"collection":"notes","id":"n1"}"#, r#"["notes","n1"]"#)]),
            "bad_request",
            Some("/ops/0/entity"),
        ),
        (
            push(&[op(ID).replace(
                r#"{"wall_ms":5,"logical":0,"node":"0000000000000001"}"#,
                r#"[5,0,"0000000000000001"]"#,
            )]),
            "bad_request",
            Some("/ops/0/timestamp"),
        ),
        (
            format!("[1,\"dev-1\",null,null,[{}]]", op(ID)),
            "bad_request",
            Some(""),
        ),
        (
            push(&[op(ID).replace(
                "\"kind\":\"update\"",
                "\"kind\":\"update\",\"kind\":\"delete\"",
            )]),
            "bad_request",
            Some("/ops/0"),
        ),
        (push(&[op(ID)]) + "x", "bad_request", Some("")),
        (push(&[]), "bad_request", Some("/ops")),
        (push(&[op(ID), op(ID)]), "bad_request", Some("/ops/1/id")),
        (
            push(&[op("01kdvh35m00000002y98fgs6sq")]),
            "bad_request",
            Some("/ops/0/id"),
        ),
        (
            push(&[op(ID).replace("aGk=", "aGk")]),
            "bad_request",
            Some("/ops/0/payload"),
        ),
        (
            push(&[op(ID).replace("\"update\"", "\"upsert\"")]),
            "bad_request",
            Some("/ops/0/kind"),
        ),
        (
            push(&[op(ID).replace("\"logical\":0", "\"logical\":-1")]),
            "bad_request",
            Some("/ops/0/timestamp/logical"),
        ),
        (
            push(&[op(ID).replace("\"wall_ms\":5", "\"wall_ms\":1.5")]),
            "bad_request",
            Some("/ops/0/timestamp/wall_ms"),
        ),
        (
            push(&[op(ID).replace("\"base_version\":null", "\"base_verison\":3")]),
            "bad_request",
            Some("/ops/0/base_verison"),
        ),
        (
            push(&[op(ID).replace("\"collection\":\"notes\"", "\"collection\":\"\"")]),
            "bad_request",
            Some("/ops/0/entity/collection"),
        ),
        (
            push(&[op(ID)]).replace("dev-1", "dev 1"),
            "bad_request",
            Some("/client_id"),
        ),
        (
            push(&[op(ID)]).replace("\"protocol\":1", "\"protocol\":2"),
            "unsupported_version",
            None,
        ),
        // A v2 body that does not fit v1's schema is still told the version.
        (
            r#"{"protocol":2,"something":"else"}"#.into(),
            "unsupported_version",
            None,
        ),
    ];
    for (body, code, pointer) in cases {
        let p = problem(&body);
        assert_eq!(p.code, code, "{body}: {p}");
        assert_eq!(p.pointer.as_deref(), pointer, "{body}: {p}");
        if code == "unsupported_version" {
            assert_eq!(p.supported, Some(vec![1]));
        }
    }
}

#[test]
fn a_bad_known_position_names_the_member_at_fault() {
    let with_known = |store_id: &str, seq: u64| {
        push(&[op(ID)]).replace(
            "\"ops\":",
            &format!(
                r#""known":{{"store_id":"{store_id}","seq":{seq},"fp":"0000000000000000"}},"ops":"#
            ),
        )
    };
    let parses = |body: &str| parse_push(body.as_bytes(), &Limits::default());
    assert!(parses(&with_known("s1", 3)).is_ok());
    assert!(parses(&with_known(&"s".repeat(64), 3)).is_ok());
    assert!(parses(&with_known("s1", (1 << 53) - 1)).is_ok());
    for (body, pointer) in [
        (with_known("", 3), "/known/store_id"),
        (with_known(&"s".repeat(65), 3), "/known/store_id"),
        // §3.1: 1–64 *ASCII* characters.
        (with_known("st\u{f6}re", 3), "/known/store_id"),
        (with_known("s1", 1 << 53), "/known/seq"),
    ] {
        let p = parses(&body).expect_err("must be refused");
        assert_eq!(
            (p.code.as_str(), p.pointer.as_deref()),
            ("bad_request", Some(pointer)),
            "{body}"
        );
    }
}

#[test]
fn a_batch_over_max_batch_ops_is_too_large() {
    let limits = Limits {
        max_batch_ops: 1,
        ..Limits::default()
    };
    let p = parse_push(push(&[op(ID), op(ID2)]).as_bytes(), &limits).unwrap_err();
    assert_eq!((p.status, p.code.as_str()), (413, "too_large"));
    assert_eq!(p.limit.as_deref(), Some("max_batch_ops"));
    assert_eq!(p.max, Some(1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn no_body_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_push(&bytes, &Limits::default());
    }

    #[test]
    fn no_mangled_good_body_panics(cut in 0usize..400, byte: u8) {
        let mut body = push(&[op(ID)]).into_bytes();
        let at = cut % body.len();
        body[at] = byte;
        let _ = parse_push(&body, &Limits::default());
    }
}

/// The largest compact push of one operation: every member at its
/// longest, each key byte a control character (escaped as 6 bytes).
fn worst_case_push(limits: &Limits) -> PushRequest {
    let escaped = "\u{1}".repeat(MAX_KEY_BYTES);
    PushRequest {
        protocol: 1,
        client_id: "c".repeat(MAX_CLIENT_ID_LEN),
        known: Some(Position {
            store_id: "\u{1}".repeat(MAX_STORE_ID_LEN),
            seq: MAX_SAFE_INTEGER,
            fp: Hex64(u64::MAX),
        }),
        low_water: Some(OpId(u128::MAX >> 1)),
        ops: vec![WireOp {
            id: OpId(u128::MAX >> 1),
            entity: EntityKey {
                collection: escaped.clone(),
                id: escaped.clone(),
            },
            kind: Kind::Custom(escaped),
            payload: Payload(vec![
                0xff;
                usize::try_from(limits.max_payload_bytes).unwrap()
            ]),
            base_version: Some(MAX_SAFE_INTEGER),
            timestamp: Timestamp {
                wall_ms: MAX_WALL_MS,
                logical: u32::MAX,
                node: Hex64(u64::MAX),
            },
        }],
    }
}

#[test]
fn min_body_bytes_fits_the_largest_operation() {
    for max_payload_bytes in [0, 1, 2, 3, 100_000, 1 << 20] {
        let limits = Limits {
            max_payload_bytes,
            ..Limits::default()
        };
        let body = serde_json::to_vec(&worst_case_push(&limits)).unwrap();
        // Valid as a request: the bound is about bodies a server accepts.
        parse_push(&body, &limits).unwrap();
        let min = limits.min_body_bytes();
        assert!(
            body.len() as u64 <= min,
            "{} bytes for a payload of {max_payload_bytes}, min_body_bytes {min}",
            body.len()
        );
        // The bound is tight enough to be useful: within 2 KiB.
        assert!(min - body.len() as u64 <= 2048, "{min} vs {}", body.len());
    }
    assert_eq!(
        Limits {
            max_payload_bytes: 100_000,
            ..Limits::default()
        }
        .min_body_bytes(),
        133_336 + OP_ENVELOPE_BYTES
    );
    assert!(Limits::default().min_body_bytes() <= Limits::default().max_body_bytes);
    let absurd = Limits {
        max_payload_bytes: u64::MAX,
        ..Limits::default()
    };
    assert_eq!(absurd.min_body_bytes(), u64::MAX);
}
