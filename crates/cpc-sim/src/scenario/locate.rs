//! Where in a scenario file an error is: the line and column of a field
//! named by its path (`ops.arrival.rate`, `schedule.windows[3]`), for TOML
//! and JSON, so every error a user sees points at the line to fix.

use std::ops::Range;

use serde_json::value::RawValue;

use super::error::{ParseSource, ScenarioError as Error, ScenarioFormat};
use super::MAX_SCENARIO_BYTES;

/// Refuses a scenario text larger than [`MAX_SCENARIO_BYTES`] before it is
/// parsed (a parser holds several times the text's size).
pub(crate) fn check_size(text: &str) -> Result<(), Error> {
    if text.len() as u64 > MAX_SCENARIO_BYTES {
        return Err(Error::invalid(
            "(file)",
            format!(
                "{} bytes is more than the limit of {MAX_SCENARIO_BYTES}",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// One step of a field path.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into steps; `None` if it is not such a path.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(p) => (&part[..p], &part[p..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            out.push(Step::Index(inner[..end].parse().ok()?));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The byte range of the field at `path` in a TOML text: the key's line
/// for a key, the element (a `[[table]]` header or an inline value) for an
/// index. The deepest step found counts when a later one is missing.
fn toml_span(text: &str, path: &str) -> Option<Range<usize>> {
    let steps = steps(path)?;
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut found = None;
    for step in steps {
        let (span, next) = match (step, item) {
            (Step::Key(k), toml_edit::Item::Table(t)) => {
                let (key, value) = t.get_key_value(k)?;
                (key.span().or_else(|| value.span()), value)
            }
            (Step::Key(k), toml_edit::Item::Value(toml_edit::Value::InlineTable(t))) => {
                let (key, value) = t.get_key_value(k)?;
                (key.span().or_else(|| value.span()), value)
            }
            (Step::Index(i), toml_edit::Item::ArrayOfTables(a)) => {
                let table = a.get(i)?;
                // The element's own header line, not the first element's.
                return table.span().or(found);
            }
            (Step::Index(i), toml_edit::Item::Value(toml_edit::Value::Array(a))) => {
                return a.get(i).and_then(toml_edit::Value::span).or(found);
            }
            _ => return found,
        };
        found = span.or(found);
        item = next;
    }
    found
}

/// The byte offset of the field at `path` in a JSON text (its value).
fn json_offset(text: &str, path: &str) -> Option<usize> {
    let steps = steps(path)?;
    let mut raw: &RawValue = serde_json::from_str(text).ok()?;
    let mut found = None;
    for step in steps {
        let next: &RawValue = match step {
            Step::Key(k) => {
                let map: std::collections::HashMap<&str, &RawValue> =
                    serde_json::from_str(raw.get()).ok()?;
                match map.get(k) {
                    Some(v) => v,
                    None => break,
                }
            }
            Step::Index(i) => {
                let list: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
                match list.get(i) {
                    Some(v) => v,
                    None => break,
                }
            }
        };
        // Borrowed from `text`: its offset is the pointers' distance.
        let offset = (next.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
        found = (offset <= text.len()).then_some(offset).or(found);
        raw = next;
    }
    found
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// The line and column of the field at `path` in `text`, if found.
pub(crate) fn locate(text: &str, format: ScenarioFormat, path: &str) -> Option<(usize, usize)> {
    let offset = match format {
        ScenarioFormat::Toml => toml_span(text, path)?.start,
        ScenarioFormat::Json => json_offset(text, path)?,
    };
    Some(line_column(text, offset))
}

/// The field a parser message names (`unknown field `x``, `missing field
/// `x``, `invalid scenario field `a.b[2]``), if any.
fn field_in_message(message: &str) -> Option<String> {
    for marker in [
        "invalid scenario field `",
        "unknown field `",
        "missing field `",
        "for key `",
        "duplicate key `",
    ] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_owned());
            }
        }
    }
    None
}

/// The most precise field of an error: a field named in the message that
/// is a full path (what `Schedule` validation says, `schedule.windows[3]`),
/// else the deserializer's path, else a field the message names.
fn best_field(message: &str, path: &str) -> Option<String> {
    let named = field_in_message(message);
    let path = (!path.is_empty() && path != "." && !path.contains('?')).then(|| path.to_owned());
    match (named, path) {
        (Some(n), _) if n.contains('.') || n.contains('[') => Some(n),
        // `unknown field `x`` inside `ops`: the path says `ops`, the
        // message the bad key in it.
        (Some(n), Some(p)) if !p.ends_with(&n) => Some(format!("{p}.{n}")),
        (_, Some(p)) => Some(p),
        (n, None) => n,
    }
}

/// A TOML parse error with the field's path and the line of the field when
/// the parser's own span is less precise.
pub(crate) fn toml_error(text: &str, e: serde_path_to_error::Error<toml::de::Error>) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.message().trim().to_owned();
    let field = best_field(&message, &path);
    // A validation error inside a table (a schedule window) is spanned at
    // the table: the field's own line is better.
    let located = field
        .as_deref()
        .filter(|f| f.contains('['))
        .and_then(|f| locate(text, ScenarioFormat::Toml, f));
    let spanned = inner.span().map(|s| line_column(text, s.start));
    let (line, column) = match located.or(spanned) {
        Some((l, c)) => (Some(l), Some(c)),
        None => (None, None),
    };
    Error::Parse {
        format: ScenarioFormat::Toml,
        line,
        column,
        field,
        message,
        source: ParseSource::Toml(Box::new(inner)),
    }
}

/// A JSON parse error with the field's path and its line.
pub(crate) fn json_error(text: &str, path: Option<String>, e: serde_json::Error) -> Error {
    let full = e.to_string();
    // serde_json appends " at line L column C"; the fields carry that.
    let message = match full.rfind(" at line ") {
        Some(p) => full[..p].to_owned(),
        None => full,
    };
    let mut field = best_field(&message, path.as_deref().unwrap_or(""));
    // Inside an internally tagged table (`arrival`), serde buffers the
    // table and reports the type error at its end, naming only the table:
    // find the member holding the value the message quotes.
    if let Some(member) = field
        .as_deref()
        .and_then(|f| member_with_bad_value(text, f, &message))
    {
        field = Some(member);
    }
    let located = field
        .as_deref()
        .filter(|f| f.contains('[') || Some(*f) != path.as_deref())
        .and_then(|f| locate(text, ScenarioFormat::Json, f));
    let parsed = (e.line() > 0).then(|| (e.line(), e.column()));
    let (line, column) = match located.or(parsed) {
        Some((l, c)) => (Some(l), Some(c)),
        None => (None, None),
    };
    Error::Parse {
        format: ScenarioFormat::Json,
        line,
        column,
        field,
        message,
        source: ParseSource::Json(Box::new(e)),
    }
}

/// The path of the one member of the JSON object at `path` whose value is
/// the one an `invalid type: ...` message quotes, if exactly one is.
fn member_with_bad_value(text: &str, path: &str, message: &str) -> Option<String> {
    let quoted = message
        .strip_prefix("invalid type: ")?
        .split(", expected")
        .next()?;
    let wanted: serde_json::Value = if let Some(s) = quoted.strip_prefix("string ") {
        serde_json::Value::String(s.trim_matches('"').to_owned())
    } else {
        let literal = quoted.rsplit(' ').next()?.trim_matches('`');
        serde_json::from_str(literal).ok()?
    };
    let offset = json_offset(text, path)?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::Deserializer::from_str(text.get(offset..)?)
            .into_iter()
            .next()?
            .ok()?;
    let mut hits = object.iter().filter(|(_, v)| **v == wanted);
    let (key, _) = hits.next()?;
    hits.next().is_none().then(|| format!("{path}.{key}"))
}

/// Adds the line of its field to a validation error found after parsing.
pub(crate) fn with_line(text: &str, format: ScenarioFormat, e: Error) -> Error {
    match e {
        Error::Invalid { field, reason } => match locate(text, format, &field) {
            Some((line, column)) => Error::InvalidAt {
                format,
                field,
                reason,
                line,
                column,
            },
            None => Error::Invalid { field, reason },
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_keys_and_indices() {
        assert_eq!(
            steps("schedule.windows[3].from"),
            Some(vec![
                Step::Key("schedule"),
                Step::Key("windows"),
                Step::Index(3),
                Step::Key("from")
            ])
        );
        assert_eq!(steps("clock_skew[1]").map(|s| s.len()), Some(2));
        assert_eq!(steps("a[x]"), None);
    }

    #[test]
    fn a_window_is_found_on_its_own_line_in_toml_and_json() {
        let toml = "name = \"x\"\n\n[[schedule.windows]]\nfrom = \"1m\"\nto = \"2m\"\nstate = \"offline\"\n\n[[schedule.windows]]\nfrom = \"5m\"\nto = \"3m\"\nstate = \"offline\"\n";
        assert_eq!(
            locate(toml, ScenarioFormat::Toml, "schedule.windows[1]").map(|l| l.0),
            Some(8)
        );
        assert_eq!(
            locate(toml, ScenarioFormat::Toml, "name").map(|l| l.0),
            Some(1)
        );
        let json = "{\n  \"name\": \"x\",\n  \"schedule\": {\n    \"windows\": [\n      {\"from\": \"1m\", \"to\": \"2m\", \"state\": \"offline\"},\n      {\"from\": \"5m\", \"to\": \"3m\", \"state\": \"offline\"}\n    ]\n  }\n}\n";
        assert_eq!(
            locate(json, ScenarioFormat::Json, "schedule.windows[1]"),
            Some((6, 7))
        );
        assert_eq!(
            locate(json, ScenarioFormat::Json, "name").map(|l| l.0),
            Some(2)
        );
    }
}
