//! The textual scan behind "error variants no test constructs".
//!
//! It reads source text, not the compiler's view of it, so it is an
//! approximation with known blind spots (the report says so too):
//!
//! - Enums: those deriving `thiserror::Error`, or `Error` in a file that
//!   imports `thiserror::Error`, in `crates/*/src/**/*.rs`.
//! - Construction sites: paths `Enum::Variant` (optionally qualified:
//!   `cpc_core::Error::X`, `crate::error::Error::X`, an alias from
//!   `use ... as`) and `Self::Variant` inside an `impl` of the enum, outside
//!   `#[cfg(test)]` items (and `#[cfg(test)] mod x;` files), `use`
//!   statements, comments and literals. A variant imported on its own
//!   (`use Error::*`) or built inside a macro of the crate is not seen.
//! - Patterns are not constructions: an occurrence followed (after its own
//!   `(..)`/`{..}`) by `=>` or a single `=` (`match` arms, `let`/`if let`
//!   patterns) before its argument or statement ends, one inside
//!   `matches!(..)`, and one compared with `==`/`!=` are left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::lex::*;

/// How far (bytes) the pattern heuristic looks around an occurrence: a
/// match arm or a `let` is far shorter, and the bound keeps one huge
/// expression from making the scan quadratic.
const LOOK_LIMIT: usize = 4000;

/// A `thiserror` enum's variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The package (`cpc-core`).
    pub krate: String,
    /// The enum's name.
    pub enum_name: String,
    /// The variant's name.
    pub name: String,
    /// The workspace-relative file of the definition.
    pub file: String,
    /// 1-based line of the definition.
    pub line: usize,
    /// A field carries `#[from]`: `?` can build it through `From`, which
    /// this scan cannot see.
    pub has_from: bool,
}

impl Variant {
    /// The key of its construction sites in [`Scan::sites`].
    pub fn key(&self) -> VariantKey {
        (
            self.krate.clone(),
            self.enum_name.clone(),
            self.name.clone(),
        )
    }
}

/// Where non-test code builds a variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    /// Workspace-relative path.
    pub file: String,
    /// 1-based line of the `Enum::Variant` path.
    pub line: usize,
}

/// `(package, enum, variant)`.
pub type VariantKey = (String, String, String);

/// What the scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every variant, in file then line order.
    pub variants: Vec<Variant>,
    /// Construction sites of each variant.
    pub sites: BTreeMap<VariantKey, Vec<Site>>,
}

/// The package of a workspace-relative path `crates/<package>/src/...`.
pub fn crate_of(rel: &str) -> Option<&str> {
    let rest = rel.strip_prefix("crates/")?;
    let (krate, tail) = rest.split_once('/')?;
    tail.starts_with("src/").then_some(krate)
}

/// One source file, ready for the passes.
struct Prepared {
    rel: String,
    krate: String,
    /// Comments, literals and `#[cfg(test)]` items blanked.
    text: String,
    toks: Vec<Token>,
    starts: Vec<usize>,
    /// Byte ranges of `use ...;` statements.
    uses: Vec<(usize, usize)>,
    /// Names a `use` brings in: name -> (origin package, or `None` outside
    /// the workspace; the original name).
    imports: HashMap<String, (Option<String>, String)>,
}

