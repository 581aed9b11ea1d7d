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
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
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
            "@type": BAD_REQUEST_TYPE,
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

    /// A 401 caused by a bearer token that was sent and refused (forged, expired, of an ended session): the
    /// challenge says so (RFC 6750 section 3.1, `error="invalid_token"`), so a client knows to refresh the token or
    /// sign in again rather than that it forgot one. Other errors are left as they are.
    pub fn for_refused_token(mut self) -> Self {
        if self.code == Code::Unauthenticated {
            self.headers.retain(|(name, _)| name != header::WWW_AUTHENTICATE);
            self = self.with_header(header::WWW_AUTHENTICATE, "Bearer realm=\"mercato\", error=\"invalid_token\"");
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

impl ApiError {
    /// A service names a violated field by its proto path (`shipping_address.postal_code`, `items[1].product_id`),
    /// but a client wrote the JSON names (`shippingAddress.postalCode`), the names the gateway's own violations use
    /// too: rewrites every violation's field, and the message listing them, in the client's spelling. A field bound
    /// from the URL keeps the template's name (`{product_id}`), the one the client sees in the route.
    pub fn in_client_names(mut self, input: &MessageDescriptor, path_fields: &[&str]) -> Self {
        let mut renamed = Vec::new();
        for detail in &mut self.details {
            if detail["@type"] != BAD_REQUEST_TYPE {
                continue;
            }
            let Some(violations) = detail.get_mut("fieldViolations").and_then(Value::as_array_mut) else { continue };
            for violation in violations {
                let Some(field) = violation["field"].as_str() else { continue };
                let client =
                    if path_fields.contains(&field) { field.to_owned() } else { json_field_path(input, field) };
                let description = violation["description"].as_str().unwrap_or_default().to_owned();
                renamed.push((field.to_owned(), client.clone(), description));
                violation["field"] = Value::String(client);
            }
        }
        // The message lists the violations as `field: description; ...` (platform::error::invalid_argument);
        // any other message is the service's own words and stays as it is.
        let listed = |pick: fn(&(String, String, String)) -> &str| {
            renamed.iter().map(|v| format!("{}: {}", pick(v), v.2)).collect::<Vec<_>>().join("; ")
        };
        if !renamed.is_empty() && self.message == listed(|v| &v.0) {
            self.message = listed(|v| &v.1);
        }
        self
    }
}

const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

/// The JSON spelling of a proto field path walked through `message`: each known field by its `json_name`, with
/// any `[index]` or `[key]` kept; past an unknown name, the proto3 JSON rule (lowerCamelCase) for the rest.
fn json_field_path(message: &MessageDescriptor, path: &str) -> String {
    let mut current = Some(message.clone());
    let segments = path.split('.').map(|segment| {
        let (name, index) = segment.find('[').map_or((segment, ""), |at| segment.split_at(at));
        let field = current.as_ref().and_then(|m| m.get_field_by_name(name).or_else(|| m.get_field_by_json_name(name)));
        current = field.as_ref().and_then(|f| match f.kind() {
            Kind::Message(entry) if f.is_map() => match entry.map_entry_value_field().kind() {
                Kind::Message(value) => Some(value),
                _ => None,
            },
            Kind::Message(inner) => Some(inner),
            _ => None,
        });
        let json = field.map_or_else(|| lower_camel(name), |f| f.json_name().to_owned());
        format!("{json}{index}")
    });
    segments.collect::<Vec<_>>().join(".")
}

/// `postal_code` → `postalCode`, as proto3 JSON names fields; anything but a snake_case name is left alone.
fn lower_camel(name: &str) -> String {
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
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

    fn order_request() -> MessageDescriptor {
        let pool = platform::descriptors::pool().expect("pool");
        pool.get_message_by_name("mercato.orders.v1.CreateOrderRequest").expect("CreateOrderRequest")
    }

    fn violated(fields: &[&str]) -> ApiError {
        let violations = fields.iter().map(|f| platform::error::FieldViolation::new(*f, "is wrong")).collect();
        ApiError::from_status(&platform::error::invalid_argument(violations))
    }

    #[test]
    fn service_violations_name_fields_as_the_client_wrote_them() {
        let error =
            violated(&["shipping_address.postal_code", "items[1].product_id", "payment_method", "not_a_field.x_y"])
                .in_client_names(&order_request(), &[]);
        let fields: Vec<&str> = error.details[0]["fieldViolations"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|v| v["field"].as_str())
            .collect();
        assert_eq!(fields, ["shippingAddress.postalCode", "items[1].productId", "paymentMethod", "notAField.xY"]);
        assert_eq!(
            error.message,
            "shippingAddress.postalCode: is wrong; items[1].productId: is wrong; paymentMethod: is wrong; notAField.xY: is wrong"
        );
        assert_eq!(error.details[0]["fieldViolations"][0]["description"], "is wrong");
    }

    #[test]
    fn path_variables_and_other_messages_keep_their_spelling() {
        let error = violated(&["payment_method"]).in_client_names(&order_request(), &["payment_method"]);
        assert_eq!(error.details[0]["fieldViolations"][0]["field"], "payment_method");
        let mut own_words = violated(&["idempotency_key"]);
        own_words.message = "idempotency_key was used for another order".to_owned();
        let error = own_words.in_client_names(&order_request(), &[]);
        assert_eq!(error.details[0]["fieldViolations"][0]["field"], "idempotencyKey");
        assert_eq!(error.message, "idempotency_key was used for another order");
    }

    #[test]
    fn internal_text_never_leaks() {
        let error = ApiError::from_status(&tonic::Status::internal("relation \"users\" does not exist"));
        assert_eq!(error.message, "internal error");
    }
}
