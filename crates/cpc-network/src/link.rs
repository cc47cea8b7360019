//! Linux link state from `/sys/class/net` and `/proc/net/{route,ipv6_route}`.
//!
//! The parsers are pure functions of the files' contents, so fixture copies
//! test them; only [`LinuxLinkSource`] (Linux only) touches the filesystem.
//! A malformed line is skipped, counted and logged, never a panic.

use std::fmt;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x0001;
/// `RTF_REJECT`: the route rejects traffic (the kernel's IPv6 "unreachable"
/// default on `lo` is one).
const RTF_REJECT: u32 = 0x0200;
/// `IFF_LOOPBACK` in `/sys/class/net/*/flags`.
const IFF_LOOPBACK: u32 = 0x8;

/// An interface's `operstate` (RFC 2863 names, as the kernel writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OperState {
    /// `up`: ready to pass packets.
    Up,
    /// `down`.
    Down,
    /// `unknown`: the driver does not report a state. Tunnels (`tun`,
    /// WireGuard, PPP) often say this while working, so it counts as up.
    Unknown,
    /// `dormant`: waiting for an external event (Wi-Fi authentication).
    Dormant,
    /// `lowerlayerdown`.
    LowerLayerDown,
    /// `notpresent`.
    NotPresent,
    /// `testing`.
    Testing,
}

impl OperState {
    /// Whether the interface can carry traffic (`up`, or `unknown` for
    /// interfaces that do not report a state).
    pub fn is_usable(self) -> bool {
        matches!(self, OperState::Up | OperState::Unknown)
    }
}

/// Parses the contents of `/sys/class/net/IFACE/operstate`; `None` when it
/// is not a known state.
pub fn parse_operstate(contents: &str) -> Option<OperState> {
    match contents.trim() {
        "up" => Some(OperState::Up),
        "down" => Some(OperState::Down),
        "unknown" => Some(OperState::Unknown),
        "dormant" => Some(OperState::Dormant),
        "lowerlayerdown" => Some(OperState::LowerLayerDown),
        "notpresent" => Some(OperState::NotPresent),
        "testing" => Some(OperState::Testing),
        _ => None,
    }
}

/// Parses `/sys/class/net/IFACE/flags` (`0x1003`) and tells whether the
/// interface is a loopback; `None` when unreadable.
pub fn parse_loopback_flag(contents: &str) -> Option<bool> {
    let hex = contents.trim();
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex);
    u32::from_str_radix(hex, 16)
        .ok()
        .map(|flags| flags & IFF_LOOPBACK != 0)
}

/// Address family of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// From `/proc/net/route`.
    V4,
    /// From `/proc/net/ipv6_route`.
    V6,
}

/// One route, reduced to what the link decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// Interface the route goes through.
    pub iface: String,
    /// Address family.
    pub family: Family,
    /// Destination and mask (prefix length) are both zero.
    pub is_default: bool,
    /// Route flags (`RTF_*`).
    pub flags: u32,
}

impl RouteEntry {
    /// A default route that is up and does not reject traffic.
    pub fn is_usable_default(&self) -> bool {
        self.is_default && self.flags & RTF_UP != 0 && self.flags & RTF_REJECT == 0
    }
}

/// A line of a route table that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLine {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// The routes of one table, and the lines that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Parsed routes, in file order.
    pub routes: Vec<RouteEntry>,
    /// Skipped lines.
    pub malformed: Vec<MalformedLine>,
}

/// Parses the contents of `/proc/net/route` (IPv4; hexadecimal fields,
/// header line first). Malformed lines are skipped and logged.
pub fn parse_route_table(contents: &str) -> RouteTable {
    let mut table = RouteTable::default();
    for (index, line) in contents.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || (index == 0 && fields.first() == Some(&"Iface")) {
            continue;
        }
        match parse_v4_line(&fields) {
            Ok(route) => table.routes.push(route),
            Err(reason) => skip(&mut table, "route", index + 1, reason),
        }
    }
    table
}

fn parse_v4_line(fields: &[&str]) -> Result<RouteEntry, &'static str> {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
    let [iface, destination, _gateway, flags, _refcnt, _use, _metric, mask, ..] = fields else {
        return Err("fewer than 8 fields");
    };
    let destination = hex_u32(destination).ok_or("destination is not hexadecimal")?;
    let flags = hex_u32(flags).ok_or("flags are not hexadecimal")?;
    let mask = hex_u32(mask).ok_or("mask is not hexadecimal")?;
    Ok(RouteEntry {
        iface: (*iface).to_owned(),
        family: Family::V4,
        is_default: destination == 0 && mask == 0,
        flags,
    })
}

