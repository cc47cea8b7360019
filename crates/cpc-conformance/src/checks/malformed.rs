//! Strict requests (docs/protocol.md §2.2, §2.3, §6.1): every malformed
//! push is `400 bad_request`, and nothing of it is applied. Each check
//! sends variants of one valid request broken in one way, then probes
//! that the request's operation was not applied.

use cpc_protocol::{OpId, ProblemCode, WireOp};
use serde_json::{json, Value};

use crate::harness::{context, expect_problem, Checked, Ctx};

/// Sends each `(label, body)` and expects `400 bad_request` for all, then
/// that none of `ops` was applied.
async fn expect_bad_requests(cx: &Ctx<'_>, cases: Vec<(&str, Vec<u8>)>, ops: &[WireOp]) -> Checked {
    for (label, body) in cases {
        let a = cx.post(body).await?;
        context(label, expect_problem(&a, ProblemCode::BadRequest))?;
    }
    if ops.is_empty() {
        return Ok(());
    }
    cx.expect_nothing_applied(ops).await
}

/// The valid request of one fresh operation, as a value to break.
fn one_op(cx: &Ctx<'_>, what: &str) -> (WireOp, Value) {
    let op = cx.fresh_op(what);
    let value = cx.request_value(std::slice::from_ref(&op));
    (op, value)
}

/// A JSON value as bytes.
fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// `v` with the member at `pointer` replaced by `raw` JSON text, for
/// number forms `serde_json` would not write (`1e3`).
fn with_raw(v: &Value, pointer: &str, raw: &str) -> Vec<u8> {
    const MARK: &str = "@@cpc-conformance-raw@@";
    let mut v = v.clone();
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = Value::String(MARK.into());
    }
    String::from_utf8_lossy(&bytes(&v))
        .replace(&format!("\"{MARK}\""), raw)
        .into_bytes()
}

/// `v` with the member at `pointer` set to `value`.
fn with(v: &Value, pointer: &str, value: Value) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = value;
    }
    bytes(&v)
}

/// `v` without member `name` of the object at `pointer`.
fn without(v: &Value, pointer: &str, name: &str) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(object) = v.pointer_mut(pointer).and_then(Value::as_object_mut) {
        object.remove(name);
    }
    bytes(&v)
}

