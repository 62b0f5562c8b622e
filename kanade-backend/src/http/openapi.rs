//! The HTTP API described as OpenAPI 3.1, served at `GET /api/openapi.json`
//! (open: it describes, it holds no fleet data).
//!
//! Generated from the code: every guarded operation comes from the route
//! table ([`super::routes::ROUTES`]: method, path, least role, audit
//! action), its request, query and answer from the Rust types the handler
//! reads and writes, through their `schemars::JsonSchema` derives (JSON
//! Schema 2020-12, the dialect OpenAPI 3.1 uses), collected once under
//! `components/schemas`. [`OPERATIONS`] pairs each route with those types;
//! a test checks that it covers the route table and the router, and that
//! the document is valid OpenAPI 3.1.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::agent_releases::{PublishQuery, RolloutAnswer, RolloutRequest};
use super::bodies::{
    ExecRequest, ExecutionWait, FreezeRequest, JobUpload, PinRequest, PreviewQuery, ScheduleUpload,
};
use super::error::ErrorBody;
use super::health::Readiness;
use super::inventory::{
    CheckStatesQuery, ChecksQuery, HistoryQuery, InventoryAnswer, InventoryQuery,
};
use super::routes::{rule_for, RouteRule};
use super::security::{ApprovalDecision, AuditQuery, TokenCreated};
use super::ExecutionAnswer;
use crate::auth::Principal;
use crate::backend::{JobView, PcView, ReleaseListing, RolloutStatus, VersionSpread};
use crate::db::{
    AgentRolloutRow, AgentRow, ApprovalRequest, CheckState, CheckSummary, ExecutionFilter,
    ExecutionRow, Freeze, InventoryChange, NewToken, Pin, ResultRow, ScheduleApproval, TokenRow,
};
use crate::manifest::{Job, Schedule};

