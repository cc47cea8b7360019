//! `POST /v1/pull` over loopback: change pages, filters, byte limits,
//! snapshots with replace semantics, long polls, compaction and the
//! history check. Every 200 is held to the client's rules
//! (`check_pull_page`) before it is looked at.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpc_protocol::{Cursor, PullRequest, PullResponse, ResetReason};
use cpc_server::RunningServer;
use serde_json::{json, Value};

use super::support::{self, base, pull, pull_raw, push, push_body, TOKEN};

const CLIENT: &str = "dev-puller";

fn request(cursor: Option<Cursor>, limit: u64) -> PullRequest {
    PullRequest {
        protocol: 1,
        client_id: CLIENT.into(),
        known: None,
        cursor,
        limit,
        max_bytes: 2 << 20,
        wait_ms: 0,
        collections: None,
    }
}

/// Writes `n` changes: `notes/e{i % entities}` updated in turn, every
/// third one in `tasks` instead.
async fn write(server: &RunningServer, from: u128, n: u128, entities: u128, payload: &str) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                let mut op = support::op(i, &format!("e{}", i % entities), payload, None);
                if i % 3 == 0 {
                    op["entity"]["collection"] = json!("tasks");
                }
                op
            })
            .collect();
        let (status, answer) = push(server, &push_body(CLIENT, ops)).await;
        assert_eq!(status, 200, "{answer}");
    }
}

/// A copy of the remote state built the way a client must: snapshot pages
/// replace their key range, change pages apply what is newer.
#[derive(Default)]
struct Replica {
    entities: BTreeMap<(String, String), (u64, bool)>,
    cursor: Option<Cursor>,
}

impl Replica {
    fn apply(&mut self, page: &PullResponse) {
        if let Some(range) = &page.snapshot {
            let key = |k: &cpc_protocol::EntityKey| (k.collection.clone(), k.id.clone());
            let from = range.from.as_ref().map(key);
            let through = range.through.as_ref().map(key);
            self.entities.retain(|k, _| {
                from.as_ref().is_some_and(|f| k <= f) || through.as_ref().is_some_and(|t| k > t)
            });
            for c in &page.changes {
                self.entities.insert(key(&c.entity), (c.version, false));
            }
        } else {
            for c in &page.changes {
                let k = (c.entity.collection.clone(), c.entity.id.clone());
                let held = self.entities.get(&k).map_or(0, |e| e.0);
                if c.version > held {
                    self.entities.insert(k, (c.version, c.deleted));
                }
            }
        }
        self.cursor = Some(page.cursor.clone());
    }

    /// Pulls until `has_more` is false; the pages read.
    async fn catch_up(&mut self, server: &RunningServer, limit: u64) -> usize {
        let mut pages = 0;
        loop {
            let page = pull(server, &request(self.cursor.clone(), limit)).await;
            self.apply(&page);
            pages += 1;
            assert!(pages < 10_000, "a pull that never ends");
            if !page.has_more {
                return pages;
            }
        }
    }

    fn live(&self) -> BTreeMap<(String, String), u64> {
        self.entities
            .iter()
            .filter(|(_, (_, deleted))| !deleted)
            .map(|(k, (v, _))| (k.clone(), *v))
            .collect()
    }
}

/// The server's live entities, from a fresh snapshot in one page.
async fn truth(server: &RunningServer) -> BTreeMap<(String, String), u64> {
    let mut fresh = Replica::default();
    fresh.catch_up(server, 10_000).await;
    fresh.live()
}

