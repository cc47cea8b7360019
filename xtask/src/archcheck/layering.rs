//! The layering half of archcheck: the crate graph `cargo metadata` reports
//! must be the one docs/ARCHITECTURE.md's layering table states, and no
//! crate of the remote side may depend on one of the device side.
//!
//! The table is the document's, so a new dependency is a deliberate change
//! of the design: it fails here until the table says it, in the same commit.

use std::collections::{BTreeMap, BTreeSet};

/// Which side of the wire a crate stands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The wire format alone (cpc-protocol).
    Wire,
    /// What runs on the device.
    Device,
    /// The reference server and what checks it from outside.
    Remote,
    /// Simulations, tools, examples and benches.
    Harness,
}

impl Side {
    fn parse(cell: &str) -> Option<Side> {
        match cell {
            "wire" => Some(Side::Wire),
            "device" => Some(Side::Device),
            "remote" => Some(Side::Remote),
            "harness" => Some(Side::Harness),
            _ => None,
        }
    }
}

/// One crate's dependencies on other workspace crates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deps {
    /// Normal (and build) dependencies.
    pub normal: BTreeSet<String>,
    /// Dev-only dependencies (not also normal ones).
    pub dev: BTreeSet<String>,
}

/// One row of the layering table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Where the crate stands.
    pub side: Side,
    /// What the crate may depend on.
    pub deps: Deps,
}

/// The crate names in one cell: backticked names, or `—` for none.
fn names(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, part)| i % 2 == 1 && !part.is_empty())
        .map(|(_, part)| part.to_owned())
        .collect()
}

