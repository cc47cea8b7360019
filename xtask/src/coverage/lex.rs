//! The lexing under the scan: comments and literals blanked (byte offsets
//! kept), tokens, line numbers, bracket matching. Text in, positions out;
//! no knowledge of Rust items.

/// Blanks comments, string/char literals (raw and byte ones too) to spaces,
/// keeping newlines and byte offsets, so later passes see only code.
pub(super) fn mask(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            let end = find_from(b, i, b'\n');
            blank(&mut out, i, end);
            i = end;
        } else if c == b'/' && next == Some(b'*') {
            let end = block_comment_end(b, i);
            blank(&mut out, i, end);
            i = end;
        } else if c == b'"' {
            let end = string_end(b, i + 1);
            blank(&mut out, i, end);
            i = end;
        } else if c == b'\'' {
            match char_literal_end(b, i) {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                // A lifetime or label.
                None => i += 1,
            }
        } else if c == b'r' || c == b'b' {
            // A raw or byte literal starts where an identifier would.
            let mut j = i + usize::from(c == b'b');
            if b.get(j) == Some(&b'r') {
                j += 1;
                let hashes = b[j..].iter().take_while(|&&h| h == b'#').count();
                if b.get(j + hashes) == Some(&b'"') {
                    let end = raw_string_end(b, j + hashes + 1, hashes);
                    blank(&mut out, i, end);
                    i = end;
                    continue;
                }
            } else if c == b'b' && next == Some(b'"') {
                let end = string_end(b, i + 2);
                blank(&mut out, i, end);
                i = end;
                continue;
            } else if c == b'b' && next == Some(b'\'') {
                if let Some(end) = char_literal_end(b, i + 1) {
                    blank(&mut out, i, end);
                    i = end;
                    continue;
                }
            }
            i = ident_end(b, i);
        } else if is_ident_byte(c) {
            // Whole identifiers, so an `r`/`b` inside one is not a prefix.
            i = ident_end(b, i);
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

pub(super) fn ident_end(b: &[u8], from: usize) -> usize {
    from + b[from..].iter().take_while(|&&c| is_ident_byte(c)).count()
}

pub(super) fn find_from(b: &[u8], from: usize, needle: u8) -> usize {
    b[from..]
        .iter()
        .position(|&c| c == needle)
        .map_or(b.len(), |p| from + p)
}

pub(super) fn blank(out: &mut [u8], from: usize, to: usize) {
    for c in out.iter_mut().take(to).skip(from) {
        if *c != b'\n' {
            *c = b' ';
        }
    }
}

/// The end of a (nested) block comment starting at `from`.
pub(super) fn block_comment_end(b: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    let mut i = from;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

/// The end (past the closing quote) of a string whose text starts at `from`.
pub(super) fn string_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

pub(super) fn raw_string_end(b: &[u8], from: usize, hashes: usize) -> usize {
    let mut i = from;
    while i < b.len() {
        if b[i] == b'"'
            && b[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&h| h == b'#')
                .count()
                == hashes
        {
            return (i + 1 + hashes).min(b.len());
        }
        i += 1;
    }
    b.len()
}

/// The end of a char literal at `from` (a `'`), or `None` for a lifetime.
pub(super) fn char_literal_end(b: &[u8], from: usize) -> Option<usize> {
    let first = *b.get(from + 1)?;
    if first == b'\\' {
        // Skip the escaped char, then up to the closing quote (`\u{..}`).
        let rest = from + 3;
        return Some((find_from(b, rest.min(b.len()), b'\'') + 1).min(b.len()));
    }
    let len = match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    (b.get(from + 1 + len) == Some(&b'\'')).then_some(from + 2 + len)
}

/// Byte offsets where each line starts.
pub(super) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The 1-based line of a byte offset.
pub(super) fn line_of(starts: &[usize], at: usize) -> usize {
    starts.partition_point(|&s| s <= at)
}

/// A token of masked code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) kind: Kind,
    /// Byte offset of its first byte.
    pub(super) at: usize,
    /// Byte offset past its last byte.
    pub(super) end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Ident(String),
    Punct(u8),
    /// A number literal (its text does not matter here).
    Number,
}

impl Token {
    pub(super) fn ident(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ident(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn is(&self, c: u8) -> bool {
        self.kind == Kind::Punct(c)
    }

    pub(super) fn is_ident(&self, s: &str) -> bool {
        self.ident() == Some(s)
    }
}

pub(super) fn tokenize(text: &str) -> Vec<Token> {
    let b = text.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let end = ident_end(b, i);
            toks.push(Token {
                kind: Kind::Number,
                at: i,
                end,
            });
            i = end;
        } else if is_ident_byte(c) {
            let end = ident_end(b, i);
            toks.push(Token {
                kind: Kind::Ident(String::from_utf8_lossy(&b[i..end]).into_owned()),
                at: i,
                end,
            });
            i = end;
        } else {
            toks.push(Token {
                kind: Kind::Punct(c),
                at: i,
                end: i + 1,
            });
            i += 1;
        }
    }
    toks
}

/// The index of the bracket closing the one at `open` (any of `([{`,
/// counted together: masked code is balanced).
pub(super) fn matching(toks: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t.kind {
            Kind::Punct(b'(' | b'[' | b'{') => depth += 1,
            Kind::Punct(b')' | b']' | b'}') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether tokens `k` and `k + 1` are an adjacent `::`.
pub(super) fn is_path_sep(toks: &[Token], k: usize) -> bool {
    match (toks.get(k), toks.get(k + 1)) {
        (Some(a), Some(b)) => a.is(b':') && b.is(b':') && b.at == a.end,
        _ => false,
    }
}
