//! Invoices and credit notes (`InvoiceService`): every confirmed order gets an invoice, every refund of one a
//! credit note with its share of the tax, each kind numbered without gaps per year; customers read their own,
//! the finance and support staff every one. Over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is
//! set) PostgreSQL; the payments' `payment.refunded` events are published on the service's in-process bus as the
//! payments service's relay would.

mod harness;

use api::common::Money;
use api::mercato::orders::v1::invoice_service_client::InvoiceServiceClient;
use api::mercato::orders::v1::tax_rate_service_client::TaxRateServiceClient;
use api::mercato::orders::v1::{
    Address, CreateOrderRequest, GetInvoiceDocumentRequest, GetInvoiceIssuerRequest, GetInvoiceRequest, Invoice,
    InvoiceIssuer, InvoiceKind, ListInvoicesRequest, OrderConfirmed, OrderStatus, ReducedTaxRate,
    SetInvoiceIssuerRequest, SetTaxRateRequest, TaxRate,
};
use platform::db::Db;
use tonic::transport::Channel;
use tonic::{Code, Status};

use harness::*;

/// A client of the invoices acting as `who` with `scopes` (no token when `who` is empty).
struct Invoices {
    inner: InvoiceServiceClient<Channel>,
    token: Option<String>,
}

impl Invoices {
    async fn new(server: &Server, who: &str, scopes: &[&str]) -> Self {
        let token = (!who.is_empty())
            .then(|| format!("Bearer {}", server.issuer.sign(&server.issuer.claims(who, scopes, &["customer"]))));
        Self { inner: InvoiceServiceClient::new(connect(&server.url).await), token }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        authorized(self.token.as_deref(), message)
    }

    async fn get(&self, number: &str) -> Result<Invoice, Status> {
        let request = self.request(GetInvoiceRequest { number: number.into() });
        Ok(self.inner.clone().get_invoice(request).await?.into_inner().invoice.expect("invoice"))
    }

    async fn list(&self, request: ListInvoicesRequest) -> Result<(Vec<Invoice>, String), Status> {
        let page = self.inner.clone().list_invoices(self.request(request)).await?.into_inner();
        Ok((page.invoices, page.next_page_token))
    }

    /// The document's page in `language`: its content type, its `Content-Disposition` and its text.
    async fn document(&self, number: &str, language: &str) -> Result<(String, String, String), Status> {
        let request = self.request(GetInvoiceDocumentRequest { number: number.into(), language: language.into() });
        let body = self.inner.clone().get_invoice_document(request).await?.into_inner();
        let disposition = platform::media::http_body_headers(&body).content_disposition;
        Ok((body.content_type, disposition, String::from_utf8(body.data).expect("UTF-8")))
    }

    async fn issuer(&self) -> Result<InvoiceIssuer, Status> {
        let request = self.request(GetInvoiceIssuerRequest {});
        Ok(self.inner.clone().get_invoice_issuer(request).await?.into_inner().invoice_issuer.expect("issuer"))
    }

    async fn set_issuer(&self, issuer: InvoiceIssuer) -> Result<InvoiceIssuer, Status> {
        let request = self.request(SetInvoiceIssuerRequest { invoice_issuer: Some(issuer) });
        Ok(self.inner.clone().set_invoice_issuer(request).await?.into_inner().invoice_issuer.expect("issuer"))
    }

    /// The numbers of every document listed with `request`, page by page.
    async fn numbers(&self, request: ListInvoicesRequest) -> Result<Vec<String>, Status> {
        let mut numbers = Vec::new();
        let mut page_token = String::new();
        loop {
            let (page, next) = self.list(ListInvoicesRequest { page_token, ..request.clone() }).await?;
            numbers.extend(page.into_iter().map(|i| i.number));
            if next.is_empty() {
                return Ok(numbers);
            }
            page_token = next;
        }
    }
}

/// The year of today's series.
fn year() -> i64 {
    platform::time::date_of_micros(platform::time::now_micros()).0
}

fn invoice_no(n: u32) -> String {
    format!("INV-{}-{n:06}", year())
}

fn credit_note_no(n: u32) -> String {
    format!("CN-{}-{n:06}", year())
}

fn minor(money: &Option<Money>) -> i64 {
    money.as_ref().map_or(-1, |m| m.amount_minor)
}

