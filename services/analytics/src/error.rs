//! The one error type of analytics, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument};
use tonic::Status;

/// Everything that can go wrong in analytics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// An event cannot be read (an unknown type, a payload that does not decode or lacks a field).
    #[error("event {event_id}: {problem}")]
    BadEvent {
        /// The event.
        event_id: String,
        /// What is wrong with it.
        problem: String,
    },
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
    /// INVALID_ARGUMENT for one field.
    pub fn invalid(violation: FieldViolation) -> Self {
        Self::InvalidArgument(vec![violation])
    }

    /// An event that cannot be read.
    pub fn bad_event(event_id: &str, problem: impl Into<String>) -> Self {
        Self::BadEvent { event_id: event_id.to_owned(), problem: problem.into() }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(v) => invalid_argument(v),
            // Internal details (SQL, connection strings, a stored event that no longer decodes) stay in our
            // logs, never in a response.
            internal @ (Error::BadEvent { .. }
            | Error::Database(_)
            | Error::Db(_)
            | Error::Serve(_)
            | Error::Channel(_)) => platform::error::internal(&internal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn database_errors_do_not_leak() {
        let status = Status::from(Error::Database(sqlx::Error::Protocol("SELECT secret FROM t".into())));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"));
    }

    #[test]
    fn invalid_arguments_name_their_fields() {
        let status = Status::from(Error::invalid(FieldViolation::new("limit", "must be 1 to 100")));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = platform::error::decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.BadRequest");
    }
}