/// Scans sources given as `(workspace-relative path, text)`; paths outside
/// `crates/*/src/` are ignored.
pub fn scan_sources(files: &[(String, String)]) -> Scan {
    let mut prepared = Vec::new();
    let mut test_files = BTreeSet::new();
    for (rel, source) in files {
        let Some(krate) = crate_of(rel) else {
            continue;
        };
        let (text, test_mods) = blank_cfg_test(&mask(source));
        for m in test_mods {
            test_files.extend(module_files(rel, &m));
        }
        let toks = tokenize(&text);
        let uses = use_statements(&toks);
        let local_mods = declared_modules(&toks);
        let imports = flatten_uses(&toks, &uses)
            .into_iter()
            .filter_map(|(path, alias)| {
                let original = path.last()?.clone();
                let name = alias.unwrap_or_else(|| original.clone());
                let origin = match path.first().map(String::as_str) {
                    Some(first) if first.starts_with("cpc_") => Some(first.replace('_', "-")),
                    Some("crate" | "self" | "super") => Some(krate.to_owned()),
                    Some(first) if local_mods.contains(first) => Some(krate.to_owned()),
                    _ => None,
                };
                Some((name, (origin, original)))
            })
            .collect();
        let starts = line_starts(&text);
        prepared.push(Prepared {
            rel: rel.clone(),
            krate: krate.to_owned(),
            text,
            toks,
            starts,
            uses,
            imports,
        });
    }
    // Files that are `#[cfg(test)] mod x;` are test code as a whole.
    prepared.retain(|p| !test_files.contains(&p.rel));

    let mut scan = Scan::default();
    let mut index = EnumIndex::default();
    for p in &prepared {
        let thiserror_imported = imports_thiserror_error(&p.toks, &p.uses);
        for (enum_name, variants) in enums(&p.toks, thiserror_imported) {
            let names = index
                .defined
                .entry((p.krate.clone(), enum_name.clone()))
                .or_default();
            for (name, at, has_from) in variants {
                names.insert(name.clone());
                scan.variants.push(Variant {
                    krate: p.krate.clone(),
                    enum_name: enum_name.clone(),
                    name,
                    file: p.rel.clone(),
                    line: line_of(&p.starts, at),
                    has_from,
                });
            }
        }
    }

    for p in &prepared {
        let impls = impl_blocks(&p.toks);
        for chain in chains(&p.toks) {
            if p.uses
                .iter()
                .any(|&(a, b)| a <= chain.start && chain.start <= b)
            {
                continue;
            }
            let Some((variant, path)) = chain.segments.split_last() else {
                continue;
            };
            // `Self::V` means the type of the innermost enclosing impl.
            let path: &[String] = if path.len() == 1 && path[0] == "Self" {
                let Some(block) = impls
                    .iter()
                    .filter(|b| b.open <= chain.start && chain.start <= b.close)
                    .max_by_key(|b| b.open)
                else {
                    continue;
                };
                &block.self_path
            } else {
                path
            };
            let Some((enum_name, qualifier)) = path.split_last() else {
                continue;
            };
            let Some(key) = index.resolve(qualifier, enum_name, &p.krate, &p.imports) else {
                continue;
            };
            let known = index.defined.get(&key).is_some_and(|v| v.contains(variant));
            if !known || !is_construction(&p.text, chain.start, chain.end) {
                continue;
            }
            let (krate, enum_name) = key;
            scan.sites
                .entry((krate, enum_name, variant.clone()))
                .or_default()
                .push(Site {
                    file: p.rel.clone(),
                    line: line_of(&p.starts, chain.start),
                });
        }
    }
    scan
}

/// The enums found: `(package, enum)` -> variant names.
#[derive(Debug, Default)]
struct EnumIndex {
    defined: BTreeMap<(String, String), BTreeSet<String>>,
}

impl EnumIndex {
    fn has(&self, krate: &str, name: &str) -> bool {
        self.defined
            .contains_key(&(krate.to_owned(), name.to_owned()))
    }

    /// The one package defining `name`, if only one does (a re-export
    /// under another path, or a name imported through a glob).
    fn unique(&self, name: &str) -> Option<(String, String)> {
        let mut owners = self.defined.keys().filter(|(_, n)| n == name);
        let first = owners.next()?;
        owners.next().is_none().then(|| first.clone())
    }

    /// Which enum `qualifier::name` means in a file of `krate`.
    fn resolve(
        &self,
        qualifier: &[String],
        name: &str,
        krate: &str,
        imports: &HashMap<String, (Option<String>, String)>,
    ) -> Option<(String, String)> {
        let in_crate = |owner: &str, name: &str| {
            if self.has(owner, name) {
                Some((owner.to_owned(), name.to_owned()))
            } else {
                self.unique(name)
            }
        };
        match qualifier.first().map(String::as_str) {
            Some(first) if first.starts_with("cpc_") => in_crate(&first.replace('_', "-"), name),
            Some("crate" | "self" | "super") => in_crate(krate, name),
            Some("std" | "core" | "alloc") => None,
            Some(first) => match imports.get(first) {
                // `io::Error::X` with `use std::io;`: not ours.
                Some((None, _)) => None,
                // `error::Error::X`, `cpc_core_alias::Error::X`: a module
                // of a workspace package.
                Some((Some(owner), _)) => in_crate(owner, name),
                None => in_crate(krate, name),
            },
            None => match imports.get(name) {
                Some((Some(owner), original)) => in_crate(owner, original),
                Some((None, _)) => None,
                None => in_crate(krate, name),
            },
        }
    }
}

/// Whether a `use` statement brings in `thiserror::Error` as `Error`.
fn imports_thiserror_error(toks: &[Token], uses: &[(usize, usize)]) -> bool {
    flatten_uses(toks, uses)
        .iter()
        .any(|(path, alias)| path == &["thiserror", "Error"] && alias.is_none())
}

