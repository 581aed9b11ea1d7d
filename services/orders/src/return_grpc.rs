//! The gRPC face of returns: `mercato.orders.v1.ReturnService`. Customers ask for returns of their own delivered
//! orders and read them; staff holding `returns:write` decide, receive the parcels and read every return, as do
//! those holding `orders:admin`.

use std::sync::Arc;

use api::mercato::orders::v1::return_service_server::ReturnService;
use api::mercato::orders::v1::{
    ApproveReturnRequest, ApproveReturnResponse, CancelReturnRequest, CancelReturnResponse, CreateReturnRequest,
    CreateReturnResponse, GetReturnRequest, GetReturnResponse, ListReturnsRequest, ListReturnsResponse,
    ReceiveReturnRequest, ReceiveReturnResponse, RejectReturnRequest, RejectReturnResponse, Return as WireReturn,
    ReturnItem, ReturnStatus as WireStatus,
};
use platform::auth::{Claims, caller};
use platform::error::FieldViolation;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::domain::{Cursor, Price, Status};
use crate::error::Error;
use crate::grpc::{ORDERS_ADMIN, Paging, listed_customer, money, paging};
use crate::return_refund::Refunder;
use crate::return_store::{NewReturn, ReturnQuery};
use crate::returns::{self, Return, ReturnLine, ReturnPolicy, ReturnStatus};
use crate::store::{Order, Store};

/// The scope of staff who decide on returns and receive them.
pub const RETURNS_WRITE: &str = "returns:write";

/// Implements `mercato.orders.v1.ReturnService`.
#[derive(Clone)]
pub struct ReturnsApi {
    store: Store,
    refunder: Arc<Refunder>,
    policy: ReturnPolicy,
}

impl ReturnsApi {
    /// The service over the orders store (already migrated), refunding through `refunder`, taking returns on the
    /// shop's terms, `policy`.
    pub fn new(store: Store, refunder: Arc<Refunder>, policy: ReturnPolicy) -> Self {
        Self { store, refunder, policy }
    }

    /// Return `id` if `claims` may read it: their own, or any for staff.
    async fn visible(&self, id: &str, claims: &Claims) -> Result<Return, Error> {
        let id = checked_id(id)?;
        match self.store.return_by_id(id).await? {
            Some(found) if found.customer_id == claims.sub || reads_all(claims) => Ok(found),
            _ => Err(Error::NotFound(format!("return {id} not found"))),
        }
    }

