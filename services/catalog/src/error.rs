//! The one error type of the catalog, and how it reaches clients.

use platform::error::{FieldViolation, invalid_argument, with_reason};
use tonic::{Code, Status};

/// `ErrorInfo` reason when there is not enough stock for a reservation or an adjustment.
pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
/// `ErrorInfo` reason when an inactive product is reserved.
pub const PRODUCT_INACTIVE: &str = "PRODUCT_INACTIVE";
/// `ErrorInfo` reason when a reservation was already settled the other way.
pub const RESERVATION_SETTLED: &str = "RESERVATION_SETTLED";
/// `ErrorInfo` reason when on hand would exceed what the wire type can carry.
pub const STOCK_LIMIT: &str = "STOCK_LIMIT";
/// `ErrorInfo` reason when a product already has as many images as it may.
pub const IMAGE_LIMIT: &str = "IMAGE_LIMIT";
/// `ErrorInfo` reason when the shop already describes as many categories as it may.
pub const CATEGORY_LIMIT: &str = "CATEGORY_LIMIT";
/// `ErrorInfo` reason when a customer reviews a product they did not buy.
pub const NOT_A_BUYER: &str = "NOT_A_BUYER";
/// `ErrorInfo` reason when a customer asks to hear of a product that can be ordered now.
pub const IN_STOCK: &str = "IN_STOCK";
/// `ErrorInfo` reason when a customer waits for as many products as they may.
pub const ALERT_LIMIT: &str = "ALERT_LIMIT";

/// Everything that can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist (or is hidden from this caller).
    #[error("{0}")]
    NotFound(String),
    /// A unique value (the sku) is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed; every offending field is named.
    #[error("invalid request: {}", platform::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request is well-formed but the system's state refuses it.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable reason, e.g. [`INSUFFICIENT_STOCK`].
        reason: &'static str,
        /// What happened, for people.
        message: String,
    },
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A query failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] platform::db::DbError),
    /// The blob store (product images) failed.
    #[error(transparent)]
    Blob(#[from] platform::blob::BlobError),
    /// The gRPC server failed.
    #[error(transparent)]
    Serve(#[from] platform::grpc::ServeError),
    /// A gRPC client channel could not be built.
    #[error(transparent)]
    Channel(#[from] platform::grpc::ChannelError),
}

impl Error {
    /// NOT_FOUND for product `id`.
    pub fn product_not_found(id: &str) -> Self {
        Self::NotFound(format!("product {id} not found"))
    }

    /// NOT_FOUND for image `image_id` of product `product_id`.
    pub fn image_not_found(product_id: &str, image_id: &str) -> Self {
        Self::NotFound(format!("image {image_id} of product {product_id} not found"))
    }

    /// NOT_FOUND for reservation `id`.
    pub fn reservation_not_found(id: &str) -> Self {
        Self::NotFound(format!("reservation {id} not found"))
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
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::InvalidArgument(v) => invalid_argument(v),
            Error::FailedPrecondition { reason, message } => with_reason(Code::FailedPrecondition, reason, message),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            // Internal details (SQL, connection strings) stay in our logs, never in a response.
            internal @ (Error::Database(_) | Error::Db(_) | Error::Blob(_) | Error::Serve(_) | Error::Channel(_)) => {
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
        let status = Status::from(Error::FailedPrecondition { reason: INSUFFICIENT_STOCK, message: "no".into() });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = platform::error::decode_details(&status).expect("details");
        assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    }
}