/// Parses the contents of `/proc/net/ipv6_route` (no header; destination,
/// prefix length, source, source prefix, next hop, metric, refcount, use,
/// flags, interface). Malformed lines are skipped and logged.
pub fn parse_ipv6_route_table(contents: &str) -> RouteTable {
    let mut table = RouteTable::default();
    for (index, line) in contents.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        match parse_v6_line(&fields) {
            Ok(route) => table.routes.push(route),
            Err(reason) => skip(&mut table, "ipv6_route", index + 1, reason),
        }
    }
    table
}

fn parse_v6_line(fields: &[&str]) -> Result<RouteEntry, &'static str> {
    let [destination, prefix_len, _src, _src_len, _next_hop, _metric, _refcnt, _use, flags, iface] =
        fields
    else {
        return Err("not 10 fields");
    };
    if destination.len() != 32 || !destination.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("destination is not 32 hexadecimal digits");
    }
    let prefix_len = hex_u32(prefix_len).ok_or("prefix length is not hexadecimal")?;
    let flags = hex_u32(flags).ok_or("flags are not hexadecimal")?;
    Ok(RouteEntry {
        iface: (*iface).to_owned(),
        family: Family::V6,
        is_default: prefix_len == 0 && destination.bytes().all(|b| b == b'0'),
        flags,
    })
}

fn hex_u32(field: &str) -> Option<u32> {
    if field.is_empty() || field.len() > 8 {
        return None;
    }
    u32::from_str_radix(field, 16).ok()
}

fn skip(table: &mut RouteTable, file: &'static str, line: usize, reason: &'static str) {
    tracing::warn!(file, line, reason, "skipping malformed route line");
    table.malformed.push(MalformedLine { line, reason });
}

/// One network interface as read from `/sys/class/net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceState {
    /// Interface name.
    pub name: String,
    /// Its `operstate`, `None` when unreadable or unknown text.
    pub oper: Option<OperState>,
    /// Whether it is a loopback (from `flags`, or the name `lo`).
    pub loopback: bool,
}

impl InterfaceState {
    /// Builds the state of `name` from the contents of its `operstate` and
    /// `flags` files (either may be missing).
    pub fn from_files(name: &str, operstate: Option<&str>, flags: Option<&str>) -> Self {
        let loopback = flags.and_then(parse_loopback_flag).unwrap_or(name == "lo");
        InterfaceState {
            name: name.to_owned(),
            oper: operstate.and_then(parse_operstate),
            loopback,
        }
    }

    /// A non-loopback interface that can carry traffic.
    pub fn is_usable(&self) -> bool {
        !self.loopback && self.oper.is_some_and(OperState::is_usable)
    }
}

/// What the link files say, taken together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAssessment {
    /// Non-loopback interfaces that are up.
    pub usable_interfaces: Vec<String>,
    /// Interfaces that carry a usable default route and are up.
    pub default_route_via: Vec<String>,
}

impl LinkAssessment {
    /// Decides from interfaces and routes. A default route counts when it
    /// goes through a usable interface, or through one the interface list
    /// does not show while some usable interface exists (network namespaces
    /// can hide the device).
    pub fn assess(interfaces: &[InterfaceState], routes: &[RouteEntry]) -> Self {
        let usable_interfaces: Vec<String> = interfaces
            .iter()
            .filter(|i| i.is_usable())
            .map(|i| i.name.clone())
            .collect();
        let mut default_route_via: Vec<String> = Vec::new();
        for route in routes.iter().filter(|r| r.is_usable_default()) {
            let usable = match interfaces.iter().find(|i| i.name == route.iface) {
                Some(iface) => iface.is_usable(),
                None => !usable_interfaces.is_empty() && route.iface != "lo",
            };
            if usable && !default_route_via.contains(&route.iface) {
                default_route_via.push(route.iface.clone());
            }
        }
        LinkAssessment {
            usable_interfaces,
            default_route_via,
        }
    }

    /// A non-loopback interface is up and a default route goes through one.
    pub fn link_up(&self) -> bool {
        !self.usable_interfaces.is_empty() && !self.default_route_via.is_empty()
    }
}

impl fmt::Display for LinkAssessment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} usable interface(s), default route via [{}]",
            self.usable_interfaces.len(),
            self.default_route_via.join(", ")
        )
    }
}

