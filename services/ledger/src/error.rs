//! The one error type of the ledger, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// `ErrorInfo` reason when a transaction id is sent again with other content.
pub const TRANSACTION_ID_REUSED: &str = "TRANSACTION_ID_REUSED";
/// `ErrorInfo` reason when an account code is taken by an account of another type or currency.
pub const ACCOUNT_CODE_TAKEN: &str = "ACCOUNT_CODE_TAKEN";
/// `ErrorInfo` reason when a transaction that was already reversed is reversed again.
pub const TRANSACTION_ALREADY_REVERSED: &str = "TRANSACTION_ALREADY_REVERSED";
/// `ErrorInfo` reason when a posting would take a balance beyond what a signed 64-bit integer holds.
pub const BALANCE_OVERFLOW: &str = "BALANCE_OVERFLOW";

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique value (an account code, a transaction id) is taken by something different.
    #[error("{message}")]
    AlreadyExists {
        /// Machine-readable reason, e.g. [`TRANSACTION_ID_REUSED`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request is well-formed but the ledger's state refuses it.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. [`TRANSACTION_ALREADY_REVERSED`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// Stored data is not what the ledger writes (a corrupted row).
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
}

impl Error {
    /// NOT_FOUND for account `id`.
    pub fn account_not_found(id: &str) -> Self {
        Self::NotFound(format!("account {id} not found"))
    }

    /// NOT_FOUND for transaction `id`.
    pub fn transaction_not_found(id: &str) -> Self {
        Self::NotFound(format!("transaction {id} not found"))
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
            Error::AlreadyExists { reason, message } => with_reason(Code::AlreadyExists, reason, message),
            Error::InvalidArgument(v) => invalid_argument(v),
            Error::FailedPrecondition { reason, message } => with_reason(Code::FailedPrecondition, reason, message),
            // Internal details (SQL, connection strings, stored values) stay in our logs, never in a response.
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
        let status = Status::from(Error::Corrupt("account x has type BOGUS".into()));
        assert_eq!((status.code(), status.message()), (Code::Internal, "internal error"));
    }

    #[test]
    fn conflicts_carry_their_reason() {
        let status = Status::from(Error::AlreadyExists { reason: TRANSACTION_ID_REUSED, message: "no".into() });
        assert_eq!(status.code(), Code::AlreadyExists);
        let details = platform::error::decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
        let status = Status::from(Error::FailedPrecondition { reason: BALANCE_OVERFLOW, message: "no".into() });
        assert_eq!(status.code(), Code::FailedPrecondition);
    }
}
