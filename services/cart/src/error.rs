//! The one error type of the cart, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// `ErrorInfo` reason when an inactive product is added to a cart.
pub const PRODUCT_INACTIVE: &str = "PRODUCT_INACTIVE";
/// `ErrorInfo` reason when a new product would exceed the products a cart may hold.
pub const CART_FULL: &str = "CART_FULL";
/// `ErrorInfo` reason when a new product would exceed the products a wishlist may hold.
pub const WISHLIST_FULL: &str = "WISHLIST_FULL";

/// Everything that can go wrong in the cart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist (an unknown product, a product not in the cart).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request is well-formed but the system's state refuses it.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. [`PRODUCT_INACTIVE`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The catalog failed to answer; carts cannot be priced without it.
    #[error("catalog: {0}")]
    Catalog(Status),
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
    /// NOT_FOUND for a product the catalog does not know.
    pub fn product_not_found(id: &str) -> Self {
        Self::NotFound(format!("product {id} not found"))
    }

    /// NOT_FOUND for a product that is not in the caller's cart.
    pub fn item_not_found(id: &str) -> Self {
        Self::NotFound(format!("product {id} is not in the cart"))
    }

    /// FAILED_PRECONDITION for a product the catalog no longer sells.
    pub fn product_inactive(id: &str) -> Self {
        Self::FailedPrecondition { reason: PRODUCT_INACTIVE, message: format!("product {id} is not for sale") }
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
            // The catalog's own message stays in our logs; the client learns only that it may retry.
            Error::Catalog(status) => {
                tracing::warn!(code = ?status.code(), message = %status.message(), "catalog call failed");
                Status::unavailable("the catalog is unavailable, try again later")
            }
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

    #[test]
    fn catalog_failures_are_unavailable_without_their_text() {
        let status = Status::from(Error::Catalog(Status::internal("pool timed out at 10.0.0.3")));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.0.0.3"));
    }

    #[test]
    fn failed_preconditions_carry_their_reason() {
        let status = Status::from(Error::product_inactive("p1"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = platform::error::decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    }
}
