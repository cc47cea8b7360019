//! `cargo xtask archcheck` (part of `cargo xtask ci`): docs/ARCHITECTURE.md
//! keeps itself true. The crate graph (`cargo metadata`) must be the one
//! its layering table states (`layering.rs`); every top-level module of
//! every crate (and of xtask) must be named in that crate's section of the
//! code map; every file a doc cites (README.md, docs/*.md) must exist.

mod layering;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{workspace_root, XtaskError};

/// The code map's bullet of a package, as it starts in ARCHITECTURE.md.
fn section_marker(package: &str) -> String {
    format!("- **`{package}")
}

/// The text of `package`'s section: from its bullet to the next bullet or
/// heading.
fn section<'a>(doc: &'a str, package: &str) -> Option<&'a str> {
    let start = doc.find(&section_marker(package))?;
    let rest = &doc[start + 1..];
    let end = [rest.find("\n- **"), rest.find("\n## ")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Top-level modules of a package's `src`: `x.rs` and `x/` (with a
/// `mod.rs`, or beside an `x.rs`), not `lib`/`main`, not `bin/`.
fn modules(src: &Path) -> Result<BTreeSet<String>, XtaskError> {
    let mut out = BTreeSet::new();
    let entries = std::fs::read_dir(src).map_err(|e| XtaskError::Io("reading a src dir", e))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".rs") {
            if stem != "lib" && stem != "main" {
                out.insert(stem.to_owned());
            }
        } else if path.is_dir() && name != "bin" {
            out.insert(name.to_owned());
        }
    }
    Ok(out)
}

/// Whether a section names module `m` (`m.rs`, `m/` or `` `m` ``).
fn names_module(section: &str, m: &str) -> bool {
    [format!("{m}.rs"), format!("{m}/"), format!("`{m}`")]
        .iter()
        .any(|needle| section.contains(needle.as_str()))
}

/// Paths a markdown text cites: backticked or linked tokens that look like
/// repository paths (a known top-level folder, or a file with a slash and
/// an extension).
fn cited_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 6] = [
        "crates/",
        "xtask/",
        "docs/",
        "benches/",
        "examples/",
        ".ci/",
    ];
    let mut out = Vec::new();
    let mut push = |token: &str| {
        let token = token.trim().trim_end_matches([',', '.', ':', ')']);
        let token = token.split(['#', ' ']).next().unwrap_or("");
        if token.contains("://") || token.contains('*') || token.contains('<') {
            return;
        }
        let looks_like_path = ROOTS.iter().any(|r| token.starts_with(r))
            || (token.contains('/')
                && [".rs", ".md", ".toml", ".svg", ".sh"]
                    .iter()
                    .any(|ext| token.ends_with(ext)));
        // `target/` holds what builds write, not the repository's files.
        let generated = token.starts_with("target/");
        if looks_like_path && !generated && !token.starts_with('/') && !token.starts_with("..") {
            out.push(token.to_owned());
        }
    };
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 && !part.contains('\n') {
            push(part);
        }
    }
    for link in text.split("](").skip(1) {
        if let Some(end) = link.find(')') {
            push(&link[..end]);
        }
    }
    out
}

/// The workspace's crate graph, from `cargo metadata --no-deps`.
fn crate_graph() -> Result<std::collections::BTreeMap<String, layering::Deps>, XtaskError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| XtaskError::Io("running cargo metadata", e))?;
    if !output.status.success() {
        return Err(XtaskError::StepFailed(format!(
            "cargo metadata: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    layering::parse_metadata(&String::from_utf8_lossy(&output.stdout))
        .map_err(XtaskError::StepFailed)
}

/// Runs the check; the error lists every problem found.
pub fn run() -> Result<(), XtaskError> {
    let root = workspace_root();
    let doc_path = root.join("docs").join("ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&doc_path)
        .map_err(|e| XtaskError::Io("reading docs/ARCHITECTURE.md", e))?;
    let mut problems = match layering::parse_table(&doc) {
        Ok(table) => layering::check(&crate_graph()?, &table),
        Err(found) => found,
    };

    let mut packages: Vec<(String, PathBuf)> = Vec::new();
    let crates =
        std::fs::read_dir(root.join("crates")).map_err(|e| XtaskError::Io("reading crates/", e))?;
    for entry in crates.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        packages.push((format!("crates/{name}"), entry.path().join("src")));
    }
    packages.push(("xtask/".to_owned(), root.join("xtask").join("src")));
    packages.sort();
    for (package, src) in &packages {
        let Some(text) = section(&doc, package) else {
            problems.push(format!("ARCHITECTURE.md: no code-map entry for {package}"));
            continue;
        };
        for m in modules(src)? {
            if !names_module(text, &m) {
                problems.push(format!(
                    "ARCHITECTURE.md: module `{m}` of {package} is not in its code-map entry"
                ));
            }
        }
    }

    let mut docs: Vec<PathBuf> = vec![root.join("README.md")];
    let entries =
        std::fs::read_dir(root.join("docs")).map_err(|e| XtaskError::Io("reading docs/", e))?;
    docs.extend(
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    docs.sort();
    // A doc may cite a file from the repository's root, from its own
    // folder (a relative link), or inside a crate (`src/engine.rs`,
    // `sqlite/tx.rs` in that crate's section).
    let mut bases: Vec<PathBuf> = vec![root.clone()];
    for (package, src) in &packages {
        bases.push(root.join(package));
        bases.push(src.clone());
    }
    for path in &docs {
        let text = std::fs::read_to_string(path).map_err(|e| XtaskError::Io("reading a doc", e))?;
        let here = path.parent().unwrap_or(&root);
        for cited in cited_paths(&text) {
            let found = here.join(&cited).exists() || bases.iter().any(|b| b.join(&cited).exists());
            if !found {
                problems.push(format!(
                    "{}: cites {cited}, which does not exist",
                    path.strip_prefix(&root).unwrap_or(path).display()
                ));
            }
        }
    }

    if problems.is_empty() {
        println!(
            "archcheck: the crate graph is the layering table's, {} packages' modules in the code map, every cited file present",
            packages.len()
        );
        return Ok(());
    }
    for p in &problems {
        eprintln!("archcheck: {p}");
    }
    Err(XtaskError::StepFailed(format!(
        "archcheck: {} problems (above)",
        problems.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_and_a_missing_file_are_found() {
        let doc = "## Code map\n- **`crates/a`**: `x.rs` does x, `y/` y.\n- **`crates/b`**: b.\n## Next\n";
        let a = section(doc, "crates/a").unwrap();
        assert!(names_module(a, "x") && names_module(a, "y"));
        assert!(!names_module(a, "z"), "z is not named");
        assert!(!names_module(section(doc, "crates/b").unwrap(), "x"));
        let cited = cited_paths("see `crates/a/src/x.rs`, [img](img/p.svg) and `QueueStorage`");
        assert_eq!(cited, vec!["crates/a/src/x.rs", "img/p.svg"]);
    }
}
