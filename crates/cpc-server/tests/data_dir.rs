//! The embedded store's data directory is the server's own: one reached
//! through a symbolic link, or owned by another user, is refused before
//! anything in it is touched (a finding: such a directory was served, after
//! a chmod of it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use cpc_protocol::Limits;
use cpc_server::{Store, StoreError};

#[test]
fn a_data_directory_reached_through_a_symbolic_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = Store::open(&link, Limits::default()).err();
    assert!(matches!(e, Some(StoreError::ForeignDir(_))), "{e:?}");
    assert!(e
        .map(|e| e.to_string())
        .is_some_and(|e| e.contains("symbolic link")),);
    // Nothing was created behind the link.
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    // The real path is served.
    let store = Store::open(&real, Limits::default()).unwrap();
    store.close();
}

#[test]
fn a_data_directory_owned_by_another_user_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let me = std::fs::metadata(dir.path()).unwrap().uid();
    let other = if me == 0 { 65534 } else { 0 };
    // As root, give the directory away; otherwise take one that is
    // another user's already (root's) and cannot be changed by us.
    let data = if std::os::unix::fs::chown(&data, Some(other), None).is_ok() {
        data
    } else {
        std::path::PathBuf::from("/")
    };
    let before = std::fs::metadata(&data).unwrap().mode();
    let e = Store::open(&data, Limits::default()).err();
    assert!(matches!(e, Some(StoreError::ForeignDir(_))), "{e:?}");
    let shown = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(shown.contains(&format!("uid {other}")), "{shown}");
    // Not chmodded, and no lock file left in it.
    assert_eq!(std::fs::metadata(&data).unwrap().mode(), before);
    assert!(!data.join("lock").exists() || data == std::path::Path::new("/"));
}

#[test]
fn a_store_file_written_by_a_newer_server_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path(), Limits::default()).unwrap().close();
    // A schema version no build of this server has written yet.
    let file = dir.path().join("cpc-server.sqlite3");
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.pragma_update(None, "user_version", 1000).unwrap();
    drop(conn);

    let e = Store::open(dir.path(), Limits::default()).err();
    assert!(matches!(e, Some(StoreError::Schema(1000))), "{e:?}");
    assert_eq!(
        e.map(|e| e.to_string()).unwrap_or_default(),
        "schema version 1000 is newer than this server's; refusing to open"
    );
    // Not migrated, not rewritten: an older build leaves it to the newer.
    let conn = rusqlite::Connection::open(&file).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1000);
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "the store's tables are still there");
}
