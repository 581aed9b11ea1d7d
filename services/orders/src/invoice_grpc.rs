//! The gRPC face of invoices and credit notes: `mercato.orders.v1.InvoiceService`. Customers read their own;
//! staff holding `orders:admin` (support) or `ledger:read` (finance) read every one. Who issues them is set by
//! staff holding `tax:write` and read by anyone.

use std::collections::HashMap;

use api::google::api::HttpBody;
use api::mercato::options::v1::HttpBodyHeaders;
use api::mercato::orders::v1::invoice_service_server::InvoiceService;
use api::mercato::orders::v1::{
    GetInvoiceDocumentRequest, GetInvoiceIssuerRequest, GetInvoiceIssuerResponse, GetInvoiceRequest,
    GetInvoiceResponse, Invoice as WireInvoice, InvoiceIssuer as WireIssuer, InvoiceKind, ListInvoicesRequest,
    ListInvoicesResponse, SetInvoiceIssuerRequest, SetInvoiceIssuerResponse,
};
use platform::auth::{Claims, caller};
use platform::error::FieldViolation;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::domain::{Cursor, Price};
use crate::error::Error;
use crate::grpc::{
    ORDERS_ADMIN, Paging, address_from_wire, address_to_wire, lines_to_wire, listed_customer, money, paging, tax_of,
    taxes_to_wire,
};
use crate::invoice::{self, Invoice, Issuer, Kind};
use crate::invoice_document;
use crate::invoice_store::InvoiceQuery;
use crate::store::{Order, Store};

/// The finance role's scope to read the books, invoices included.
pub const LEDGER_READ: &str = "ledger:read";

/// Implements `mercato.orders.v1.InvoiceService`.
#[derive(Debug, Clone)]
pub struct InvoicesApi {
    store: Store,
}

impl InvoicesApi {
    /// The service over the orders store (already migrated).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The document numbered `number` (as typed: trimmed, in any case) if `claims` may read it: their own, or
    /// any for staff who read every one. Another customer's does not exist for them.
    async fn visible(&self, number: &str, claims: &Claims) -> Result<Invoice, Error> {
        let number = number.trim().to_ascii_uppercase();
        if number.is_empty() {
            return Err(Error::invalid(FieldViolation::new("number", "is required, e.g. INV-2026-000001")));
        }
        match self.store.invoice(&number).await? {
            Some(invoice) if invoice.customer_id == claims.sub || reads_all(claims) => Ok(invoice),
            _ => Err(Error::NotFound(format!("no invoice or credit note {number}"))),
        }
    }

    /// The invoices on the wire, each with what it shares with its order.
    async fn to_wire(&self, invoices: Vec<Invoice>) -> Result<Vec<WireInvoice>, Error> {
        let mut ids: Vec<&str> = invoices.iter().map(|i| i.order_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let orders: HashMap<String, Order> =
            self.store.orders(&ids).await?.into_iter().map(|o| (o.id.clone(), o)).collect();
        Ok(invoices
            .into_iter()
            .map(|invoice| {
                let order = orders.get(&invoice.order_id);
                invoice_to_wire(invoice, order)
            })
            .collect())
    }
}

/// Whether `claims` may read every customer's documents.
fn reads_all(claims: &Claims) -> bool {
    claims.has_scope(ORDERS_ADMIN) || claims.has_scope(LEDGER_READ)
}

/// An issuer on the wire, with when it was set (None on a document: it names the issuer as it was then).
fn issuer_to_wire(issuer: &Issuer, update_time: Option<i64>) -> WireIssuer {
    WireIssuer {
        address: Some(address_to_wire(&issuer.address)),
        vat_id: issuer.vat_id.clone(),
        update_time: update_time.map(timestamp),
    }
}

fn not_set() -> Error {
    Error::NotFound("the shop has not said who issues its invoices".to_owned())
}

fn kind_to_wire(kind: Kind) -> InvoiceKind {
    match kind {
        Kind::Invoice => InvoiceKind::Invoice,
        Kind::CreditNote => InvoiceKind::CreditNote,
    }
}

fn kind_from_wire(kind: i32) -> Result<Option<Kind>, FieldViolation> {
    match InvoiceKind::try_from(kind) {
        Ok(InvoiceKind::Unspecified) => Ok(None),
        Ok(InvoiceKind::Invoice) => Ok(Some(Kind::Invoice)),
        Ok(InvoiceKind::CreditNote) => Ok(Some(Kind::CreditNote)),
        Err(_) => Err(FieldViolation::new("kind", "is not an invoice kind")),
    }
}

/// A document on the wire; an invoice shows its order's items and charges, a credit note only what it gave back.
/// (Its order is always there: the table's foreign key keeps it.)
fn invoice_to_wire(invoice: Invoice, order: Option<&Order>) -> WireInvoice {
    let charged = order.filter(|_| invoice.kind == Kind::Invoice);
    WireInvoice {
        kind: kind_to_wire(invoice.kind) as i32,
        payment_id: order.map(|o| o.payment_id.clone()).unwrap_or_default(),
        billing_address: order.map(|o| address_to_wire(&o.address)),
        items: charged.map(|o| lines_to_wire(&o.lines, &invoice.currency)).unwrap_or_default(),
        subtotal: charged.map(|o| money(&o.subtotal())),
        discount: charged.map(|o| money(&o.discount())),
        shipping: charged.map(|o| money(&o.shipping())),
        total: Some(money(&Price { currency: invoice.currency.clone(), amount_minor: invoice.total_minor })),
        taxes: taxes_to_wire(&invoice.currency, invoice.tax.as_ref()),
        tax: Some(money(&tax_of(&invoice.currency, invoice.tax.as_ref()))),
        issue_time: Some(timestamp(invoice.issue_time)),
        issuer: invoice.issuer.as_ref().map(|issuer| issuer_to_wire(issuer, None)),
        number: invoice.number,
        order_id: invoice.order_id,
        customer_id: invoice.customer_id,
        corrected_invoice: invoice.corrected_invoice,
        refund_id: invoice.refund_id,
    }
}

#[tonic::async_trait]
impl InvoiceService for InvoicesApi {
    async fn get_invoice(
        &self,
        request: Request<GetInvoiceRequest>,
    ) -> Result<Response<GetInvoiceResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let invoice = self.visible(&request.into_inner().number, &claims).await?;
        let invoice = self.to_wire(vec![invoice]).await?.pop();
        Ok(Response::new(GetInvoiceResponse { invoice }))
    }

