//! Rich gRPC errors: `tonic::Status` with `google.rpc` details (field violations, error info), which the
//! gateway turns into JSON for HTTP clients.

use api::google::rpc;
use prost::Message;
use tonic::{Code, Status};

/// One invalid field of a request: its name (as in the proto, dotted for nested fields) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Field path, e.g. `email` or `product.price.currency`.
    pub field: String,
    /// Why the value is rejected, in words a client developer understands.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field` for `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

fn any<M: Message>(type_name: &str, message: &M) -> prost_types::Any {
    prost_types::Any { type_url: format!("type.googleapis.com/{type_name}"), value: message.encode_to_vec() }
}

/// A status with `code`, `message` and the given `google.rpc` details.
fn with_details(code: Code, message: String, details: Vec<prost_types::Any>) -> Status {
    let status = rpc::Status { code: code as i32, message: message.clone(), details };
    Status::with_details(code, message, status.encode_to_vec().into())
}

/// The violations in one line, `field: why; other: why`: the message of an INVALID_ARGUMENT, and what a
/// service's error says of a bad request in its logs.
pub fn describe(violations: &[FieldViolation]) -> String {
    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

/// INVALID_ARGUMENT naming every violated field (a `google.rpc.BadRequest` detail).
pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let message = describe(&violations);
    let bad_request = rpc::BadRequest {
        field_violations: violations
            .into_iter()
            .map(|v| rpc::bad_request::FieldViolation {
                field: v.field,
                description: v.description,
                reason: String::new(),
            })
            .collect(),
    };
    with_details(Code::InvalidArgument, message, vec![any("google.rpc.BadRequest", &bad_request)])
}

/// A status with a machine-readable `reason` (a `google.rpc.ErrorInfo` detail in domain `mercato`).
pub fn with_reason(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let info = rpc::ErrorInfo { reason: reason.to_owned(), domain: "mercato".to_owned(), metadata: Default::default() };
    with_details(code, message.into(), vec![any("google.rpc.ErrorInfo", &info)])
}

/// The status of a failure that is the service's, not the caller's (a query failed, a task panicked, another
/// service answered nonsense): logged with its detail, answered INTERNAL without it, so no SQL, address or key
/// material reaches a client. The one exception is a transaction the database aborted for a conflict with a
/// concurrent one ([`crate::db::is_conflict`]) that outlived its retries, or ran without them: ABORTED with
/// reason `CONFLICT`, since the same request sent again normally succeeds (HTTP 409 at the gateway).
pub fn internal(error: &(dyn std::error::Error + 'static)) -> Status {
    if crate::db::is_conflict(error) {
        tracing::warn!(%error, "aborted by a conflict with a concurrent change");
        return with_reason(Code::Aborted, "CONFLICT", "a concurrent change got in the way; send the request again");
    }
    tracing::error!(%error, "internal error");
    Status::internal("internal error")
}

/// Collects field violations while validating a request, then fails with all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records a violation of `field` when `bad` holds.
    pub fn check(&mut self, bad: bool, field: &str, description: &str) {
        if bad {
            self.add(field, description);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ok when nothing was recorded, else INVALID_ARGUMENT with every violation.
    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() { Ok(()) } else { Err(invalid_argument(self.0)) }
    }

    /// The recorded violations.
    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }

    /// Ok when nothing was recorded, else every violation: the end of a validation that returns them (`?`).
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

/// Checks an id given in a request (`field` names it in the error): present, at most 64 bytes, no control
/// characters. Whether it names anything is the store's to say.
pub fn check_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    if id.is_empty() {
        Err(FieldViolation::new(field, "is required"))
    } else if id.len() > 64 || id.chars().any(char::is_control) {
        Err(FieldViolation::new(field, "is not an id"))
    } else {
        Ok(())
    }
}

/// [`check_id`] for several `(field, id)` pairs at once: every bad one is named.
pub fn check_ids(ids: &[(&str, &str)]) -> Result<(), Vec<FieldViolation>> {
    let violations: Vec<_> = ids.iter().filter_map(|(field, id)| check_id(field, id).err()).collect();
    if violations.is_empty() { Ok(()) } else { Err(violations) }
}

/// Checks the paths of an update's field mask (AIP-134) against the fields it may change: at least one, and
/// every path one of `allowed`; each unknown path is named (the violations are of `update_mask`).
pub fn check_update_mask(paths: &[String], allowed: &[&str]) -> Result<(), Vec<FieldViolation>> {
    if paths.is_empty() {
        return Err(vec![FieldViolation::new("update_mask", "must name at least one field")]);
    }
    let unknown: Vec<FieldViolation> = paths
        .iter()
        .filter(|p| !allowed.contains(&p.as_str()))
        .map(|p| FieldViolation::new("update_mask", format!("unknown field `{p}`; allowed: {}", allowed.join(", "))))
        .collect();
    if unknown.is_empty() { Ok(()) } else { Err(unknown) }
}

/// Decodes the `google.rpc.Status` carried in a status's details, if any.
pub fn decode_details(status: &Status) -> Option<rpc::Status> {
    if status.details().is_empty() {
        return None;
    }
    rpc::Status::decode(status.details()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_mask_names_at_least_one_field_and_only_those_allowed() {
        let paths = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(check_update_mask(&paths(&["name", "price"]), &["name", "price", "active"]), Ok(()));
        let empty = check_update_mask(&[], &["name"]).expect_err("empty");
        assert_eq!(
            (empty[0].field.as_str(), empty[0].description.as_str()),
            ("update_mask", "must name at least one field")
        );
        let unknown = check_update_mask(&paths(&["name", "sku", "id"]), &["name", "price"]).expect_err("unknown");
        let said: Vec<&str> = unknown.iter().map(|v| v.description.as_str()).collect();
        assert_eq!(said, ["unknown field `sku`; allowed: name, price", "unknown field `id`; allowed: name, price"]);
    }

    #[test]
    fn invalid_argument_carries_every_field() {
        let mut v = Violations::new();
        v.add("email", "must be an email address");
        v.add("password", "must be 8 to 128 characters");
        let status = v.into_result().expect_err("two violations");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "email: must be an email address; password: must be 8 to 128 characters");
        let details = decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.BadRequest");
        let bad = rpc::BadRequest::decode(details.details[0].value.as_slice()).expect("decodes");
        assert_eq!(bad.field_violations[1].field, "password");
    }
}