/// Not one JSON object: truncated, followed by more, a byte order mark,
/// not JSON at all, `null`.
pub(crate) async fn malformed_json(cx: &Ctx<'_>) -> Checked {
    let (op, v) = one_op(cx, "malformed");
    let text = bytes(&v);
    let truncated = text[..text.len() - 2].to_vec();
    let trailing = [text.as_slice(), b" {}"].concat();
    let bom = [b"\xEF\xBB\xBF".as_slice(), text.as_slice()].concat();
    let cases = vec![
        ("a truncated body", truncated),
        ("an object followed by another", trailing),
        ("a body with a byte order mark", bom),
        (
            "a body that is not JSON",
            b"protocol=1&client_id=x".to_vec(),
        ),
        ("null", b"null".to_vec()),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}

/// A member of the wrong type, or a kind that is not one.
pub(crate) async fn wrong_type(cx: &Ctx<'_>) -> Checked {
    let (op, v) = one_op(cx, "wrong-type");
    let cases = vec![
        (
            "base_version as a string",
            with(&v, "/ops/0/base_version", json!("0")),
        ),
        ("client_id as a number", with(&v, "/client_id", json!(7))),
        (
            "entity.id as a number",
            with(&v, "/ops/0/entity/id", json!(5)),
        ),
        (
            "ops as an object",
            with(&v, "/ops", json!({"0": v["ops"][0].clone()})),
        ),
        ("protocol as a string", with(&v, "/protocol", json!("1"))),
        ("kind \"upsert\"", with(&v, "/ops/0/kind", json!("upsert"))),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}

/// An unknown member: a misspelt `base_version` (read as absent it would
/// turn a conditional write into a blind one), and unknown members of the
/// request and of an entity key.
pub(crate) async fn unknown_member(cx: &Ctx<'_>) -> Checked {
    let (op, v) = one_op(cx, "unknown-member");
    let mut misspelt = v.clone();
    if let Some(o) = misspelt["ops"][0].as_object_mut() {
        o.remove("base_version");
        o.insert("base_verison".into(), json!(0));
    }
    let mut top = v.clone();
    top["priority"] = json!(1);
    let mut entity = v.clone();
    entity["ops"][0]["entity"]["tenant"] = json!("t");
    let cases = vec![
        ("ops[0].base_verison", bytes(&misspelt)),
        ("a top-level member \"priority\"", bytes(&top)),
        ("entity.tenant", bytes(&entity)),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}

/// A required member left out.
pub(crate) async fn missing_member(cx: &Ctx<'_>) -> Checked {
    let (op, v) = one_op(cx, "missing-member");
    let cases = vec![
        ("no ops[0].timestamp", without(&v, "/ops/0", "timestamp")),
        ("no ops[0].payload", without(&v, "/ops/0", "payload")),
        (
            "no ops[0].entity.collection",
            without(&v, "/ops/0/entity", "collection"),
        ),
        ("no client_id", without(&v, "", "client_id")),
        ("no protocol", without(&v, "", "protocol")),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}

/// A member name twice in one object.
pub(crate) async fn duplicate_member(cx: &Ctx<'_>) -> Checked {
    let op = cx.fresh_op("duplicate-member");
    // Written by hand: a JSON value cannot hold a member twice.
    let op_text = serde_json::to_string(&op).unwrap_or_default();
    let op_fields = op_text.strip_prefix('{').unwrap_or(&op_text);
    let client = json!(cx.target.client_id);
    let request = |op: &str| format!(r#"{{"protocol":1,"client_id":{client},"ops":[{op}]}}"#);
    let cases = vec![
        (
            "protocol twice",
            request(&op_text)
                .replacen('{', r#"{"protocol":1,"#, 1)
                .into_bytes(),
        ),
        (
            "ops[0].kind twice",
            request(&format!(r#"{{"kind":"delete",{op_fields}"#)).into_bytes(),
        ),
        (
            "ops[0].entity.id twice",
            request(&op_text.replacen(r#""entity":{"#, r#""entity":{"id":"elsewhere","#, 1))
                .into_bytes(),
        ),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}

/// Payloads that are not standard padded base64.
pub(crate) async fn bad_base64(cx: &Ctx<'_>) -> Checked {
    let (op, v) = one_op(cx, "bad-base64");
    let at = "/ops/0/payload";
    let cases = vec![
        ("\"not base64!\"", with(&v, at, json!("not base64!"))),
        ("missing padding", with(&v, at, json!("aGk"))),
        ("the URL-safe alphabet", with(&v, at, json!("-_8="))),
        ("non-zero trailing bits", with(&v, at, json!("aGl="))),
        ("a line break", with(&v, at, json!("aGk=\n"))),
        ("a space", with(&v, at, json!("aG k="))),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}

/// Operation ids that are not the canonical form: lowercase, a Crockford
/// alias letter, over 128 bits, the wrong length. The probe then pushes
/// the canonical id: a server that read the lowercase id as the same id
/// and applied it would answer `already_applied`.
pub(crate) async fn non_canonical_op_id(cx: &Ctx<'_>) -> Checked {
    let (mut op, _) = one_op(cx, "op-id");
    // Lowercase must differ: the id needs a letter (almost always true).
    while !op.id.to_string().bytes().any(|b| b.is_ascii_uppercase()) {
        op.id = cx.op_id();
    }
    let v = cx.request_value(std::slice::from_ref(&op));
    let canonical = op.id.to_string();
    let with_last = |c: char| {
        let mut s = canonical[..canonical.len() - 1].to_owned();
        s.push(c);
        s
    };
    let overflow = format!("8{}", &canonical[1..]);
    let at = "/ops/0/id";
    let cases = vec![
        (
            "a lowercase id",
            with(&v, at, json!(canonical.to_lowercase())),
        ),
        ("the alias O", with(&v, at, json!(with_last('O')))),
        ("the alias I", with(&v, at, json!(with_last('I')))),
        ("the alias L", with(&v, at, json!(with_last('L')))),
        ("a first character over 7", with(&v, at, json!(overflow))),
        ("25 characters", with(&v, at, json!(&canonical[1..]))),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}

/// One id twice in a batch, on the same and on another entity.
pub(crate) async fn repeated_op_id(cx: &Ctx<'_>) -> Checked {
    let first = cx.fresh_op("repeated");
    let mut elsewhere = cx.fresh_op("repeated");
    let fresh_id: OpId = elsewhere.id;
    elsewhere.id = first.id;
    let same_twice = bytes(&cx.request_value(&[first.clone(), first.clone()]));
    let other_entity = bytes(&cx.request_value(&[first.clone(), elsewhere.clone()]));
    let cases = vec![
        ("the same operation twice", same_twice),
        ("one id on two entities", other_entity),
    ];
    // The probe: the first operation, and the second entity under an id of
    // its own.
    elsewhere.id = fresh_id;
    expect_bad_requests(cx, cases, &[first, elsewhere]).await
}

/// `ops: []`.
pub(crate) async fn empty_ops(cx: &Ctx<'_>) -> Checked {
    let body = bytes(&cx.request_value(&[]));
    expect_bad_requests(cx, vec![("an empty batch", body)], &[]).await
}

/// An array where an object belongs, at any depth (some JSON readers take
/// an object's members by position from an array).
pub(crate) async fn array_for_object(cx: &Ctx<'_>) -> Checked {
    let (op, v) = one_op(cx, "array");
    let o = &v["ops"][0];
    let as_array = |x: &Value| -> Value {
        Value::Array(
            x.as_object()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
        )
    };
    let cases = vec![
        (
            "the entity as an array",
            with(&v, "/ops/0/entity", as_array(&o["entity"])),
        ),
        (
            "the timestamp as an array",
            with(&v, "/ops/0/timestamp", as_array(&o["timestamp"])),
        ),
        ("an operation as an array", with(&v, "/ops/0", as_array(o))),
        ("the request as an array", bytes(&as_array(&v))),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}

/// Integers are plain JSON numbers in `0 ..= 2^53 - 1`: `1.0`, `-1`,
/// `1e3` and 2^53 are refused.
pub(crate) async fn integer_form(cx: &Ctx<'_>) -> Checked {
    let (op, v) = one_op(cx, "integers");
    let at = "/ops/0/base_version";
    let cases = vec![
        ("base_version 1.0", with_raw(&v, at, "1.0")),
        ("base_version -1", with_raw(&v, at, "-1")),
        ("base_version 1e3", with_raw(&v, at, "1e3")),
        ("base_version 2^53", with_raw(&v, at, "9007199254740992")),
        (
            "timestamp.logical 0.5",
            with_raw(&v, "/ops/0/timestamp/logical", "0.5"),
        ),
    ];
    expect_bad_requests(cx, cases, &[op]).await
}
