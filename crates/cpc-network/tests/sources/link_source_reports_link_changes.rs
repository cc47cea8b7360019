//! `LinuxLinkSource` reading copies of the fixtures in a temporary
//! directory, on the paused clock; the test edits the files between reads.

use std::path::Path;
use std::time::Duration;

use cpc_network::{
    ConfigError, LinkSourceConfig, LinuxLinkSource, MonitorConfig, NetworkMonitor, NetworkStatus,
    TransitionReason,
};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn step(by: Duration) {
    tokio::time::advance(by).await;
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_interface_going_down_is_offline_at_once_and_coming_back_is_unknown() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    copy_dir(&fixtures.join("sys_up"), &dir.path().join("net"));
    std::fs::copy(fixtures.join("route_default"), dir.path().join("route")).unwrap();
    let source = LinuxLinkSource::new(LinkSourceConfig {
        sys_class_net: dir.path().join("net"),
        proc_net_route: dir.path().join("route"),
        // Missing on purpose: IPv6 disabled is not an error.
        proc_net_ipv6_route: dir.path().join("ipv6_route"),
        interval: Duration::from_secs(1),
    })
    .unwrap();
    let monitor = NetworkMonitor::new(MonitorConfig {
        seed: Some(1),
        ..MonitorConfig::default()
    })
    .unwrap();
    let mut rx = monitor.subscribe();
    let _handle = monitor.attach(source).unwrap();
    step(Duration::from_secs(3)).await;
    assert_eq!(
        monitor.status(),
        NetworkStatus::Unknown,
        "link up says nothing new"
    );

    let operstate = dir.path().join("net/eth0/operstate");
    std::fs::write(&operstate, "down\n").unwrap();
    std::fs::write(dir.path().join("net/tun0/operstate"), "down\n").unwrap();
    step(Duration::from_secs(1)).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    assert!(rx.has_changed().unwrap());
    rx.borrow_and_update();

    std::fs::write(&operstate, "up\n").unwrap();
    step(Duration::from_secs(1)).await;
    assert_eq!(
        monitor.status(),
        NetworkStatus::Offline,
        "must stay up for min_dwell"
    );
    rx.changed().await.unwrap();
    assert_eq!(*rx.borrow(), NetworkStatus::Unknown);

    // The default route disappearing is a link loss too.
    std::fs::copy(fixtures.join("route_no_default"), dir.path().join("route")).unwrap();
    step(Duration::from_secs(1)).await;
    assert_eq!(monitor.status(), NetworkStatus::Offline);
    let stats = monitor.stats();
    assert_eq!(stats.link_downs, 2);
    assert_eq!(stats.transitions, 3);
}

#[tokio::test(start_paused = true)]
async fn unreadable_files_report_nothing_rather_than_a_false_offline() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let source = LinuxLinkSource::new(LinkSourceConfig {
        sys_class_net: dir.path().join("absent"),
        proc_net_route: dir.path().join("absent-route"),
        proc_net_ipv6_route: dir.path().join("absent-ipv6"),
        interval: Duration::from_secs(1),
    })
    .unwrap();
    let monitor = NetworkMonitor::default();
    let _handle = monitor.attach(source).unwrap();
    step(Duration::from_secs(10)).await;
    assert_eq!(monitor.status(), NetworkStatus::Unknown);
    assert_eq!(monitor.stats().observations, 0);
}

#[test]
fn the_reason_names_the_link_source() {
    // The transition reason carries the source name, for the log.
    let reason = TransitionReason::LinkDown {
        source: "linux-link".into(),
    };
    assert_eq!(reason.to_string(), "link down reported by linux-link");
}

#[test]
fn the_default_config_reads_the_kernels_files_every_two_seconds() {
    let config = LinkSourceConfig::default();
    assert_eq!(config.sys_class_net, Path::new("/sys/class/net"));
    assert_eq!(config.proc_net_route, Path::new("/proc/net/route"));
    assert_eq!(
        config.proc_net_ipv6_route,
        Path::new("/proc/net/ipv6_route")
    );
    assert_eq!(config.interval, Duration::from_secs(2));
    assert_eq!(
        LinuxLinkSource::new(LinkSourceConfig {
            interval: Duration::ZERO,
            ..config
        })
        .unwrap_err(),
        ConfigError::ZeroDuration { field: "interval" }
    );
}

#[test]
fn an_ipv6_default_route_alone_is_a_link_and_an_unreadable_ipv6_table_an_error() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let config = LinkSourceConfig {
        sys_class_net: fixtures.join("sys_up"),
        proc_net_route: fixtures.join("route_no_default"),
        proc_net_ipv6_route: fixtures.join("ipv6_route_default"),
        interval: Duration::from_secs(1),
    };
    let assessment = LinuxLinkSource::new(config.clone())
        .unwrap()
        .read()
        .unwrap();
    assert!(assessment.link_up(), "{assessment:?}");
    // wlan0 is not listed (a namespace hid it) while eth0 and tun0 are up.
    assert_eq!(
        assessment.to_string(),
        "2 usable interface(s), default route via [wlan0]"
    );

    // Missing is fine (IPv6 disabled); present but unreadable is not.
    let unreadable = LinuxLinkSource::new(LinkSourceConfig {
        proc_net_ipv6_route: dir.path().to_path_buf(),
        ..config
    })
    .unwrap();
    let err = unreadable.read().unwrap_err();
    assert_ne!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}