    /// The returns on the wire, each line named and priced from its order.
    async fn to_wire(&self, found: Vec<Return>) -> Result<Vec<WireReturn>, Error> {
        let mut ids: Vec<&str> = found.iter().map(|r| r.order_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let orders = self.store.orders(&ids).await?;
        Ok(found
            .into_iter()
            .map(|r| {
                let order = orders.iter().find(|o| o.id == r.order_id);
                return_to_wire(r, order)
            })
            .collect())
    }

    async fn one_to_wire(&self, found: Return) -> Result<Option<WireReturn>, Error> {
        Ok(self.to_wire(vec![found]).await?.pop())
    }

    /// The move of return `id` to `to` (staff's decision, the customer's withdrawal), with `change` applied and its
    /// event.
    async fn decide(
        &self,
        id: &str,
        to: ReturnStatus,
        change: impl FnOnce(&mut Return),
    ) -> Result<Option<WireReturn>, Error> {
        let id = checked_id(id)?;
        let event = |r: &Return| match to {
            ReturnStatus::Approved => crate::events::return_approved(r),
            ReturnStatus::Cancelled => crate::events::return_cancelled(r),
            _ => crate::events::return_rejected(r),
        };
        let moved = self.store.move_return(id, to, now_micros(), change, event).await?;
        let moved = moved.ok_or_else(|| Error::NotFound(format!("return {id} not found")))?;
        self.one_to_wire(moved).await
    }
}

/// A return's id as asked for, trimmed; INVALID_ARGUMENT naming `id` when there is none.
fn checked_id(id: &str) -> Result<&str, Error> {
    let id = id.trim();
    if id.is_empty() { Err(Error::invalid(FieldViolation::new("id", "is required"))) } else { Ok(id) }
}

/// Whether `claims` may read every customer's returns.
fn reads_all(claims: &Claims) -> bool {
    claims.has_scope(ORDERS_ADMIN) || claims.has_scope(RETURNS_WRITE)
}

fn status_to_wire(status: ReturnStatus) -> WireStatus {
    match status {
        ReturnStatus::Requested => WireStatus::Requested,
        ReturnStatus::Approved => WireStatus::Approved,
        ReturnStatus::Rejected => WireStatus::Rejected,
        ReturnStatus::Received => WireStatus::Received,
        ReturnStatus::Refunded => WireStatus::Refunded,
        ReturnStatus::Cancelled => WireStatus::Cancelled,
    }
}

fn status_from_wire(status: i32) -> Result<Option<ReturnStatus>, FieldViolation> {
    match WireStatus::try_from(status) {
        Ok(WireStatus::Unspecified) => Ok(None),
        Ok(WireStatus::Requested) => Ok(Some(ReturnStatus::Requested)),
        Ok(WireStatus::Approved) => Ok(Some(ReturnStatus::Approved)),
        Ok(WireStatus::Rejected) => Ok(Some(ReturnStatus::Rejected)),
        Ok(WireStatus::Received) => Ok(Some(ReturnStatus::Received)),
        Ok(WireStatus::Refunded) => Ok(Some(ReturnStatus::Refunded)),
        Ok(WireStatus::Cancelled) => Ok(Some(ReturnStatus::Cancelled)),
        Err(_) => Err(FieldViolation::new("status", "is not a return status")),
    }
}

/// A return's lines on the wire, named and priced as `order` (its order) has them.
pub fn return_items_to_wire(lines: &[ReturnLine], order: Option<&Order>) -> Vec<ReturnItem> {
    lines
        .iter()
        .map(|line| {
            let ordered = order.and_then(|o| o.lines.iter().find(|l| l.product_id == line.product_id));
            ReturnItem {
                product_id: line.product_id.clone(),
                quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX),
                name: ordered.map(|l| l.name.clone()).unwrap_or_default(),
                unit_price: ordered.zip(order).map(|(l, o)| {
                    money(&Price { currency: o.total.currency.clone(), amount_minor: l.unit_price_minor })
                }),
            }
        })
        .collect()
}

fn return_to_wire(r: Return, order: Option<&Order>) -> WireReturn {
    WireReturn {
        status: status_to_wire(r.status) as i32,
        items: return_items_to_wire(&r.lines, order),
        refund: Some(money(&Price { currency: r.currency.clone(), amount_minor: r.refund_minor })),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        id: r.id,
        order_id: r.order_id,
        customer_id: r.customer_id,
        reason: r.reason,
        reject_reason: r.reject_reason,
        restocked: r.restocked,
        refund_id: r.refund_id,
        refund_failure: r.refund_failure,
    }
}

