//! The gRPC face of refunds: wire messages in, caller checks, the use cases, wire messages out.

use api::common::Money;
use api::mercato::refunds::v1::refund_service_server::RefundService;
use api::mercato::refunds::v1::{
    CreateRefundRequest, CreateRefundResponse, GetRefundRequest, GetRefundResponse, ListPaymentRefundsRequest,
    ListPaymentRefundsResponse, ListRefundsRequest, ListRefundsResponse, Refund, RefundStatus,
};
use platform::auth::{Claims, caller};
use platform::error::FieldViolation;
use platform::time::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{self, RefundInput};
use crate::error::Error;
use crate::service::Refunds;
use crate::store::{RefundFilter, RefundRow};

/// The role of service callers (tokens from the client-credentials grant).
pub const ROLE_SERVICE: &str = "service";
/// The scope that lets a caller create and read refunds.
pub const SCOPE_REFUND_WRITE: &str = "refund:write";
/// The metadata key of the idempotency key (the `Idempotency-Key` HTTP header).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Implements `mercato.refunds.v1.RefundService`.
#[derive(Debug, Clone)]
pub struct RefundsApi {
    refunds: Refunds,
}

impl RefundsApi {
    /// The service over its logic.
    pub fn new(refunds: Refunds) -> Self {
        Self { refunds }
    }
}

/// Who reads refunds: staff (`refund:write`) and services read all of them; a customer only the refunds of
/// their own payments.
enum Reader {
    Staff,
    Customer(String),
}

fn reader(claims: &Claims) -> Reader {
    if claims.has_scope(SCOPE_REFUND_WRITE) || claims.roles.iter().any(|r| r == ROLE_SERVICE) {
        Reader::Staff
    } else {
        Reader::Customer(claims.sub.clone())
    }
}

impl RefundsApi {
    /// Refuses a customer who did not make payment `payment_id` with NOT_FOUND, as if it did not exist: other
    /// people's refunds are not even confirmed to be there.
    async fn check_payment_visible(&self, reader: &Reader, payment_id: &str) -> Result<(), Error> {
        match reader {
            Reader::Staff => Ok(()),
            Reader::Customer(customer) if self.refunds.paid_by(payment_id, customer).await? => Ok(()),
            Reader::Customer(_) => Err(Error::NotFound(format!("payment {payment_id} not found"))),
        }
    }
}

fn status_to_wire(status: domain::Status) -> i32 {
    let wire = match status {
        domain::Status::Pending => RefundStatus::Pending,
        domain::Status::Completed => RefundStatus::Completed,
        domain::Status::Failed => RefundStatus::Failed,
    };
    wire as i32
}

/// The state a listing filters by; `None` when unset.
fn status_from_wire(status: i32) -> Result<Option<domain::Status>, FieldViolation> {
    match RefundStatus::try_from(status) {
        Ok(RefundStatus::Unspecified) => Ok(None),
        Ok(RefundStatus::Pending) => Ok(Some(domain::Status::Pending)),
        Ok(RefundStatus::Completed) => Ok(Some(domain::Status::Completed)),
        Ok(RefundStatus::Failed) => Ok(Some(domain::Status::Failed)),
        Err(_) => Err(FieldViolation::new("status", "is not a refund status")),
    }
}

/// The checked filter of a ListRefunds `req` (reading one row more than the page, to tell whether another
/// follows) and the page size, every bad field named at once.
fn list_filter(req: &ListRefundsRequest) -> Result<(RefundFilter, i64), Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let (limit, before) = platform::paging::id_page(req.page_size, &req.page_token).unwrap_or_else(|bad| {
        violations.extend(bad);
        (0, "")
    });
    let status = status_from_wire(req.status).map_err(|bad| violations.push(bad)).ok().flatten();
    let period = platform::time::period(req.start_time.as_ref(), req.end_time.as_ref())
        .map_err(|bad| violations.extend(bad))
        .unwrap_or((i64::MIN, i64::MAX));
    if !violations.is_empty() {
        return Err(violations);
    }
    let before = Some(before.to_owned()).filter(|id| !id.is_empty());
    Ok((RefundFilter { status, before, period, limit: limit + 1 }, limit))
}

