//! The one error type of the users service, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// `ErrorInfo` reason when a customer's address book is full.
pub const ADDRESS_BOOK_FULL: &str = "ADDRESS_BOOK_FULL";

/// Everything that can go wrong in the users service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing does not exist, or the caller may not see it.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request is well-formed but the state refuses it.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. [`ADDRESS_BOOK_FULL`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
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
    /// NOT_FOUND for an address the caller does not have.
    pub fn address_not_found(id: &str) -> Self {
        Self::NotFound(format!("address {id} not found"))
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
            // Internal details (SQL, connection strings) stay in our logs, never in a response.
            internal @ (Error::Database(_) | Error::Db(_) | Error::Serve(_) | Error::Channel(_)) => {
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
}
