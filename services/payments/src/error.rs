//! The one error type of the payments service, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// `ErrorInfo` reason when an idempotency key (or a refund id) is sent again with another request.
pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
/// `ErrorInfo` reason when a refund would take the total refunded beyond the captured amount.
pub const REFUND_EXCEEDS_CAPTURED: &str = "REFUND_EXCEEDS_CAPTURED";
/// `ErrorInfo` reason when a payment cannot be refunded in its state (it failed).
pub const PAYMENT_NOT_REFUNDABLE: &str = "PAYMENT_NOT_REFUNDABLE";
/// `ErrorInfo` reason when the processor refused a refund.
pub const REFUND_REJECTED: &str = "REFUND_REJECTED";
/// `ErrorInfo` reason when a request with the same key is still being processed.
pub const REQUEST_IN_PROGRESS: &str = "REQUEST_IN_PROGRESS";

/// Everything that can go wrong in the payments service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist (or belongs to someone else).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The idempotency key (or refund id) was used before for another request.
    #[error("{0}")]
    KeyReused(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is well-formed but the payment's state refuses it.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. [`REFUND_EXCEEDS_CAPTURED`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// A concurrent request with the same key did not finish in time; retry later.
    #[error("{0}")]
    Aborted(String),
    /// The processor is failing for now; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data is not what the service writes (a corrupted row).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A query failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] platform::db::DbError),
    /// The gRPC server failed.
    #[error(transparent)]
    Serve(#[from] platform::grpc::ServeError),
    /// A gRPC client channel could not be built.
    #[error(transparent)]
    Channel(#[from] platform::grpc::ChannelError),
    /// A required setting is missing or wrong.
    #[error("{variable}: {problem}")]
    Setting {
        /// The environment variable.
        variable: String,
        /// What is wrong.
        problem: String,
    },
}

impl Error {
    /// INVALID_ARGUMENT for one field.
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// NOT_FOUND for payment `id`.
    pub fn payment_not_found(id: &str) -> Self {
        Self::NotFound(format!("payment {id} not found"))
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => Status::not_found(m),
            Error::InvalidArgument(v) => invalid_argument(v),
            Error::KeyReused(m) => with_reason(Code::InvalidArgument, IDEMPOTENCY_KEY_REUSED, m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::FailedPrecondition { reason, message } => with_reason(Code::FailedPrecondition, reason, message),
            Error::Aborted(m) => with_reason(Code::Aborted, REQUEST_IN_PROGRESS, m),
            Error::Unavailable(m) => Status::unavailable(m),
            // Internal details (SQL, connection strings, stored values) stay in our logs, never in a response.
            internal @ (Error::Corrupt(_)
            | Error::Database(_)
            | Error::Db(_)
            | Error::Serve(_)
            | Error::Channel(_)
            | Error::Setting { .. }) => platform::error::internal(&internal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_do_not_leak() {
        let status = Status::from(Error::Database(sqlx::Error::Protocol("SELECT secret FROM t".into())));
        assert_eq!((status.code(), status.message()), (Code::Internal, "internal error"));
    }

    #[test]
    fn reused_keys_carry_their_reason() {
        let status = Status::from(Error::KeyReused("no".into()));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = platform::error::decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
        assert_eq!(Status::from(Error::Aborted("wait".into())).code(), Code::Aborted);
    }
}
