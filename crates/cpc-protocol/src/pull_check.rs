//! Both doors of a pull (docs/protocol.md §7): `parse_pull` turns a request
//! body into a checked [`PullRequest`] or the problem to answer;
//! `check_pull_page` holds a page against the request before a client
//! applies anything (changes in order and above the cursor, gapless when
//! unfiltered, a cursor that advances when `has_more`, snapshot pages
//! inside their key range, sizes within the limits).

use std::collections::HashSet;

use crate::info::{MAX_KEY_BYTES, MAX_WALL_MS};
use crate::problem::Problem;
use crate::pull::{Change, PullLimits, PullRequest, PullResponse};
use crate::validate::{
    bad_request, check_position, check_protocol, parse_json, valid_client_id, AnswerError,
};

/// Parses and checks a pull body (its size already checked): the schema,
/// `limit`, `max_bytes`, `wait_ms` and `collections` within `limits`, the
/// positions well formed.
pub fn parse_pull(body: &[u8], limits: &PullLimits) -> Result<PullRequest, Box<Problem>> {
    let request: PullRequest = parse_json(body)?;
    check_protocol(request.protocol)?;
    if !valid_client_id(&request.client_id) {
        return Err(bad_request(
            "/client_id",
            "client_id must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    check_position(request.known.as_ref(), "/known")?;
    if let Some(c) = &request.cursor {
        check_position(Some(&c.position()), "/cursor")?;
        if let Some(after) = &c.after {
            // The same rules as a pushed key, U+0000 included: the key is
            // compared in the store, and PostgreSQL's text cannot hold
            // U+0000 (it would fail there while SQLite answered 200).
            if after.collection.is_empty()
                || after.collection.len() > MAX_KEY_BYTES
                || after.collection.contains('\0')
            {
                return Err(bad_request(
                    "/cursor/after/collection",
                    "collection must be 1 to 1024 bytes, without U+0000",
                ));
            }
            if after.id.len() > MAX_KEY_BYTES || after.id.contains('\0') {
                return Err(bad_request(
                    "/cursor/after/id",
                    "entity id must be at most 1024 bytes, without U+0000",
                ));
            }
        }
    }
    if request.limit == 0 || request.limit > limits.max_pull_limit {
        return Err(bad_request(
            "/limit",
            format!("limit must be 1 to {}", limits.max_pull_limit),
        ));
    }
    if !(limits.min_pull_bytes..=limits.max_pull_bytes).contains(&request.max_bytes) {
        return Err(bad_request(
            "/max_bytes",
            format!(
                "max_bytes must be {} to {}",
                limits.min_pull_bytes, limits.max_pull_bytes
            ),
        ));
    }
    if request.wait_ms > limits.max_pull_wait_ms {
        return Err(bad_request(
            "/wait_ms",
            format!("wait_ms must be at most {}", limits.max_pull_wait_ms),
        ));
    }
    if let Some(collections) = &request.collections {
        let distinct: HashSet<&String> = collections.iter().collect();
        if collections.is_empty()
            || collections.len() as u64 > limits.max_pull_collections
            || distinct.len() != collections.len()
            || collections
                .iter()
                .any(|c| c.is_empty() || c.len() > MAX_KEY_BYTES || c.contains('\0'))
        {
            return Err(bad_request(
                "/collections",
                format!(
                    "collections lists 1 to {} distinct names of 1 to 1024 bytes without U+0000, or is null",
                    limits.max_pull_collections
                ),
            ));
        }
    }
    Ok(request)
}

fn refuse(why: impl Into<String>) -> Result<(), AnswerError> {
    Err(AnswerError(why.into()))
}

/// Checks one change of any page: version at least 1, payload present
/// exactly when not deleted and within `max_payload`, `node` the
/// timestamp's, `wall_ms` within 48 bits.
fn check_change(c: &Change, max_payload: u64) -> Result<(), AnswerError> {
    if c.version == 0 {
        return refuse(format!("change at seq {} has version 0", c.seq));
    }
    match (&c.payload, c.deleted) {
        (Some(_), true) => return refuse(format!("deleted change at seq {} has a payload", c.seq)),
        (None, false) => return refuse(format!("live change at seq {} has no payload", c.seq)),
        (Some(p), false) if p.0.len() as u64 > max_payload => {
            return refuse(format!(
                "payload at seq {} is {} bytes, over {max_payload}",
                c.seq,
                p.0.len()
            ))
        }
        _ => {}
    }
    if c.node != c.timestamp.node || c.timestamp.wall_ms > MAX_WALL_MS {
        return refuse(format!(
            "change at seq {} has an inconsistent timestamp",
            c.seq
        ));
    }
    Ok(())
}

/// Checks a 200 pull answer against its request before anything of it is
/// applied: `answer_bytes` is the size of the body as received,
/// `max_payload` the client's payload limit. A refusal means: apply
/// nothing, keep the cursor, back off.
pub fn check_pull_page(
    request: &PullRequest,
    answer: &PullResponse,
    answer_bytes: u64,
    max_payload: u64,
) -> Result<(), AnswerError> {
    if answer_bytes > request.max_bytes {
        return refuse(format!(
            "answer of {answer_bytes} bytes over max_bytes {}",
            request.max_bytes
        ));
    }
    if answer.changes.len() as u64 > request.limit {
        return refuse(format!(
            "{} changes over limit {}",
            answer.changes.len(),
            request.limit
        ));
    }
    if answer.head.store_id != answer.cursor.store_id {
        return refuse("the cursor and the head name different stores");
    }
    for c in &answer.changes {
        check_change(c, max_payload)?;
    }
    match &answer.snapshot {
        None => check_change_page(request, answer),
        Some(_) => check_snapshot_page(request, answer),
    }
}

fn check_change_page(request: &PullRequest, answer: &PullResponse) -> Result<(), AnswerError> {
    let Some(from) = request.cursor.as_ref().filter(|c| c.after.is_none()) else {
        return refuse("a change page answers a pull that needed a snapshot page");
    };
    if answer.reset.is_some() {
        return refuse("a change page carries a reset");
    }
    let to = &answer.cursor;
    if to.store_id != from.store_id || to.after.is_some() {
        return refuse("the answer cursor is not a position of the same store");
    }
    if to.seq < from.seq {
        return refuse(format!(
            "the cursor went back from {} to {}",
            from.seq, to.seq
        ));
    }
    if answer.has_more && to.seq == from.seq {
        return refuse("has_more with a cursor that did not advance");
    }
    let mut last = from.seq;
    for c in &answer.changes {
        let expected_next = request.collections.is_none() && c.seq != last + 1;
        if c.seq <= last || expected_next {
            return refuse(format!(
                "change at seq {} after {last}: out of order or a gap",
                c.seq
            ));
        }
        last = c.seq;
    }
    if last > to.seq {
        return refuse(format!(
            "a change at seq {last} beyond the cursor {}",
            to.seq
        ));
    }
    if request.collections.is_none() && !answer.changes.is_empty() && last != to.seq {
        return refuse("an unfiltered page's cursor is not its last change");
    }
    Ok(())
}

fn check_snapshot_page(request: &PullRequest, answer: &PullResponse) -> Result<(), AnswerError> {
    let Some(range) = &answer.snapshot else {
        return Ok(());
    };
    let continuing = request
        .cursor
        .as_ref()
        .and_then(|c| c.after.as_ref().map(|a| (c, a)));
    match (answer.reset, continuing) {
        // A new snapshot starts from the start of the key space.
        (Some(_), _) => {
            if range.from.is_some() {
                return refuse("the first page of a snapshot does not start at the start");
            }
        }
        (None, Some((cursor, after))) => {
            if range.from.as_ref() != Some(after) {
                return refuse("the snapshot page does not start where the cursor stands");
            }
            if answer.cursor.store_id != cursor.store_id
                || answer.cursor.seq != cursor.seq
                || answer.cursor.fp != cursor.fp
            {
                return refuse("a snapshot's base position changed mid-snapshot");
            }
        }
        (None, None) => return refuse("a snapshot page without a reset answers a change cursor"),
    }
    if let (Some(from), Some(through)) = (&range.from, &range.through) {
        if through <= from {
            return refuse("a snapshot range that does not advance");
        }
    }
    let mut previous = range.from.as_ref();
    for c in &answer.changes {
        if c.deleted {
            return refuse("a snapshot lists a tombstone");
        }
        if previous.is_some_and(|p| c.entity <= *p) {
            return refuse("snapshot keys out of order or outside the range");
        }
        if range.through.as_ref().is_some_and(|t| c.entity > *t) {
            return refuse("a snapshot key beyond the range");
        }
        previous = Some(&c.entity);
    }
    match &range.through {
        Some(through) => {
            if answer.cursor.after.as_ref() != Some(through) || !answer.has_more {
                return refuse("a partial snapshot page must continue after its range");
            }
        }
        None => {
            if answer.cursor.after.is_some() {
                return refuse("the last snapshot page's cursor still has an after");
            }
        }
    }
    Ok(())
}
