//! The gRPC face of the deliveries service: wire messages in, domain rules and store, wire messages out.

use api::mercato::deliveries::v1::delivery_service_server::DeliveryService;
use api::mercato::deliveries::v1::{
    CancelOrderShipmentRequest, CancelOrderShipmentResponse, DispatchShipmentRequest, DispatchShipmentResponse,
    GetShipmentRequest, GetShipmentResponse, ListShipmentsRequest, ListShipmentsResponse, RecordTrackingEventRequest,
    RecordTrackingEventResponse, Shipment, ShipmentItem, TrackingEvent,
};
use platform::auth::{Claims, caller};
use platform::db::Db;
use platform::events::RelayHandle;
use platform::time::{micros, now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::domain::{self, Status as ShipmentState, TrackingInput};
use crate::error::Error;
use crate::store::{self, Dispatched, ListQuery, Recorded, Store};

/// The scope of staff (and carrier integrations): they see every shipment, dispatch and track them.
pub const SHIPMENT_WRITE: &str = "shipment:write";

/// Implements `mercato.deliveries.v1.DeliveryService`.
#[derive(Debug, Clone)]
pub struct DeliveryApi {
    store: Store,
    relay: RelayHandle,
}

impl DeliveryApi {
    /// The service over a migrated database; `relay` is woken when events were written.
    pub fn new(db: Db, relay: RelayHandle) -> Self {
        Self { store: Store::new(db), relay }
    }

    /// Shipment `id` as `claims` may see it: a customer's own, or any for staff; else NOT_FOUND.
    async fn visible(&self, claims: &Claims, id: &str) -> Result<store::Shipment, Error> {
        match self.store.shipment(id).await? {
            Some(s) if s.customer_id == claims.sub || claims.has_scope(SHIPMENT_WRITE) => Ok(s),
            _ => Err(Error::shipment_not_found(id)),
        }
    }
}

fn shipment_to_wire(s: store::Shipment) -> Shipment {
    Shipment {
        id: s.id,
        order_id: s.order_id,
        customer_id: s.customer_id,
        status: s.status.to_wire().into(),
        items: s
            .items
            .into_iter()
            .map(|i| ShipmentItem { product_id: i.product_id, sku: i.sku, name: i.name, quantity: i.quantity })
            .collect(),
        address: Some(s.address),
        carrier: s.carrier,
        tracking_number: s.tracking_number,
        shipping_method: s.shipping_method,
        events: s
            .history
            .into_iter()
            .map(|h| TrackingEvent {
                status: h.status.to_wire().into(),
                location: h.location,
                description: h.description,
                occur_time: Some(timestamp(h.occur_time)),
                carrier_event_id: h.carrier_event_id.unwrap_or_default(),
            })
            .collect(),
        create_time: Some(timestamp(s.create_time)),
        update_time: Some(timestamp(s.update_time)),
        ship_time: s.ship_time.map(timestamp),
        deliver_time: s.deliver_time.map(timestamp),
    }
}

#[tonic::async_trait]
impl DeliveryService for DeliveryApi {
    async fn get_shipment(
        &self,
        request: Request<GetShipmentRequest>,
    ) -> Result<Response<GetShipmentResponse>, Status> {
        let claims = caller(&request)?.clone();
        let id = request.into_inner().id;
        domain::validate_id("id", &id).map_err(Error::invalid)?;
        let shipment = self.visible(&claims, &id).await?;
        Ok(Response::new(GetShipmentResponse { shipment: Some(shipment_to_wire(shipment)) }))
    }

    async fn list_shipments(
        &self,
        request: Request<ListShipmentsRequest>,
    ) -> Result<Response<ListShipmentsResponse>, Status> {
        let claims = caller(&request)?.clone();
        let req = request.into_inner();
        let mut violations = Vec::new();
        let limit = domain::page_size(req.page_size).map_err(|v| violations.push(v)).unwrap_or_default();
        let before = domain::page_token(&req.page_token).map_err(|v| violations.push(v)).unwrap_or_default();
        let status = match req.status {
            0 => None,
            value => {
                let parsed = ShipmentState::from_wire(value);
                if parsed.is_none() {
                    violations.push(platform::error::FieldViolation::new("status", "is not a shipment state"));
                }
                parsed
            }
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let customer_id = if claims.has_scope(SHIPMENT_WRITE) {
            (!req.customer_id.is_empty()).then_some(req.customer_id)
        } else if req.customer_id.is_empty() || req.customer_id == claims.sub {
            Some(claims.sub.clone())
        } else {
            return Err(Error::PermissionDenied(format!(
                "listing another customer's shipments needs the scope {SHIPMENT_WRITE}"
            ))
            .into());
        };
        let query = ListQuery {
            customer_id,
            order_id: (!req.order_id.is_empty()).then_some(req.order_id),
            status,
            before_id: (!before.is_empty()).then(|| before.to_owned()),
            // One more than the page: whether there is a next page.
            limit: limit + 1,
        };
        let shipments = self.store.list(&query).await?;
        let (shipments, next_page_token) = platform::paging::page(shipments, limit, |s| s.id.clone());
        Ok(Response::new(ListShipmentsResponse {
            shipments: shipments.into_iter().map(shipment_to_wire).collect(),
            next_page_token,
        }))
    }

    async fn dispatch_shipment(
        &self,
        request: Request<DispatchShipmentRequest>,
    ) -> Result<Response<DispatchShipmentResponse>, Status> {
        let by = caller(&request)?.sub.clone();
        let req = request.into_inner();
        let mut violations = Vec::new();
        if let Err(v) = domain::validate_id("id", &req.id) {
            violations.push(v);
        }
        let dispatch = domain::validate_dispatch(&req.carrier, &req.tracking_number);
        let dispatch = match dispatch {
            Ok(dispatch) if violations.is_empty() => dispatch,
            Ok(_) => return Err(Error::InvalidArgument(violations).into()),
            Err(more) => {
                violations.extend(more);
                return Err(Error::InvalidArgument(violations).into());
            }
        };
        let outcome = self.store.dispatch(&req.id, &dispatch, now_micros()).await?;
        if outcome == Dispatched::Now {
            self.relay.wake();
            tracing::info!(shipment_id = %req.id, carrier = %dispatch.carrier, by = %by, "shipment dispatched");
        }
        let shipment = self.store.shipment(&req.id).await?.ok_or_else(|| Error::shipment_not_found(&req.id))?;
        Ok(Response::new(DispatchShipmentResponse { shipment: Some(shipment_to_wire(shipment)) }))
    }

    async fn record_tracking_event(
        &self,
        request: Request<RecordTrackingEventRequest>,
    ) -> Result<Response<RecordTrackingEventResponse>, Status> {
        let req = request.into_inner();
        let now = now_micros();
        let mut violations = Vec::new();
        if let Err(v) = domain::validate_id("shipment_id", &req.shipment_id) {
            violations.push(v);
        }
        let occur_time = match &req.occur_time {
            None => None,
            Some(t) => {
                let parsed = micros(t);
                if parsed.is_none() {
                    violations.push(platform::error::FieldViolation::new("occur_time", "is out of range"));
                }
                parsed
            }
        };
        let input = TrackingInput {
            status: req.status,
            location: &req.location,
            description: &req.description,
            occur_time,
            carrier_event_id: &req.carrier_event_id,
        };
        let event = match domain::validate_tracking(&input, now) {
            Ok(event) if violations.is_empty() => event,
            Ok(_) => return Err(Error::InvalidArgument(violations).into()),
            Err(more) => {
                violations.extend(more);
                return Err(Error::InvalidArgument(violations).into());
            }
        };
        let recorded = self.store.record(&req.shipment_id, &event, now).await?;
        if let Recorded::Added(tracking) = recorded {
            self.relay.wake();
            tracing::info!(shipment_id = %req.shipment_id, reported = event.status.as_str(), ?tracking, "tracking event recorded");
        }
        let shipment =
            self.store.shipment(&req.shipment_id).await?.ok_or_else(|| Error::shipment_not_found(&req.shipment_id))?;
        Ok(Response::new(RecordTrackingEventResponse { shipment: Some(shipment_to_wire(shipment)) }))
    }

    async fn cancel_order_shipment(
        &self,
        request: Request<CancelOrderShipmentRequest>,
    ) -> Result<Response<CancelOrderShipmentResponse>, Status> {
        let by = caller(&request)?.sub.clone();
        let req = request.into_inner();
        let reason = req.reason.trim();
        let mut violations = Vec::new();
        if let Err(v) = domain::validate_id("order_id", &req.order_id) {
            violations.push(v);
        }
        if reason.chars().count() > domain::MAX_DESCRIPTION {
            violations.push(platform::error::FieldViolation::new(
                "reason",
                format!("is longer than {} characters", domain::MAX_DESCRIPTION),
            ));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let shipment_id = self.store.cancel_order_shipment(&req.order_id, reason, now_micros()).await?;
        self.relay.wake();
        tracing::info!(order_id = %req.order_id, shipment_id = ?shipment_id, by = %by, "order's shipment cancelled");
        let shipment = match shipment_id {
            Some(id) => {
                Some(shipment_to_wire(self.store.shipment(&id).await?.ok_or_else(|| Error::shipment_not_found(&id))?))
            }
            None => None,
        };
        Ok(Response::new(CancelOrderShipmentResponse { shipment }))
    }
}
