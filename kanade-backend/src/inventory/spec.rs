//! The `inventory:` hint of a job manifest, in the reference's format
//! (DESIGN §5): which fields of the job's JSON stdout are shown, which
//! arrays become tables of their own, and which scalars keep a history.
//!
//! ```yaml
//! inventory:
//!   display: [{field: hostname, label: Host}]
//!   explode:
//!     - field: packages
//!       table: packages
//!       primary_key: [name]
//!       columns: [{field: name, type: text, index: true}, {field: version, type: text}]
//!       track_history: true
//!   history_scalars: [kernel]
//! ```

use serde::{Deserialize, Serialize};

/// `inventory:` of a job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryHint {
    /// Scalar fields shown in tables, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub display: Vec<DisplayField>,
    /// A one-line summary template (kept as given; shown by consoles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Arrays of the stdout object that become tables of rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explode: Vec<ExplodeSpec>,
    /// Scalars whose changes are recorded with time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history_scalars: Vec<String>,
}

/// One displayed scalar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayField {
    /// Field of the stdout object.
    pub field: String,
    /// Column title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// How to show it (kept as given: `bytes`, `date`, …).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// An array field projected into a table keyed by `primary_key` (per pc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplodeSpec {
    /// The array field of the stdout object.
    pub field: String,
    /// The table's name (`kanade inventory JOB --table T`).
    pub table: String,
    /// Columns whose values identify a row within one pc.
    pub primary_key: Vec<String>,
    /// The columns kept, with their types.
    pub columns: Vec<ColumnSpec>,
    /// Record added / removed / changed rows with time.
    #[serde(default)]
    pub track_history: bool,
}

/// One column of an exploded table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Field of each array element.
    pub field: String,
    /// Its type; a value of another type skips the projection.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Queried often (`--where`): kept as a hint for storage.
    #[serde(default)]
    pub index: bool,
}

/// The types a column may hold (a missing field or `null` is allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// A string.
    Text,
    /// A whole number.
    Integer,
    /// Any number.
    Real,
}

impl ColumnType {
    /// Whether `value` has this type (`null` always does: a missing value).
    pub fn admits(self, value: &serde_json::Value) -> bool {
        match self {
            _ if value.is_null() => true,
            ColumnType::Text => value.is_string(),
            ColumnType::Integer => value.is_i64() || value.is_u64(),
            ColumnType::Real => value.is_number(),
        }
    }
}

impl InventoryHint {
    /// What is wrong with the hint, as (path below `inventory`, message).
    /// Rules: non-empty field and table names, unique table names, a
    /// non-empty primary key made of declared columns, unique columns.
    pub fn problems(&self) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        let mut add = |path: &[&str], message: String| {
            out.push((path.iter().map(|s| (*s).to_owned()).collect(), message))
        };
        for display in &self.display {
            if display.field.trim().is_empty() {
                add(&["display", "field"], "must not be empty".into());
            }
        }
        for name in &self.history_scalars {
            if name.trim().is_empty() {
                add(&["history_scalars"], "names must not be empty".into());
            }
        }
        let mut tables = std::collections::BTreeSet::new();
        let mut fields = std::collections::BTreeSet::new();
        for explode in &self.explode {
            if explode.field.trim().is_empty() {
                add(&["explode", "field"], "must not be empty".into());
            } else if !fields.insert(explode.field.as_str()) {
                add(
                    &["explode", "field"],
                    format!("{:?} is exploded twice", explode.field),
                );
            }
            if explode.table.trim().is_empty() {
                add(&["explode", "table"], "must not be empty".into());
            } else if !explode
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                add(
                    &["explode", "table"],
                    format!("{:?}: use letters, digits, '_' and '-' only", explode.table),
                );
            } else if !tables.insert(explode.table.as_str()) {
                add(
                    &["explode", "table"],
                    format!("{:?} is named twice", explode.table),
                );
            }
            if explode.columns.is_empty() {
                add(
                    &["explode", "columns"],
                    format!("table {:?} needs at least one column", explode.table),
                );
            }
            let mut columns = std::collections::BTreeSet::new();
            for column in &explode.columns {
                if column.field.trim().is_empty() {
                    add(&["explode", "columns", "field"], "must not be empty".into());
                } else if !columns.insert(column.field.as_str()) {
                    add(
                        &["explode", "columns", "field"],
                        format!("{:?} is declared twice", column.field),
                    );
                }
            }
            if explode.primary_key.is_empty() {
                add(
                    &["explode", "primary_key"],
                    format!("table {:?} needs a primary key", explode.table),
                );
            }
            for key in &explode.primary_key {
                if !columns.contains(key.as_str()) {
                    add(
                        &["explode", "primary_key"],
                        format!("{key:?} is not one of the table's columns"),
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(yaml: &str) -> InventoryHint {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_good_hint_has_no_problems() {
        let h = hint(
            "explode:\n  - field: packages\n    table: packages\n    primary_key: [name]\n    columns: [{field: name, type: text}, {field: version, type: text}]\n    track_history: true\nhistory_scalars: [kernel]\n",
        );
        assert!(h.problems().is_empty(), "{:?}", h.problems());
    }

    #[test]
    fn each_rule_names_its_field() {
        let h = hint(
            "explode:\n  - field: ''\n    table: 'bad table'\n    primary_key: [id]\n    columns: [{field: name, type: text}, {field: name, type: integer}]\n  - field: x\n    table: t\n    primary_key: []\n    columns: []\n  - field: y\n    table: t\n    primary_key: [a]\n    columns: [{field: a, type: real}]\n",
        );
        let problems: Vec<String> = h
            .problems()
            .into_iter()
            .map(|(path, message)| format!("{}: {message}", path.join(".")))
            .collect();
        for expected in [
            "explode.field: must not be empty",
            "explode.table: \"bad table\": use letters, digits, '_' and '-' only",
            "explode.columns.field: \"name\" is declared twice",
            "explode.primary_key: \"id\" is not one of the table's columns",
            "explode.columns: table \"t\" needs at least one column",
            "explode.primary_key: table \"t\" needs a primary key",
            "explode.table: \"t\" is named twice",
        ] {
            assert!(
                problems.iter().any(|p| p == expected),
                "{expected} not in {problems:#?}"
            );
        }
    }

    #[test]
    fn unknown_column_types_are_refused_when_parsed() {
        let err = serde_yaml_ng::from_str::<InventoryHint>(
            "explode:\n  - {field: p, table: p, primary_key: [n], columns: [{field: n, type: blob}]}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("blob"), "{err}");
    }

    #[test]
    fn column_types_admit_their_values_and_null() {
        use serde_json::json;
        assert!(ColumnType::Integer.admits(&json!(3)));
        assert!(!ColumnType::Integer.admits(&json!(3.5)));
        assert!(ColumnType::Real.admits(&json!(3)));
        assert!(ColumnType::Text.admits(&json!(null)));
        assert!(!ColumnType::Text.admits(&json!(1)));
    }
}
