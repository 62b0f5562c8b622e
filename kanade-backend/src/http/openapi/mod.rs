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

mod operations;

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use self::operations::of;
pub use self::operations::{Operation, Payload, SchemaFn, OPERATIONS};
use super::error::ErrorBody;
use super::routes::{rule_for, RouteRule};

const ERROR_REF: &str = "#/components/schemas/ErrorBody";

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
    for (status, answer) in operation.also {
        let mut other = json!({"description": operation.summary});
        other["content"] = payload(*answer, generator);
        responses.insert(status.to_string(), other);
    }
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
        let source = include_str!("../mod.rs");
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
        for path in [
            "/",
            "/console/app.js",
            "/console/fleet.js",
            "/console/operations.js",
            "/console/app.css",
            "/console/sign-in.json",
        ] {
            assert!(OPERATIONS.iter().any(|o| o.path == path));
        }
    }
}
