//! The one JSON error body of the gateway, for upstream gRPC errors and the gateway's own (routing, parsing,
//! limits) alike:
//!
//! ```json
//! {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "...",
//!            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [...]}]}}
//! ```

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Value, json};
use tonic::Code;

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The gRPC code name, e.g. `INVALID_ARGUMENT`.
    pub code: Code,
    /// What went wrong, safe to show.
    pub message: String,
    /// `google.rpc` details as proto3 JSON.
    pub details: Vec<Value>,
    /// Extra headers (`Allow`, `WWW-Authenticate`, ...).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// The HTTP status for a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `INVALID_ARGUMENT` for `Code::InvalidArgument`: the upper-snake name gRPC uses.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl ApiError {
    /// An error with a status derived from `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { status: http_status(code), code, message: message.into(), details: Vec::new(), headers: Vec::new() }
    }

    /// 400 naming the offending field (a `google.rpc.BadRequest` detail).
    pub fn bad_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let (field, description) = (field.into(), description.into());
        let mut e = Self::new(Code::InvalidArgument, format!("{field}: {description}"));
        e.details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}],
        }));
        e
    }

    /// A status of the gateway's own (404, 405, 413, 415) with the closest gRPC code.
    pub fn http(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self { status, ..Self::new(code, message) }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// The HTTP form of a gRPC status from a service or from the edge's own checks.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = status.code();
        let message = match code {
            // Whatever a service says here, clients get no internals.
            Code::Internal | Code::Unknown | Code::DataLoss => "internal error".to_owned(),
            Code::Unavailable if status.message().is_empty() => "service unavailable".to_owned(),
            _ => status.message().to_owned(),
        };
        let mut error = Self::new(code, message);
        error.details = details_json(status);
        if code == Code::Unauthenticated {
            error = error.with_header(header::WWW_AUTHENTICATE, "Bearer realm=\"mercato\"");
        }
        error
    }
}

/// The `google.rpc.Status` details of a status as proto3 JSON, resolved through the contracts' pool.
fn details_json(status: &tonic::Status) -> Vec<Value> {
    if status.details().is_empty() {
        return Vec::new();
    }
    let Ok(pool) = platform::descriptors::pool() else { return Vec::new() };
    let Some(desc) = pool.get_message_by_name("google.rpc.Status") else { return Vec::new() };
    let Ok(message) = DynamicMessage::decode(desc, status.details()) else { return Vec::new() };
    let options = SerializeOptions::new();
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    if message.serialize_with_options(&mut serializer, &options).is_err() {
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&out)
        .ok()
        .and_then(|v| v.get("details").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

impl ApiError {
    /// The JSON body: `{"error": {"code", "status", "message", "details"}}`.
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "code": self.status.as_u16(),
                "status": code_name(self.code),
                "message": self.message,
                "details": self.details,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http() {
        for (code, status) in [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::DataLoss, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn field_violations_survive_as_json() {
        let status = platform::error::invalid_argument(vec![platform::error::FieldViolation::new("email", "bad")]);
        let error = ApiError::from_status(&status);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.details[0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
        assert_eq!(error.details[0]["fieldViolations"][0]["field"], "email");
    }

    #[test]
    fn internal_text_never_leaks() {
        let error = ApiError::from_status(&tonic::Status::internal("relation \"users\" does not exist"));
        assert_eq!(error.message, "internal error");
    }
}
