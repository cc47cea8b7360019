//! The client's door for pull pages (docs/protocol.md §7.3, §7.4): every
//! way a page can break the rules is refused before anything is applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cpc_protocol::{
    check_pull_page, parse_pull, Change, Cursor, EntityKey, Hex64, OpId, Origin, Payload, Position,
    PullLimits, PullRequest, PullResponse, Reset, ResetReason, SnapshotRange, Timestamp,
};

const STORE: &str = "5f0c2a9e7b3d4c18a6e2f1d09b8c7a64";

fn cursor(seq: u64, after: Option<&str>) -> Cursor {
    Cursor {
        store_id: STORE.into(),
        seq,
        fp: Hex64(seq),
        after: after.map(key),
    }
}

fn key(id: &str) -> EntityKey {
    EntityKey {
        collection: "notes".into(),
        id: id.into(),
    }
}

fn change(seq: u64, id: &str) -> Change {
    let ts = Timestamp {
        wall_ms: 1_000 + seq,
        logical: 0,
        node: Hex64(7),
    };
    Change {
        seq,
        entity: key(id),
        version: 1,
        deleted: false,
        payload: Some(Payload(b"x".to_vec())),
        timestamp: ts,
        node: ts.node,
        origin: Some(Origin {
            client_id: "dev-1".into(),
            op: OpId(u128::from(seq)),
        }),
    }
}

fn request(from: Option<Cursor>) -> PullRequest {
    PullRequest {
        protocol: 1,
        client_id: "dev-1".into(),
        known: None,
        cursor: from,
        limit: 100,
        max_bytes: 4 << 20,
        wait_ms: 0,
        collections: None,
    }
}

fn head(seq: u64) -> Position {
    Position {
        store_id: STORE.into(),
        seq,
        fp: Hex64(seq),
    }
}

/// A good change page: seq 4..=6 after cursor 3, head 9.
fn change_page() -> (PullRequest, PullResponse) {
    let page = PullResponse {
        changes: vec![change(4, "a"), change(5, "b"), change(6, "c")],
        cursor: cursor(6, None),
        has_more: true,
        reset: None,
        snapshot: None,
        head: head(9),
    };
    (request(Some(cursor(3, None))), page)
}

/// A good first snapshot page: keys a, b of (start, b].
fn snapshot_page() -> (PullRequest, PullResponse) {
    let page = PullResponse {
        changes: vec![change(8, "a"), change(2, "b")],
        cursor: cursor(9, Some("b")),
        has_more: true,
        reset: Some(Reset {
            reason: ResetReason::Initial,
        }),
        snapshot: Some(SnapshotRange {
            from: None,
            through: Some(key("b")),
        }),
        head: head(9),
    };
    (request(None), page)
}

fn refused(req: &PullRequest, page: &PullResponse) -> String {
    match check_pull_page(req, page, 1000, 1 << 20) {
        Err(e) => e.to_string(),
        Ok(()) => panic!("accepted: {page:?}"),
    }
}

#[test]
fn good_pages_pass() {
    let (req, page) = change_page();
    check_pull_page(&req, &page, 1000, 1 << 20).unwrap();
    let (req, page) = snapshot_page();
    check_pull_page(&req, &page, 1000, 1 << 20).unwrap();
}

