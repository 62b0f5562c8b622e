//! Pure projection of a job's JSON stdout: the fenced part, the facts and
//! exploded tables of an `inventory:` job, the state of a `check:` job,
//! the changes between two answers, and the order of job versions. No I/O:
//! the results projector stores what these return (`db::inventory`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use kanade_core::wire::CheckHint;
use serde_json::{Map, Value};

use super::spec::{ExplodeSpec, InventoryHint};

/// Fence word of inventory output: `#KANADE-INVENTORY-BEGIN` / `-END`.
pub const INVENTORY_FENCE: &str = "INVENTORY";
/// Fence word of check output: `#KANADE-CHECK-BEGIN` / `-END`.
pub const CHECK_FENCE: &str = "CHECK";

/// The JSON part of `stdout`: between the lines `#KANADE-<word>-BEGIN` and
/// `#KANADE-<word>-END` when the begin line is there (so a script can log
/// for humans around it), else all of it.
pub fn fenced<'a>(stdout: &'a str, word: &str) -> Result<&'a str, String> {
    let begin = format!("#KANADE-{word}-BEGIN");
    let end = format!("#KANADE-{word}-END");
    let mut start = None;
    let mut offset = 0;
    for (number, line) in stdout.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']).trim();
        match start {
            None if bare == begin => start = Some((offset + line.len(), number + 1)),
            Some((from, _)) if bare == end => return Ok(stdout[from..offset].trim()),
            _ => {}
        }
        offset += line.len();
    }
    match start {
        Some((_, line)) => Err(format!("{begin} on line {line} has no {end} after it")),
        None => Ok(stdout.trim()),
    }
}

/// One row of an exploded table: its declared columns.
pub type Row = Map<String, Value>;

/// The rows of one table of one pc, by primary key (the JSON array of the
/// key's values).
pub type Rows = BTreeMap<String, Row>;

/// What an inventory answer becomes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InventoryProjection {
    /// The top-level fields, less the exploded arrays.
    pub facts: Map<String, Value>,
    /// Each exploded table's rows, by table name.
    pub tables: BTreeMap<String, Rows>,
}

/// Projects the (fenced) stdout of a successful run of an inventory job.
/// `Err` says why nothing may be stored (not JSON, not an object, a
/// missing array, a value of the wrong type, a duplicated key).
pub fn project_inventory(
    hint: &InventoryHint,
    stdout: &str,
) -> Result<InventoryProjection, String> {
    let text = fenced(stdout, INVENTORY_FENCE)?;
    let mut facts = parse_object(text)?;
    let mut tables = BTreeMap::new();
    for explode in &hint.explode {
        let array = match facts.remove(&explode.field) {
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(format!(
                    "{} is {}, not an array",
                    explode.field,
                    kind_of(&other)
                ))
            }
            None => return Err(format!("the field {} is missing", explode.field)),
        };
        tables.insert(explode.table.clone(), explode_rows(explode, array)?);
    }
    Ok(InventoryProjection { facts, tables })
}

fn explode_rows(spec: &ExplodeSpec, items: Vec<Value>) -> Result<Rows, String> {
    let mut rows = Rows::new();
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(mut element) = item else {
            return Err(format!("{}[{index}] is not an object", spec.field));
        };
        let mut row = Row::new();
        for column in &spec.columns {
            let value = element.remove(&column.field).unwrap_or(Value::Null);
            if !column.kind.admits(&value) {
                return Err(format!(
                    "{}[{index}].{}: expected {}, found {}",
                    spec.field,
                    column.field,
                    serde_json::to_value(column.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    kind_of(&value)
                ));
            }
            row.insert(column.field.clone(), value);
        }
        let key: Vec<&Value> = spec.primary_key.iter().map(|k| &row[k]).collect();
        if key.iter().any(|v| v.is_null()) {
            return Err(format!(
                "{}[{index}]: the primary key {:?} is missing",
                spec.field, spec.primary_key
            ));
        }
        let key = serde_json::to_string(&key).unwrap_or_default();
        if rows.insert(key.clone(), row).is_some() {
            return Err(format!(
                "{}[{index}]: the primary key {key} appears twice",
                spec.field
            ));
        }
    }
    Ok(rows)
}

/// A check's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckStatus {
    /// Compliant (`pass`, or the reference's `ok`).
    Pass,
    /// Needs a look.
    Warn,
    /// Not compliant.
    Fail,
    /// The check could not tell.
    Unknown,
}

impl CheckStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
            CheckStatus::Unknown => "unknown",
        }
    }

    /// Reads a status word (case-insensitive; `ok` is `pass`).
    pub fn parse(word: &str) -> Option<Self> {
        match word.trim().to_ascii_lowercase().as_str() {
            "pass" | "ok" => Some(CheckStatus::Pass),
            "warn" | "warning" => Some(CheckStatus::Warn),
            "fail" | "failed" => Some(CheckStatus::Fail),
            "unknown" => Some(CheckStatus::Unknown),
            _ => None,
        }
    }
}