/// (rate, taxable, amount) of each rate a document's total includes, and all its tax.
fn taxes(invoice: &Invoice) -> (Vec<(u32, i64, i64)>, i64) {
    let each = invoice.taxes.iter().map(|t| (t.rate_basis_points, minor(&t.taxable), minor(&t.amount)));
    (each.collect(), minor(&invoice.tax))
}

fn to_germany(items: &[(&str, i32)], key: &str) -> CreateOrderRequest {
    CreateOrderRequest { shipping_address: Some(Address { country: "DE".into(), ..address() }), ..order_of(items, key) }
}

/// Sets Germany's VAT (19%, 7% reduced) as staff holding `tax:write`.
async fn tax_germany(server: &Server) {
    let rate = TaxRate {
        name: "MwSt.".into(),
        rate_basis_points: 1900,
        reduced_rate: Some(ReducedTaxRate { rate_basis_points: 700 }),
        ..TaxRate::default()
    };
    let token = server.staff_token(&["tax:write"]);
    let request = authorized(Some(&token), SetTaxRateRequest { country: "DE".into(), tax_rate: Some(rate) });
    TaxRateServiceClient::new(connect(&server.url).await).set_tax_rate(request).await.expect("rate");
}

/// A shop selling to Germany (tea in the reduced class), and Ada, a customer who reads her invoices.
async fn german_shop(db: Db) -> (Server, Client, Invoices) {
    let fake = Fake::new();
    fake.reduce_tax(TEA);
    let server = Server::start(db, fake, Wiring::Direct).await;
    tax_germany(&server).await;
    let ada = server.client("ada", false).await;
    let ada_reads = Invoices::new(&server, "ada", &["orders:read"]).await;
    (server, ada, ada_reads)
}