#[test]
fn each_broken_change_page_is_refused() {
    type Break = fn(&mut PullRequest, &mut PullResponse);
    let cases: Vec<(&str, Break)> = vec![
        ("out of order", |_, p| p.changes.swap(0, 1)),
        ("a seq gap", |_, p| p.changes[1].seq = 7),
        ("a change at or below the cursor", |_, p| {
            p.changes[0].seq = 3
        }),
        ("the cursor goes backwards", |_, p| {
            p.changes.clear();
            p.cursor = cursor(2, None);
            p.has_more = false;
        }),
        ("has_more without advancing", |_, p| {
            p.changes.clear();
            p.cursor = cursor(3, None);
        }),
        ("a change beyond the cursor", |_, p| {
            p.cursor = cursor(5, None)
        }),
        ("another store", |_, p| p.cursor.store_id = "other".into()),
        ("a deleted change with a payload", |_, p| {
            p.changes[0].deleted = true
        }),
        ("a live change without payload", |_, p| {
            p.changes[0].payload = None
        }),
        ("version 0", |_, p| p.changes[0].version = 0),
        ("a payload over the limit", |_, p| {
            p.changes[0].payload = Some(Payload(vec![0; (1 << 20) + 1]));
        }),
        ("more changes than the limit", |r, _| r.limit = 2),
        ("a reset on a change page", |_, p| {
            p.reset = Some(Reset {
                reason: ResetReason::Diverged,
            });
        }),
        ("a change page for a first pull", |r, _| r.cursor = None),
    ];
    for (name, break_it) in cases {
        let (mut req, mut page) = change_page();
        break_it(&mut req, &mut page);
        let why = refused(&req, &page);
        assert!(!why.is_empty(), "{name}");
    }
    // Over max_bytes: the size as received is what counts.
    let (req, page) = change_page();
    assert!(check_pull_page(&req, &page, req.max_bytes + 1, 1 << 20).is_err());
    // With a collection filter, gaps are expected.
    let (mut req, mut page) = change_page();
    req.collections = Some(vec!["notes".into()]);
    page.changes[1].seq = 6;
    page.changes[2].seq = 8;
    page.cursor = cursor(9, None);
    check_pull_page(&req, &page, 1000, 1 << 20).unwrap();
}

#[test]
fn each_broken_snapshot_page_is_refused() {
    type Break = fn(&mut PullRequest, &mut PullResponse);
    let cases: Vec<(&str, Break)> = vec![
        ("keys out of order", |_, p| p.changes.swap(0, 1)),
        ("a key beyond the range", |_, p| {
            p.changes[1].entity = key("c")
        }),
        ("a tombstone", |_, p| {
            p.changes[0].deleted = true;
            p.changes[0].payload = None;
        }),
        ("a first page not at the start", |_, p| {
            p.snapshot = Some(SnapshotRange {
                from: Some(key("0")),
                through: Some(key("b")),
            });
        }),
        ("a partial page that does not continue", |_, p| {
            p.has_more = false
        }),
        ("a cursor after another key", |_, p| {
            p.cursor.after = Some(key("a"))
        }),
        ("the end with an after", |_, p| {
            p.snapshot = Some(SnapshotRange {
                from: None,
                through: None,
            });
        }),
    ];
    for (name, break_it) in cases {
        let (mut req, mut page) = snapshot_page();
        break_it(&mut req, &mut page);
        assert!(
            check_pull_page(&req, &page, 1000, 1 << 20).is_err(),
            "{name}"
        );
    }
    // A continuing page must start at the cursor's key and keep its base.
    let (_, first) = snapshot_page();
    let req = request(Some(first.cursor.clone()));
    let mut next = PullResponse {
        changes: vec![change(3, "c")],
        cursor: cursor(9, None),
        has_more: false,
        reset: None,
        snapshot: Some(SnapshotRange {
            from: Some(key("b")),
            through: None,
        }),
        head: head(9),
    };
    check_pull_page(&req, &next, 1000, 1 << 20).unwrap();
    next.cursor.seq = 10;
    assert!(
        check_pull_page(&req, &next, 1000, 1 << 20).is_err(),
        "base moved"
    );
    next.cursor.seq = 9;
    next.snapshot = Some(SnapshotRange {
        from: Some(key("a")),
        through: None,
    });
    assert!(
        check_pull_page(&req, &next, 1000, 1 << 20).is_err(),
        "from moved"
    );
}

#[test]
fn an_unknown_reset_reason_does_not_parse() {
    let (_, page) = snapshot_page();
    let text = serde_json::to_string(&page)
        .unwrap()
        .replace("\"initial\"", "\"because\"");
    assert!(serde_json::from_str::<PullResponse>(&text).is_err());
}