/// Blanks every `#[cfg(test)]` item (through its closing brace or
/// semicolon) and returns the names of `#[cfg(test)] mod x;` files.
fn blank_cfg_test(text: &str) -> (String, Vec<String>) {
    let toks = tokenize(text);
    let mut out = text.as_bytes().to_vec();
    let mut test_mods = Vec::new();
    let mut k = 0;
    while k < toks.len() {
        let is_cfg_test = toks.len() >= k + 7
            && toks[k].is(b'#')
            && toks[k + 1].is(b'[')
            && toks[k + 2].is_ident("cfg")
            && toks[k + 3].is(b'(')
            && toks[k + 4].is_ident("test")
            && toks[k + 5].is(b')')
            && toks[k + 6].is(b']');
        if !is_cfg_test {
            k += 1;
            continue;
        }
        // The item: up to its first `;` or through its body's `}`, at the
        // top level of the item (attribute brackets skipped).
        let mut j = k + 7;
        let mut end = None;
        while j < toks.len() {
            if toks[j].is(b'[') || toks[j].is(b'(') {
                j = matching(&toks, j).map_or(toks.len(), |m| m + 1);
                continue;
            }
            if toks[j].is(b';') {
                if toks[k + 7..j].iter().any(|t| t.is_ident("mod")) {
                    if let Some(name) = toks[j - 1].ident() {
                        test_mods.push(name.to_owned());
                    }
                }
                end = Some(j);
                break;
            }
            if toks[j].is(b'{') {
                end = matching(&toks, j);
                break;
            }
            j += 1;
        }
        let last = end.unwrap_or(toks.len() - 1);
        blank(&mut out, toks[k].at, toks[last].end);
        k = last + 1;
    }
    (String::from_utf8_lossy(&out).into_owned(), test_mods)
}

/// The files a `mod name;` declared in `rel` can live in.
fn module_files(rel: &str, name: &str) -> [String; 2] {
    let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let base = if matches!(stem, "lib" | "main" | "mod") {
        dir.to_owned()
    } else {
        format!("{dir}/{stem}")
    };
    [format!("{base}/{name}.rs"), format!("{base}/{name}/mod.rs")]
}

/// Byte ranges (`use` through `;`) of `use` statements.
fn use_statements(toks: &[Token]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (k, t) in toks.iter().enumerate() {
        if t.is_ident("use") {
            if let Some(semi) = toks[k..].iter().find(|t| t.is(b';')) {
                out.push((t.at, semi.at));
            }
        }
    }
    out
}

/// Modules this file declares (`mod x;`, `mod x { .. }`): the first
/// segment of a `use` path may name one of them.
fn declared_modules(toks: &[Token]) -> BTreeSet<String> {
    toks.windows(2)
        .filter(|w| w[0].is_ident("mod"))
        .filter_map(|w| w[1].ident().map(str::to_owned))
        .collect()
}

/// Every path a `use` statement names, with its `as` alias (globs and
/// `as _` are left out).
fn flatten_uses(toks: &[Token], uses: &[(usize, usize)]) -> Vec<(Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    for &(start, end) in uses {
        let body: Vec<&Token> = toks.iter().filter(|t| t.at > start && t.at < end).collect();
        let mut k = 0;
        use_tree(&body, &mut k, &[], &mut out);
    }
    out
}

/// Parses one `use` tree at `*k` (recursive descent over `a::b::{c, d as e}`).
fn use_tree(
    toks: &[&Token],
    k: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix.to_vec();
    while let Some(t) = toks.get(*k) {
        if t.is(b':') {
            *k += 1;
        } else if t.is(b'{') {
            *k += 1;
            while let Some(t) = toks.get(*k) {
                if t.is(b'}') {
                    *k += 1;
                    break;
                }
                if t.is(b',') {
                    *k += 1;
                    continue;
                }
                let before = *k;
                use_tree(toks, k, &path, out);
                if *k == before {
                    *k += 1;
                }
            }
            return;
        } else if t.is(b'*') {
            *k += 1;
            return;
        } else if t.is_ident("as") {
            let alias = toks.get(*k + 1).and_then(|t| t.ident()).map(str::to_owned);
            *k += 2;
            if path.last().is_some_and(|s| s == "self") {
                path.pop();
            }
            if alias.as_deref() != Some("_") {
                out.push((path, alias));
            }
            return;
        } else if let Some(name) = t.ident() {
            if name != "pub" {
                path.push(name.to_owned());
            }
            *k += 1;
        } else {
            break;
        }
    }
    // `a::{self}` imports `a`.
    let was_self = path.last().is_some_and(|s| s == "self");
    if was_self {
        path.pop();
    }
    if path.len() > prefix.len() || (was_self && !path.is_empty()) {
        out.push((path, None));
    }
}

