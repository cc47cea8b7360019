//! docs/protocol.md §10 through the wire types: every push request example
//! is what `parse_push` accepts (or refuses with the example's own 400
//! answer), every answer parses as the type it is (`PushResponse`,
//! `Problem`, `Info`) and serializes back to the same JSON value. The
//! server side, replaying the examples, is `cpc-server`'s
//! `tests/doc_examples.rs`.
//!
//! The pull examples (§10.5–10.9) pass `parse_pull`, parse as
//! `PullResponse` (or `Problem`, for the 409) and pass `check_pull_page`
//! against their own request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use cpc_protocol::{
    check_push_answer, parse_push, parse_retry_after, Info, Limits, OpId, Problem, PushResponse,
    HEALTH_BODY, PROTOCOLS,
};
use serde_json::Value;

/// One `http` block: its start line, headers and body (every line after the
/// blank line, each ending with a line feed).
#[derive(Debug)]
struct Block {
    start: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Block {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A body in parentheses is described, not literal.
    fn described(&self) -> bool {
        let t = self.body.trim();
        t.starts_with('(') && t.ends_with(')')
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("example {name}: the body is not JSON: {e}"))
    }

    fn path(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or_default()
    }

    fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", self.start))
    }
}

/// A named example: its request (absent for answer-only examples) and its
/// answer.
#[derive(Debug, Default)]
struct Example {
    name: String,
    request: Option<Block>,
    response: Option<Block>,
}

fn examples() -> Vec<Example> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let lines: Vec<&str> = doc.lines().collect();
    let mut out: Vec<Example> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(marker) = lines[i]
            .trim()
            .strip_prefix("<!-- example:")
            .and_then(|r| r.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let words: Vec<&str> = marker.split_whitespace().collect();
        let [name, role] = words[..] else {
            panic!("line {}: `<!-- example: NAME request|response -->`", i + 1);
        };
        assert_eq!(
            lines.get(i + 1).map(|l| l.trim()),
            Some("```http"),
            "{name}"
        );
        let end = (i + 2..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("example {name}: block not closed"));
        let content = &lines[i + 2..end];
        let blank = content
            .iter()
            .position(|l| l.trim().is_empty())
            .unwrap_or(content.len());
        let block = Block {
            start: content[0].trim().to_owned(),
            headers: content[1..blank]
                .iter()
                .map(|l| {
                    let (n, v) = l.split_once(':').expect("a header line");
                    (n.trim().to_owned(), v.trim().to_owned())
                })
                .collect(),
            body: content
                .get(blank + 1..)
                .unwrap_or_default()
                .iter()
                .map(|l| format!("{l}\n"))
                .collect(),
        };
        if !out.iter().any(|e| e.name == name) {
            out.push(Example {
                name: name.to_owned(),
                ..Example::default()
            });
        }
        let e = out.iter_mut().find(|e| e.name == name).unwrap();
        let slot = match role {
            "request" => &mut e.request,
            "response" => &mut e.response,
            other => panic!("example {name}: unknown role {other}"),
        };
        assert!(slot.is_none(), "example {name}: {role} twice");
        *slot = Some(block);
        i = end + 1;
    }
    out
}

/// `value` without the members named, for comparing past human text.
fn without(mut value: Value, members: &[&str]) -> Value {
    if let Some(o) = value.as_object_mut() {
        for m in members {
            o.remove(*m);
        }
    }
    value
}

/// A problem answer: it parses as `Problem`, its code is a v1 code with
/// this status and title, and it serializes back to the same value.
fn check_problem(name: &str, answer: &Block) -> Problem {
    assert_eq!(
        answer.header("Content-Type"),
        Some("application/problem+json"),
        "example {name}"
    );
    let doc = answer.json(name);
    let problem: Problem = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("example {name}: not a Problem: {e}"));
    let code = problem
        .problem_code()
        .unwrap_or_else(|| panic!("example {name}: {} is not a v1 code", problem.code));
    assert_eq!(
        (
            problem.status,
            answer.status(),
            problem.title.as_str(),
            problem.kind.as_str()
        ),
        (
            code.status(),
            code.status(),
            code.title(),
            format!("urn:cpc-sync:problem:{code}").as_str()
        ),
        "example {name}: status, title and type of {code}"
    );
    assert_eq!(
        serde_json::to_value(&problem).unwrap(),
        doc,
        "example {name}: round trip"
    );
    if let Some(ms) = answer.header("Cpc-Retry-After-Ms") {
        assert_eq!(
            problem.retry_after_ms.map(|v| v.to_string()).as_deref(),
            Some(ms)
        );
        let hint = parse_retry_after(answer.header("Retry-After"), Some(ms), SystemTime::now());
        assert_eq!(
            hint,
            Some(Duration::from_millis(ms.parse().unwrap())),
            "example {name}"
        );
        let secs = ms.parse::<u64>().unwrap().div_ceil(1000);
        assert_eq!(
            answer.header("Retry-After"),
            Some(secs.to_string().as_str()),
            "example {name}: Retry-After is the wait in seconds, rounded up"
        );
    }
    problem
}

