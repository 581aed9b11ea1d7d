//! The one error type of the notifications service, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument};
use tonic::Status;

/// Everything that can go wrong in the notifications service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A setting is unusable; the service does not start.
    #[error("invalid setting {variable}: {problem}")]
    Setting {
        /// The environment variable, e.g. `MERCATO_SMTP_URL`.
        variable: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// A template failed to load or render (a bug in the shipped templates).
    #[error("template: {0}")]
    Template(String),
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
    /// The HTTP client for webhooks could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A dependency (the broker) did not answer; the caller may try again.
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
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
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::Unavailable(m) => Status::unavailable(m),
            // Internal details (SQL, settings, templates) stay in our logs, never in a response.
            internal @ (Error::Setting { .. }
            | Error::Template(_)
            | Error::Database(_)
            | Error::Db(_)
            | Error::Serve(_)
            | Error::Channel(_)
            | Error::Http(_)) => platform::error::internal(&internal),
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
    fn settings_name_their_variable() {
        let e = Error::Setting { variable: "MERCATO_SMTP_URL".into(), problem: "no host".into() };
        assert_eq!(e.to_string(), "invalid setting MERCATO_SMTP_URL: no host");
    }
}
