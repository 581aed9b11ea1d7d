//! The OpenAPI 3.1 document of the HTTP API, generated once at start from the same descriptors the route table
//! comes from, and served at `GET /openapi.json`.
//!
//! One operation per route: parameters from the path template and (for routes without a `"*"` body) the
//! remaining request fields as query parameters; the request body and the success response as the gateway
//! transcodes them; every error as the one JSON error body of [`crate::error`]. Schemas follow the proto3 JSON
//! mapping exactly as the gateway renders it: lowerCamelCase names, 64-bit integers as strings, enums by name,
//! well-known types in their JSON forms. Descriptions are the protos' comments.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, header};
use platform::telemetry::REQUEST_ID_HEADER;
use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, ServiceDescriptor};
use serde_json::{Map, Value, json};

use crate::Gateway;
use crate::routes::{Route, RouteTable};

/// Where component schemas live.
const SCHEMAS: &str = "#/components/schemas/";
/// The name of the shared error body schema.
const ERROR_SCHEMA: &str = "Error";
/// How deep nested request messages are flattened into dotted query parameters.
const MAX_QUERY_DEPTH: usize = 3;

/// `GET /openapi.json`: the document built when the gateway started.
pub(crate) async fn handler(State(gateway): State<Gateway>) -> Response {
    let mut response = gateway.openapi.as_ref().clone().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The document as the bytes served at `/openapi.json`.
pub fn render(table: &RouteTable) -> Bytes {
    Bytes::from(document(table).to_string())
}

/// The OpenAPI 3.1 document of every route in `table`, plus the gateway's own endpoints.
pub fn document(table: &RouteTable) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut services: BTreeMap<String, ServiceDescriptor> = BTreeMap::new();
    let mut operation_ids: BTreeMap<String, usize> = BTreeMap::new();

    for route in table.routes() {
        let service = route.grpc.parent_service();
        services.insert(service.name().to_owned(), service.clone());
        let base_id = format!("{}_{}", service.name(), route.grpc.name());
        let seen = operation_ids.entry(base_id.clone()).or_insert(0);
        // additional_bindings of one method: the same id with a suffix, as operation ids must be unique.
        let operation_id = if *seen == 0 { base_id } else { format!("{base_id}_{seen}") };
        *seen += 1;
        let (path, operation) = operation(route, &operation_id, &mut schemas);
        paths.entry(path).or_default().insert(route.method.as_str().to_ascii_lowercase(), operation);
    }
    for (path, method, op) in own_endpoints() {
        paths.entry(path.to_owned()).or_default().insert(method.to_owned(), op);
    }

    let tags: Vec<Value> = services
        .values()
        .map(|s| {
            let mut tag = json!({"name": s.name()});
            if let Some(text) = comment(&s.parent_file(), s.path()) {
                tag["description"] = Value::String(text);
            }
            tag
        })
        .chain(std::iter::once(json!({"name": "Gateway", "description": "The gateway's own endpoints."})))
        .collect();

    let mut components = schemas.into_map();
    components.insert(ERROR_SCHEMA.to_owned(), error_schema());

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Mercato",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP/JSON API of Mercato, transcoded to gRPC from the protos' `google.api.http` \
                annotations. Bodies are the proto3 JSON mapping: lowerCamelCase names (the proto names are \
                accepted too), 64-bit integers as strings, enums by name (numbers accepted in requests), \
                timestamps in RFC 3339. Unknown fields and query parameters are refused. Every error has the \
                body `{\"error\": {\"code\", \"status\", \"message\", \"details\"}}`.",
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": error_responses(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from `POST /v1/auth/login` (EdDSA-signed JWT). Scopes come \
                        from the account's roles.",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "An API key from `POST /v1/auth/api-keys`; it grants the scopes it was created \
                        with (never more than its owner holds). Send it instead of an Authorization header.",
                },
            },
        },
    })
}