/// A variant as the enum scan finds it: name, byte offset, `#[from]`.
type VariantDef = (String, usize, bool);

/// The `thiserror` enums of a file and their variants.
fn enums(toks: &[Token], thiserror_imported: bool) -> Vec<(String, Vec<VariantDef>)> {
    let mut out = Vec::new();
    let mut derives_error = false;
    let mut k = 0;
    while k < toks.len() {
        let t = &toks[k];
        if t.is(b'#') && toks.get(k + 1).is_some_and(|n| n.is(b'[')) {
            let Some(close) = matching(toks, k + 1) else {
                break;
            };
            derives_error |= derives_thiserror(&toks[k + 2..close], thiserror_imported);
            k = close + 1;
            continue;
        }
        if t.is_ident("pub") {
            k += 1;
            if toks.get(k).is_some_and(|n| n.is(b'(')) {
                k = matching(toks, k).map_or(toks.len(), |m| m + 1);
            }
            continue;
        }
        if t.is_ident("enum") && derives_error {
            let name = toks.get(k + 1).and_then(Token::ident).map(str::to_owned);
            let open = toks[k..].iter().position(|t| t.is(b'{')).map(|p| k + p);
            if let (Some(name), Some(open)) = (name, open) {
                let (variants, close) = enum_body(toks, open);
                out.push((name, variants));
                k = close + 1;
                derives_error = false;
                continue;
            }
        }
        derives_error = false;
        k += 1;
    }
    out
}

/// Whether an attribute's tokens are a `derive` naming thiserror's `Error`.
fn derives_thiserror(attr: &[Token], thiserror_imported: bool) -> bool {
    if !attr.first().is_some_and(|t| t.is_ident("derive")) {
        return false;
    }
    attr.iter().enumerate().any(|(i, t)| {
        if !t.is_ident("Error") {
            return false;
        }
        if i >= 3 && is_path_sep(attr, i - 2) {
            attr[i - 3].is_ident("thiserror")
        } else {
            thiserror_imported && !(i >= 1 && attr[i - 1].is(b':'))
        }
    })
}

/// The variants of the enum body opening at `open`, and its closing index.
fn enum_body(toks: &[Token], open: usize) -> (Vec<VariantDef>, usize) {
    let mut variants: Vec<VariantDef> = Vec::new();
    let mut depth = 0usize;
    let mut expecting = true;
    let mut k = open;
    while k < toks.len() {
        let t = &toks[k];
        match &t.kind {
            Kind::Punct(b'#') if depth == 1 => {
                // An attribute or doc comment of the next variant.
                k = toks
                    .get(k + 1)
                    .filter(|n| n.is(b'['))
                    .and_then(|_| matching(toks, k + 1))
                    .map_or(k + 1, |m| m + 1);
                continue;
            }
            Kind::Punct(b'#') => {
                let is_from = toks.get(k + 1).is_some_and(|n| n.is(b'['))
                    && toks.get(k + 2).is_some_and(|n| n.is_ident("from"))
                    && toks.get(k + 3).is_some_and(|n| n.is(b']'));
                if is_from {
                    if let Some(last) = variants.last_mut() {
                        last.2 = true;
                    }
                }
            }
            Kind::Punct(b'(' | b'[' | b'{') => depth += 1,
            Kind::Punct(b')' | b']' | b'}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return (variants, k);
                }
            }
            Kind::Punct(b',') if depth == 1 => expecting = true,
            Kind::Ident(name) if depth == 1 && expecting => {
                variants.push((name.clone(), t.at, false));
                expecting = false;
            }
            _ => {}
        }
        k += 1;
    }
    (variants, toks.len().saturating_sub(1))
}

/// An `impl` block: the type it is for, and its braces' token offsets.
#[derive(Debug)]
struct ImplBlock {
    self_path: Vec<String>,
    open: usize,
    close: usize,
}