/// Adds a type's schema to the generator and returns a reference to it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a body or an answer is.
#[derive(Clone, Copy)]
pub enum Payload {
    /// JSON of this type.
    Json(SchemaFn),
    /// JSON whose shape the handler builds by hand: described in words.
    Described(&'static str),
    /// Raw bytes (`application/octet-stream`).
    Bytes,
    /// Text of this media type.
    Text(&'static str),
}

/// One operation of the API.
#[derive(Clone, Copy)]
pub struct Operation {
    /// HTTP method.
    pub method: &'static str,
    /// The route as the router matches it.
    pub path: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// The query string's type, if it reads one.
    pub query: Option<SchemaFn>,
    /// The request body, if it reads one.
    pub body: Option<Payload>,
    /// The success status.
    pub status: u16,
    /// The success answer.
    pub answer: Payload,
}

const fn op(method: &'static str, path: &'static str, summary: &'static str) -> Operation {
    Operation {
        method,
        path,
        summary,
        query: None,
        body: None,
        status: 200,
        answer: Payload::Described("a JSON object"),
    }
}

const fn answers(mut o: Operation, answer: SchemaFn) -> Operation {
    o.answer = Payload::Json(answer);
    o
}

const fn reads(mut o: Operation, body: SchemaFn) -> Operation {
    o.body = Some(Payload::Json(body));
    o
}

const fn queries(mut o: Operation, query: SchemaFn) -> Operation {
    o.query = Some(query);
    o
}

const fn described(mut o: Operation, words: &'static str) -> Operation {
    o.answer = Payload::Described(words);
    o
}

const ERROR_REF: &str = "#/components/schemas/ErrorBody";

const JOB_STATE: &str = "{job, status} or {job, pinned, current}: the job and its new state";

/// Every operation the router serves.
pub const OPERATIONS: &[Operation] = &[
    answers(
        op("GET", "/healthz", "The process answers (open)"),
        of::<Value>,
    ),
    answers(
        op(
            "GET",
            "/readyz",
            "Ready: database, broker, projector lag, signing key (503 when not; open)",
        ),
        of::<Readiness>,
    ),
    described(
        op("GET", "/api/openapi.json", "This document (open)"),
        "an OpenAPI 3.1 document",
    ),
    Operation {
        answer: Payload::Text("text/html"),
        ..op("GET", "/", "The web console (open)")
    },
    Operation {
        answer: Payload::Text("text/javascript"),
        ..op("GET", "/console/app.js", "The console's script (open)")
    },
    Operation {
        answer: Payload::Text("text/css"),
        ..op("GET", "/console/app.css", "The console's style (open)")
    },
    Operation {
        answer: Payload::Text("application/openmetrics-text"),
        ..op(
            "GET",
            "/metrics",
            "Prometheus / OpenMetrics text (see kanade_backend::metrics)",
        )
    },
    answers(
        op("GET", "/api/whoami", "The caller: name, role, scopes"),
        of::<Principal>,
    ),
    answers(
        op(
            "GET",
            "/api/agents",
            "Every agent with its groups and state",
        ),
        of::<Vec<AgentRow>>,
    ),
    answers(
        op(
            "GET",
            "/api/agents/{pc}",
            "One pc: its row, recent results, checks, facts",
        ),
        of::<PcView>,
    ),
    answers(
        op(
            "GET",
            "/api/agents/versions",
            "Agent versions across the fleet and quarantines",
        ),
        of::<VersionSpread>,
    ),
    answers(
        op("GET", "/api/agent-releases", "Published agent releases"),
        of::<Vec<ReleaseListing>>,
    ),
    Operation {
        query: Some(of::<PublishQuery>),
        body: Some(Payload::Bytes),
        answer: Payload::Json(of::<kanade_core::policy::release::ReleaseManifest>),
        ..op(
            "POST",
            "/api/agent-releases",
            "Publish an agent binary (signed description)",
        )
    },
    reads(
        answers(
            op(
                "POST",
                "/api/agent-rollout",
                "Set the agent version to roll out",
            ),
            of::<RolloutAnswer>,
        ),
        of::<RolloutRequest>,
    ),
    answers(
        op("GET", "/api/agent-rollout", "The current agent rollout"),
        of::<Option<AgentRolloutRow>>,
    ),
    answers(
        op("GET", "/api/jobs", "Every job's current version"),
        of::<Vec<Job>>,
    ),
    reads(
        answers(
            op(
                "POST",
                "/api/jobs",
                "Apply a job manifest (422 lists problems with lines)",
            ),
            of::<Job>,
        ),
        of::<JobUpload>,
    ),
    answers(
        op(
            "GET",
            "/api/jobs/{id}",
            "One job: manifest, YAML as applied, revoked, pin",
        ),
        of::<JobView>,
    ),
    Operation {
        body: Some(Payload::Json(of::<ExecRequest>)),
        answer: Payload::Json(of::<ExecutionRow>),
        ..op(
            "POST",
            "/api/jobs/{id}/exec",
            "Run a job on targets (202 when it waits for approval)",
        )
    },
    described(
        op(
            "POST",
            "/api/jobs/{id}/revoke",
            "Revoke a job (agents skip it with 126)",
        ),
        JOB_STATE,
    ),
    described(
        op(
            "POST",
            "/api/jobs/{id}/activate",
            "Let a revoked job run again",
        ),
        JOB_STATE,
    ),
    reads(
        described(
            op(
                "POST",
                "/api/jobs/{id}/pin",
                "Pin the version agents may run",
            ),
            JOB_STATE,
        ),
        of::<PinRequest>,
    ),
    described(op("POST", "/api/jobs/{id}/unpin", "Clear a pin"), JOB_STATE),
    answers(op("GET", "/api/pins", "Every pin"), of::<Vec<Pin>>),
    answers(
        op("GET", "/api/schedules", "Every schedule"),
        of::<Vec<Schedule>>,
    ),
    reads(
        answers(
            op("POST", "/api/schedules", "Apply a schedule manifest"),
            of::<Schedule>,
        ),
        of::<ScheduleUpload>,
    ),
    queries(
        answers(
            op(
                "GET",
                "/api/schedules/{id}/preview",
                "A schedule's next fire times (RFC 3339)",
            ),
            of::<Vec<String>>,
        ),
        of::<PreviewQuery>,
    ),
    answers(
        op("POST", "/api/schedules/{id}/enable", "Enable a schedule"),
        of::<Schedule>,
    ),
    answers(
        op("POST", "/api/schedules/{id}/disable", "Disable a schedule"),
        of::<Schedule>,
    ),
    answers(
        op(
            "POST",
            "/api/schedules/{id}/approve",
            "Approve a gated schedule",
        ),
        of::<ScheduleApproval>,
    ),
    answers(
        op("POST", "/api/schedules/{id}/deny", "Deny a gated schedule"),
        of::<ScheduleApproval>,
    ),
    answers(
        op(
            "GET",
            "/api/schedule-approvals",
            "Schedules waiting for approval",
        ),
        of::<Vec<ScheduleApproval>>,
    ),
    queries(
        answers(
            op("GET", "/api/executions", "Executions, newest first"),
            of::<Vec<ExecutionRow>>,
        ),
        of::<ExecutionFilter>,
    ),
    queries(
        answers(
            op(
                "GET",
                "/api/executions/{id}",
                "One execution; with after and wait, held until it changes (long-poll)",
            ),
            of::<ExecutionAnswer>,
        ),
        of::<ExecutionWait>,
    ),
    answers(
        op(
            "GET",
            "/api/executions/{id}/results",
            "An execution's results, output included",
        ),
        of::<Vec<ResultRow>>,
    ),
    described(
        op(
            "POST",
            "/api/executions/{id}/kill",
            "Kill an execution everywhere",
        ),
        "{execution, status, killed, message?}",
    ),
    answers(
        op(
            "GET",
            "/api/executions/{id}/rollout",
            "A rollout's waves and budget",
        ),
        of::<RolloutStatus>,
    ),
    answers(
        op(
            "POST",
            "/api/executions/{id}/rollout/pause",
            "Pause a rollout",
        ),
        of::<RolloutStatus>,
    ),
    answers(
        op(
            "POST",
            "/api/executions/{id}/rollout/resume",
            "Resume a paused or halted rollout",
        ),
        of::<RolloutStatus>,
    ),
    answers(
        op(
            "POST",
            "/api/executions/{id}/rollout/abort",
            "Abort a rollout",
        ),
        of::<RolloutStatus>,
    ),
    answers(
        op(
            "POST",
            "/api/executions/{id}/approve",
            "Approve an execution (one vote)",
        ),
        of::<ExecutionRow>,
    ),
    reads(
        answers(
            op("POST", "/api/executions/{id}/deny", "Deny an execution"),
            of::<ExecutionRow>,
        ),
        of::<ApprovalDecision>,
    ),
    answers(
        op("GET", "/api/approvals", "Executions waiting for approval"),
        of::<Vec<ApprovalRequest>>,
    ),
    answers(
        op("GET", "/api/freeze", "The fleet freeze, if any"),
        of::<Option<Freeze>>,
    ),
    reads(
        answers(
            op("POST", "/api/freeze", "Freeze scheduled fires"),
            of::<Option<Freeze>>,
        ),
        of::<FreezeRequest>,
    ),
    answers(
        op("DELETE", "/api/freeze", "Lift the freeze"),
        of::<Option<Freeze>>,
    ),
    answers(
        op("GET", "/api/tokens", "API tokens (never their secrets)"),
        of::<Vec<TokenRow>>,
    ),
    Operation {
        status: 201,
        body: Some(Payload::Json(of::<NewToken>)),
        answer: Payload::Json(of::<TokenCreated>),
        ..op(
            "POST",
            "/api/tokens",
            "Create an API token (the secret is shown once)",
        )
    },
    described(
        op("DELETE", "/api/tokens/{name}", "Revoke an API token"),
        "{token, revoked}",
    ),
    queries(
        answers(
            op(
                "GET",
                "/api/inventory/{job}",
                "A job's inventory: facts, exploded rows, skipped answers",
            ),
            of::<InventoryAnswer>,
        ),
        of::<InventoryQuery>,
    ),
    queries(
        answers(
            op(
                "GET",
                "/api/inventory/{job}/history",
                "A job's inventory changes",
            ),
            of::<Vec<InventoryChange>>,
        ),
        of::<HistoryQuery>,
    ),
    queries(
        answers(
            op("GET", "/api/checks", "Every check's fleet summary"),
            of::<Vec<CheckSummary>>,
        ),
        of::<ChecksQuery>,
    ),
    queries(
        answers(
            op("GET", "/api/checks/{name}", "One check's state per pc"),
            of::<Vec<CheckState>>,
        ),
        of::<CheckStatesQuery>,
    ),
    queries(
        answers(
            op("GET", "/api/audit", "The audit trail, oldest first"),
            of::<Vec<kanade_core::wire::AuditEvent>>,
        ),
        of::<AuditQuery>,
    ),
    described(
        op(
            "GET",
            "/api/audit/verify",
            "Verify the audit trail's hash chain",
        ),
        "{ok: true, entries, last_hash} or {ok: false, seq, reason}",
    ),
];

/// The OpenAPI 3.1 document of the API.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = SchemaGenerator::new(settings);
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let described = describe(operation, &mut generator);
        let item = paths.entry(operation.path).or_insert_with(|| json!({}));
        item[operation.method.to_ascii_lowercase()] = described;
    }
    // Every error answer refers to it.
    let error = of::<ErrorBody>(&mut generator);
    debug_assert_eq!(error.to_value()["$ref"], ERROR_REF);
    let schemas: Map<String, Value> = generator.take_definitions(true);
    let components = json!({
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (`kanade-backend token create`, `kanade login`) or, where an issuer is configured, an OIDC ID token.",
            }
        },
        "schemas": schemas,
    });
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "kanade backend API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Jobs, executions, schedules, approvals, inventory, checks, agent releases and the audit trail of a kanade fleet. Every /api route and /metrics needs a bearer credential and the role its x-kanade-role names (viewer < operator < admin); errors are {error, details}.",
        },
        "paths": paths,
        "components": components,
    })
}