    async fn get_invoice_document(
        &self,
        request: Request<GetInvoiceDocumentRequest>,
    ) -> Result<Response<HttpBody>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let req = request.into_inner();
        let language = invoice_document::language("language", &req.language).map_err(Error::invalid)?;
        let invoice = self.visible(&req.number, &claims).await?;
        let order = self
            .store
            .order(&invoice.order_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("the order of {} is gone", invoice.number)))?;
        let page = invoice_document::render(&invoice, &order, language)?;
        // A document never changes, but only its customer and staff may read it: private caches only.
        let headers = HttpBodyHeaders {
            cache_control: "private, max-age=86400".to_owned(),
            etag: platform::media::etag(&format!("{}-{language}", invoice.number)),
            content_disposition: format!("inline; filename=\"{}.html\"", invoice.number),
        };
        let body = platform::media::http_body("text/html; charset=utf-8".to_owned(), page.into_bytes(), &headers);
        Ok(Response::new(body))
    }

    async fn get_invoice_issuer(
        &self,
        _request: Request<GetInvoiceIssuerRequest>,
    ) -> Result<Response<GetInvoiceIssuerResponse>, GrpcStatus> {
        let (issuer, update_time) = self.store.invoice_issuer().await?.ok_or_else(not_set)?;
        Ok(Response::new(GetInvoiceIssuerResponse { invoice_issuer: Some(issuer_to_wire(&issuer, Some(update_time))) }))
    }

    async fn set_invoice_issuer(
        &self,
        request: Request<SetInvoiceIssuerRequest>,
    ) -> Result<Response<SetInvoiceIssuerResponse>, GrpcStatus> {
        let wire = request.into_inner().invoice_issuer.unwrap_or_default();
        let address = platform::address::validate("invoice_issuer.address", wire.address);
        let vat_id = invoice::normalize_vat_id("invoice_issuer.vat_id", &wire.vat_id);
        let issuer = match (address, vat_id) {
            (Ok(address), Ok(vat_id)) => Issuer { address: address_from_wire(address), vat_id },
            (address, vat_id) => {
                let violations = address.err().unwrap_or_default().into_iter().chain(vat_id.err()).collect();
                return Err(Error::InvalidArgument(violations).into());
            }
        };
        let (issuer, update_time) = self.store.set_invoice_issuer(&issuer, now_micros()).await?;
        Ok(Response::new(SetInvoiceIssuerResponse { invoice_issuer: Some(issuer_to_wire(&issuer, Some(update_time))) }))
    }

    async fn list_invoices(
        &self,
        request: Request<ListInvoicesRequest>,
    ) -> Result<Response<ListInvoicesResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let req = request.into_inner();
        let mut violations = Vec::new();
        let Paging { size, after, period } =
            paging(req.page_size, &req.page_token, (req.start_time.as_ref(), req.end_time.as_ref()), &mut violations);
        let kind = kind_from_wire(req.kind).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let needs = format!("invoices needs {ORDERS_ADMIN} or {LEDGER_READ}");
        let customer_id = listed_customer(&claims, req.customer_id, reads_all(&claims), &needs)?;
        let query = InvoiceQuery {
            customer_id,
            order_id: Some(req.order_id).filter(|o| !o.is_empty()),
            kind,
            after,
            period,
            limit: size + 1,
        };
        let rows = self.store.invoices(&query).await?;
        let (rows, next_page_token) = platform::paging::page(rows, size, |last| {
            Cursor { key: last.issue_time, id: last.number.clone() }.encode()
        });
        Ok(Response::new(ListInvoicesResponse { invoices: self.to_wire(rows).await?, next_page_token }))
    }
}