#[cfg(target_os = "linux")]
pub use linux::{LinkSourceConfig, LinuxLinkSource};

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::{parse_ipv6_route_table, parse_route_table, InterfaceState, LinkAssessment};
    use crate::error::ConfigError;
    use crate::observation::{Signal, SourceName};
    use crate::source::{ObservationSink, StatusSource};

    /// Where [`LinuxLinkSource`] reads, and how often.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LinkSourceConfig {
        /// Directory of interfaces. Default `/sys/class/net`.
        pub sys_class_net: PathBuf,
        /// IPv4 route table. Default `/proc/net/route`.
        pub proc_net_route: PathBuf,
        /// IPv6 route table (missing when IPv6 is disabled, which is fine).
        /// Default `/proc/net/ipv6_route`.
        pub proc_net_ipv6_route: PathBuf,
        /// Time between reads. Default 2 s.
        pub interval: Duration,
    }

    impl Default for LinkSourceConfig {
        fn default() -> Self {
            LinkSourceConfig {
                sys_class_net: PathBuf::from("/sys/class/net"),
                proc_net_route: PathBuf::from("/proc/net/route"),
                proc_net_ipv6_route: PathBuf::from("/proc/net/ipv6_route"),
                interval: Duration::from_secs(2),
            }
        }
    }

    /// Reports [`Signal::LinkDown`] when no non-loopback interface is up or
    /// no default route (IPv4 or IPv6) goes through one, and
    /// [`Signal::LinkUp`] when that changes back. Reports at start and on
    /// every change.
    ///
    /// When the files cannot be read (a sandbox without `/sys`), it reports
    /// nothing and logs a warning: not knowing is not "no link", and a false
    /// Offline would strand the user's work.
    ///
    /// The files live in `sysfs` and `procfs`, which the kernel serves from
    /// memory, so they are read synchronously.
    #[derive(Debug, Clone)]
    pub struct LinuxLinkSource {
        name: SourceName,
        config: LinkSourceConfig,
    }

    impl LinuxLinkSource {
        /// A source named `"linux-link"`.
        pub fn new(config: LinkSourceConfig) -> Result<Self, ConfigError> {
            if config.interval.is_zero() {
                return Err(ConfigError::ZeroDuration { field: "interval" });
            }
            Ok(LinuxLinkSource {
                name: SourceName::new("linux-link"),
                config,
            })
        }

        /// Reads the files once and decides.
        pub fn read(&self) -> io::Result<LinkAssessment> {
            let interfaces = read_interfaces(&self.config.sys_class_net)?;
            let v4 = read_text(&self.config.proc_net_route)?;
            let mut routes = parse_route_table(&v4).routes;
            match read_text(&self.config.proc_net_ipv6_route) {
                Ok(v6) => routes.extend(parse_ipv6_route_table(&v6).routes),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            Ok(LinkAssessment::assess(&interfaces, &routes))
        }
    }

    fn read_interfaces(dir: &Path) -> io::Result<Vec<InterfaceState>> {
        let mut interfaces = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            // An interface can vanish between listing and reading: its files
            // are then simply missing.
            let operstate = read_text(&path.join("operstate")).ok();
            let flags = read_text(&path.join("flags")).ok();
            interfaces.push(InterfaceState::from_files(
                &name,
                operstate.as_deref(),
                flags.as_deref(),
            ));
        }
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(interfaces)
    }

    /// Reads a small kernel text file; stray non-UTF-8 bytes become
    /// replacement characters (and the line is then refused as malformed).
    fn read_text(path: &Path) -> io::Result<String> {
        std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    impl StatusSource for LinuxLinkSource {
        fn name(&self) -> SourceName {
            self.name.clone()
        }

        async fn run(self, sink: ObservationSink) {
            let mut last: Option<bool> = None;
            let mut unreadable = false;
            loop {
                match self.read() {
                    Ok(assessment) => {
                        unreadable = false;
                        let up = assessment.link_up();
                        if last != Some(up) {
                            tracing::info!(source = %self.name, link_up = up, %assessment, "link state");
                            let signal = if up { Signal::LinkUp } else { Signal::LinkDown };
                            if !sink.report(signal) {
                                return;
                            }
                            last = Some(up);
                        }
                    }
                    Err(err) => {
                        if !unreadable {
                            tracing::warn!(source = %self.name, error = %err, "cannot read link state; reporting nothing");
                            unreadable = true;
                        }
                        // A link-down we can no longer confirm must not hold
                        // the monitor Offline.
                        if last == Some(false) && !sink.report(Signal::LinkUp) {
                            return;
                        }
                        last = None;
                    }
                }
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep(self.config.interval) => {}
                    _ = sink.closed() => return,
                }
            }
        }
    }
}
