//! The gRPC face of payments: wire messages in, caller checks, the use cases, wire messages out.

use api::common::Money;
use api::mercato::payments::v1::payment_service_server::PaymentService;
use api::mercato::payments::v1::{
    CreatePaymentRequest, CreatePaymentResponse, GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest,
    ListPaymentsResponse, Payment, PaymentStatus, RefundPaymentRequest, RefundPaymentResponse,
};
use platform::auth::{Claims, caller};
use platform::error::FieldViolation;
use platform::time::timestamp;
use tonic::{Request, Response, Status};

use crate::domain::{self, PaymentInput};
use crate::error::Error;
use crate::service::{Payments, RefundRequest};
use crate::store::{PaymentFilter, PaymentRow};

/// The role of service callers (tokens from the client-credentials grant).
pub const ROLE_SERVICE: &str = "service";
/// The metadata key of the idempotency key (the `Idempotency-Key` HTTP header).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Implements `mercato.payments.v1.PaymentService`.
#[derive(Debug, Clone)]
pub struct PaymentsApi {
    payments: Payments,
}

impl PaymentsApi {
    /// The service over its logic.
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }
}

fn is_service(claims: &Claims) -> bool {
    claims.roles.iter().any(|r| r == ROLE_SERVICE)
}

/// The scopes of staff who read every payment: those who act on every order (`orders:admin`: fulfilment,
/// support) or give money back (`refund:write`: finance); administrators hold both. Scopes decide, not roles.
const READ_EVERY_PAYMENT: &[&str] = &["orders:admin", "refund:write"];

/// Whether `claims` may read payments other customers made.
fn reads_every_payment(claims: &Claims) -> bool {
    is_service(claims) || READ_EVERY_PAYMENT.iter().any(|scope| claims.has_scope(scope))
}

/// The customer a CreatePayment charges: services name one in `customer_id`; anyone else is the customer,
/// and naming somebody else is PERMISSION_DENIED.
fn customer_of(claims: &Claims, customer_id: &str) -> Result<String, Error> {
    if is_service(claims) {
        if customer_id.is_empty() {
            return Err(Error::invalid("customer_id", "is required when a service creates a payment"));
        }
        return Ok(customer_id.to_owned());
    }
    if !customer_id.is_empty() && customer_id != claims.sub {
        return Err(Error::PermissionDenied("only services may create payments for another customer".to_owned()));
    }
    Ok(claims.sub.clone())
}

fn status_to_wire(status: domain::Status) -> i32 {
    let wire = match status {
        domain::Status::Captured => PaymentStatus::Captured,
        domain::Status::Failed => PaymentStatus::Failed,
        domain::Status::PartiallyRefunded => PaymentStatus::PartiallyRefunded,
        domain::Status::Refunded => PaymentStatus::Refunded,
    };
    wire as i32
}

/// The state a listing filters by; `None` when unset.
fn status_from_wire(status: i32) -> Result<Option<domain::Status>, FieldViolation> {
    match PaymentStatus::try_from(status) {
        Ok(PaymentStatus::Unspecified) => Ok(None),
        Ok(PaymentStatus::Captured) => Ok(Some(domain::Status::Captured)),
        Ok(PaymentStatus::Failed) => Ok(Some(domain::Status::Failed)),
        Ok(PaymentStatus::PartiallyRefunded) => Ok(Some(domain::Status::PartiallyRefunded)),
        Ok(PaymentStatus::Refunded) => Ok(Some(domain::Status::Refunded)),
        Err(_) => Err(FieldViolation::new("status", "is not a payment status")),
    }
}

/// The checked filter of a ListPayments `req` (reading one row more than the page, to tell whether another
/// follows) and the page size, every bad field named at once. Whose payments the caller may list is checked
/// apart.
fn list_filter(req: &ListPaymentsRequest) -> Result<(PaymentFilter, i64), Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let (limit, after) = platform::paging::id_page(req.page_size, &req.page_token).unwrap_or_else(|bad| {
        violations.extend(bad);
        (0, "")
    });
    let mut optional_id = |field: &str, id: &str| {
        if id.is_empty() {
            return None;
        }
        platform::error::check_id(field, id).map_err(|bad| violations.push(bad)).ok()?;
        Some(id.to_owned())
    };
    let customer_id = optional_id("customer_id", &req.customer_id);
    let order_id = optional_id("order_id", &req.order_id);
    let status = status_from_wire(req.status).map_err(|bad| violations.push(bad)).ok().flatten();
    let period = platform::time::period(req.start_time.as_ref(), req.end_time.as_ref())
        .map_err(|bad| violations.extend(bad))
        .unwrap_or((i64::MIN, i64::MAX));
    if !violations.is_empty() {
        return Err(violations);
    }
    let after = Some(after.to_owned()).filter(|id| !id.is_empty());
    Ok((PaymentFilter { customer_id, order_id, status, after, period, limit: limit + 1 }, limit))
}