/// The OpenAPI path and operation of one route.
fn operation(route: &Route, operation_id: &str, schemas: &mut Schemas) -> (String, Value) {
    let method = &route.grpc;
    let input = method.input();
    let text = comment(&method.parent_file(), method.path()).unwrap_or_default();
    let (path, variables) = openapi_path(route.template.as_str());

    let mut parameters = Vec::new();
    for variable in &variables {
        parameters.push(path_parameter(&input, variable));
    }
    let path_fields: Vec<&str> = route.template.field_paths().collect();
    if route.body != "*" {
        let mut skip: BTreeSet<String> = path_fields.iter().map(|p| (*p).to_owned()).collect();
        if !route.body.is_empty() {
            skip.insert(route.body.clone());
        }
        query_parameters(&input, "", "", &skip, &mut vec![input.full_name().to_owned()], &mut parameters);
    }

    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id));
    op.insert("tags".into(), json!([method.parent_service().name()]));
    if let Some(summary) = summary(&text) {
        op.insert("summary".into(), json!(summary));
    }
    let access = access_text(route);
    let description = if text.is_empty() { access } else { format!("{text}\n\n{access}") };
    op.insert("description".into(), json!(description));
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = request_body(route, &path_fields, schemas) {
        op.insert("requestBody".into(), body);
    }
    op.insert("responses".into(), responses(route, schemas));
    op.insert("security".into(), security(route));
    op.insert("x-required-scopes".into(), json!(route.access.scopes));
    op.insert("x-grpc-method".into(), json!(method.full_name()));
    (path, Value::Object(op))
}

/// A path variable of a template.
#[derive(Debug, PartialEq, Eq)]
struct PathVariable {
    /// The parameter name: the field path, or a made-up name for an anonymous wildcard.
    name: String,
    /// The field path it binds, if any.
    field: Option<String>,
    /// The segments it matches when not just one (`shelves/*`, `**`).
    matches: Option<String>,
}

/// `/v1/{name=shelves/*}/books:list` → `/v1/{name}/books:list` and its variables.
fn openapi_path(template: &str) -> (String, Vec<PathVariable>) {
    let mut out = String::with_capacity(template.len());
    let mut variables = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let close = after.find('}').unwrap_or(after.len());
            let inner = &after[..close];
            let (field, sub) = match inner.split_once('=') {
                Some((f, s)) => (f, Some(s)),
                None => (inner, None),
            };
            out.push('{');
            out.push_str(field);
            out.push('}');
            variables.push(PathVariable {
                name: field.to_owned(),
                field: Some(field.to_owned()),
                matches: sub.filter(|s| *s != "*").map(str::to_owned),
            });
            rest = after.get(close + 1..).unwrap_or("");
        } else {
            let end =
                rest.char_indices().skip(1).find(|(_, c)| matches!(c, '/' | '{' | ':')).map_or(rest.len(), |(i, _)| i);
            let segment = &rest[..end];
            match segment {
                "/*" | "/**" => {
                    let name = format!("wildcard{}", variables.len() + 1);
                    out.push_str(&format!("/{{{name}}}"));
                    variables.push(PathVariable {
                        name,
                        field: None,
                        matches: (segment == "/**").then(|| "**".to_owned()),
                    });
                }
                _ => out.push_str(segment),
            }
            rest = &rest[end..];
        }
    }
    (out, variables)
}

fn path_parameter(input: &MessageDescriptor, variable: &PathVariable) -> Value {
    let field = variable.field.as_deref().and_then(|p| crate::transcode::resolve_field(input, p)?.pop());
    let mut schema = match &field {
        Some(f) => text_schema(f).unwrap_or_else(|| json!({"type": "string"})),
        None => json!({"type": "string"}),
    };
    if schema["type"] == "string" {
        schema["minLength"] = json!(1);
    }
    let mut description = field.as_ref().and_then(field_comment).unwrap_or_default();
    match variable.matches.as_deref() {
        Some("**") => push_sentence(&mut description, "Matches the rest of the path, `/` included."),
        Some(pattern) => push_sentence(&mut description, &format!("Matches `{pattern}`; its `/` are not escaped.")),
        None => {}
    }
    let mut parameter = json!({"name": variable.name, "in": "path", "required": true, "schema": schema});
    if !description.is_empty() {
        parameter["description"] = json!(description);
    }
    parameter
}