#[tonic::async_trait]
impl ReturnService for ReturnsApi {
    async fn create_return(
        &self,
        request: Request<CreateReturnRequest>,
    ) -> Result<Response<CreateReturnResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let req = request.into_inner();
        let order_id = req.order_id.trim();
        if order_id.is_empty() {
            return Err(Error::invalid(FieldViolation::new("order_id", "is required")).into());
        }
        let order = match self.store.order(order_id).await? {
            Some(order) if order.customer_id == claims.sub || reads_all(&claims) => order,
            _ => return Err(Error::order_not_found(order_id).into()),
        };
        let asked: Vec<(String, i32)> = req.items.iter().map(|i| (i.product_id.clone(), i.quantity)).collect();
        let lines = returns::checked_lines(&asked, &order.lines);
        let reason = returns::checked_reason("reason", &req.reason, false);
        let (lines, reason) = match (lines, reason) {
            (Ok(lines), Ok(reason)) => (lines, reason),
            (lines, reason) => {
                let violations = lines.err().unwrap_or_default().into_iter().chain(reason.err()).collect();
                return Err(Error::InvalidArgument(violations).into());
            }
        };
        if order.status != Status::Confirmed {
            return Err(Error::FailedPrecondition {
                reason: returns::ORDER_NOT_DELIVERED,
                message: format!("order {order_id} is {}: only a delivered order is returned", order.status.as_str()),
            }
            .into());
        }
        let new = NewReturn { id: uuid::Uuid::now_v7().to_string(), lines, reason };
        let created = self.store.create_return(&order, new, &self.policy, now_micros()).await?;
        tracing::info!(return_id = %created.id, %order_id, refund_minor = created.refund_minor, "return requested");
        Ok(Response::new(CreateReturnResponse { r#return: Some(return_to_wire(created, Some(&order))) }))
    }

    async fn get_return(&self, request: Request<GetReturnRequest>) -> Result<Response<GetReturnResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let found = self.visible(&request.into_inner().id, &claims).await?;
        Ok(Response::new(GetReturnResponse { r#return: self.one_to_wire(found).await? }))
    }

    async fn list_returns(
        &self,
        request: Request<ListReturnsRequest>,
    ) -> Result<Response<ListReturnsResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let req = request.into_inner();
        let mut violations = Vec::new();
        // No period: ListReturns takes none.
        let Paging { size, after, .. } = paging(req.page_size, &req.page_token, (None, None), &mut violations);
        let status = status_from_wire(req.status).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let needs = format!("returns needs {ORDERS_ADMIN} or {RETURNS_WRITE}");
        let customer_id = listed_customer(&claims, req.customer_id, reads_all(&claims), &needs)?;
        let query = ReturnQuery {
            customer_id,
            order_id: Some(req.order_id.trim().to_owned()).filter(|o| !o.is_empty()),
            status,
            after,
            limit: size + 1,
        };
        let rows = self.store.returns(&query).await?;
        let (rows, next_page_token) =
            platform::paging::page(rows, size, |last| Cursor { key: last.create_time, id: last.id.clone() }.encode());
        Ok(Response::new(ListReturnsResponse { returns: self.to_wire(rows).await?, next_page_token }))
    }

    async fn approve_return(
        &self,
        request: Request<ApproveReturnRequest>,
    ) -> Result<Response<ApproveReturnResponse>, GrpcStatus> {
        let approved = self.decide(&request.into_inner().id, ReturnStatus::Approved, |_| {}).await?;
        Ok(Response::new(ApproveReturnResponse { r#return: approved }))
    }

    async fn reject_return(
        &self,
        request: Request<RejectReturnRequest>,
    ) -> Result<Response<RejectReturnResponse>, GrpcStatus> {
        let req = request.into_inner();
        let reason = returns::checked_reason("reason", &req.reason, true).map_err(Error::invalid)?;
        let rejected = self.decide(&req.id, ReturnStatus::Rejected, |r| r.reject_reason = reason).await?;
        Ok(Response::new(RejectReturnResponse { r#return: rejected }))
    }

    async fn cancel_return(
        &self,
        request: Request<CancelReturnRequest>,
    ) -> Result<Response<CancelReturnResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        // Only whoever may see it: another customer's return does not exist for them.
        let found = self.visible(&request.into_inner().id, &claims).await?;
        let cancelled = self.decide(&found.id, ReturnStatus::Cancelled, |_| {}).await?;
        Ok(Response::new(CancelReturnResponse { r#return: cancelled }))
    }

    async fn receive_return(
        &self,
        request: Request<ReceiveReturnRequest>,
    ) -> Result<Response<ReceiveReturnResponse>, GrpcStatus> {
        let req = request.into_inner();
        let received = self.refunder.receive(checked_id(&req.id)?, req.restock).await?;
        Ok(Response::new(ReceiveReturnResponse { r#return: self.one_to_wire(received).await? }))
    }
}