fn payload(payload: Payload, generator: &mut SchemaGenerator) -> Value {
    match payload {
        Payload::Json(schema) => json!({"application/json": {"schema": schema(generator)}}),
        Payload::Described(words) => {
            json!({"application/json": {"schema": {"type": "object", "description": words}}})
        }
        Payload::Bytes => {
            json!({"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}})
        }
        Payload::Text(media) => json!({media: {"schema": {"type": "string"}}}),
    }
}

/// One operation object.
fn describe(operation: &Operation, generator: &mut SchemaGenerator) -> Value {
    let rule: Option<&RouteRule> = operation
        .method
        .parse()
        .ok()
        .and_then(|m| rule_for(&m, operation.path));
    let mut parameters: Vec<Value> = path_parameters(operation.path)
        .into_iter()
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if let Some(query) = operation.query {
        parameters.extend(query_parameters(query));
    }
    let mut responses = Map::new();
    let mut success = json!({"description": operation.summary});
    success["content"] = payload(operation.answer, generator);
    responses.insert(operation.status.to_string(), success);
    let error = json!({"description": "An error", "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}});
    if rule.is_some() {
        responses.insert("401".into(), json!({"description": "No or an unknown credential", "content": error["content"].clone()}));
        responses.insert("403".into(), json!({"description": "The role or a scope does not allow it", "content": error["content"].clone()}));
    }
    responses.insert("default".into(), error);
    let mut object = json!({
        "summary": operation.summary,
        "operationId": operation_id(operation),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = operation.body {
        object["requestBody"] = json!({"required": true, "content": payload(body, generator)});
    }
    match rule {
        Some(rule) => {
            object["security"] = json!([{"bearer": []}]);
            object["x-kanade-role"] = json!(rule.role);
            object["x-kanade-action"] = json!(rule.action);
            object["tags"] = json!([rule.action.split('.').next().unwrap_or("api")]);
        }
        None => {
            object["security"] = json!([]);
            object["tags"] = json!(["open"]);
        }
    }
    object
}

/// `{id}`-style parameters of a route, in order.
pub fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// A unique id: the audit action for guarded routes, else from the path.
fn operation_id(operation: &Operation) -> String {
    match operation
        .method
        .parse()
        .ok()
        .and_then(|m| rule_for(&m, operation.path))
    {
        Some(rule) => rule.action.replace('.', "_"),
        None => {
            let words: String = operation
                .path
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!(
                "{}{}",
                operation.method.to_ascii_lowercase(),
                words.trim_end_matches('_')
            )
        }
    }
}

/// The query type's fields as query parameters (inlined: a query string
/// has no references).
fn query_parameters(query: SchemaFn) -> Vec<Value> {
    let mut inline = SchemaSettings::draft2020_12();
    inline.inline_subschemas = true;
    let schema = query(&mut SchemaGenerator::new(inline));
    let value = schema.to_value();
    let required: Vec<&str> = value["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    value["properties"]
        .as_object()
        .map(|properties| {
            properties
                .iter()
                .map(|(name, schema)| {
                    let mut parameter = json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": schema,
                    });
                    if let Some(words) = schema.get("description") {
                        parameter["description"] = words.clone();
                    }
                    parameter
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::routes::ROUTES;

    #[test]
    fn every_guarded_route_is_described_once() {
        for rule in ROUTES {
            let count = OPERATIONS
                .iter()
                .filter(|o| o.method == rule.method && o.path == rule.path)
                .count();
            assert_eq!(count, 1, "{} {}", rule.method, rule.path);
        }
        let ids: std::collections::BTreeSet<String> = OPERATIONS.iter().map(operation_id).collect();
        assert_eq!(ids.len(), OPERATIONS.len(), "operation ids repeat");
    }

    #[test]
    fn every_route_the_router_registers_is_described() {
        // The router's `.route("…", method(…))` calls, read from its source.
        let source = include_str!("mod.rs");
        let mut registered = Vec::new();
        for (n, _) in source.match_indices(".route(") {
            let rest = source[n + ".route(".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let path = &rest[..rest.find('"').unwrap_or(0)];
            let handlers = &rest[..rest.find(".route").unwrap_or(rest.len())];
            for method in ["get", "post", "delete", "put", "patch"] {
                let called = handlers
                    .match_indices(&format!("{method}("))
                    .any(|(at, _)| {
                        !handlers[..at]
                            .chars()
                            .next_back()
                            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    });
                if called {
                    registered.push((method.to_ascii_uppercase(), path.to_owned()));
                }
            }
        }
        assert!(registered.len() > 40, "read {} routes", registered.len());
        for (method, path) in &registered {
            assert!(
                OPERATIONS
                    .iter()
                    .any(|o| o.method == method && o.path == path),
                "{method} {path} is routed but not described"
            );
        }
        for path in ["/", "/console/app.js", "/console/app.css"] {
            assert!(OPERATIONS.iter().any(|o| o.path == path));
        }
    }
}