/// Publishes the `payment.refunded` event of refund `refund_id` of `amount_minor` of an order's payment.
async fn refund(server: &Server, order_id: &str, payment_id: &str, refund_id: &str, amount_minor: i64) {
    publish_refunded(server, order_id, payment_id, refund_id, amount_minor, amount_minor).await;
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn confirmed_orders_are_invoiced_in_order(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let bob = server.client("bob", false).await;
    let ada_reads = Invoices::new(&server, "ada", &["orders:read"]).await;
    let bob_reads = Invoices::new(&server, "bob", &["orders:read"]).await;
    let finance = Invoices::new(&server, "fin", &["orders:read", "ledger:read"]).await;

    let first = ada.create(order_of(&[(COFFEE, 2), (TEA, 1)], "a1")).await.expect("create");
    let mut declined = order_of(&[(TEA, 1)], "a2");
    declined.payment_method = DECLINED.into();
    let failed = ada.create(declined).await.expect("create");
    assert_eq!(status(&failed), OrderStatus::Failed);
    let second = bob.create(order_of(&[(TEA, 1)], "b1")).await.expect("create");
    let third = ada.create(order_of(&[(COFFEE, 1)], "a3")).await.expect("create");

    // Each confirmed order's invoice, numbered in the order they were confirmed; the failed one has none.
    let invoice = ada_reads.get(&invoice_no(1)).await.expect("ada's first invoice");
    assert_eq!(
        (invoice.kind(), invoice.order_id.as_str(), invoice.customer_id.as_str(), invoice.payment_id.as_str()),
        (InvoiceKind::Invoice, first.id.as_str(), "ada", first.payment_id.as_str())
    );
    assert_eq!(invoice.items, first.items, "the order's items");
    assert_eq!(
        (&invoice.subtotal, &invoice.discount, &invoice.shipping, &invoice.total),
        (&first.subtotal, &first.discount, &first.shipping, &first.total)
    );
    assert_eq!(invoice.billing_address, first.shipping_address);
    assert_eq!(taxes(&invoice), (vec![], 0), "no rate for its country: no tax");
    assert_eq!((invoice.corrected_invoice.as_str(), invoice.refund_id.as_str()), ("", ""));
    assert_eq!(ada_reads.get(&invoice_no(1).to_lowercase()).await.expect("any case"), invoice);
    assert_eq!(bob_reads.get(&invoice_no(2)).await.expect("bob's").order_id, second.id);
    assert_eq!(ada_reads.get(&invoice_no(3)).await.expect("ada's second").order_id, third.id);
    // The confirmation carries the number to the mail.
    let confirmed: OrderConfirmed = outbox_event(&server.db, &third.id, "order.confirmed").await;
    assert_eq!(confirmed.invoice_number, invoice_no(3));
    // Asked again (a saga resumed after a crash between the invoice and the move): the same invoice.
    let store = orders::store::Store::new(server.db.clone());
    assert_eq!(store.issue_invoice(&third.id, platform::time::now_micros()).await.expect("again"), invoice_no(3));
    assert_eq!(finance.get(&invoice_no(4)).await.expect_err("no fourth taken").code(), Code::NotFound);

    // Customers read only their own: another's is not there for them, and they list only theirs.
    assert_eq!(bob_reads.get(&invoice_no(1)).await.expect_err("ada's").code(), Code::NotFound);
    assert_eq!(ada_reads.numbers(ListInvoicesRequest::default()).await.expect("list"), [invoice_no(3), invoice_no(1)]);
    let others = ListInvoicesRequest { customer_id: "ada".into(), ..ListInvoicesRequest::default() };
    assert_eq!(bob_reads.list(others.clone()).await.expect_err("ada's").code(), Code::PermissionDenied);

    // The finance staff read and list every one, a page at a time, by customer or by order.
    assert_eq!(finance.get(&invoice_no(1)).await.expect("any"), invoice);
    let all = ListInvoicesRequest { page_size: 2, ..ListInvoicesRequest::default() };
    let (page, next) = finance.list(all.clone()).await.expect("list");
    assert_eq!((page.len(), next.is_empty()), (2, false));
    assert_eq!(finance.numbers(all).await.expect("all"), [invoice_no(3), invoice_no(2), invoice_no(1)]);
    assert_eq!(finance.numbers(others).await.expect("ada's"), [invoice_no(3), invoice_no(1)]);
    let of_second = ListInvoicesRequest { order_id: second.id.clone(), ..ListInvoicesRequest::default() };
    assert_eq!(finance.numbers(of_second).await.expect("by order"), [invoice_no(2)]);
    let of_failed = ListInvoicesRequest { order_id: failed.id.clone(), ..ListInvoicesRequest::default() };
    assert_eq!(finance.numbers(of_failed).await.expect("by order"), Vec::<String>::new());
    let notes = ListInvoicesRequest { kind: InvoiceKind::CreditNote as i32, ..ListInvoicesRequest::default() };
    assert_eq!(finance.numbers(notes).await.expect("none yet"), Vec::<String>::new());
    let support = Invoices::new(&server, "sup", &["orders:read", "orders:admin"]).await;
    assert_eq!(support.get(&invoice_no(2)).await.expect("any").customer_id, "bob");

    // Wrong input is named, field by field.
    let wrong = ListInvoicesRequest { page_size: -1, page_token: "nonsense".into(), kind: 9, ..Default::default() };
    let fields: Vec<String> =
        violations(&finance.list(wrong).await.expect_err("wrong")).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["page_size", "page_token", "kind"]);
    assert_eq!(violations(&finance.get(" ").await.expect_err("no number"))[0].0, "number");
    // Without orders:read (a service's token, say) nothing is read.
    let writer = Invoices::new(&server, "ada", &["orders:write"]).await;
    assert_eq!(writer.get(&invoice_no(1)).await.expect_err("scope").code(), Code::PermissionDenied);
    server.stop().await;
}

