//! Output: aligned tables, colours (only on a terminal, never with
//! `NO_COLOR`), and the human forms of sizes, ages and instants.

use std::io::{self, Write};

/// How output looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Colour escapes allowed.
    pub color: bool,
    /// Standard output is a terminal (`watch` redraws the screen).
    pub terminal: bool,
}

impl Style {
    /// For this process: colour only on a terminal and without `NO_COLOR`
    /// (any value but empty, as no-color.org says).
    pub fn detect() -> Style {
        use std::io::IsTerminal as _;
        let terminal = io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: terminal && !no_color,
            terminal,
        }
    }

    /// `text` in bold, when colours are on.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// `text` in red (something needs attention), when colours are on.
    pub fn alert(&self, text: &str) -> String {
        self.paint("31", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// A table of left-aligned columns, two spaces apart; the header is bold.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header.
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes it; widths count characters, not bytes.
    pub fn write(&self, out: &mut dyn Write, style: &Style) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        for (r, row) in self.rows.iter().enumerate() {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let last = i + 1 == row.len();
                let pad = if last {
                    0
                } else {
                    widths[i] - cell.chars().count() + 2
                };
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
            let line = line.trim_end();
            let line = if r == 0 {
                style.bold(line)
            } else {
                line.to_owned()
            };
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

/// `text` from the queue or the remote (entity ids, error texts) made safe
/// for a terminal: control characters (an escape sequence a remote could
/// plant) are shown as `\u{FFFD}`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// `bytes` as B, KiB, MiB or GiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in ms as `3d4h`, `2h5m`, `4m12s`, `12s` or `340ms`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    use cpc_core::WallClock;
    cpc_core::SystemWallClock.now_ms()
}

/// An instant relative to now: `in 4m12s`, `4m12s ago`, or `now`.
pub fn relative(at: u64, now: u64) -> String {
    match at.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", age(at - now)),
        std::cmp::Ordering::Less => format!("{} ago", age(now - at)),
        std::cmp::Ordering::Equal => "now".into(),
    }
}

/// A payload for `--show-payload`: its text if it is printable UTF-8,
/// else `hex:` and its bytes.
pub fn payload(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => {
            let mut hex = String::with_capacity(4 + bytes.len() * 2);
            hex.push_str("hex:");
            for b in bytes {
                hex.push_str(&format!("{b:02x}"));
            }
            hex
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_a_person_writes_them() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(age(340), "340ms");
        assert_eq!(age(252_000), "4m12s");
        assert_eq!(age(90_000_000), "1d1h");
        assert_eq!(relative(1_000, 4_000), "3s ago");
        assert_eq!(relative(4_000, 1_000), "in 3s");
        assert_eq!(relative(4_000, 4_000), "now");
    }

    #[test]
    fn text_from_the_remote_cannot_drive_the_terminal() {
        assert_eq!(clean("rejected\x1b[2J: bad"), "rejected\u{FFFD}[2J: bad");
        assert_eq!(clean("notes/n1"), "notes/n1");
    }

    #[test]
    fn a_payload_is_text_or_hex_never_raw_control_bytes() {
        assert_eq!(payload(b"hello"), "hello");
        assert_eq!(payload(b"\x1b[2J"), "hex:1b5b324a");
        assert_eq!(payload(&[0xff, 0x00]), "hex:ff00");
    }

    #[test]
    fn columns_line_up_and_the_header_is_bold_only_in_colour() {
        let mut t = Table::new(&["state", "count"]);
        t.row(vec!["ready".into(), "12".into()]);
        t.row(vec!["in flight".into(), "0".into()]);
        let mut plain = Vec::new();
        t.write(&mut plain, &Style::default()).unwrap();
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            "state      count\nready      12\nin flight  0\n"
        );
        let mut colored = Vec::new();
        t.write(
            &mut colored,
            &Style {
                color: true,
                terminal: true,
            },
        )
        .unwrap();
        assert!(String::from_utf8(colored).unwrap().starts_with("\x1b[1m"));
    }
}
