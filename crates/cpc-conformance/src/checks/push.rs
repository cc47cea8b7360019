//! The per-operation rules of a push (docs/protocol.md §6.3–§6.5, §6.8):
//! one outcome per operation, replays, reused ids, conflicts with the
//! full remote record, conflicts and retry-laters never recorded, order
//! within a batch, tombstones.

use cpc_protocol::{
    reject_code, Applied, Hex64, Kind, Outcome, Payload, ProblemCode, RemoteState, Timestamp,
    WireOp,
};

use crate::harness::{
    applied, context, describe, ensure, expect_problem, fail, outcome, Checked, Ctx,
};

/// The `conflict` outcome of `op`: its remote record.
fn conflict<'r>(
    answer: &'r cpc_protocol::PushResponse,
    op: &WireOp,
) -> Result<&'r RemoteState, crate::harness::NotPassed> {
    match outcome(answer, op)? {
        Outcome::Conflict { remote } => Ok(remote),
        other => fail!(
            "operation {} expected conflict, got {}",
            op.id,
            describe(other)
        ),
    }
}

/// A conflict's remote record is exactly the state `writer` left
/// (`version`, its timestamp, its node, its payload or null if deleted).
fn expect_remote(remote: &RemoteState, version: u64, writer: &WireOp) -> Checked {
    let payload = match writer.kind {
        Kind::Delete => None,
        _ => Some(writer.payload.clone()),
    };
    let expected = RemoteState {
        version,
        timestamp: writer.timestamp,
        node: writer.timestamp.node,
        payload,
    };
    ensure!(
        *remote == expected,
        "the remote record is {}, expected {}",
        serde_json::to_string(remote).unwrap_or_default(),
        serde_json::to_string(&expected).unwrap_or_default()
    );
    Ok(())
}

/// A batch of every outcome (applied, already applied, conflict,
/// retry-later) names each operation exactly once, by id.
pub(crate) async fn outcomes_name_every_op(cx: &Ctx<'_>) -> Checked {
    let replayed = cx.fresh_op("named-replay");
    context(
        "the first push",
        cx.push(std::slice::from_ref(&replayed)).await,
    )?;
    let first = cx.fresh_op("named");
    let conflicted_entity = cx.entity("named-conflict");
    let conflicted = cx.op(&conflicted_entity, Kind::Update, b"c", Some(5));
    let blocked = cx.op(&conflicted_entity, Kind::Update, b"b", None);
    let last = cx.fresh_op("named");
    let batch = [
        first.clone(),
        replayed.clone(),
        conflicted.clone(),
        blocked.clone(),
        last.clone(),
    ];
    // `push` refuses an answer with an outcome missing, unknown or twice.
    let answer = cx.push(&batch).await?;
    applied(&answer, &first)?;
    applied(&answer, &last)?;
    match outcome(&answer, &replayed)? {
        Outcome::AlreadyApplied(_) => {}
        other => fail!("a replay answered {}", describe(other)),
    }
    conflict(&answer, &conflicted)?;
    match outcome(&answer, &blocked)? {
        Outcome::RetryLater { .. } => Ok(()),
        other => fail!(
            "an operation behind a conflicted one of its entity answered {}",
            describe(other)
        ),
    }
}

/// A push carrying `known` (a head this server gave) and `low_water` is
/// accepted and applied.
pub(crate) async fn known_and_low_water_accepted(cx: &Ctx<'_>) -> Checked {
    let first = cx.push(&[cx.fresh_op("known")]).await?;
    let op = cx.fresh_op("known");
    let mut request = cx.request(std::slice::from_ref(&op));
    request.known = Some(first.head);
    request.low_water = Some(op.id);
    let answer = cx.push_request(&request).await?;
    applied(&answer, &op)?;
    Ok(())
}