async fn refunds_get_credit_notes_with_their_share_of_the_tax(db: Db) {
    let (server, ada, ada_reads) = german_shop(db).await;

    // Tea (reduced) 2 × 5.00 and coffee (standard) 14.50: 24.50, of which 2.32 at 19% and 0.65 at 7%.
    let order = ada.create(to_germany(&[(TEA, 2), (COFFEE, 1)], "k1")).await.expect("create");
    let invoice = ada_reads.get(&invoice_no(1)).await.expect("invoice");
    assert_eq!(taxes(&invoice), (vec![(1900, 1450, 232), (700, 1000, 65)], 297));
    assert_eq!((invoice.taxes.clone(), invoice.tax.clone()), (order.taxes.clone(), order.tax.clone()));

    // Staff give back 10.00: its credit note corrects the invoice, with its share of each part of the tax:
    // all of it 2.97 × 10 / 24.50 = 1.21 (as the payments' ledger books it); 7%: 0.65 × 10 / 24.50 = 0.27 of
    // 10.00 × 10 / 24.50 = 4.08; 19%: the rest.
    refund(&server, &order.id, &order.payment_id, "refund-1", 1000).await;
    let note = ada_reads.get(&credit_note_no(1)).await.expect("credit note");
    assert_eq!(
        (note.kind(), note.order_id.as_str(), note.corrected_invoice.clone(), note.refund_id.as_str()),
        (InvoiceKind::CreditNote, order.id.as_str(), invoice_no(1), "refund-1")
    );
    assert_eq!(minor(&note.total), 1000);
    assert_eq!(taxes(&note), (vec![(1900, 592, 94), (700, 408, 27)], 121));
    assert_eq!((note.items.len(), note.subtotal.is_none(), note.shipping.is_none()), (0, true, true));
    assert_eq!(note.billing_address, order.shipping_address);

    // Redelivered: nothing new. The refund of the rest gets the next number, and the two notes together give
    // back all the tax the invoice included: 2.97 × 14.50 / 24.50 = 1.76.
    refund(&server, &order.id, &order.payment_id, "refund-1", 1000).await;
    refund(&server, &order.id, &order.payment_id, "refund-rest", 1450).await;
    let rest = ada_reads.get(&credit_note_no(2)).await.expect("second credit note");
    assert_eq!((minor(&rest.total), rest.refund_id.as_str()), (1450, "refund-rest"));
    assert_eq!(taxes(&rest), (vec![(1900, 858, 138), (700, 592, 38)], 176));
    assert_eq!(taxes(&rest).1 + taxes(&note).1, 297);

    // A refund of a payment that is not an invoiced order's (a failed checkout's compensation, or another
    // payment) gets no credit note.
    let mut declined = to_germany(&[(TEA, 1)], "k2");
    declined.payment_method = DECLINED.into();
    let failed = ada.create(declined).await.expect("create");
    refund(&server, &failed.id, "pay-of-a-failed-checkout", "refund-2", 500).await;
    refund(&server, &order.id, "pay-elsewhere", "refund-3", 500).await;
    let notes = ListInvoicesRequest { kind: InvoiceKind::CreditNote as i32, ..ListInvoicesRequest::default() };
    assert_eq!(ada_reads.numbers(notes).await.expect("list"), [credit_note_no(2), credit_note_no(1)]);
    assert_eq!(status(&ada.get(&order.id).await.expect("get")), OrderStatus::Confirmed, "refunds cancel nothing");
    assert_eq!(ada_reads.get(&invoice_no(1)).await.expect("unchanged"), invoice);
    server.stop().await;
}

async fn concurrent_checkouts_take_numbers_without_gaps(db: Db) {
    let fake = Fake::new();
    fake.add_product("p-pen", "Pen", "EUR", 200, 100);
    let server = Server::start(db, fake, Wiring::Direct).await;
    let finance = Invoices::new(&server, "fin", &["orders:read", "ledger:read"]).await;
    let mut checkouts = tokio::task::JoinSet::new();
    for n in 0..12 {
        let client = server.client(&format!("customer-{n}"), false).await;
        checkouts.spawn(async move { client.create(order_of(&[("p-pen", 1)], "k")).await.expect("create") });
    }
    let mut confirmed = Vec::new();
    while let Some(order) = checkouts.join_next().await {
        let order = order.expect("joined");
        assert_eq!(status(&order), OrderStatus::Confirmed);
        confirmed.push(order.id);
    }

    // One number each, none skipped, listed latest first: a later number is never issued earlier.
    let (listed, _) = finance.list(ListInvoicesRequest { page_size: 100, ..Default::default() }).await.expect("list");
    let numbers: Vec<String> = listed.iter().map(|i| i.number.clone()).collect();
    assert_eq!(numbers, (1..=12).rev().map(invoice_no).collect::<Vec<_>>());
    let times: Vec<_> = listed.iter().map(|i| i.issue_time.map(|t| (t.seconds, t.nanos))).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let mut invoiced: Vec<String> = listed.into_iter().map(|i| i.order_id).collect();
    invoiced.sort_unstable();
    confirmed.sort_unstable();
    assert_eq!(invoiced, confirmed, "an invoice for each order");
    server.stop().await;
}