/// The item-level `impl` blocks (not `impl Trait` in a signature).
fn impl_blocks(toks: &[Token]) -> Vec<ImplBlock> {
    let mut out = Vec::new();
    for (k, t) in toks.iter().enumerate() {
        if !t.is_ident("impl") {
            continue;
        }
        let item_start = k == 0
            || toks[k - 1].is(b'}')
            || toks[k - 1].is(b';')
            || toks[k - 1].is(b']')
            || toks[k - 1].is(b'{')
            || toks[k - 1].is_ident("unsafe");
        if !item_start {
            continue;
        }
        let Some(open) = toks[k..].iter().position(|t| t.is(b'{')).map(|p| k + p) else {
            continue;
        };
        let Some(close) = matching(toks, open) else {
            continue;
        };
        let header = &toks[k + 1..open];
        let header = header
            .iter()
            .position(|t| t.is_ident("where"))
            .map_or(header, |w| &header[..w]);
        // The type is after a top-level `for`, or after `impl<..>`.
        let mut angle = 0i32;
        let mut ty_from = 0;
        for (i, t) in header.iter().enumerate() {
            match &t.kind {
                Kind::Punct(b'<') => angle += 1,
                Kind::Punct(b'>') if !(i > 0 && header[i - 1].is(b'-')) => {
                    angle -= 1;
                    if angle == 0 && ty_from == 0 && header[0].is(b'<') {
                        ty_from = i + 1;
                    }
                }
                Kind::Ident(s) if s == "for" && angle == 0 => ty_from = i + 1,
                _ => {}
            }
        }
        let mut self_path = Vec::new();
        let mut i = ty_from;
        while let Some(t) = header.get(i) {
            if let Some(name) = t.ident().filter(|n| *n != "dyn") {
                self_path.push(name.to_owned());
                if is_path_sep(header, i + 1) {
                    i += 3;
                    continue;
                }
                break;
            }
            if t.is(b'&') || t.is_ident("dyn") {
                i += 1;
                continue;
            }
            break;
        }
        if !self_path.is_empty() {
            out.push(ImplBlock {
                self_path,
                open: toks[open].at,
                close: toks[close].at,
            });
        }
    }
    out
}

/// A path `a::b::C`: its segments and byte range.
#[derive(Debug)]
struct Chain {
    segments: Vec<String>,
    start: usize,
    end: usize,
}

/// Every maximal path of two or more identifiers.
fn chains(toks: &[Token]) -> Vec<Chain> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < toks.len() {
        let Some(first) = toks[k].ident() else {
            k += 1;
            continue;
        };
        let mut segments = vec![first.to_owned()];
        let mut last = k;
        while is_path_sep(toks, last + 1) {
            match toks.get(last + 3).and_then(Token::ident) {
                Some(next) => {
                    segments.push(next.to_owned());
                    last += 3;
                }
                None => break,
            }
        }
        if segments.len() >= 2 {
            out.push(Chain {
                segments,
                start: toks[k].at,
                end: toks[last].end,
            });
        }
        k = last + 1;
    }
    out
}

/// Whether the path at `start..end` of masked code builds a value rather
/// than matching one (see the module doc for the rules).
pub fn is_construction(text: &str, start: usize, end: usize) -> bool {
    let b = text.as_bytes();

    // Backwards to the start of the statement: the open parens the
    // occurrence sits in, and whether one of them is `matches!(`.
    let prefix = text[..start].trim_end();
    if prefix.ends_with("==") || prefix.ends_with("!=") {
        return false;
    }
    let mut nested = 0i64;
    let (mut depth, mut braces) = (0i64, 0i64);
    let floor = start.saturating_sub(LOOK_LIMIT);
    for j in (floor..start).rev() {
        match b[j] {
            b')' | b']' => depth += 1,
            b'(' | b'[' if depth > 0 => depth -= 1,
            b'(' | b'[' => {
                nested += 1;
                if text[..j].trim_end().ends_with("matches!") {
                    return false;
                }
            }
            b'}' => braces += 1,
            b'{' if braces > 0 => braces -= 1,
            b'{' => break,
            b';' if depth == 0 && braces == 0 => break,
            _ => {}
        }
    }

    // Forwards: skip the variant's own fields, then look for `=>` or `=`
    // before the enclosing argument or statement ends.
    let mut i = end;
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if matches!(b.get(i), Some(b'(' | b'{')) {
        let mut d = 0i64;
        while let Some(&c) = b.get(i) {
            i += 1;
            match c {
                b'(' | b'[' | b'{' => d += 1,
                b')' | b']' | b'}' => {
                    d -= 1;
                    if d == 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    let mut depth = 0i64;
    let limit = (i + LOOK_LIMIT).min(b.len());
    while i < limit {
        let next = b.get(i + 1).copied();
        match b[i] {
            b'=' if next == Some(b'>') => return false,
            b'=' if next == Some(b'=') => return false,
            b'!' if next == Some(b'=') => return false,
            b'<' | b'>' if next == Some(b'=') => i += 1,
            b'=' => return false,
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'{' | b'}' | b';' => return true,
            b',' if depth <= -nested => return true,
            _ => {}
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests;