/// A `known` position this history does not have is `409
/// history_diverged` with the server's head and nothing applied (§8): a
/// seq above the head, and a real seq with another fingerprint (what a
/// server restored from a backup and written to since would see).
pub(crate) async fn known_diverged(cx: &Ctx<'_>) -> Checked {
    let first = cx.push(&[cx.fresh_op("diverged")]).await?;
    let head = first.head;
    let ahead = cpc_protocol::Position {
        seq: head.seq + 1_000_000,
        ..head.clone()
    };
    let other_fp = cpc_protocol::Position {
        fp: cpc_protocol::Hex64(head.fp.0 ^ 1),
        ..head.clone()
    };
    for (label, known) in [
        ("a seq above the head", ahead),
        ("another fingerprint", other_fp),
    ] {
        let op = cx.fresh_op("diverged");
        let mut request = cx.request(std::slice::from_ref(&op));
        request.known = Some(known);
        let answer = cx
            .post(serde_json::to_vec(&request).unwrap_or_default())
            .await?;
        let problem = context(label, expect_problem(&answer, ProblemCode::HistoryDiverged))?;
        ensure!(
            problem
                .head
                .as_ref()
                .is_some_and(|h| h.store_id == head.store_id && h.seq >= head.seq),
            "{label}: the 409 does not carry the server's head"
        );
        context(label, cx.expect_nothing_applied(&[op]).await)?;
    }
    Ok(())
}

/// A replay answers `already_applied` with the first application's
/// version and seq, alone or beside new operations, and changes nothing
/// (the entity's version is still the first one).
pub(crate) async fn replay_already_applied(cx: &Ctx<'_>) -> Checked {
    let a = cx.fresh_op("replay");
    let b = cx.fresh_op("replay");
    let first = cx.push(&[a.clone(), b.clone()]).await?;
    let (fa, fb) = (applied(&first, &a)?, applied(&first, &b)?);
    let expect_replay =
        |answer: &cpc_protocol::PushResponse, op: &WireOp, was: Applied| -> Checked {
            match outcome(answer, op)? {
                Outcome::AlreadyApplied(x) if *x == was => Ok(()),
                other => fail!(
                    "replaying {} (first applied at version {}, seq {}) answered {}",
                    op.id,
                    was.version,
                    was.seq,
                    describe(other)
                ),
            }
        };
    let again = cx.push(&[a.clone(), b.clone()]).await?;
    expect_replay(&again, &a, fa)?;
    expect_replay(&again, &b, fb)?;
    let c = cx.fresh_op("replay");
    let mixed = cx.push(&[b.clone(), c.clone()]).await?;
    expect_replay(&mixed, &b, fb)?;
    context("a new operation beside a replay", applied(&mixed, &c))?;
    // Still at the first version: the replays were not applied again.
    let next = cx.op(&a.entity, Kind::Update, b"next", Some(fa.version));
    let answer = cx.push(std::slice::from_ref(&next)).await?;
    context(
        "an update on the version of the first application",
        applied(&answer, &next),
    )?;
    Ok(())
}

/// An applied id sent again with other content (payload, entity or kind)
/// is rejected `op_id_reused`, not silently taken for a replay.
pub(crate) async fn op_id_reused(cx: &Ctx<'_>) -> Checked {
    let op = cx.fresh_op("reused");
    cx.push(std::slice::from_ref(&op)).await?;
    let other_payload = WireOp {
        payload: Payload(b"other content".to_vec()),
        ..op.clone()
    };
    let other_entity = WireOp {
        entity: cx.entity("reused-elsewhere"),
        ..op.clone()
    };
    let other_kind = WireOp {
        kind: Kind::Custom("archive".into()),
        ..op.clone()
    };
    for (label, reused) in [
        ("another payload", other_payload),
        ("another entity", other_entity),
        ("another kind", other_kind),
    ] {
        let answer = cx.push(std::slice::from_ref(&reused)).await?;
        match outcome(&answer, &reused)? {
            Outcome::Rejected { code, .. } if code == reject_code::OP_ID_REUSED => {}
            other => fail!("the applied id with {label} answered {}", describe(other)),
        }
    }
    Ok(())
}