fn payment_to_wire(p: PaymentRow) -> Payment {
    Payment {
        amount: Some(Money { currency: p.currency.clone(), amount_minor: p.amount_minor }),
        tax: Some(Money { currency: p.currency.clone(), amount_minor: p.tax_minor }),
        refunded_amount: Some(Money { currency: p.currency, amount_minor: p.refunded_minor }),
        status: status_to_wire(p.status),
        id: p.id,
        order_id: p.order_id,
        customer_id: p.customer_id,
        payment_method: p.payment_method,
        failure_reason: p.failure_reason,
        failure_code: p.failure_code,
        processor_reference: p.processor_reference,
        create_time: Some(timestamp(p.create_time)),
        update_time: Some(timestamp(p.update_time)),
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentsApi {
    async fn create_payment(
        &self,
        request: Request<CreatePaymentRequest>,
    ) -> Result<Response<CreatePaymentResponse>, Status> {
        let claims = caller(&request)?.clone();
        let header = request.metadata().get(IDEMPOTENCY_KEY_HEADER).map(|v| v.to_str().map(str::to_owned));
        let header = match header {
            Some(Ok(value)) => Some(value),
            Some(Err(_)) => return Err(Error::invalid("idempotency_key", "must be visible ASCII").into()),
            None => None,
        };
        let req = request.into_inner();
        let customer = customer_of(&claims, &req.customer_id)?;
        let input = PaymentInput {
            order_id: &req.order_id,
            amount: req.amount.as_ref().map(|m| (m.currency.as_str(), m.amount_minor)),
            payment_method: &req.payment_method,
            tax: req.tax.as_ref().map(|m| (m.currency.as_str(), m.amount_minor)),
            key_header: header.as_deref(),
            key_field: &req.idempotency_key,
        };
        let (new, key) = domain::validate_payment(&input, &customer).map_err(Error::InvalidArgument)?;
        let payment = self.payments.create(&new, &key).await?;
        Ok(Response::new(CreatePaymentResponse { payment: Some(payment_to_wire(payment)) }))
    }

    async fn get_payment(&self, request: Request<GetPaymentRequest>) -> Result<Response<GetPaymentResponse>, Status> {
        let claims = caller(&request)?.clone();
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Error::invalid("id", "is required").into());
        }
        let payment = self
            .payments
            .get(&id)
            .await?
            // Someone else's payment is NOT_FOUND, as an unknown one: its existence is not revealed.
            .filter(|p| reads_every_payment(&claims) || p.customer_id == claims.sub)
            .ok_or_else(|| Error::payment_not_found(&id))?;
        Ok(Response::new(GetPaymentResponse { payment: Some(payment_to_wire(payment)) }))
    }

    async fn list_payments(
        &self,
        request: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        let claims = caller(&request)?.clone();
        let (mut filter, page_size) = list_filter(request.get_ref()).map_err(Error::InvalidArgument)?;
        match &filter.customer_id {
            _ if reads_every_payment(&claims) => {}
            None => filter.customer_id = Some(claims.sub.clone()),
            Some(customer) if *customer == claims.sub => {}
            Some(_) => {
                let needs = READ_EVERY_PAYMENT.join(" or ");
                return Err(
                    Error::PermissionDenied(format!("listing another customer's payments needs {needs}")).into()
                );
            }
        }
        let rows = self.payments.list(&filter).await?;
        let (rows, next_page_token) = platform::paging::page(rows, page_size, |last| last.id.clone());
        Ok(Response::new(ListPaymentsResponse {
            payments: rows.into_iter().map(payment_to_wire).collect(),
            next_page_token,
        }))
    }

    async fn refund_payment(
        &self,
        request: Request<RefundPaymentRequest>,
    ) -> Result<Response<RefundPaymentResponse>, Status> {
        let req = request.into_inner();
        let amount = req.amount.as_ref().map(|m| (m.currency.as_str(), m.amount_minor));
        let amount = domain::validate_refund(&req.payment_id, &req.refund_id, amount, req.rest)
            .map_err(Error::InvalidArgument)?;
        let refund = RefundRequest { payment_id: req.payment_id, refund_id: req.refund_id, amount, reason: req.reason };
        let refunded = self.payments.refund(&refund).await?;
        let given_back = Money { currency: refunded.payment.currency.clone(), amount_minor: refunded.amount_minor };
        Ok(Response::new(RefundPaymentResponse {
            payment: Some(payment_to_wire(refunded.payment)),
            processor_reference: refunded.processor_reference,
            refunded: Some(given_back),
        }))
    }
}