/// Query parameters for the fields of `message` not bound elsewhere; nested messages become dotted names.
fn query_parameters(
    message: &MessageDescriptor,
    proto_prefix: &str,
    json_prefix: &str,
    skip: &BTreeSet<String>,
    visiting: &mut Vec<String>,
    out: &mut Vec<Value>,
) {
    for field in message.fields() {
        let proto_path = format!("{proto_prefix}{}", field.name());
        if skip.contains(&proto_path) || field.is_map() {
            continue;
        }
        let json_path = format!("{json_prefix}{}", field.json_name());
        let description = field_comment(&field);
        let schema = match text_schema(&field) {
            Some(item) if field.is_list() => json!({"type": "array", "items": item}),
            Some(scalar) => scalar,
            None => match field.kind() {
                Kind::Message(inner)
                    if !field.is_list()
                        && well_known(&inner).is_none()
                        && visiting.len() < MAX_QUERY_DEPTH
                        && !visiting.iter().any(|n| n == inner.full_name()) =>
                {
                    visiting.push(inner.full_name().to_owned());
                    let (p, j) = (format!("{proto_path}."), format!("{json_path}."));
                    query_parameters(&inner, &p, &j, skip, visiting, out);
                    visiting.pop();
                    continue;
                }
                _ => continue,
            },
        };
        let mut parameter = json!({"name": json_path, "in": "query", "required": false, "schema": schema});
        if field.is_list() {
            parameter["style"] = json!("form");
            parameter["explode"] = json!(true);
        }
        if let Some(text) = description {
            parameter["description"] = json!(text);
        }
        out.push(parameter);
    }
}

/// The schema of a value written as text (a path segment, a query parameter), if the field can be.
fn text_schema(field: &FieldDescriptor) -> Option<Value> {
    Some(match field.kind() {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "integer", "format": "uint64", "minimum": 0, "maximum": u64::MAX})
        }
        Kind::Float | Kind::Double => json!({"type": "number"}),
        Kind::Enum(e) => enum_names(&e),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => well_known(&m)?,
            _ => {
                let wrapped = m.get_field_by_name("value").filter(|_| is_wrapper(&m))?;
                text_schema(&wrapped)?
            }
        },
        _ => scalar_schema(field.kind())?,
    })
}

fn request_body(route: &Route, path_fields: &[&str], schemas: &mut Schemas) -> Option<Value> {
    let input = route.grpc.input();
    let schema = match route.body.as_str() {
        "" => return None,
        "*" => {
            let top_level: Vec<FieldDescriptor> = input.fields().filter(|f| path_fields.contains(&f.name())).collect();
            if top_level.is_empty() {
                schemas.message_ref(&input)
            } else {
                // The request message without the fields the path sets.
                let mut schema = schemas.message_schema(&input, |f| !top_level.contains(f));
                push_description(&mut schema, "Fields set by the path are not repeated here.");
                schema
            }
        }
        field => schemas.field_schema(&input.get_field_by_name(field)?),
    };
    let mut content = json!({"application/json": {"schema": schema}});
    if route.accepts_form {
        content["application/x-www-form-urlencoded"] = json!({"schema": schema});
    }
    Some(json!({"required": true, "content": content}))
}

fn responses(route: &Route, schemas: &mut Schemas) -> Value {
    let output = route.grpc.output();
    let schema = match output.get_field_by_name(&route.response_body).filter(|_| !route.response_body.is_empty()) {
        Some(field) => schemas.field_schema(&field),
        None => schemas.message_ref(&output),
    };
    let description = comment(&output.parent_file(), output.path())
        .unwrap_or_else(|| route.success.canonical_reason().unwrap_or("Success").to_owned());
    // A server stream is one JSON object per line, each line a message (or, last, the error that ended it).
    let (description, content_type) = if route.grpc.is_server_streaming() {
        (
            format!(
                "{description} Streamed as newline-delimited JSON, one message per line; a stream that fails after \
                 it started ends with a line holding the error body."
            ),
            crate::NDJSON,
        )
    } else if route.raw_body {
        // google.api.HttpBody: the bytes themselves, with the Content-Type the service gives them.
        (description, "*/*")
    } else {
        (description, "application/json")
    };
    let schema = if route.raw_body { json!({"type": "string", "format": "binary"}) } else { schema };
    let mut responses = Map::new();
    responses.insert(
        route.success.as_str().to_owned(),
        json!({
            "description": description,
            "headers": request_id_header(),
            "content": {content_type: {"schema": schema}},
        }),
    );
    if route.raw_body {
        // Bytes with an ETag are revalidated: If-None-Match naming it is answered without them.
        responses.insert(
            "304".to_owned(),
            json!({
                "description": "Not Modified: the If-None-Match header names the ETag of these bytes; the copy the \
                                client has is current.",
                "headers": request_id_header(),
            }),
        );
    }
    let changes = route.method != Method::GET && route.method != Method::HEAD;
    for (code, name) in ERROR_RESPONSES {
        let applies = match *code {
            409 => changes,
            413 | 415 => !route.body.is_empty(),
            _ => true,
        };
        if applies {
            responses.insert(code.to_string(), json!({"$ref": format!("#/components/responses/{name}")}));
        }
    }
    responses.insert("default".into(), json!({"$ref": "#/components/responses/Error"}));
    Value::Object(responses)
}