#[tokio::test]
async fn a_new_device_snapshots_then_follows_the_change_feed() {
    let Some(dir) = support::Db::fresh().await else {
        return;
    };
    let server = support::start(&dir).await;
    write(&server, 1, 250, 40, "x").await;
    // A delete: left out of snapshots, delivered as a tombstone change.
    let mut del = support::op(1000, "e1", "", None);
    del["kind"] = json!("delete");
    del["payload"] = json!("");
    assert_eq!(push(&server, &push_body(CLIENT, vec![del])).await.0, 200);

    let mut device = Replica::default();
    let first = pull(&server, &request(None, 7)).await;
    assert_eq!(first.reset.map(|r| r.reason), Some(ResetReason::Initial));
    device.apply(&first);
    let pages = 1 + device.catch_up(&server, 7).await;
    assert!(pages >= 40 / 7, "the snapshot came in pages of 7: {pages}");
    assert_eq!(device.cursor.as_ref().unwrap().seq, 251);
    assert!(!device.live().contains_key(&("notes".into(), "e1".into())));

    // Then changes: gapless from the cursor, the tombstone too.
    write(&server, 2000, 30, 40, "y").await;
    let mut del = support::op(3000, "e2", "", None);
    del["kind"] = json!("delete");
    del["payload"] = json!("");
    assert_eq!(push(&server, &push_body(CLIENT, vec![del])).await.0, 200);
    let pages = device.catch_up(&server, 4).await;
    assert_eq!(pages, 8, "31 changes in pages of 4");
    assert_eq!(device.cursor.as_ref().unwrap().seq, 282);
    assert_eq!(device.live(), truth(&server).await);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_snapshot_resumes_from_any_persisted_cursor_and_replaces_its_range() {
    let Some(dir) = support::Db::fresh().await else {
        return;
    };
    let server = support::start(&dir).await;
    write(&server, 1, 90, 90, "x").await;
    // A device with stale local state: entities the server never had, and
    // an old version of one it has.
    let mut device = Replica::default();
    device
        .entities
        .insert(("notes".into(), "zz-local-only".into()), (9, false));
    device
        .entities
        .insert(("notes".into(), "e1".into()), (99, false));
    device
        .entities
        .insert(("aaa".into(), "before-everything".into()), (1, false));
    let page = pull(&server, &request(None, 10)).await;
    device.apply(&page);
    // Interrupted: writes land mid-snapshot; a new server process reads
    // the same store.
    write(&server, 500, 20, 90, "y").await;
    server.shutdown().await.unwrap();
    let server = support::start(&dir).await;
    device.catch_up(&server, 10).await;
    assert_eq!(
        device.live(),
        truth(&server).await,
        "replace semantics: local-only entities gone, versions the server's"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_filtered_scope_skips_other_collections_and_its_cursor_still_advances() {
    let Some(dir) = support::Db::fresh().await else {
        return;
    };
    let server = support::start(&dir).await;
    write(&server, 1, 60, 10, "x").await;
    let mut req = request(None, 1000);
    req.collections = Some(vec!["tasks".into()]);
    let snap = pull(&server, &req).await;
    assert!(snap.changes.iter().all(|c| c.entity.collection == "tasks"));
    assert!(!snap.changes.is_empty());
    // Only notes change now: the tasks feed answers empty pages whose
    // cursor moves to the head.
    let notes: Vec<Value> = (100..110)
        .map(|i| support::op(i * 3 + 1, "n", "z", None))
        .collect();
    assert_eq!(push(&server, &push_body(CLIENT, notes)).await.0, 200);
    req.cursor = Some(snap.cursor.clone());
    let page = pull(&server, &req).await;
    assert!(page.changes.is_empty());
    assert_eq!(page.cursor.seq, page.head.seq);
    assert!(!page.has_more);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn pages_stay_within_max_bytes_and_still_list_one_change() {
    let Some(dir) = support::Db::fresh().await else {
        return;
    };
    let mut config = dir.config();
    config.limits.max_payload_bytes = 700_000;
    config.pull_limits.min_pull_bytes = 1_400_000;
    let server = support::start_with(config).await;
    let big = "b".repeat(600_000);
    for i in 0..6u128 {
        let (status, answer) = push(
            &server,
            &push_body(
                CLIENT,
                vec![support::op(i + 1, &format!("big{i}"), &big, None)],
            ),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let mut req = request(None, 1000);
    req.max_bytes = 1_400_000;
    let mut device = Replica::default();
    let mut pages = 0;
    loop {
        req.cursor = device.cursor.clone();
        let page = pull(&server, &req).await;
        assert!(page.changes.len() <= 1, "600 kB payloads, 1.4 MB pages");
        device.apply(&page);
        pages += 1;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, 6);
    assert_eq!(device.live().len(), 6);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_as_soon_as_a_change_lands_and_at_shutdown() {
    let Some(dir) = support::Db::fresh().await else {
        return;
    };
    let server = support::start(&dir).await;
    write(&server, 1, 3, 3, "x").await;
    let mut device = Replica::default();
    device.catch_up(&server, 100).await;
    let mut req = request(device.cursor.clone(), 100);
    req.wait_ms = 20_000;
    let body = serde_json::to_value(&req).unwrap();
    let base_url = base(&server);
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let r = reqwest::Client::new()
            .post(format!("{base_url}/v1/pull"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (started.elapsed(), r.json::<PullResponse>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    write(&server, 10, 1, 3, "y").await;
    let (took, page) = waiting.await.unwrap();
    assert_eq!(page.changes.len(), 1, "{page:?}");
    assert!(
        took < Duration::from_secs(10),
        "answered at the push: {took:?}"
    );

    // A long poll still waiting when the server stops is answered at once.
    req.cursor = Some(page.cursor.clone());
    let body = serde_json::to_value(&req).unwrap();
    let base_url = base(&server);
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let r = reqwest::Client::new()
            .post(format!("{base_url}/v1/pull"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            started.elapsed(),
            r.status().as_u16(),
            r.json::<PullResponse>().await.unwrap(),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown().await.unwrap();
    let (took, status, page) = waiting.await.unwrap();
    assert_eq!((status, page.changes.len()), (200, 0));
    assert!(
        took < Duration::from_secs(10),
        "answered at shutdown: {took:?}"
    );
}

#[tokio::test]
async fn a_cursor_below_the_compaction_horizon_gets_a_snapshot() {
    let Some(dir) = support::Db::fresh().await else {
        return;
    };
    let server = support::start(&dir).await;
    write(&server, 1, 20, 5, "x").await;
    let mut device = Replica::default();
    device.catch_up(&server, 100).await;
    let old = device.cursor.clone().unwrap();
    let old = Cursor {
        seq: 3,
        fp: fp_at(&server, 3).await,
        ..old
    };
    write(&server, 100, 5, 5, "y").await;
    let horizon = server.store().compact(u64::MAX).await.unwrap();
    assert_eq!(horizon, 25, "every row is older than the end of time");
    let page = pull(&server, &request(Some(old), 100)).await;
    assert_eq!(page.reset.map(|r| r.reason), Some(ResetReason::Compacted));
    // A cursor at the horizon still reads changes (none above it yet).
    let at = pull(&server, &request(Some(page.cursor.clone()), 100)).await;
    assert!(at.reset.is_none() && at.snapshot.is_none());
    // The log keeps every row, without payloads below the horizon.
    let mut out = Vec::new();
    let rows = dir.export_log(&mut out).await;
    assert_eq!(rows, 25);
    let first: Value = serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        (first["compacted"].clone(), first["payload"].clone()),
        (json!(true), Value::Null)
    );
    server.shutdown().await.unwrap();
}

/// The fingerprint at `seq`, read from a one-change page.
async fn fp_at(server: &RunningServer, seq: u64) -> cpc_protocol::Hex64 {
    let mut device = Replica::default();
    device.catch_up(server, 100).await;
    let head = device.cursor.unwrap();
    let zero = Cursor {
        seq: 0,
        fp: cpc_protocol::Hex64(0),
        ..head
    };
    let mut req = request(Some(zero), 1);
    loop {
        let page = pull(server, &req).await;
        if page.cursor.seq == seq {
            return page.cursor.fp;
        }
        req.cursor = Some(page.cursor);
    }
}

#[tokio::test]
async fn a_foreign_or_diverged_cursor_gets_a_snapshot_and_a_foreign_known_a_409() {
    let Some(dir) = support::Db::fresh().await else {
        return;
    };
    let server = support::start(&dir).await;
    write(&server, 1, 5, 5, "x").await;
    let mut device = Replica::default();
    device.catch_up(&server, 100).await;
    let here = device.cursor.clone().unwrap();
    let foreign = Cursor {
        store_id: "another-store".into(),
        ..here.clone()
    };
    let page = pull(&server, &request(Some(foreign), 100)).await;
    assert_eq!(
        page.reset.map(|r| r.reason),
        Some(ResetReason::UnknownStore)
    );
    for lost in [
        Cursor {
            seq: here.seq + 3,
            ..here.clone()
        },
        Cursor {
            fp: cpc_protocol::Hex64(here.fp.0 ^ 1),
            ..here.clone()
        },
    ] {
        let page = pull(&server, &request(Some(lost), 100)).await;
        assert_eq!(page.reset.map(|r| r.reason), Some(ResetReason::Diverged));
    }
    let mut req = request(Some(here.clone()), 100);
    req.known = Some(
        Cursor {
            seq: here.seq + 1,
            ..here
        }
        .position(),
    );
    let (status, body) = pull_raw(&server, &serde_json::to_value(&req).unwrap()).await;
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, problem["code"].clone()),
        (409, json!("history_diverged"))
    );
    assert_eq!(problem["head"]["seq"], json!(5));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn out_of_range_pulls_are_400_with_a_pointer() {
    let Some(dir) = support::Db::fresh().await else {
        return;
    };
    let server = support::start(&dir).await;
    let good = serde_json::to_value(request(None, 10)).unwrap();
    for (member, value) in [
        ("limit", json!(0)),
        ("limit", json!(10_001)),
        ("max_bytes", json!(1000)),
        ("wait_ms", json!(25_001)),
        ("collections", json!([])),
        ("collections", json!(["a", "a"])),
    ] {
        let mut body = good.clone();
        body[member] = value.clone();
        let (status, answer) = pull_raw(&server, &body).await;
        let problem: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(
            (status, problem["pointer"].clone()),
            (400, json!(format!("/{member}"))),
            "{member} = {value}: {problem}"
        );
    }
    let mut body = good.clone();
    body["client_id"] = json!("other");
    assert_eq!(pull_raw(&server, &body).await.0, 403);
    server.shutdown().await.unwrap();
}