/// Reads the table under `## Layering`: `| `crate` | side | deps | dev deps |`.
pub fn parse_table(doc: &str) -> Result<BTreeMap<String, Row>, Vec<String>> {
    let Some(start) = doc.find("\n## Layering") else {
        return Err(vec!["ARCHITECTURE.md: no `## Layering` section".to_owned()]);
    };
    let section = &doc[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    let mut rows = BTreeMap::new();
    let mut problems = Vec::new();
    for (n, line) in section.lines().enumerate() {
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<String> = line.split('|').map(|c| c.trim().to_owned()).collect();
        // "| a | b | c | d |" splits into ["", a, b, c, d, ""].
        if cells.len() != 6 {
            problems.push(format!(
                "ARCHITECTURE.md layering table, row {}: expected 4 cells, found {}",
                n + 1,
                cells.len().saturating_sub(2)
            ));
            continue;
        }
        let krate = cells[1].trim_matches('`').to_owned();
        let Some(side) = Side::parse(&cells[2]) else {
            problems.push(format!(
                "ARCHITECTURE.md layering table, `{krate}`: side `{}` is not wire, device, remote or harness",
                cells[2]
            ));
            continue;
        };
        let deps = Deps {
            normal: names(&cells[3]),
            dev: names(&cells[4]),
        };
        if rows.insert(krate.clone(), Row { side, deps }).is_some() {
            problems.push(format!(
                "ARCHITECTURE.md layering table: `{krate}` has two rows"
            ));
        }
    }
    if rows.is_empty() && problems.is_empty() {
        problems.push("ARCHITECTURE.md: the layering table has no rows".to_owned());
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// The workspace's crate graph from `cargo metadata --no-deps` JSON: each
/// package's dependencies on other workspace packages.
pub fn parse_metadata(json: &str) -> Result<BTreeMap<String, Deps>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("cargo metadata: not JSON: {e}"))?;
    let packages = value
        .get("packages")
        .and_then(|p| p.as_array())
        .ok_or("cargo metadata: no `packages` array")?;
    let name_of = |p: &serde_json::Value| p.get("name").and_then(|n| n.as_str()).map(str::to_owned);
    let members: BTreeSet<String> = packages.iter().filter_map(name_of).collect();
    let mut graph = BTreeMap::new();
    for package in packages {
        let Some(name) = name_of(package) else {
            continue;
        };
        let mut deps = Deps::default();
        let list = package.get("dependencies").and_then(|d| d.as_array());
        for dep in list.into_iter().flatten() {
            let Some(dep_name) = name_of(dep) else {
                continue;
            };
            // A crate naming itself (to switch a feature on in its tests)
            // is not an edge of the graph.
            if !members.contains(&dep_name) || dep_name == name {
                continue;
            }
            match dep.get("kind").and_then(|k| k.as_str()) {
                Some("dev") => deps.dev.insert(dep_name),
                _ => deps.normal.insert(dep_name),
            };
        }
        let normal = deps.normal.clone();
        deps.dev.retain(|d| !normal.contains(d));
        graph.insert(name, deps);
    }
    Ok(graph)
}

fn list(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Every difference between the graph and the table, and every remote-side
/// crate that depends on a device-side one.
pub fn check(graph: &BTreeMap<String, Deps>, table: &BTreeMap<String, Row>) -> Vec<String> {
    let mut problems = Vec::new();
    for (krate, deps) in graph {
        let Some(row) = table.get(krate) else {
            problems.push(format!(
                "crate `{krate}` has no row in ARCHITECTURE.md's layering table"
            ));
            continue;
        };
        for (kind, actual, stated) in [
            ("depends on", &deps.normal, &row.deps.normal),
            ("depends in its tests on", &deps.dev, &row.deps.dev),
        ] {
            let forbidden: BTreeSet<String> = actual.difference(stated).cloned().collect();
            if !forbidden.is_empty() {
                problems.push(format!(
                    "`{krate}` {kind} {}, which the layering table does not allow",
                    list(&forbidden)
                ));
            }
            let stale: BTreeSet<String> = stated.difference(actual).cloned().collect();
            if !stale.is_empty() {
                problems.push(format!(
                    "the layering table says `{krate}` {kind} {}; it does not (update the table)",
                    list(&stale)
                ));
            }
        }
        if row.side == Side::Remote || row.side == Side::Wire {
            for dep in &deps.normal {
                let dep_side = table.get(dep).map(|r| r.side);
                if dep_side == Some(Side::Device) || dep_side == Some(Side::Harness) {
                    problems.push(format!(
                        "`{krate}` ({:?} side) depends on `{dep}` ({:?} side): the remote never depends on a client crate",
                        row.side,
                        dep_side.unwrap_or(Side::Device)
                    ));
                }
            }
        }
    }
    for krate in table.keys() {
        if !graph.contains_key(krate) {
            problems.push(format!(
                "the layering table has a row for `{krate}`, which is not a workspace package"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "# A\n## Layering\n| crate | side | depends on | in tests only |\n|---|---|---|---|\n\
| `core` | device | — | — |\n\
| `worker` | device | `core` | `sim` |\n\
| `proto` | wire | — | — |\n\
| `server` | remote | `proto` | — |\n\
| `sim` | harness | `worker` | — |\n\
## Next\n| `ignored` | x | y | z |\n";

    fn metadata(edges: &[(&str, &str, Option<&str>)]) -> String {
        let mut packages: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
        for p in ["core", "worker", "proto", "server", "sim"] {
            packages.insert(p, Vec::new());
        }
        for (from, to, kind) in edges {
            packages
                .entry(from)
                .or_default()
                .push(serde_json::json!({ "name": to, "kind": kind }));
        }
        let packages: Vec<serde_json::Value> = packages
            .into_iter()
            .map(|(name, deps)| serde_json::json!({ "name": name, "dependencies": deps }))
            .collect();
        serde_json::json!({ "packages": packages }).to_string()
    }

    const TRUE_EDGES: [(&str, &str, Option<&str>); 4] = [
        ("worker", "core", None),
        ("worker", "sim", Some("dev")),
        ("server", "proto", None),
        ("sim", "worker", None),
    ];

    fn problems(edges: &[(&str, &str, Option<&str>)]) -> Vec<String> {
        let table = parse_table(DOC).expect("the test table parses");
        let graph = parse_metadata(&metadata(edges)).expect("the test metadata parses");
        check(&graph, &table)
    }

    #[test]
    fn the_graph_the_table_states_passes() {
        assert_eq!(problems(&TRUE_EDGES), Vec::<String>::new());
    }

    #[test]
    fn a_dependency_the_table_does_not_allow_fails() {
        let mut edges = TRUE_EDGES.to_vec();
        edges.push(("core", "worker", None));
        edges.push(("proto", "proto", Some("dev")));
        edges.push(("worker", "serde", None));
        let found = problems(&edges);
        assert_eq!(
            found,
            vec!["`core` depends on worker, which the layering table does not allow".to_owned()],
            "a crate's own name and crates outside the workspace are not edges"
        );
    }

    #[test]
    fn a_dev_dependency_used_in_the_build_fails_and_a_stale_row_is_named() {
        let edges = [
            ("worker", "core", None),
            ("worker", "sim", None),
            ("server", "proto", None),
            ("sim", "worker", None),
        ];
        let found = problems(&edges);
        assert!(
            found.contains(
                &"`worker` depends on sim, which the layering table does not allow".to_owned()
            ),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("says `worker` depends in its tests on sim; it does not")),
            "{found:?}"
        );
    }

    #[test]
    fn the_server_depending_on_a_device_crate_fails_even_if_the_table_allows_it() {
        let doc = DOC.replace(
            "| `server` | remote | `proto` |",
            "| `server` | remote | `proto`, `core` |",
        );
        let table = parse_table(&doc).expect("parses");
        let mut edges = TRUE_EDGES.to_vec();
        edges.push(("server", "core", None));
        let graph = parse_metadata(&metadata(&edges)).expect("parses");
        let found = check(&graph, &table);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("the remote never depends on a client crate"),
            "{found:?}"
        );
    }

    #[test]
    fn a_crate_without_a_row_a_row_without_a_crate_and_a_bad_table_are_named() {
        let mut edges = TRUE_EDGES.to_vec();
        edges.push(("newcomer", "core", None));
        let found = problems(&edges);
        assert!(
            found.iter().any(|p| p.contains("`newcomer` has no row")),
            "{found:?}"
        );

        let table = parse_table(&DOC.replace(
            "| `sim` | harness | `worker` | — |\n",
            "| `sim` | harness | `worker` | — |\n| `gone` | device | — | — |\n",
        ))
        .expect("parses");
        let graph = parse_metadata(&metadata(&TRUE_EDGES)).expect("parses");
        assert!(check(&graph, &table)
            .iter()
            .any(|p| p.contains("`gone`, which is not a workspace package")));

        let bad =
            parse_table(&DOC.replace("| `core` | device |", "| `core` | client |")).unwrap_err();
        assert!(bad[0].contains("side `client`"), "{bad:?}");
        let short = parse_table(&DOC.replace("| `proto` | wire | — | — |", "| `proto` | wire |"))
            .unwrap_err();
        assert!(short[0].contains("expected 4 cells"), "{short:?}");
        assert!(parse_table("# no layering\n").is_err());
        assert!(parse_metadata("not json").is_err());
        assert!(parse_metadata("{}").is_err());
    }
}