/// `base_version: 0` on an entity never written applies it at version 1;
/// a second create-if-absent conflicts with the first one's record.
pub(crate) async fn create_if_absent(cx: &Ctx<'_>) -> Checked {
    let entity = cx.entity("create");
    let first = cx.op(&entity, Kind::Create, b"first", Some(0));
    let answer = cx.push(std::slice::from_ref(&first)).await?;
    let a = applied(&answer, &first)?;
    ensure!(
        a.version == 1,
        "a create-if-absent applied at version {}, not 1",
        a.version
    );
    let second = cx.op(&entity, Kind::Create, b"second", Some(0));
    let answer = cx.push(std::slice::from_ref(&second)).await?;
    expect_remote(conflict(&answer, &second)?, 1, &first)
}

/// A `base_version` below the entity's version conflicts, with the
/// remote record of the latest write.
pub(crate) async fn conflict_stale_base(cx: &Ctx<'_>) -> Checked {
    let entity = cx.entity("stale");
    let one = cx.op(&entity, Kind::Update, b"one", None);
    cx.push(std::slice::from_ref(&one)).await?;
    let two = cx.op(&entity, Kind::Update, b"two", Some(1));
    let answer = cx.push(std::slice::from_ref(&two)).await?;
    applied(&answer, &two)?;
    let stale = cx.op(&entity, Kind::Update, b"mine", Some(1));
    let answer = cx.push(std::slice::from_ref(&stale)).await?;
    expect_remote(conflict(&answer, &stale)?, 2, &two)
}

/// A `base_version` above the entity's version (from a history the server
/// no longer has) conflicts too.
pub(crate) async fn conflict_base_ahead(cx: &Ctx<'_>) -> Checked {
    let entity = cx.entity("ahead");
    let one = cx.op(&entity, Kind::Update, b"one", None);
    cx.push(std::slice::from_ref(&one)).await?;
    let ahead = cx.op(&entity, Kind::Update, b"mine", Some(5));
    let answer = cx.push(std::slice::from_ref(&ahead)).await?;
    expect_remote(conflict(&answer, &ahead)?, 1, &one)
}

/// A `base_version` on an entity never written conflicts with the
/// never-written record: version 0, zero timestamp and node, no payload.
pub(crate) async fn conflict_never_written(cx: &Ctx<'_>) -> Checked {
    let op = cx.op(&cx.entity("never"), Kind::Update, b"mine", Some(3));
    let answer = cx.push(std::slice::from_ref(&op)).await?;
    let remote = conflict(&answer, &op)?;
    let never = RemoteState {
        version: 0,
        timestamp: Timestamp::default(),
        node: Hex64(0),
        payload: None,
    };
    ensure!(
        *remote == never,
        "the remote record of a never-written entity is {}, expected {}",
        serde_json::to_string(remote).unwrap_or_default(),
        serde_json::to_string(&never).unwrap_or_default()
    );
    Ok(())
}

/// A conflict is not recorded: the same id resent with `base_version` =
/// the remote version is applied (then, and only then, replays answer
/// `already_applied`).
pub(crate) async fn conflict_not_cached(cx: &Ctx<'_>) -> Checked {
    let entity = cx.entity("resend");
    let theirs = cx.op(&entity, Kind::Update, b"theirs", None);
    cx.push(std::slice::from_ref(&theirs)).await?;
    let mine = cx.op(&entity, Kind::Update, b"mine", Some(0));
    let answer = cx.push(std::slice::from_ref(&mine)).await?;
    let remote = conflict(&answer, &mine)?;
    let resolved = WireOp {
        base_version: Some(remote.version),
        ..mine.clone()
    };
    let answer = cx.push(std::slice::from_ref(&resolved)).await?;
    let a = context(
        "the conflicted id resent with base_version = remote.version",
        applied(&answer, &resolved),
    )?;
    ensure!(
        a.version == remote.version + 1,
        "applied at version {}, not {}",
        a.version,
        remote.version + 1
    );
    Ok(())
}

