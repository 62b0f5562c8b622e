//! The table of the API's operations: each route with the types its
//! handler reads and writes (see the parent module).

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use crate::http::agent_releases::{PublishQuery, RolloutAnswer, RolloutRequest};
use crate::http::bodies::{
    ExecRequest, ExecutionAnswer, ExecutionWait, FreezeRequest, JobUpload, PinRequest,
    PreviewQuery, ResultsQuery, ScheduleUpload,
};
use crate::http::health::Readiness;
use crate::http::inventory::{
    CheckStatesQuery, ChecksQuery, HistoryQuery, InventoryAnswer, InventoryQuery,
};
use crate::http::security::{ApprovalDecision, AuditQuery, TokenCreated};

use crate::auth::Principal;
use crate::backend::{JobView, PcView, ReleaseListing, RolloutStatus, VersionSpread};
use crate::db::{
    AgentRolloutRow, AgentRow, ApprovalRequest, CheckState, CheckSummary, ExecutionFilter,
    ExecutionRow, Freeze, InventoryChange, NewToken, Pin, ResultRow, ScheduleApproval, TokenRow,
};
use crate::manifest::{Job, Schedule};

/// Adds a type's schema to the generator and returns a reference to it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The [`SchemaFn`] of `T`.
pub(super) fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
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
    /// Other answers it gives besides errors (status, body).
    pub also: &'static [(u16, Payload)],
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
        also: &[],
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

const JOB_STATE: &str = "{job, status} or {job, pinned, current}: the job and its new state";

/// Every operation the router serves.
pub const OPERATIONS: &[Operation] = &[
    answers(
        op("GET", "/healthz", "The process answers (open)"),
        of::<Value>,
    ),
    Operation {
        also: &[(503, Payload::Json(of::<Readiness>))],
        ..answers(
            op(
                "GET",
                "/readyz",
                "Ready: database, broker, projector lag, signing key (503 when not; open)",
            ),
            of::<Readiness>,
        )
    },
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
        answer: Payload::Text("text/javascript"),
        ..op(
            "GET",
            "/console/fleet.js",
            "The console's fleet, jobs and run pages (open)",
        )
    },
    Operation {
        answer: Payload::Text("text/javascript"),
        ..op(
            "GET",
            "/console/operations.js",
            "The console's executions, schedules, approvals and audit pages (open)",
        )
    },
    described(
        op(
            "GET",
            "/console/sign-in.json",
            "How the console signs in: {oidc: null} or the issuer's endpoints (open)",
        ),
        "{oidc: null | {authorization_endpoint, token_endpoint, client_id, scope, label}}",
    ),
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
        also: &[(202, Payload::Json(of::<ExecutionRow>))],
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
    queries(
        answers(
            op(
                "GET",
                "/api/executions/{id}/results",
                "An execution's results (one pc's with pc=; without output with output=false)",
            ),
            of::<Vec<ResultRow>>,
        ),
        of::<ResultsQuery>,
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
