//! `mercato.notifications.v1.DeadLetterService`: the administrators' view of the events consumers gave up on.
//! The bus does the work (RabbitMQ's dead-letter queues; the in-process bus keeps none); this is the wire
//! and the checks.

use std::sync::Arc;

use api::mercato::notifications::v1::dead_letter_service_server::DeadLetterService;
use api::mercato::notifications::v1::{
    ListDeadLettersRequest, ListDeadLettersResponse, RequeueDeadLettersRequest, RequeueDeadLettersResponse,
};
use platform::error::FieldViolation;
use platform::events::{BusError, EventBus};
use tonic::{Request, Response, Status};

use crate::error::Error;

/// Implements `mercato.notifications.v1.DeadLetterService` over the process's bus.
#[derive(Clone)]
pub struct DeadLettersApi {
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for DeadLettersApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLettersApi").finish_non_exhaustive()
    }
}

impl DeadLettersApi {
    /// The service over `bus`.
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self { bus }
    }
}

/// Checks a consumer name: it becomes part of a queue name, so only a safe alphabet is taken.
pub fn validate_consumer(consumer: &str) -> Result<(), FieldViolation> {
    let ok = (1..=64).contains(&consumer.len())
        && consumer.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FieldViolation::new("consumer", "must be 1 to 64 lower-case letters, digits, '-' or '_'"))
    }
}

fn bus_error(error: BusError) -> Error {
    match error {
        BusError::UnknownConsumer(consumer) => Error::NotFound(format!("no consumer {consumer:?} on the broker")),
        other => {
            tracing::warn!(error = %other, "the broker did not answer an admin call");
            Error::Unavailable("the event broker did not answer; try again later".to_owned())
        }
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLettersApi {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let consumer = request.into_inner().consumer;
        validate_consumer(&consumer).map_err(Error::invalid)?;
        let events = self.bus.dead_letters(&consumer).await.map_err(bus_error)?;
        Ok(Response::new(ListDeadLettersResponse { events }))
    }

    async fn requeue_dead_letters(
        &self,
        request: Request<RequeueDeadLettersRequest>,
    ) -> Result<Response<RequeueDeadLettersResponse>, Status> {
        let consumer = request.into_inner().consumer;
        validate_consumer(&consumer).map_err(Error::invalid)?;
        let moved = self.bus.requeue_dead_letters(&consumer).await.map_err(bus_error)?;
        tracing::info!(consumer = %consumer, requeued = moved, "dead letters requeued");
        Ok(Response::new(RequeueDeadLettersResponse { requeued: i32::try_from(moved).unwrap_or(i32::MAX) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_safe() {
        for good in ["cart", "notifications", "order-sync_2"] {
            assert!(validate_consumer(good).is_ok(), "{good}");
        }
        for bad in ["", "Cart", "cart.dead", "../x", "a b", &"x".repeat(65)] {
            assert!(validate_consumer(bad).is_err(), "{bad:?}");
        }
    }
}