async fn every_document_names_its_issuer_as_set_then(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let staff = Invoices::new(&server, "fin", &["orders:read", "ledger:read", "tax:write"]).await;
    let anyone = Invoices::new(&server, "", &[]).await;
    assert_eq!(anyone.issuer().await.expect_err("not set yet").code(), Code::NotFound);
    let before = ada.create(order_of(&[(TEA, 1)], "k1")).await.expect("create");
    assert_eq!(staff.get(&invoice_no(1)).await.expect("invoice").issuer, None, "not set when it was issued");

    // Staff set it: the VAT id in one spelling, the address checked as every address.
    let shop = Address {
        name: "Mercato GmbH".into(),
        line1: "Hauptstr. 1".into(),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "de".into(),
        ..Address::default()
    };
    let set = staff
        .set_issuer(InvoiceIssuer {
            address: Some(shop.clone()),
            vat_id: "de 123 456 789".into(),
            ..Default::default()
        })
        .await
        .expect("set");
    assert_eq!((set.vat_id.as_str(), set.address.as_ref().map(|a| a.country.as_str())), ("DE123456789", Some("DE")));
    assert!(set.update_time.is_some());
    assert_eq!(anyone.issuer().await.expect("anyone reads it"), set);

    // The next order's invoice and a credit note name it; the earlier invoice does not change.
    let after = ada.create(order_of(&[(TEA, 1)], "k2")).await.expect("create");
    let invoice = staff.get(&invoice_no(2)).await.expect("invoice");
    assert_eq!(invoice.order_id, after.id);
    let named = InvoiceIssuer { update_time: None, ..set.clone() };
    assert_eq!(invoice.issuer.as_ref(), Some(&named));
    refund(&server, &before.id, &before.payment_id, "refund-1", 100).await;
    assert_eq!(staff.get(&credit_note_no(1)).await.expect("credit note").issuer.as_ref(), Some(&named));
    assert_eq!(staff.get(&invoice_no(1)).await.expect("invoice").issuer, None);

    // Set again: later documents name the new one, earlier ones keep theirs.
    let moved = Address { line1: "Neue Str. 2".into(), ..shop.clone() };
    staff.set_issuer(InvoiceIssuer { address: Some(moved), ..Default::default() }).await.expect("set again");
    ada.create(order_of(&[(TEA, 1)], "k3")).await.expect("create");
    let latest = staff.get(&invoice_no(3)).await.expect("invoice").issuer.expect("issuer");
    assert_eq!((latest.address.expect("address").line1.as_str(), latest.vat_id.as_str()), ("Neue Str. 2", ""));
    assert_eq!(staff.get(&invoice_no(2)).await.expect("invoice").issuer, Some(named));

    // Wrong fields are named and nothing changes; only staff holding tax:write set it.
    let wrong = InvoiceIssuer {
        address: Some(Address { name: " ".into(), city: String::new(), ..shop.clone() }),
        vat_id: "123".into(),
        ..Default::default()
    };
    let fields: Vec<String> =
        violations(&staff.set_issuer(wrong).await.expect_err("wrong")).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["invoice_issuer.address.name", "invoice_issuer.address.city", "invoice_issuer.vat_id"]);
    let missing = staff.set_issuer(InvoiceIssuer::default()).await.expect_err("no address");
    assert_eq!(violations(&missing)[0].0, "invoice_issuer.address");
    let customer = Invoices::new(&server, "ada", &["orders:read", "orders:write"]).await;
    let again = InvoiceIssuer { address: Some(shop), ..Default::default() };
    assert_eq!(customer.set_issuer(again.clone()).await.expect_err("customer").code(), Code::PermissionDenied);
    assert_eq!(anyone.set_issuer(again).await.expect_err("anonymous").code(), Code::Unauthenticated);
    let unchanged = anyone.issuer().await.expect("get").address.expect("address");
    assert_eq!(unchanged.line1, "Neue Str. 2");
    server.stop().await;
}

async fn the_audit_finds_invoices_amiss(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let first = ada.create(order_of(&[(TEA, 1)], "k1")).await.expect("create");
    let second = ada.create(order_of(&[(TEA, 1)], "k2")).await.expect("create");
    ada.create(order_of(&[(TEA, 1)], "k3")).await.expect("create");
    refund(&server, &first.id, &first.payment_id, "refund-1", 200).await;
    let audit = || orders::audit(&server.db, std::time::Duration::from_secs(3600));
    assert_eq!(audit().await.expect("audit"), Vec::<String>::new(), "all is well");

    // An invoice gone (its order has none, its series a gap); a credit note giving back more than was charged.
    let db = &server.db;
    let tamper = |sql: String| async move {
        platform::with_db!(db, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|_| ()))
            .expect("tamper");
    };
    tamper(format!("DELETE FROM invoices WHERE number = '{}'", invoice_no(2))).await;
    tamper(format!("UPDATE invoices SET total_minor = 600 WHERE number = '{}'", credit_note_no(1))).await;
    assert_eq!(
        audit().await.expect("audit"),
        [
            format!("order {} was confirmed without an invoice", second.id),
            format!("invoice series INV-{} has 2 documents numbered up to 3 but took 3 numbers", year()),
            format!("invoice {} charged 500 EUR but its credit notes give back 600", invoice_no(1)),
        ]
    );
    server.stop().await;
}