fn security(route: &Route) -> Value {
    // OpenAPI scopes belong to OAuth2/OIDC schemes only; for these, `x-required-scopes` says which.
    if route.access.allow_anonymous {
        json!([{}, {"bearerAuth": route.access.scopes}, {"apiKey": []}])
    } else {
        json!([{"bearerAuth": route.access.scopes}, {"apiKey": []}])
    }
}

fn access_text(route: &Route) -> String {
    let scopes = route.access.scopes.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
    match (route.access.allow_anonymous, scopes.is_empty()) {
        (true, _) => "Access: anonymous callers allowed; a token, if sent, must be valid.".to_owned(),
        (false, true) => "Access: needs a bearer token.".to_owned(),
        (false, false) => format!("Access: needs a bearer token with the scopes {scopes}."),
    }
}

/// Error statuses the gateway answers, with their response component names.
const ERROR_RESPONSES: &[(u16, &str)] = &[
    (400, "BadRequest"),
    (401, "Unauthorized"),
    (403, "Forbidden"),
    (404, "NotFound"),
    (409, "Conflict"),
    (413, "PayloadTooLarge"),
    (415, "UnsupportedMediaType"),
    (429, "TooManyRequests"),
    (500, "InternalError"),
    (503, "Unavailable"),
];

fn error_responses() -> Value {
    let described: &[(&str, &str)] = &[
        (
            "BadRequest",
            "The request is malformed or breaks a rule (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE); `details` names the fields.",
        ),
        ("Unauthorized", "No valid access token (UNAUTHENTICATED)."),
        ("Forbidden", "The token lacks a scope, or the caller may not touch this resource (PERMISSION_DENIED)."),
        ("NotFound", "No such resource (NOT_FOUND)."),
        ("Conflict", "It already exists or changed meanwhile (ALREADY_EXISTS, ABORTED)."),
        ("PayloadTooLarge", "The body is larger than 1 MiB."),
        ("UnsupportedMediaType", "The body is not application/json."),
        ("TooManyRequests", "Rate limited (RESOURCE_EXHAUSTED)."),
        ("InternalError", "Something failed inside; the message says nothing more (INTERNAL)."),
        ("Unavailable", "A service is unreachable (UNAVAILABLE)."),
        ("Error", "Any other error, in the same body."),
    ];
    let mut out = Map::new();
    for (name, description) in described {
        out.insert(
            (*name).to_owned(),
            json!({
                "description": description,
                "headers": request_id_header(),
                "content": {"application/json": {"schema": {"$ref": format!("{SCHEMAS}{ERROR_SCHEMA}")}}},
            }),
        );
    }
    Value::Object(out)
}

/// Every answer carries the request id: the caller's `x-request-id` (1 to 128 characters) or a new UUIDv7.
fn request_id_header() -> Value {
    let mut headers = Map::new();
    headers.insert(
        REQUEST_ID_HEADER.to_owned(),
        json!({
            "description": "The request id: the one the request sent, or a new one. Every log line of the request \
                carries it.",
            "schema": {"type": "string"},
        }),
    );
    Value::Object(headers)
}

