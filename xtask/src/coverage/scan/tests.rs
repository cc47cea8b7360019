//! The scan on small sources: what is an enum, a variant, a construction.
use super::*;

fn masked(src: &str) -> String {
    mask(src)
}

/// Classifies every occurrence of `needle` in `src`.
fn kinds(src: &str, needle: &str) -> Vec<bool> {
    let text = masked(src);
    text.match_indices(needle)
        .map(|(at, _)| is_construction(&text, at, at + needle.len()))
        .collect()
}

#[test]
fn mask_blanks_comments_strings_and_chars_but_not_lifetimes() {
    let src = "let a = \"E::X {\"; // E::Y\nlet c = '{'; /* E::Z /* n */ */ fn f<'a>(x: &'a str) {}\nlet r = r#\"E::W\"#; let b = b'}';";
    let m = mask(src);
    assert_eq!(m.len(), src.len());
    assert!(!m.contains("E::"), "{m}");
    assert_eq!(m.matches('{').count(), 1, "{m}");
    assert_eq!(m.matches('}').count(), 1, "{m}");
    assert!(m.contains("<'a>(x: &'a str) {}"), "{m}");
    assert_eq!(m.matches('\n').count(), 2);
}

#[test]
fn match_arms_lets_and_matches_are_patterns() {
    let src = r#"
fn f(e: Error) -> Result<(), Error> {
match e {
    Error::Io { source, .. } => return Err(Error::Io { source, context: "x" }),
    Error::Full(n)
        if n > 3 =>
    {
        Err(Error::Full(n))
    }
    Err(Error::Poisoned) | Ok(_) => Err(Error::Poisoned),
    (Error::Poisoned, _) => Err(Error::Poisoned),
    _ => {}
}
if let Error::Io { .. } = e {}
let Error::Full(n) = e else { return Err(Error::Full(1)) };
let x = Error::Full(2);
if matches!(e, Error::Full(_)) {}
if matches!(
    e,
    Some(Error::Poisoned)
) {}
if e == Error::Poisoned {}
if Error::Poisoned != e {}
r.map_err(|e| Error::Io { source: e, context: "y" })?;
Err(Error::Poisoned)
}
"#;
    assert_eq!(kinds(src, "Error::Io"), [false, true, false, true]);
    assert_eq!(
        kinds(src, "Error::Full"),
        [false, true, false, true, true, false]
    );
    assert_eq!(
        kinds(src, "Error::Poisoned"),
        [false, true, false, true, false, false, false, true]
    );
}

#[test]
fn arms_mapping_one_enum_to_another_are_constructions() {
    let src = "match e {\n    A::Spec(t) => B::Usage(t),\n    A::Run(t) => B::Failed(foo(t, 1)),\n    A::Io(w, s) => B::Io(w, s),\n}";
    assert_eq!(kinds(src, "B::Usage"), [true]);
    assert_eq!(kinds(src, "B::Failed"), [true]);
    assert_eq!(kinds(src, "B::Io"), [true]);
    assert_eq!(kinds(src, "A::Spec"), [false]);
}

fn file(rel: &str, text: &str) -> (String, String) {
    (rel.to_owned(), text.to_owned())
}

#[test]
fn finds_thiserror_enums_and_their_variants() {
    let files = [
        file(
            "crates/cpc-a/src/error.rs",
            r#"
/// Doc with `Error::Nope` and { braces.
#[derive(Debug, thiserror::Error, Clone)]
#[non_exhaustive]
pub enum Error {
/// A doc comment.
#[error("tuple {0}")]
Tuple(String),
#[error("struct {a}")]
Struct {
    /// A field.
    a: u32,
    #[source]
    b: std::io::Error,
},
#[error("unit")]
Unit,
#[error(transparent)]
Wrapped(#[from] std::io::Error),
}

#[derive(Debug)]
pub enum NotAnError { A, B }
"#,
        ),
        file(
            "crates/cpc-b/src/lib.rs",
            "use thiserror::Error;\n#[derive(Error, Debug)]\npub(crate) enum BErr<T> { #[error(\"x\")] X(T), #[error(\"y\")] Y = 3 }\n",
        ),
        file(
            "crates/cpc-c/src/lib.rs",
            "#[derive(Debug, Error)]\nenum NotThiserror { A }\n",
        ),
    ];
    let scan = scan_sources(&files);
    let found: Vec<String> = scan
        .variants
        .iter()
        .map(|v| {
            format!(
                "{} {}::{} {}:{}{}",
                v.krate,
                v.enum_name,
                v.name,
                v.file,
                v.line,
                if v.has_from { " from" } else { "" }
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            "cpc-a Error::Tuple crates/cpc-a/src/error.rs:8",
            "cpc-a Error::Struct crates/cpc-a/src/error.rs:10",
            "cpc-a Error::Unit crates/cpc-a/src/error.rs:17",
            "cpc-a Error::Wrapped crates/cpc-a/src/error.rs:19 from",
            "cpc-b BErr::X crates/cpc-b/src/lib.rs:3",
            "cpc-b BErr::Y crates/cpc-b/src/lib.rs:3",
        ]
    );
}

#[test]
fn sites_resolve_paths_aliases_and_self_and_skip_tests() {
    let files = [
        file(
            "crates/cpc-a/src/error.rs",
            "#[derive(Debug, thiserror::Error)]\npub enum Error {\n #[error(\"\")] One,\n #[error(\"\")] Two(u8),\n #[error(\"\")] Three,\n #[error(\"\")] Four,\n}\nimpl Error {\n    pub fn two() -> Self {\n        Self::Two(2)\n    }\n}\n",
        ),
        file(
            "crates/cpc-a/src/lib.rs",
            "mod error;\nuse error::Error;\npub fn f() -> Error {\n    Error::One\n}\n#[cfg(test)]\nmod tests {\n    fn t() { let _ = super::Error::Three; }\n}\n#[cfg(test)]\nmod more;\n",
        ),
        file(
            "crates/cpc-a/src/more.rs",
            "fn t() { let _ = crate::Error::Four; }\n",
        ),
        file(
            "crates/cpc-b/src/error.rs",
            "#[derive(Debug, thiserror::Error)]\npub enum Error {\n #[error(\"\")] One,\n}\n",
        ),
        file(
            "crates/cpc-b/src/lib.rs",
            "use cpc_a::Error as AError;\nfn g() {\n    let _ = AError::Three;\n    let _ = Error::One;\n    let _ = cpc_a::Error::Two(1);\n    // cpc_a::Error::Four\n    let _ = \"cpc_a::Error::Four\";\n}\n",
        ),
    ];
    let scan = scan_sources(&files);
    let sites = |k: &str, e: &str, v: &str| -> Vec<String> {
        scan.sites
            .get(&(k.to_owned(), e.to_owned(), v.to_owned()))
            .map(|s| s.iter().map(|s| format!("{}:{}", s.file, s.line)).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        sites("cpc-a", "Error", "One"),
        ["crates/cpc-a/src/lib.rs:4"]
    );
    assert_eq!(
        sites("cpc-a", "Error", "Two"),
        ["crates/cpc-a/src/error.rs:10", "crates/cpc-b/src/lib.rs:5"]
    );
    assert_eq!(
        sites("cpc-a", "Error", "Three"),
        ["crates/cpc-b/src/lib.rs:3"]
    );
    assert!(sites("cpc-a", "Error", "Four").is_empty());
    assert_eq!(
        sites("cpc-b", "Error", "One"),
        ["crates/cpc-b/src/lib.rs:4"]
    );
}