async fn documents_print_as_pages_in_the_customers_language(db: Db) {
    let (server, ada, ada_reads) = german_shop(db).await;
    let shop = Address {
        name: "Müller & Söhne GmbH".into(),
        line1: "Hauptstr. 1".into(),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "DE".into(),
        ..Address::default()
    };
    let staff = Invoices::new(&server, "fin", &["orders:read", "tax:write"]).await;
    let issuer = InvoiceIssuer { address: Some(shop), vat_id: "DE123456789".into(), ..Default::default() };
    staff.set_issuer(issuer).await.expect("issuer");
    let mut request = to_germany(&[(TEA, 2), (COFFEE, 1)], "k1");
    request.shipping_address.as_mut().expect("address").name = "Ada <script>".into();
    let order = ada.create(request).await.expect("create");
    refund(&server, &order.id, &order.payment_id, "refund-1", 1000).await;

    let (content_type, disposition, page) = ada_reads.document(&invoice_no(1), "").await.expect("page");
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert_eq!(disposition, format!("inline; filename=\"{}.html\"", invoice_no(1)));
    let (year, month, day) = platform::time::date_of_micros(platform::time::now_micros());
    for expected in [
        "<h1>Invoice</h1>".to_owned(),
        format!("Number: {}", invoice_no(1)),
        format!("Date: {year:04}-{month:02}-{day:02}"),
        format!("Order: {}", order.id),
        "<strong>Müller &amp; Söhne GmbH</strong>".to_owned(),
        "VAT ID: DE123456789".to_owned(),
        "Ada &lt;script&gt;".to_owned(),
        "<td>Tea</td><td>SKU-p-tea</td><td class=\"amount\">2</td><td class=\"amount\">EUR 5.00</td><td class=\"amount\">EUR 10.00</td>".to_owned(),
        "Subtotal</td><td class=\"amount\">EUR 24.50".to_owned(),
        "Total</td><td class=\"amount\">EUR 24.50".to_owned(),
        "Includes MwSt. 19% of EUR 14.50</td><td class=\"amount\">EUR 2.32".to_owned(),
        "Includes MwSt. 7% of EUR 10.00</td><td class=\"amount\">EUR 0.65".to_owned(),
    ] {
        assert!(page.contains(&expected), "{expected:?} not in {page}");
    }
    assert!(!page.contains("<script>"), "escaped: {page}");

    // In German; a credit note shows what it gave back and the invoice it corrects.
    let (_, _, german) = ada_reads.document(&invoice_no(1).to_lowercase(), "de-AT").await.expect("page");
    assert!(
        german.contains("<h1>Rechnung</h1>") && german.contains("Darin enthalten MwSt. 7% auf EUR 10.00"),
        "{german}"
    );
    let (_, _, note) = ada_reads.document(&credit_note_no(1), "en").await.expect("page");
    for expected in [
        "<h1>Credit note</h1>".to_owned(),
        format!("Corrects invoice: {}", invoice_no(1)),
        "Amount credited</td><td class=\"amount\">EUR 10.00".to_owned(),
        "Includes MwSt. 7% of EUR 4.08</td><td class=\"amount\">EUR 0.27".to_owned(),
    ] {
        assert!(note.contains(&expected), "{expected:?} not in {note}");
    }
    assert!(!note.contains("<td>Tea</td>"), "a credit note lists no items: {note}");

    // Another customer's is not there for them; a language the shop does not write is named.
    let bob_reads = Invoices::new(&server, "bob", &["orders:read"]).await;
    assert_eq!(bob_reads.document(&invoice_no(1), "").await.expect_err("ada's").code(), Code::NotFound);
    let french = ada_reads.document(&invoice_no(1), "fr").await.expect_err("french");
    assert_eq!(violations(&french), [("language".to_owned(), "must be one of en, de".to_owned())]);
    server.stop().await;
}

on_both_engines!(
    documents_print_as_pages_in_the_customers_language,
    the_audit_finds_invoices_amiss,
    confirmed_orders_are_invoiced_in_order,
    every_document_names_its_issuer_as_set_then,
    refunds_get_credit_notes_with_their_share_of_the_tax,
    concurrent_checkouts_take_numbers_without_gaps,
);