fn error_schema() -> Value {
    let codes: Vec<&str> = (0..=16).map(|c| crate::error::code_name(tonic::Code::from_i32(c))).collect();
    json!({
        "type": "object",
        "description": "The one error body of the gateway.",
        "required": ["error"],
        "additionalProperties": false,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "status", "message", "details"],
                "additionalProperties": false,
                "properties": {
                    "code": {"type": "integer", "description": "The HTTP status."},
                    "status": {"type": "string", "enum": codes, "description": "The gRPC code name."},
                    "message": {"type": "string", "description": "What went wrong, safe to show."},
                    "details": {
                        "type": "array",
                        "description": "The `google.rpc` details of the status (BadRequest, ErrorInfo, ...) in \
                            proto3 JSON.",
                        "items": {
                            "type": "object",
                            "properties": {"@type": {"type": "string"}},
                            "required": ["@type"],
                        },
                    },
                },
            },
        },
    })
}

/// `/healthz`, `/readyz`, this document and the page that browses it.
fn own_endpoints() -> Vec<(&'static str, &'static str, Value)> {
    let any_json = json!({"application/json": {"schema": {"type": "object"}}});
    vec![
        (
            "/healthz",
            "get",
            json!({
                "operationId": "Gateway_Healthz", "tags": ["Gateway"], "summary": "Liveness: the gateway runs.",
                "security": [],
                "responses": {"200": {"description": "Alive.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }),
        ),
        (
            "/readyz",
            "get",
            json!({
                "operationId": "Gateway_Readyz", "tags": ["Gateway"],
                "summary": "Readiness: every upstream service answers its health check.",
                "security": [],
                "responses": {
                    "200": {"description": "Ready.", "content": any_json},
                    "503": {"description": "Some services are not ready; `waitingFor` names them.", "content": any_json},
                },
            }),
        ),
        (
            "/openapi.json",
            "get",
            json!({
                "operationId": "Gateway_OpenApi", "tags": ["Gateway"], "summary": "This document.",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI 3.1 document.", "content": any_json}},
            }),
        ),
        (
            "/docs",
            "get",
            json!({
                "operationId": "Gateway_Docs", "tags": ["Gateway"],
                "summary": "A page for browsing this document (Swagger UI, served by the gateway itself).",
                "security": [],
                "responses": {"200": {
                    "description": "The HTML page; its scripts and stylesheet are under `/docs/`.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }},
            }),
        ),
    ]
}

/// The component schemas of every message and enum reachable from the routes.
#[derive(Default)]
struct Schemas {
    schemas: BTreeMap<String, Value>,
}

impl Schemas {
    fn into_map(self) -> Map<String, Value> {
        self.schemas.into_iter().collect()
    }

    /// A `$ref` to the schema of `message` (or the inline JSON form of a well-known type).
    fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(message) {
            return schema;
        }
        let name = message.full_name().to_owned();
        if !self.schemas.contains_key(&name) {
            // A placeholder first, so that recursive messages end.
            self.schemas.insert(name.clone(), Value::Null);
            let schema = self.message_schema(message, |_| true);
            self.schemas.insert(name.clone(), schema);
        }
        json!({"$ref": format!("{SCHEMAS}{name}")})
    }

    fn enum_ref(&mut self, desc: &EnumDescriptor) -> Value {
        let name = desc.full_name().to_owned();
        if !self.schemas.contains_key(&name) {
            let mut schema = enum_names(desc);
            let mut text = comment(&desc.parent_file(), desc.path()).unwrap_or_default();
            let values: Vec<String> = desc
                .values()
                .map(|v| match comment(&desc.parent_file(), v.path()) {
                    Some(c) => format!("- `{}`: {}", v.name(), c.replace('\n', " ")),
                    None => format!("- `{}`", v.name()),
                })
                .collect();
            push_sentence(&mut text, &format!("Sent by name; requests may use the number.\n\n{}", values.join("\n")));
            schema["description"] = json!(text);
            self.schemas.insert(name.clone(), schema);
        }
        json!({"$ref": format!("{SCHEMAS}{name}")})
    }

    /// The object schema of `message` with the fields `keep` accepts.
    fn message_schema(&mut self, message: &MessageDescriptor, keep: impl Fn(&FieldDescriptor) -> bool) -> Value {
        let mut properties = Map::new();
        for field in message.fields().filter(|f| keep(f)) {
            let schema = self.field_schema(&field);
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({"type": "object", "properties": properties, "additionalProperties": false});
        if let Some(text) = comment(&message.parent_file(), message.path()) {
            schema["description"] = json!(text);
        }
        schema
    }

    /// The schema of a field's JSON value, with the field's comment as its description.
    fn field_schema(&mut self, field: &FieldDescriptor) -> Value {
        let mut schema = if field.is_map() {
            match field.kind() {
                Kind::Message(entry) => {
                    let key = entry.map_entry_key_field();
                    let value = self.value_schema(&entry.map_entry_value_field());
                    let mut schema = json!({"type": "object", "additionalProperties": value});
                    match key.kind() {
                        Kind::String => {}
                        Kind::Bool => schema["propertyNames"] = json!({"enum": ["true", "false"]}),
                        _ => schema["propertyNames"] = json!({"pattern": "^-?[0-9]+$"}),
                    }
                    schema
                }
                _ => json!({"type": "object"}),
            }
        } else if field.is_list() {
            json!({"type": "array", "items": self.value_schema(field)})
        } else {
            self.value_schema(field)
        };
        let mut text = field_comment(field).unwrap_or_default();
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            let members: Vec<String> = oneof.fields().map(|f| format!("`{}`", f.json_name())).collect();
            push_sentence(&mut text, &format!("At most one of {} is set.", members.join(", ")));
        }
        if !text.is_empty() {
            // Beside a `$ref` too: OpenAPI 3.1 allows it.
            schema["description"] = json!(text);
        }
        schema
    }

    /// The schema of one value of a field (an element, for repeated fields).
    fn value_schema(&mut self, field: &FieldDescriptor) -> Value {
        match field.kind() {
            Kind::Message(m) => self.message_ref(&m),
            Kind::Enum(e) => self.enum_ref(&e),
            kind => scalar_schema(kind).unwrap_or_else(|| json!({})),
        }
    }
}

/// The JSON schema of a scalar kind as the proto3 JSON mapping writes it.
fn scalar_schema(kind: Kind) -> Option<Value> {
    Some(match kind {
        Kind::Double | Kind::Float => json!({
            "oneOf": [
                {"type": "number", "format": if kind == Kind::Float { "float" } else { "double" }},
                {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
            ]
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "uint32", "minimum": 0, "maximum": u32::MAX})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"})
        }
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte", "contentEncoding": "base64"}),
        Kind::Message(_) | Kind::Enum(_) => return None,
    })
}

fn enum_names(desc: &EnumDescriptor) -> Value {
    let names: Vec<String> = desc.values().map(|v| v.name().to_owned()).collect();
    json!({"type": "string", "enum": names})
}

fn is_wrapper(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// The special JSON form of a well-known type, inline.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"}),
        "google.protobuf.FieldMask" => {
            json!({"type": "string", "description": "Comma-separated field paths, in lowerCamelCase."})
        }
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": {"@type": {"type": "string"}},
            "required": ["@type"],
            "additionalProperties": true,
        }),
        _ if is_wrapper(message) => scalar_schema(message.get_field_by_name("value")?.kind())?,
        _ => return None,
    })
}

fn field_comment(field: &FieldDescriptor) -> Option<String> {
    comment(&field.parent_file(), field.path())
}

/// The leading comment of the element at `path` of `file` (source code info), tidied.
fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let raw = location.leading_comments.as_deref()?;
    // `buf:lint:ignore` lines are for the linter, not for readers.
    let text = raw
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .filter(|l| !l.starts_with("buf:lint:ignore"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The first sentence of a comment (or its first paragraph, if that has no full stop).
fn summary(text: &str) -> Option<String> {
    let paragraph = text.split("\n\n").next()?.split_whitespace().collect::<Vec<_>>().join(" ");
    let sentence = match paragraph.find(". ") {
        Some(i) => &paragraph[..=i],
        None => &paragraph,
    };
    (!sentence.is_empty()).then(|| sentence.to_owned())
}

fn push_sentence(text: &mut String, sentence: &str) {
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(sentence);
}

fn push_description(schema: &mut Value, sentence: &str) {
    let mut text = schema["description"].as_str().unwrap_or_default().to_owned();
    push_sentence(&mut text, sentence);
    schema["description"] = json!(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::MethodDescriptor;

    fn method_of(table: &RouteTable, name: &str) -> Option<MethodDescriptor> {
        table.routes().iter().find(|r| r.grpc.name() == name).map(|r| r.grpc.clone())
    }

    fn doc() -> (RouteTable, Value) {
        let table = RouteTable::from_contracts().expect("routes");
        let doc = document(&table);
        (table, doc)
    }

    fn param<'a>(op: &'a Value, name: &str) -> &'a Value {
        op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no parameter {name} in {op}"))
    }

    #[test]
    fn every_route_is_an_operation() {
        let (table, doc) = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Mercato");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["servers"][0]["url"], "/");
        assert!(!table.routes().is_empty());
        for route in table.routes() {
            let (path, _) = openapi_path(route.template.as_str());
            let op = &doc["paths"][&path][route.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {path} missing", route.method);
            let service = route.grpc.parent_service();
            // An additional binding of a method gets the method's id with a number (`UserService_GetProfile_1`).
            let id = op["operationId"].as_str().expect("an operation id");
            let method_id = format!("{}_{}", service.name(), route.grpc.name());
            let suffix = id.strip_prefix(&method_id).unwrap_or_else(|| panic!("{id} is not {method_id}'s"));
            assert!(suffix.is_empty() || suffix[1..].parse::<u32>().is_ok(), "{id}");
            assert_eq!(op["tags"][0], service.name());
            assert_eq!(op["x-grpc-method"], route.grpc.full_name());
            assert!(op["responses"][route.success.as_str()].is_object(), "{path}");
        }
        let get = &doc["paths"]["/v1/products/{id}"]["get"];
        assert_eq!(get["operationId"], "CatalogService_GetProduct");
        assert_eq!(param(get, "id")["in"], "path");
        assert_eq!(
            get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/mercato.catalog.v1.Product"
        );
        assert!(doc["paths"]["/v1/products/{product_id}/inventory:adjust"]["post"].is_object());
        assert!(doc["paths"]["/openapi.json"]["get"].is_object());
        assert!(doc["paths"]["/docs"]["get"]["responses"]["200"]["content"]["text/html"].is_object());
    }

    #[test]
    fn create_product_answers_201_and_needs_catalog_write() {
        let (_, doc) = doc();
        let op = &doc["paths"]["/v1/products"]["post"];
        assert_eq!(op["operationId"], "CatalogService_CreateProduct");
        let created = &op["responses"]["201"];
        assert_eq!(
            created["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/mercato.catalog.v1.Product"
        );
        assert!(op["responses"]["200"].is_null());
        assert_eq!(op["security"], json!([{"bearerAuth": ["catalog:write"]}, {"apiKey": []}]));
        assert_eq!(op["x-required-scopes"], json!(["catalog:write"]));
        assert!(op["description"].as_str().is_some_and(|d| d.contains("`catalog:write`")));
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/mercato.catalog.v1.Product"
        );
        assert_eq!(op["responses"]["400"]["$ref"], "#/components/responses/BadRequest");
        let anonymous = &doc["paths"]["/v1/products"]["get"];
        assert_eq!(anonymous["security"], json!([{}, {"bearerAuth": []}, {"apiKey": []}]));
    }

    #[test]
    fn list_products_takes_query_parameters() {
        let (_, doc) = doc();
        let op = &doc["paths"]["/v1/products"]["get"];
        assert!(op["requestBody"].is_null());
        let page_size = param(op, "pageSize");
        assert_eq!(page_size["in"], "query");
        assert_eq!(page_size["schema"]["type"], "integer");
        assert_eq!(page_size["schema"]["format"], "int32");
        assert_eq!(param(op, "pageToken")["schema"]["type"], "string");
        assert_eq!(param(op, "category")["schema"]["type"], "string");
        assert_eq!(param(op, "query")["schema"]["type"], "string");
        assert_eq!(param(op, "includeInactive")["schema"]["type"], "boolean");
        assert!(param(op, "pageSize")["description"].as_str().is_some_and(|d| d.starts_with("At most")));
        // A PATCH with a field body: the rest of the request (the mask) is in the query.
        let patch = &doc["paths"]["/v1/products/{id}"]["patch"];
        assert_eq!(param(patch, "updateMask")["schema"]["type"], "string");
        assert_eq!(patch["parameters"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn schemas_follow_the_json_mapping() {
        let (_, doc) = doc();
        let schemas = &doc["components"]["schemas"];
        let amount = &schemas["mercato.common.v1.Money"]["properties"]["amountMinor"];
        assert_eq!(amount["type"], "string");
        assert_eq!(amount["format"], "int64");
        let product = &schemas["mercato.catalog.v1.Product"];
        assert_eq!(product["additionalProperties"], false);
        assert_eq!(product["properties"]["createTime"]["format"], "date-time");
        assert_eq!(product["properties"]["price"]["$ref"], "#/components/schemas/mercato.common.v1.Money");
        assert_eq!(schemas["mercato.auth.v1.User"]["properties"]["roles"]["items"]["type"], "string");
        let error = &schemas["Error"]["properties"]["error"]["properties"];
        assert_eq!(error["code"]["type"], "integer");
        assert_eq!(error["details"]["type"], "array");
        // The body of a "*" route without the path's fields.
        let adjust = &doc["paths"]["/v1/products/{product_id}/inventory:adjust"]["post"];
        let body = &adjust["requestBody"]["content"]["application/json"]["schema"];
        assert!(body["properties"]["delta"].is_object() && body["properties"]["productId"].is_null(), "{body}");
        // Messages that no route reaches are left out.
        assert!(schemas["mercato.catalog.v1.ReserveStockRequest"].is_null());
    }

    #[test]
    fn descriptions_come_from_proto_comments() {
        let (table, doc) = doc();
        let get = &doc["paths"]["/v1/products/{id}"]["get"];
        assert_eq!(get["summary"], "Returns one product.");
        let method = method_of(&table, "Refresh").expect("Refresh");
        let text = comment(&method.parent_file(), method.path()).expect("comment");
        assert!(text.contains("spent one again\nrevokes every token"), "{text}");
        let refresh = &doc["paths"]["/v1/auth/refresh"]["post"];
        assert_eq!(refresh["summary"], "Exchanges a refresh token for a new pair.");
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["mercato.catalog.v1.Product"]["description"], "Something the shop sells.");
        assert_eq!(
            schemas["mercato.catalog.v1.Product"]["properties"]["sku"]["description"],
            "Stock keeping unit, unique across the catalog."
        );
        let tag = doc["tags"].as_array().and_then(|t| t.iter().find(|t| t["name"] == "CatalogService")).cloned();
        assert_eq!(tag.map(|t| t["description"].clone()), Some(json!("Products, their prices and their stock.")));
    }

    #[test]
    fn templates_become_openapi_paths() {
        let (path, vars) = openapi_path("/v1/{name=shelves/*}/books/{book.id}:read");
        assert_eq!(path, "/v1/{name}/books/{book.id}:read");
        assert_eq!(
            vars[0],
            PathVariable { name: "name".into(), field: Some("name".into()), matches: Some("shelves/*".into()) }
        );
        assert_eq!(vars[1].name, "book.id");
        let (path, vars) = openapi_path("/v1/*/x/**");
        assert_eq!(path, "/v1/{wildcard1}/x/{wildcard2}");
        assert_eq!(vars[1].matches.as_deref(), Some("**"));
        assert_eq!(openapi_path("/.well-known/jwks.json").0, "/.well-known/jwks.json");
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let (_, doc) = doc();
        // OPENAPI_DUMP=<file> writes the document out, to inspect it with other tools.
        if let Ok(path) = std::env::var("OPENAPI_DUMP") {
            std::fs::write(path, doc.to_string()).expect("dump");
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some_and(|v| !v.is_null()), "{r} does not resolve");
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let (_, doc) = doc();
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().into_iter().flat_map(|p| p.values()) {
            for op in item.as_object().into_iter().flat_map(|o| o.values()) {
                let id = op["operationId"].as_str().expect("operationId").to_owned();
                assert!(ids.insert(id.clone()), "{id} twice");
            }
        }
    }
}