/// An operation behind a conflicted one of its entity in the same batch
/// answers `retry_later` (`after_ms` 0) while another entity's operation
/// is applied; resent alone, it is applied (retry-laters are not
/// recorded).
pub(crate) async fn retry_later_behind_conflict(cx: &Ctx<'_>) -> Checked {
    let entity = cx.entity("blocked");
    let theirs = cx.op(&entity, Kind::Update, b"theirs", None);
    cx.push(std::slice::from_ref(&theirs)).await?;
    let stale = cx.op(&entity, Kind::Update, b"stale", Some(0));
    let behind = cx.op(&entity, Kind::Update, b"behind", None);
    let other = cx.fresh_op("unblocked");
    let answer = cx
        .push(&[stale.clone(), behind.clone(), other.clone()])
        .await?;
    conflict(&answer, &stale)?;
    match outcome(&answer, &behind)? {
        Outcome::RetryLater { after_ms: 0 } => {}
        other => fail!(
            "the operation behind the conflict answered {}, not retry_later with after_ms 0",
            describe(other)
        ),
    }
    context(
        "another entity's operation in the batch",
        applied(&answer, &other),
    )?;
    let answer = cx.push(std::slice::from_ref(&behind)).await?;
    context(
        "the retry-later operation resent alone",
        applied(&answer, &behind),
    )?;
    Ok(())
}

/// Two updates of one entity in one batch apply in array order: versions
/// n+1 then n+2, the second one's seq after the first's.
pub(crate) async fn same_entity_order(cx: &Ctx<'_>) -> Checked {
    let entity = cx.entity("order");
    let base = cx.op(&entity, Kind::Update, b"base", None);
    let answer = cx.push(std::slice::from_ref(&base)).await?;
    let n = applied(&answer, &base)?.version;
    let first = cx.op(&entity, Kind::Update, b"first", Some(n));
    let second = cx.op(&entity, Kind::Update, b"second", Some(n + 1));
    let blind = cx.op(&entity, Kind::Update, b"blind", None);
    let answer = cx
        .push(&[first.clone(), second.clone(), blind.clone()])
        .await?;
    let (a, b, c) = (
        applied(&answer, &first)?,
        applied(&answer, &second)?,
        applied(&answer, &blind)?,
    );
    ensure!(
        (a.version, b.version, c.version) == (n + 1, n + 2, n + 3),
        "versions {}, {}, {}; expected {}, {}, {}",
        a.version,
        b.version,
        c.version,
        n + 1,
        n + 2,
        n + 3
    );
    ensure!(
        a.seq < b.seq && b.seq < c.seq,
        "seqs {}, {}, {} do not follow the array order",
        a.seq,
        b.seq,
        c.seq
    );
    Ok(())
}

/// A delete makes a tombstone: its version counts, a stale write conflicts
/// with `payload: null`, and the entity goes on from the delete's version.
pub(crate) async fn delete_tombstone(cx: &Ctx<'_>) -> Checked {
    let entity = cx.entity("delete");
    let create = cx.op(&entity, Kind::Create, b"alive", Some(0));
    cx.push(std::slice::from_ref(&create)).await?;
    let delete = cx.op(&entity, Kind::Delete, b"", Some(1));
    let answer = cx.push(std::slice::from_ref(&delete)).await?;
    let d = applied(&answer, &delete)?;
    ensure!(
        d.version == 2,
        "the delete applied at version {}, not 2",
        d.version
    );
    let stale = cx.op(&entity, Kind::Update, b"stale", Some(1));
    let answer = cx.push(std::slice::from_ref(&stale)).await?;
    expect_remote(conflict(&answer, &stale)?, 2, &delete)?;
    let revive = cx.op(&entity, Kind::Update, b"again", Some(2));
    let answer = cx.push(std::slice::from_ref(&revive)).await?;
    let r = context(
        "an update on the tombstone's version",
        applied(&answer, &revive),
    )?;
    ensure!(r.version == 3, "applied at version {}, not 3", r.version);
    Ok(())
}