fn refund_to_wire(r: RefundRow) -> Refund {
    Refund {
        amount: Some(Money { currency: r.currency, amount_minor: r.amount_minor }),
        status: status_to_wire(r.status),
        id: r.id,
        payment_id: r.payment_id,
        reason: r.reason,
        failure_reason: r.failure_reason,
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
    }
}

#[tonic::async_trait]
impl RefundService for RefundsApi {
    async fn create_refund(
        &self,
        request: Request<CreateRefundRequest>,
    ) -> Result<Response<CreateRefundResponse>, Status> {
        let requester = caller(&request)?.sub.clone();
        let header = match request.metadata().get(IDEMPOTENCY_KEY_HEADER).map(|v| v.to_str().map(str::to_owned)) {
            Some(Ok(value)) => Some(value),
            Some(Err(_)) => return Err(Error::invalid("idempotency_key", "must be visible ASCII").into()),
            None => None,
        };
        let req = request.into_inner();
        let input = RefundInput {
            payment_id: &req.payment_id,
            amount: req.amount.as_ref().map(|m| (m.currency.as_str(), m.amount_minor)),
            reason: &req.reason,
            key_header: header.as_deref(),
            key_field: &req.idempotency_key,
        };
        let (new, key) = domain::validate_refund(&input).map_err(Error::InvalidArgument)?;
        let refund = self.refunds.create(&requester, &new, &key).await?;
        Ok(Response::new(CreateRefundResponse { refund: Some(refund_to_wire(refund)) }))
    }

    async fn get_refund(&self, request: Request<GetRefundRequest>) -> Result<Response<GetRefundResponse>, Status> {
        let reader = reader(caller(&request)?);
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Error::invalid("id", "is required").into());
        }
        let not_found = || Error::NotFound(format!("refund {id} not found"));
        let refund = self.refunds.get(&id).await?.ok_or_else(not_found)?;
        self.check_payment_visible(&reader, &refund.payment_id).await.map_err(|_| not_found())?;
        Ok(Response::new(GetRefundResponse { refund: Some(refund_to_wire(refund)) }))
    }

    async fn list_refunds(
        &self,
        request: Request<ListRefundsRequest>,
    ) -> Result<Response<ListRefundsResponse>, Status> {
        // Only callers with refund:write get here (the method's access rule).
        let (filter, limit) = list_filter(&request.into_inner()).map_err(Error::InvalidArgument)?;
        let rows = self.refunds.list_all(&filter).await?;
        let (rows, next_page_token) = platform::paging::page(rows, limit, |last| last.id.clone());
        Ok(Response::new(ListRefundsResponse {
            refunds: rows.into_iter().map(refund_to_wire).collect(),
            next_page_token,
        }))
    }

    async fn list_payment_refunds(
        &self,
        request: Request<ListPaymentRefundsRequest>,
    ) -> Result<Response<ListPaymentRefundsResponse>, Status> {
        let reader = reader(caller(&request)?);
        let req = request.into_inner();
        if req.payment_id.is_empty() {
            return Err(Error::invalid("payment_id", "is required").into());
        }
        self.check_payment_visible(&reader, &req.payment_id).await?;
        let limit = domain::page_size(req.page_size).map_err(|v| Error::InvalidArgument(vec![v]))?;
        let after = domain::page_token(&req.page_token).map_err(|v| Error::InvalidArgument(vec![v]))?;
        // One more than the page tells whether there is a next page.
        let rows = self.refunds.list(&req.payment_id, after, limit + 1).await?;
        let (rows, next_page_token) = platform::paging::page(rows, limit, |last| last.id.clone());
        Ok(Response::new(ListPaymentRefundsResponse {
            refunds: rows.into_iter().map(refund_to_wire).collect(),
            next_page_token,
        }))
    }
}