#[test]
fn the_server_door_refuses_out_of_range_pull_parameters() {
    let body = |limit: u64, max_bytes: u64, wait_ms: u64, collections: &str| {
        format!(
            r#"{{"protocol":1,"client_id":"dev-1","cursor":null,"limit":{limit},"max_bytes":{max_bytes},"wait_ms":{wait_ms},"collections":{collections}}}"#
        )
    };
    let limits = PullLimits::default();
    assert!(parse_pull(body(10, 4 << 20, 0, "null").as_bytes(), &limits).is_ok());
    for (b, pointer) in [
        (body(0, 4 << 20, 0, "null"), "/limit"),
        (body(10_001, 4 << 20, 0, "null"), "/limit"),
        (body(10, 1024, 0, "null"), "/max_bytes"),
        (body(10, 4 << 20, 25_001, "null"), "/wait_ms"),
        (body(10, 4 << 20, 0, "[]"), "/collections"),
        (body(10, 4 << 20, 0, r#"["a","a"]"#), "/collections"),
    ] {
        let p = parse_pull(b.as_bytes(), &limits).unwrap_err();
        assert_eq!(
            (p.code.as_str(), p.pointer.as_deref()),
            ("bad_request", Some(pointer)),
            "{b}"
        );
    }
}

#[test]
fn a_bad_known_or_cursor_position_names_the_member_at_fault() {
    let body = |known: &str, cursor: &str| {
        format!(
            r#"{{"protocol":1,"client_id":"dev-1","known":{known},"cursor":{cursor},"limit":10,"max_bytes":4194304,"wait_ms":0,"collections":null}}"#
        )
    };
    let position = |store_id: &str, seq: u64| {
        format!(r#"{{"store_id":"{store_id}","seq":{seq},"fp":"0000000000000000"}}"#)
    };
    let good = position(STORE, 3);
    let limits = PullLimits::default();
    assert!(parse_pull(body(&good, &good).as_bytes(), &limits).is_ok());
    let too_long = "s".repeat(65);
    for (b, pointer) in [
        (body(&position("", 3), &good), "/known/store_id"),
        (body(&position(&too_long, 3), &good), "/known/store_id"),
        (body(&position("st\u{f6}re", 3), &good), "/known/store_id"),
        (body(&position(STORE, 1 << 53), &good), "/known/seq"),
        (body(&good, &position("", 3)), "/cursor/store_id"),
        (body(&good, &position(&too_long, 3)), "/cursor/store_id"),
        (body(&good, &position("st\u{f6}re", 3)), "/cursor/store_id"),
        (body(&good, &position(STORE, 1 << 53)), "/cursor/seq"),
    ] {
        let p = parse_pull(b.as_bytes(), &limits).unwrap_err();
        assert_eq!(
            (p.code.as_str(), p.pointer.as_deref()),
            ("bad_request", Some(pointer)),
            "{b}"
        );
    }
}

/// A cursor's `after` key follows the rules of a pushed key, U+0000
/// included: PostgreSQL's text cannot hold it, and both stores must answer
/// the same `400` rather than one `200` and one `503`.
#[test]
fn a_bad_cursor_after_key_names_its_member_and_u0000_is_refused() {
    let body = |after: &str| {
        format!(
            r#"{{"protocol":1,"client_id":"dev-1","cursor":{{"store_id":"{STORE}","seq":3,"fp":"0000000000000003","after":{after}}},"limit":10,"max_bytes":4194304,"wait_ms":0,"collections":null}}"#
        )
    };
    let limits = PullLimits::default();
    assert!(parse_pull(
        body(r#"{"collection":"notes","id":"n1"}"#).as_bytes(),
        &limits
    )
    .is_ok());
    assert!(parse_pull(
        body(r#"{"collection":"notes","id":""}"#).as_bytes(),
        &limits
    )
    .is_ok());
    let long = "x".repeat(1025);
    for (after, pointer) in [
        (
            r#"{"collection":"notes","id":"n\u0000"}"#.to_owned(),
            "/cursor/after/id",
        ),
        (
            r#"{"collection":"no\u0000tes","id":"n1"}"#.to_owned(),
            "/cursor/after/collection",
        ),
        (
            r#"{"collection":"","id":"n1"}"#.to_owned(),
            "/cursor/after/collection",
        ),
        (
            format!(r#"{{"collection":"notes","id":"{long}"}}"#),
            "/cursor/after/id",
        ),
    ] {
        let p = parse_pull(body(&after).as_bytes(), &limits).unwrap_err();
        assert_eq!(
            (p.code.as_str(), p.pointer.as_deref()),
            ("bad_request", Some(pointer)),
            "{after}"
        );
    }
}
