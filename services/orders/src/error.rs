//! The one error type of the orders service, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// `ErrorInfo` reason when an idempotency key is reused for a different request.
pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
/// `ErrorInfo` reason when a product of the order cannot be bought.
pub const PRODUCT_UNAVAILABLE: &str = "PRODUCT_UNAVAILABLE";
/// `ErrorInfo` reason when an order from the cart finds the cart empty.
pub const CART_EMPTY: &str = "CART_EMPTY";
/// `ErrorInfo` reason when an order is in a state that refuses the request.
pub const ORDER_STATE: &str = "ORDER_STATE";
/// `ErrorInfo` reason when a confirmed order cannot be cancelled because its parcel is with the carrier.
pub const ORDER_SHIPPED: &str = "ORDER_SHIPPED";
/// `ErrorInfo` reason when the shop wants a verified email address before checkout and the customer's is not.
pub const EMAIL_NOT_VERIFIED: &str = "EMAIL_NOT_VERIFIED";
/// `ErrorInfo` reason when items of an order are priced in several currencies.
pub const MIXED_CURRENCIES: &str = "MIXED_CURRENCIES";
/// `ErrorInfo` reason when a customer had too many discount codes refused lately to try another.
pub const DISCOUNT_CODE_ATTEMPTS: &str = "DISCOUNT_CODE_ATTEMPTS";

/// Everything that can go wrong in the orders service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist (or is hidden from this caller).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request is malformed in a way with a machine-readable reason (e.g. [`IDEMPOTENCY_KEY_REUSED`]).
    #[error("{message}")]
    Rejected {
        /// Machine-readable reason.
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// The request is well-formed but the system's state refuses it.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. [`ORDER_STATE`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// The thing to create exists already (a discount code).
    #[error("{0}")]
    AlreadyExists(String),
    /// A concurrent change won; the client may try again.
    #[error("{0}")]
    Aborted(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A service the request needs (catalog, cart) cannot be reached now; the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// The caller used up a budget of attempts ([`DISCOUNT_CODE_ATTEMPTS`]); trying later works.
    #[error("{0}")]
    TooManyAttempts(String),
    /// A service the request needs answered something unexpected (logged, not shown).
    #[error("upstream: {0}")]
    Upstream(String),
    /// A setting is missing or unusable.
    #[error("{variable}: {problem}")]
    Setting {
        /// The environment variable.
        variable: String,
        /// What is wrong.
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
    /// A document's template failed to render (a programming error, logged, not shown).
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    /// A task the request handed work to panicked or was stopped by shutdown.
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// NOT_FOUND for order `id`.
    pub fn order_not_found(id: &str) -> Self {
        Self::NotFound(format!("order {id} not found"))
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
            Error::Rejected { reason, message } => with_reason(Code::InvalidArgument, reason, message),
            Error::FailedPrecondition { reason, message } => with_reason(Code::FailedPrecondition, reason, message),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Aborted(m) => Status::aborted(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::TooManyAttempts(m) => with_reason(Code::ResourceExhausted, DISCOUNT_CODE_ATTEMPTS, m),
            // Internal details (SQL, connection strings, other services' answers) stay in our logs.
            internal @ (Error::Upstream(_)
            | Error::Setting { .. }
            | Error::Database(_)
            | Error::Db(_)
            | Error::Serve(_)
            | Error::Channel(_)
            | Error::Template(_)
            | Error::Task(_)) => platform::error::internal(&internal),
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
    fn key_reuse_is_invalid_argument_with_a_reason() {
        let status = Status::from(Error::Rejected { reason: IDEMPOTENCY_KEY_REUSED, message: "no".into() });
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = platform::error::decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    }
}
