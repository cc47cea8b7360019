//! `resolve_logged` emits one event per decision with both versions' ids,
//! timestamps and versions, and never the payloads (also not from
//! `FieldMerge`'s fallback warning).

use std::io;
use std::sync::{Arc, Mutex};

use cpc_conflict::{resolve_logged, FieldMerge, FnResolver, LastWriterWins, Resolution};
use cpc_core::{HlcTimestamp, NodeId};

use crate::support::Version;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn capture(f: impl FnOnce()) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    out.text()
}

const LOCAL_SECRET: &[u8] = b"LOCAL-SECRET-CONTENT";
const REMOTE_SECRET: &[u8] = b"REMOTE-SECRET-CONTENT";

fn assert_no_payload(log: &str) {
    for secret in [LOCAL_SECRET, REMOTE_SECRET] {
        let text = String::from_utf8_lossy(secret);
        let debug_bytes = format!("{secret:?}");
        let inner = &debug_bytes[1..debug_bytes.len() - 1];
        assert!(!log.contains(&*text), "payload text leaked: {log}");
        assert!(!log.contains(inner), "payload bytes leaked: {log}");
    }
}

fn versions() -> (Version, Version) {
    let local = Version {
        timestamp: HlcTimestamp::new(1_000, 3, NodeId(0xa)),
        content: Some(LOCAL_SECRET.to_vec()),
        version: 7,
    };
    let remote = Version {
        timestamp: HlcTimestamp::new(2_000, 1, NodeId(0xb)),
        content: Some(REMOTE_SECRET.to_vec()),
        version: 9,
    };
    (local, remote)
}

#[test]
fn the_event_names_both_versions_and_the_decision() {
    let (local, remote) = versions();
    let op = local.as_local();
    let mut res = None;
    let log = capture(|| res = Some(resolve_logged(&LastWriterWins, &op, &remote.as_remote())));
    assert_eq!(res, Some(Resolution::KeepRemote));
    assert_eq!(log.lines().count(), 2, "{log}");
    // The entity key (possibly personal data) only at DEBUG; the decision
    // at INFO without it.
    let debug = log
        .lines()
        .find(|l| l.contains("DEBUG"))
        .expect("a DEBUG line");
    assert!(debug.contains("entity=notes/shared"), "{debug}");
    let info = log
        .lines()
        .find(|l| l.contains("INFO"))
        .expect("an INFO line");
    assert!(!info.contains("entity="), "entity key at INFO: {info}");
    for needle in [
        "conflict resolved",
        &format!("local_timestamp={}", local.timestamp),
        &format!("remote_timestamp={}", remote.timestamp),
        "local_base_version=Some(1)",
        "remote_version=9",
        &format!("remote_node={}", NodeId(0xb)),
        "local_payload_len=20",
        "remote_payload_len=21",
        "resolver=\"last_writer_wins\"",
        "resolution=\"keep_remote\"",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in {log}");
    }
    assert_no_payload(&log);
}

#[test]
fn user_resolvers_are_traced_too_and_merges_only_by_size() {
    let (local, remote) = versions();
    let user = FnResolver::named("app_merge", |l: &cpc_core::Operation, _: &_| {
        Resolution::Merged([l.payload.as_slice(), REMOTE_SECRET].concat())
    });
    let log = capture(|| {
        resolve_logged(&user, &local.as_local(), &remote.as_remote());
    });
    assert!(log.contains("resolver=\"app_merge\""), "{log}");
    assert!(log.contains("resolution=\"merged\""), "{log}");
    assert!(log.contains("merged_len=41"), "{log}");
    assert_no_payload(&log);
}

#[test]
fn field_merge_fallback_is_logged_without_contents() {
    // Neither payload is a field map: FieldMerge warns and falls back to LWW.
    let (local, remote) = versions();
    let mut res = None;
    let log = capture(|| {
        res = Some(resolve_logged(
            &FieldMerge::new(),
            &local.as_local(),
            &remote.as_remote(),
        ))
    });
    assert_eq!(res, Some(Resolution::KeepRemote));
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("falling back"), "{log}");
    assert!(log.contains("side=\"local\""), "{log}");
    assert!(log.contains("payload_len=20"), "{log}");
    assert!(log.contains("resolver=\"field_merge\""), "{log}");
    assert_no_payload(&log);
}
