use std::path::{Path, PathBuf};

use cpc_network::link::{
    parse_ipv6_route_table, parse_loopback_flag, parse_operstate, parse_route_table, Family,
    InterfaceState, LinkAssessment, OperState,
};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    // Lossy: one fixture holds invalid UTF-8 on purpose, as the source reads.
    String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()
}

fn interfaces(dir: &str) -> Vec<InterfaceState> {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .iter()
        .map(|name| {
            let read = |file: &str| std::fs::read_to_string(root.join(name).join(file)).ok();
            InterfaceState::from_files(name, read("operstate").as_deref(), read("flags").as_deref())
        })
        .collect()
}

#[test]
fn operstate_and_flags_parse() {
    assert_eq!(parse_operstate("up\n"), Some(OperState::Up));
    assert_eq!(parse_operstate("dormant"), Some(OperState::Dormant));
    assert_eq!(parse_operstate("sideways\n"), None);
    assert_eq!(parse_operstate(""), None);
    assert!(
        OperState::Unknown.is_usable(),
        "tunnels report unknown while working"
    );
    assert!(!OperState::LowerLayerDown.is_usable());
    assert_eq!(parse_loopback_flag("0x9\n"), Some(true));
    assert_eq!(parse_loopback_flag("0x1003\n"), Some(false));
    assert_eq!(parse_loopback_flag("zz"), None);
}

#[test]
fn a_default_ipv4_route_through_an_up_interface_is_a_link() {
    let table = parse_route_table(&fixture("route_default"));
    assert!(table.malformed.is_empty());
    assert_eq!(table.routes.len(), 3);
    let defaults: Vec<_> = table
        .routes
        .iter()
        .filter(|r| r.is_usable_default())
        .collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0].iface, "eth0");
    assert_eq!(defaults[0].family, Family::V4);

    let up = LinkAssessment::assess(&interfaces("sys_up"), &table.routes);
    assert!(up.link_up(), "{up}");
    assert_eq!(up.default_route_via, ["eth0"]);
    assert_eq!(
        up.usable_interfaces,
        ["eth0", "tun0"],
        "lo and the down docker0 excluded"
    );
}

#[test]
fn no_default_route_or_no_up_interface_is_no_link() {
    let no_default = parse_route_table(&fixture("route_no_default"));
    assert!(!LinkAssessment::assess(&interfaces("sys_up"), &no_default.routes).link_up());

    let with_default = parse_route_table(&fixture("route_default"));
    let down = LinkAssessment::assess(&interfaces("sys_down"), &with_default.routes);
    assert!(!down.link_up(), "default route via a down eth0: {down}");
    assert!(down.usable_interfaces.is_empty(), "loopback never counts");
}

#[test]
fn malformed_ipv4_lines_are_skipped_and_counted_and_the_good_one_kept() {
    let table = parse_route_table(&fixture("route_malformed"));
    let lines: Vec<usize> = table.malformed.iter().map(|m| m.line).collect();
    assert_eq!(lines, [3, 5, 6, 7, 8], "{:?}", table.malformed);
    assert_eq!(table.malformed[0].reason, "fewer than 8 fields");
    assert_eq!(table.malformed[1].reason, "destination is not hexadecimal");
    assert_eq!(table.malformed[2].reason, "flags are not hexadecimal");
    assert_eq!(table.malformed[3].reason, "mask is not hexadecimal");
    assert_eq!(table.routes.len(), 1);
    assert!(table.routes[0].is_usable_default());
    assert_eq!(table.routes[0].iface, "wlan0");
}

#[test]
fn ipv6_default_routes_count_and_the_kernels_reject_route_does_not() {
    let v6 = parse_ipv6_route_table(&fixture("ipv6_route_default"));
    assert!(v6.malformed.is_empty());
    assert_eq!(v6.routes.len(), 4);
    let usable: Vec<_> = v6.routes.iter().filter(|r| r.is_usable_default()).collect();
    assert_eq!(usable.len(), 1);
    assert_eq!(usable[0].iface, "wlan0");

    let reject_only = parse_ipv6_route_table(&fixture("ipv6_route_reject_only"));
    assert_eq!(reject_only.routes.len(), 3);
    let lines: Vec<usize> = reject_only.malformed.iter().map(|m| m.line).collect();
    assert_eq!(lines, [4, 5]);
    assert!(reject_only.routes.iter().all(|r| !r.is_usable_default()));

    // An IPv6-only network: no IPv4 default, but an IPv6 one via an up
    // interface the listing does not show (a namespace hid it).
    let mut routes = parse_route_table(&fixture("route_no_default")).routes;
    routes.extend(v6.routes);
    assert!(LinkAssessment::assess(&interfaces("sys_up"), &routes).link_up());
}

#[test]
fn arbitrary_garbage_never_panics() {
    let inputs = [
        "",
        "\n\n\n",
        "Iface",
        "eth0 00000000",
        "\u{0}\u{1}\u{2}",
        "eth0 FFFFFFFFFF 0 0 0 0 0 0",
        "x 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
        &"a ".repeat(10_000),
    ];
    for input in inputs {
        let _ = parse_route_table(input);
        let _ = parse_ipv6_route_table(input);
        let _ = parse_operstate(input);
        let _ = parse_loopback_flag(input);
    }
}
