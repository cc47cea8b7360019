//! The durable store answers every push as the shared rules' in-memory
//! store does (`cpc_remote::MemoryRemote`): the same random pushes (new
//! operations, replays, reused ids, stale and missing base versions,
//! deletions, payloads over the limit, `known` positions in and out of the
//! history) give the same outcomes and the same heads, fingerprints
//! included. A store that judged one rule differently fails here.

use std::collections::BTreeSet;

use cpc_protocol::{
    EntityKey, Hex64, Kind, Limits, OpId, OpOutcome, Outcome, Payload, Position, Timestamp, WireOp,
};
use cpc_remote::MemoryRemote;
use cpc_server::{Store, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::Db;

const STORE: &str = "differential-store";
const SEEDS: u64 = 6;
const PUSHES: usize = 40;

fn limits() -> Limits {
    Limits {
        // Small, so that some payloads are over it.
        max_payload_bytes: 48,
        ..Limits::default()
    }
}

/// One random push: its client, operations and `known`.
struct Push {
    client: String,
    ops: Vec<WireOp>,
    known: Option<Position>,
}

fn random_push(
    rng: &mut StdRng,
    sent: &mut Vec<(String, WireOp)>,
    next_id: &mut u128,
    head: &Position,
) -> Push {
    let client = format!("dev-{}", rng.gen_range(0..3));
    let mut ops = Vec::new();
    for _ in 0..rng.gen_range(1..=5) {
        // A resend (the same op, or its id with other content) now and then.
        let earlier = sent
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, op)| op.clone())
            .collect::<Vec<_>>();
        if !earlier.is_empty() && rng.gen_bool(0.2) {
            let mut op = earlier[rng.gen_range(0..earlier.len())].clone();
            if rng.gen_bool(0.3) {
                op.payload = Payload(b"other content".to_vec());
            }
            if !ops.iter().any(|o: &WireOp| o.id == op.id) {
                ops.push(op);
            }
            continue;
        }
        *next_id += 1;
        let kind = match rng.gen_range(0..10) {
            0 => Kind::Delete,
            1..=3 => Kind::Create,
            _ => Kind::Update,
        };
        let len = if rng.gen_bool(0.1) {
            64
        } else {
            rng.gen_range(0..24)
        };
        let op = WireOp {
            id: OpId(*next_id),
            entity: EntityKey {
                collection: "notes".into(),
                id: format!("n{}", rng.gen_range(0..4)),
            },
            kind,
            payload: Payload(vec![b'x'; len]),
            base_version: match rng.gen_range(0..4) {
                0 => None,
                _ => Some(rng.gen_range(0..4)),
            },
            timestamp: Timestamp {
                wall_ms: 1_700_000_000_000 + *next_id as u64,
                logical: 0,
                node: Hex64(7),
            },
        };
        sent.push((client.clone(), op.clone()));
        ops.push(op);
    }
    let known = match rng.gen_range(0..6) {
        0 => None,
        1 => Some(Position {
            fp: Hex64(head.fp.0 ^ 1),
            ..head.clone()
        }),
        2 => Some(Position {
            seq: head.seq + 1,
            ..head.clone()
        }),
        _ => Some(head.clone()),
    };
    Push { client, ops, known }
}

/// What a push answered, comparable across stores.
#[derive(Debug, PartialEq)]
enum Answer {
    Outcomes(Vec<OpOutcome>, Position),
    Diverged(Position),
}

/// The first push on which `store` and `model` answer differently, if any;
/// every kind of answer seen is noted in `seen`.
async fn first_difference(
    store: &Store,
    model: &mut MemoryRemote,
    seed: u64,
    seen: &mut BTreeSet<String>,
) -> Option<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = Vec::new();
    let mut next_id = 0;
    for n in 0..PUSHES {
        let push = random_push(&mut rng, &mut sent, &mut next_id, &model.head());
        let expected = match model.push(&push.client, &push.ops, push.known.as_ref()) {
            Ok((outcomes, head)) => Answer::Outcomes(outcomes, head),
            Err(d) => Answer::Diverged(d.head),
        };
        let got = match store
            .push(
                push.client.clone(),
                push.ops.clone(),
                push.known.clone(),
                None,
            )
            .await
        {
            Ok((outcomes, head)) => Answer::Outcomes(outcomes, head),
            Err(StoreError::HistoryDiverged { head }) => Answer::Diverged(head),
            Err(e) => return Some(format!("push {n}: the store failed: {e}")),
        };
        if got != expected {
            return Some(format!(
                "push {n}: the store answered {got:?}, the rules {expected:?}"
            ));
        }
        match &got {
            Answer::Diverged(_) => {
                seen.insert("history_diverged".to_owned());
            }
            Answer::Outcomes(outcomes, _) => {
                for o in outcomes {
                    seen.insert(match &o.outcome {
                        Outcome::Rejected { code, .. } => format!("rejected {code}"),
                        other => format!("{other:?}")
                            .split([' ', '(', '{'])
                            .next()
                            .unwrap_or("")
                            .to_owned(),
                    });
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_answers_every_push_as_the_shared_rules_do() {
    let mut seen = BTreeSet::new();
    for seed in 0..SEEDS {
        let Some(db) = Db::fresh().await else {
            return;
        };
        let store = db.open_store(limits(), STORE).await;
        let mut model = MemoryRemote::new(STORE, limits());
        let found = first_difference(&store, &mut model, seed, &mut seen).await;
        assert_eq!(found, None, "seed {seed}");
    }
    // The random pushes reached every rule.
    for kind in [
        "Applied",
        "AlreadyApplied",
        "Conflict",
        "RetryLater",
        "rejected payload_too_large",
        "rejected op_id_reused",
        "history_diverged",
    ] {
        assert!(seen.contains(kind), "no {kind} in {seen:?}");
    }
}

/// The check can fail: against a model that applies resends again (the
/// rules' `no_dedupe` fault), the store's answer to a replay differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_applies_resends_again_is_told_apart() {
    let Some(db) = Db::fresh().await else {
        return;
    };
    let store = db.open_store(limits(), STORE).await;
    let mut broken = MemoryRemote::new(STORE, limits());
    broken.rules_mut().faults.no_dedupe = true;
    let found = first_difference(&store, &mut broken, 0, &mut BTreeSet::new()).await;
    assert!(
        found
            .as_deref()
            .is_some_and(|d| d.contains("AlreadyApplied")),
        "{found:?}"
    );
}
