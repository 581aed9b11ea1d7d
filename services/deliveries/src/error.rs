//! The one error type of the deliveries service, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// `ErrorInfo` reason when a shipment that is not PENDING is dispatched (again, differently).
pub const SHIPMENT_NOT_PENDING: &str = "SHIPMENT_NOT_PENDING";
/// `ErrorInfo` reason when an order's shipment cannot be cancelled because the carrier has it.
pub const SHIPMENT_DISPATCHED: &str = "SHIPMENT_DISPATCHED";
/// `ErrorInfo` reason when a tracking event would move a shipment to a state it cannot reach.
pub const INVALID_SHIPMENT_TRANSITION: &str = "INVALID_SHIPMENT_TRANSITION";

/// Everything that can go wrong in the deliveries service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shipment does not exist, or the caller may not see it.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request is well-formed but the shipment's state refuses it.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. [`SHIPMENT_NOT_PENDING`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A stored row holds what this version cannot read (a state name it does not know).
    #[error("corrupt row: {0}")]
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
}

impl Error {
    /// NOT_FOUND for a shipment the caller cannot see.
    pub fn shipment_not_found(id: &str) -> Self {
        Self::NotFound(format!("shipment {id} not found"))
    }

    /// INVALID_ARGUMENT for one field.
    pub fn invalid(violation: FieldViolation) -> Self {
        Self::InvalidArgument(vec![violation])
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => Status::not_found(m),
            Error::InvalidArgument(v) => invalid_argument(v),
            Error::FailedPrecondition { reason, message } => with_reason(Code::FailedPrecondition, reason, message),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            // Internal details (SQL, connection strings) stay in our logs, never in a response.
            internal
            @ (Error::Corrupt(_) | Error::Database(_) | Error::Db(_) | Error::Serve(_) | Error::Channel(_)) => {
                platform::error::internal(&internal)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_do_not_leak() {
        let status = Status::from(Error::Database(sqlx::Error::Protocol("SELECT secret FROM t".into())));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }

    #[test]
    fn failed_preconditions_carry_their_reason() {
        let status =
            Status::from(Error::FailedPrecondition { reason: SHIPMENT_NOT_PENDING, message: "shipped".into() });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = platform::error::decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    }
}
