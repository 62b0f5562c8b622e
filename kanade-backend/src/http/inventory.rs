//! Inventory and checks over HTTP (viewer): a job's facts and table rows,
//! their history, the fleet's check summary and one check's states (see
//! [`crate::inventory`] for how results become them).
//!
//! - `GET /api/inventory/{job}?table=&pc=&where=FIELD=VALUE`
//! - `GET /api/inventory/{job}/history?pc=&since=`
//! - `GET /api/checks?name=`
//! - `GET /api/checks/{name}?failing=true`

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::blocking::db;
use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, QueryParams};
use crate::db::{
    CheckState, CheckSummary, InventoryChange, InventoryFacts, InventoryRow, ProjectionSkip,
};
use crate::Backend;

/// How many recent answers that could not be projected a read shows.
const SKIPS_SHOWN: usize = 20;

/// `GET /api/inventory/{job}` query.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Deserialize)]
pub struct InventoryQuery {
    /// Only this exploded table's rows.
    pub table: Option<String>,
    /// Only this pc.
    pub pc: Option<String>,
    /// `FIELD=VALUE`: with `table`, only that table's rows whose column
    /// equals the value; without, only the pcs whose fact equals it (and
    /// their rows).
    #[serde(rename = "where")]
    pub field_equals: Option<String>,
}

/// `GET /api/inventory/{job}` answer.
#[derive(schemars::JsonSchema, Debug, Clone, Serialize, Deserialize)]
pub struct InventoryAnswer {
    /// Each pc's current facts.
    pub facts: Vec<InventoryFacts>,
    /// The exploded tables' rows.
    pub rows: Vec<InventoryRow>,
    /// Recent answers that could not be projected, with the reason.
    pub skipped: Vec<ProjectionSkip>,
}

/// `GET /api/inventory/{job}/history` query.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Deserialize)]
pub struct HistoryQuery {
    /// Only this pc.
    pub pc: Option<String>,
    /// Only changes at or after this RFC 3339 time.
    pub since: Option<String>,
}

/// `GET /api/checks` query.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Deserialize)]
pub struct ChecksQuery {
    /// Only this check.
    pub name: Option<String>,
}

/// `GET /api/checks/{name}` query.
#[derive(schemars::JsonSchema, Debug, Clone, Default, Deserialize)]
pub struct CheckStatesQuery {
    /// Only pcs at `fail`.
    #[serde(default)]
    pub failing: bool,
}

fn invalid(message: String) -> ApiError {
    ApiError::from(crate::BackendError::Invalid(message))
}

/// Splits `FIELD=VALUE`.
fn field_equals(text: Option<&str>) -> Result<Option<(String, String)>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    match text.split_once('=') {
        Some((field, value))
            if !field.is_empty()
                && field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Ok(Some((field.to_owned(), value.to_owned())))
        }
        _ => Err(invalid(format!(
            "where={text:?}: expected FIELD=VALUE with a field of letters, digits, '_' or '-'"
        ))),
    }
}

/// `GET /api/inventory/{job}`.
pub(super) async fn inventory(
    State(backend): State<Backend>,
    PathParams(job): PathParams<String>,
    QueryParams(query): QueryParams<InventoryQuery>,
) -> ApiResult<InventoryAnswer> {
    let filter = field_equals(query.field_equals.as_deref())?;
    let answer = db(&backend, move |db| {
        let filter = filter.as_ref().map(|(f, v)| (f.as_str(), v.as_str()));
        let (facts, rows) = match &query.table {
            Some(table) => (
                Vec::new(),
                db.inventory_rows(&job, Some(table), query.pc.as_deref(), filter)?,
            ),
            None => {
                let facts = db.inventory_facts(&job, query.pc.as_deref(), filter)?;
                let pcs: std::collections::BTreeSet<&str> =
                    facts.iter().map(|f| f.pc_id.as_str()).collect();
                let rows = db
                    .inventory_rows(&job, None, query.pc.as_deref(), None)?
                    .into_iter()
                    .filter(|r| pcs.contains(r.pc_id.as_str()))
                    .collect();
                (facts, rows)
            }
        };
        let skipped = db.projection_skips(Some(&job), SKIPS_SHOWN)?;
        Ok(InventoryAnswer {
            facts,
            rows,
            skipped,
        })
    })
    .await?;
    Ok(Json(answer))
}

/// `GET /api/inventory/{job}/history`.
pub(super) async fn history(
    State(backend): State<Backend>,
    PathParams(job): PathParams<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> ApiResult<Vec<InventoryChange>> {
    let since = match query.since.as_deref() {
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| invalid(format!("since={text:?} is not an RFC 3339 time: {e}")))?
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        ),
        None => None,
    };
    Ok(Json(
        db(&backend, move |db| {
            db.inventory_history(&job, query.pc.as_deref(), since.as_deref())
        })
        .await?,
    ))
}

/// `GET /api/checks`.
pub(super) async fn checks(
    State(backend): State<Backend>,
    QueryParams(query): QueryParams<ChecksQuery>,
) -> ApiResult<Vec<CheckSummary>> {
    Ok(Json(
        db(&backend, move |db| db.check_summary(query.name.as_deref())).await?,
    ))
}

/// `GET /api/checks/{name}`.
pub(super) async fn check_states(
    State(backend): State<Backend>,
    PathParams(name): PathParams<String>,
    QueryParams(query): QueryParams<CheckStatesQuery>,
) -> ApiResult<Vec<CheckState>> {
    Ok(Json(
        db(&backend, move |db| db.check_states(&name, query.failing)).await?,
    ))
}