/// The status and detail a check job's (fenced) stdout reports.
pub fn check_outcome(hint: &CheckHint, stdout: &str) -> Result<(CheckStatus, String), String> {
    let text = fenced(stdout, CHECK_FENCE)?;
    let object = parse_object(text)?;
    let status = match object.get(&hint.status_field) {
        Some(Value::String(word)) => CheckStatus::parse(word).ok_or_else(|| {
            format!(
                "{} is {word:?}: use pass, warn, fail or unknown",
                hint.status_field
            )
        })?,
        Some(other) => {
            return Err(format!(
                "{} is {}, not a string",
                hint.status_field,
                kind_of(other)
            ))
        }
        None => return Err(format!("the field {} is missing", hint.status_field)),
    };
    let detail = match object.get(&hint.detail_field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    Ok((status, detail))
}

/// How a row changed between two answers of a pc.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    /// A key that was not there.
    Added {
        /// The primary key.
        key: String,
        /// The new row.
        row: Row,
    },
    /// A key that is gone.
    Removed {
        /// The primary key.
        key: String,
        /// The row as it was.
        row: Row,
    },
    /// The same key with other values.
    Changed {
        /// The primary key.
        key: String,
        /// The row as it was.
        before: Row,
        /// The row now.
        after: Row,
    },
}

/// The changes from `old` to `new`, by key.
pub fn diff_rows(old: &Rows, new: &Rows) -> Vec<RowChange> {
    let mut changes = Vec::new();
    for (key, row) in old {
        match new.get(key) {
            None => changes.push(RowChange::Removed {
                key: key.clone(),
                row: row.clone(),
            }),
            Some(after) if after != row => changes.push(RowChange::Changed {
                key: key.clone(),
                before: row.clone(),
                after: after.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, row) in new {
        if !old.contains_key(key) {
            changes.push(RowChange::Added {
                key: key.clone(),
                row: row.clone(),
            });
        }
    }
    changes.sort_by(|a, b| change_key(a).cmp(change_key(b)));
    changes
}

fn change_key(change: &RowChange) -> &str {
    match change {
        RowChange::Added { key, .. }
        | RowChange::Removed { key, .. }
        | RowChange::Changed { key, .. } => key,
    }
}

/// The `names` scalars whose value differs between `old` and `new`, as
/// (name, before, after); a missing value is `null`.
pub fn diff_scalars(
    names: &[String],
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Vec<(String, Value, Value)> {
    names
        .iter()
        .filter_map(|name| {
            let before = old.get(name).cloned().unwrap_or(Value::Null);
            let after = new.get(name).cloned().unwrap_or(Value::Null);
            (before != after).then(|| (name.clone(), before, after))
        })
        .collect()
}

/// Orders job versions: runs of digits compare as numbers (of any
/// length; leading zeros ignored), the rest as text, and a text run where
/// the other version has ended or has a number marks a pre-release: `1.10`
/// after `1.9`, `2` after `1.5.3`, `1.0` after `1.0-rc2` after `1.0-rc1`,
/// `1.0.1` after `1.0`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a, b): (Vec<&str>, Vec<&str>) = (pieces(a).collect(), pieces(b).collect());
    for i in 0..a.len().max(b.len()) {
        let order = match (a.get(i), b.get(i)) {
            (None, None) => Ordering::Equal,
            // What the shorter lacks: a number ranks it lower, text (a
            // pre-release tag) higher.
            (None, Some(y)) => {
                return if is_number(y) {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (Some(x), None) => {
                return if is_number(x) {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (Some(x), Some(y)) => match (is_number(x), is_number(y)) {
                (true, true) => compare_numbers(x, y),
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => x.cmp(y),
            },
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

fn is_number(piece: &str) -> bool {
    piece.bytes().all(|b| b.is_ascii_digit())
}

/// Two runs of digits by value, without parsing (any length).
fn compare_numbers(x: &str, y: &str) -> Ordering {
    let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

/// Runs of digits and runs of other characters, separators dropped.
fn pieces(version: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = version.char_indices().collect();
    for (i, &(at, c)) in chars.iter().enumerate() {
        let next_differs = chars
            .get(i + 1)
            .is_none_or(|&(_, n)| n.is_ascii_digit() != c.is_ascii_digit() || !n.is_alphanumeric());
        if !c.is_alphanumeric() {
            start = at + c.len_utf8();
            continue;
        }
        if next_differs {
            out.push(&version[start..at + c.len_utf8()]);
            start = at + c.len_utf8();
        }
    }
    out.into_iter()
}

fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!("stdout is {}, not a JSON object", kind_of(&other))),
        Err(e) => Err(format!("stdout is not JSON: {e}")),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a real number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
