//! The payments service as the refunds service uses it, over gRPC with its own service token (which holds
//! `payment:refund`): GetPayment to learn what a payment captured, RefundPayment (idempotent by refund id)
//! to give money back.

use std::sync::Arc;
use std::time::Duration;

use api::common::Money;
use api::mercato::payments::v1::payment_service_client::PaymentServiceClient;
use api::mercato::payments::v1::{GetPaymentRequest, Payment, RefundPaymentRequest, RefundPaymentResponse};
use platform::grpc::Channel;
use platform::grpc::TracedChannel;
use tonic::{Code, Status};

pub use platform::auth::{StaticToken, TokenSource};

use crate::store::RefundRow;

/// How often pending refunds are retried by default.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How long one call to the payments service may take before it counts as a transient failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker driving a pending refund holds it by default before another may take it over (it
/// crashed): longer than a call may take.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The payments service as the refunds service uses it, and how pending refunds are retried.
#[derive(Clone)]
pub struct PaymentsClient {
    client: PaymentServiceClient<TracedChannel>,
    tokens: Arc<dyn TokenSource>,
    retry_interval: Duration,
    lease: Duration,
}

impl std::fmt::Debug for PaymentsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentsClient")
            .field("retry_interval", &self.retry_interval)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl PaymentsClient {
    /// The payments service behind `channel`, called with tokens from `tokens`; pending refunds are retried
    /// every [`DEFAULT_RETRY_INTERVAL`] and held for [`DEFAULT_LEASE`] while driven.
    pub fn new(channel: Channel, tokens: Arc<dyn TokenSource>) -> Self {
        Self {
            client: PaymentServiceClient::new(TracedChannel::new(channel)),
            tokens,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            lease: DEFAULT_LEASE,
        }
    }

    /// The same client retrying pending refunds every `interval` instead.
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// The same client holding a refund it drives for `lease` instead (a crashed worker's refund is taken
    /// over after that long).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often pending refunds are retried.
    pub fn retry_interval(&self) -> Duration {
        self.retry_interval
    }

    /// How long a worker holds a refund it drives.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    async fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Status> {
        let token = self.tokens.token().await?;
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}").parse().map_err(|_| Status::internal("unusable service token"))?;
        request.metadata_mut().insert("authorization", value);
        request.set_timeout(CALL_TIMEOUT);
        Ok(request)
    }

    /// Payment `id`; `None` when the payments service does not know it.
    pub async fn get_payment(&self, id: &str) -> Result<Option<Payment>, Status> {
        let request = self.request(GetPaymentRequest { id: id.to_owned() }).await?;
        match tokio::time::timeout(CALL_TIMEOUT, self.client.clone().get_payment(request)).await {
            Ok(Ok(response)) => response
                .into_inner()
                .payment
                .map(Some)
                .ok_or_else(|| Status::internal("GetPayment returned no payment")),
            Ok(Err(status)) if status.code() == Code::NotFound => Ok(None),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::deadline_exceeded("GetPayment timed out")),
        }
    }

    /// Asks the payments service to give back refund `r` (idempotent by its id).
    pub async fn refund_payment(&self, r: &RefundRow) -> Result<RefundPaymentResponse, Status> {
        let request = self
            .request(RefundPaymentRequest {
                payment_id: r.payment_id.clone(),
                refund_id: r.id.clone(),
                amount: Some(Money { currency: r.currency.clone(), amount_minor: r.amount_minor }),
                reason: r.reason.clone(),
                rest: false,
            })
            .await?;
        match tokio::time::timeout(CALL_TIMEOUT, self.client.clone().refund_payment(request)).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("RefundPayment timed out")),
        }
    }
}