#[test]
fn every_example_reads_as_its_wire_type() {
    let all = examples();
    assert!(all.len() >= 20, "the §10 examples: {}", all.len());
    let mut pulls = Vec::new();
    for e in &all {
        let name = e.name.as_str();
        let answer = e
            .response
            .as_ref()
            .unwrap_or_else(|| panic!("example {name} has no answer"));
        match e.request.as_ref().map(Block::path) {
            Some("/v1/health") => assert_eq!(answer.body, HEALTH_BODY, "example {name}"),
            Some("/v1/info") => {
                let doc = answer.json(name);
                let info: Info = serde_json::from_value(doc.clone()).unwrap();
                assert_eq!(info.protocols, PROTOCOLS, "example {name}");
                assert_eq!(
                    info.limits,
                    Limits::default(),
                    "example {name}: the defaults"
                );
                assert_eq!(serde_json::to_value(&info).unwrap(), doc, "example {name}");
            }
            Some("/v1/push") => check_push(name, e.request.as_ref().unwrap(), answer),
            Some("/v1/pull") => {
                check_pull(name, e.request.as_ref().unwrap(), answer);
                pulls.push(name);
            }
            Some(other) => panic!("example {name}: unknown path {other}"),
            // Answer only (415, 429, 503).
            None => {
                check_problem(name, answer);
            }
        }
    }
    assert!(pulls.len() >= 5, "the pull examples: {pulls:?}");
}

fn check_push(name: &str, request: &Block, answer: &Block) {
    if request.described() {
        // err-413: the body is described, and refused by its Content-Length
        // before anything parses it.
        assert_eq!(answer.status(), 413, "example {name}");
        check_problem(name, answer);
        return;
    }
    let parsed = parse_push(request.body.as_bytes(), &Limits::default());
    match answer.status() {
        400 => {
            let refused = parsed.expect_err(&format!("example {name}: parse_push must refuse it"));
            let problem = check_problem(name, answer);
            assert_eq!(
                without(serde_json::to_value(&*refused).unwrap(), &["detail"]),
                without(serde_json::to_value(&problem).unwrap(), &["detail"]),
                "example {name}: parse_push's problem is the example's"
            );
        }
        401 => {
            // Authentication comes first: the body is never read (its empty
            // `ops` would be a 400).
            check_problem(name, answer);
        }
        status => {
            let pushed = parsed.unwrap_or_else(|p| panic!("example {name}: {p}"));
            assert_eq!(
                serde_json::to_value(&pushed).unwrap(),
                request.json(name),
                "example {name}: the request round-trips"
            );
            if status == 200 {
                let doc = answer.json(name);
                let response: PushResponse = serde_json::from_value(doc.clone())
                    .unwrap_or_else(|e| panic!("example {name}: not a PushResponse: {e}"));
                assert_eq!(
                    serde_json::to_value(&response).unwrap(),
                    doc,
                    "example {name}"
                );
                let sent: Vec<OpId> = pushed.ops.iter().map(|op| op.id).collect();
                check_push_answer(&sent, &response)
                    .unwrap_or_else(|e| panic!("example {name}: {e}"));
                if let Some(known) = &pushed.known {
                    assert_eq!(response.head.store_id, known.store_id, "example {name}");
                    assert!(response.head.seq >= known.seq, "example {name}");
                }
            } else {
                check_problem(name, answer);
            }
        }
    }
}

/// A pull example: the request passes `parse_pull`; a 200 answer parses as
/// `PullResponse`, round-trips, and passes `check_pull_page` against its
/// request; any other answer is a problem.
fn check_pull(name: &str, request: &Block, answer: &Block) {
    let parsed = cpc_protocol::parse_pull(
        request.body.as_bytes(),
        &cpc_protocol::PullLimits::default(),
    )
    .unwrap_or_else(|p| panic!("example {name}: parse_pull refused it: {p}"));
    assert_eq!(
        serde_json::to_value(&parsed).unwrap(),
        request.json(name),
        "example {name}: request round trip"
    );
    if answer.status() != 200 {
        check_problem(name, answer);
        return;
    }
    let doc = answer.json(name);
    let page: cpc_protocol::PullResponse = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("example {name}: not a PullResponse: {e}"));
    assert_eq!(
        serde_json::to_value(&page).unwrap(),
        doc,
        "example {name}: round trip"
    );
    cpc_protocol::check_pull_page(&parsed, &page, answer.body.len() as u64, 1 << 20)
        .unwrap_or_else(|e| panic!("example {name}: {e}"));
}
