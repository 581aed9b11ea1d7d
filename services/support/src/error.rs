//! The one error type of the support service, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// `ErrorInfo` reason when a ticket already holds the most messages it may.
pub const TICKET_FULL: &str = "TICKET_FULL";
/// `ErrorInfo` reason when a ticket already holds the most attachments it may.
pub const ATTACHMENT_LIMIT: &str = "ATTACHMENT_LIMIT";
/// `ErrorInfo` reason when a newsletter's request id was used before for another newsletter.
pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
/// `ErrorInfo` reason when a newsletter confirmation token is older than a week.
pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
/// `ErrorInfo` reason when a subscription was ended and its old token is used to confirm it.
pub const SUBSCRIPTION_ENDED: &str = "SUBSCRIPTION_ENDED";

/// Everything that can go wrong in the support service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ticket does not exist, or the caller may not see it.
    #[error("{0}")]
    NotFound(String),
    /// The caller sees the thing but may not do this to it (remove another's attachment).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// A request id was used before for a different request (reason [`REQUEST_ID_REUSED`]).
    #[error("{0}")]
    RequestIdReused(String),
    /// The request is well-formed but the ticket's state refuses it.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. [`TICKET_FULL`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
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
    /// The blob store (attachments' bytes) failed.
    #[error(transparent)]
    Blob(#[from] platform::blob::BlobError),
    /// A gRPC client channel could not be built.
    #[error(transparent)]
    Channel(#[from] platform::grpc::ChannelError),
}

impl Error {
    /// NOT_FOUND for a ticket the caller cannot see.
    pub fn ticket_not_found(id: &str) -> Self {
        Self::NotFound(format!("ticket {id} not found"))
    }

    /// NOT_FOUND for an attachment the ticket does not have.
    pub fn attachment_not_found(ticket_id: &str, id: &str) -> Self {
        Self::NotFound(format!("attachment {id} of ticket {ticket_id} not found"))
    }

    /// NOT_FOUND for a FAQ entry that does not exist, or is a draft the caller may not see.
    pub fn faq_entry_not_found(id: &str) -> Self {
        Self::NotFound(format!("FAQ entry {id} not found"))
    }

    /// NOT_FOUND for a newsletter token no subscription has.
    pub fn unknown_token() -> Self {
        Self::NotFound("no subscription has this token; subscribe again for a new one".to_owned())
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
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::RequestIdReused(m) => with_reason(Code::InvalidArgument, REQUEST_ID_REUSED, m),
            Error::InvalidArgument(v) => invalid_argument(v),
            Error::FailedPrecondition { reason, message } => with_reason(Code::FailedPrecondition, reason, message),
            // Internal details (SQL, connection strings) stay in our logs, never in a response.
            internal @ (Error::Corrupt(_)
            | Error::Database(_)
            | Error::Db(_)
            | Error::Blob(_)
            | Error::Serve(_)
            | Error::Channel(_)) => platform::error::internal(&internal),
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
        let status = Status::from(Error::FailedPrecondition { reason: TICKET_FULL, message: "full".into() });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = platform::error::decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    }
}
