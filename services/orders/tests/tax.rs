//! Tax rates: staff set them by country (`TaxRateService`), anyone reads them, and every order shows the tax its
//! total includes at its destination's rate when placed. Over real gRPC, on SQLite and (when
//! `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL; the services orders calls are the fakes of `harness/`.

mod harness;

use api::common::Money;
use api::mercato::orders::v1::discount_code_service_client::DiscountCodeServiceClient;
use api::mercato::orders::v1::shipping_rate_service_client::ShippingRateServiceClient;
use api::mercato::orders::v1::tax_rate_service_client::TaxRateServiceClient;
use api::mercato::orders::v1::{
    Address, CreateDiscountCodeRequest, CreateOrderRequest, CreateShippingRateRequest, DeleteTaxRateRequest,
    DiscountCode, GetTaxRateRequest, ListTaxRatesRequest, Order, OrderConfirmed, OrderTax, PreviewOrderRequest,
    ReducedTaxRate, SetTaxRateRequest, ShippingRate, TaxRate,
};
use platform::db::Db;
use tonic::transport::Channel;
use tonic::{Code, Status};

use harness::*;

const WRITE: &str = "tax:write";

/// A client of the tax rates acting with `scopes` (none: without a token).
struct Rates {
    inner: TaxRateServiceClient<Channel>,
    token: Option<String>,
}

impl Rates {
    async fn new(server: &Server, scopes: &[&str]) -> Self {
        let token = Some(server.staff_token(scopes));
        Self { inner: TaxRateServiceClient::new(connect(&server.url).await), token }
    }

    async fn anonymous(server: &Server) -> Self {
        Self { inner: TaxRateServiceClient::new(connect(&server.url).await), token: None }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        authorized(self.token.as_deref(), message)
    }

    async fn set(&self, country: &str, name: &str, rate_basis_points: u32) -> Result<TaxRate, Status> {
        self.set_with(country, name, rate_basis_points, None).await
    }

    /// Sets a country's rates: the standard one and, if it has one, the reduced one.
    async fn set_with(
        &self,
        country: &str,
        name: &str,
        rate_basis_points: u32,
        reduced: Option<u32>,
    ) -> Result<TaxRate, Status> {
        let reduced_rate = reduced.map(|rate_basis_points| ReducedTaxRate { rate_basis_points });
        let rate = TaxRate { name: name.into(), rate_basis_points, reduced_rate, ..TaxRate::default() };
        let request = self.request(SetTaxRateRequest { country: country.into(), tax_rate: Some(rate) });
        Ok(self.inner.clone().set_tax_rate(request).await?.into_inner().tax_rate.expect("rate"))
    }

    async fn get(&self, country: &str) -> Result<TaxRate, Status> {
        let request = self.request(GetTaxRateRequest { country: country.into() });
        Ok(self.inner.clone().get_tax_rate(request).await?.into_inner().tax_rate.expect("rate"))
    }

    async fn list(&self) -> Result<Vec<(String, u32)>, Status> {
        let rates = self.inner.clone().list_tax_rates(self.request(ListTaxRatesRequest {})).await?.into_inner();
        Ok(rates.tax_rates.into_iter().map(|r| (r.country, r.rate_basis_points)).collect())
    }

    async fn delete(&self, country: &str) -> Result<(), Status> {
        let request = self.request(DeleteTaxRateRequest { country: country.into() });
        self.inner.clone().delete_tax_rate(request).await.map(|_| ())
    }
}

fn minor(money: &Option<Money>) -> i64 {
    money.as_ref().map_or(-1, |m| m.amount_minor)
}

/// (name, rate, taxable, amount) of each rate an order's total includes, and all the tax.
fn taxes(taxes: &[OrderTax], tax: &Option<Money>) -> (Vec<(String, u32, i64, i64)>, i64) {
    let each = taxes.iter().map(|t| (t.name.clone(), t.rate_basis_points, minor(&t.taxable), minor(&t.amount)));
    (each.collect(), minor(tax))
}

fn of(order: &Order) -> (Vec<(String, u32, i64, i64)>, i64) {
    taxes(&order.taxes, &order.tax)
}

fn tax(name: &str, rate: u32, taxable: i64, amount: i64) -> (String, u32, i64, i64) {
    (name.to_owned(), rate, taxable, amount)
}

fn to(country: &str, items: &[(&str, i32)], key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        shipping_address: Some(Address { country: country.into(), ..address() }),
        ..order_of(items, key)
    }
}

/// Creates a shipping rate of `amount_minor` euro cents to every country, as staff holding `shipping:write`.
async fn ship_everywhere_for(server: &Server, amount_minor: i64) {
    let standard = ShippingRate {
        id: "standard".into(),
        name: "Standard".into(),
        price: Some(Money { currency: "EUR".into(), amount_minor }),
        ..ShippingRate::default()
    };
    let token = server.staff_token(&["shipping:write"]);
    let request = authorized(Some(&token), CreateShippingRateRequest { shipping_rate: Some(standard) });
    let mut rates = ShippingRateServiceClient::new(connect(&server.url).await);
    rates.create_shipping_rate(request).await.expect("rate");
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn staff_set_rates_and_anyone_reads_them(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let staff = Rates::new(&server, &[WRITE]).await;
    let anyone = Rates::anonymous(&server).await;
    assert_eq!(anyone.list().await.expect("none yet"), []);

    let set = staff.set(" de ", " MwSt. ", 1900).await.expect("set");
    assert_eq!((set.country.as_str(), set.name.as_str(), set.rate_basis_points), ("DE", "MwSt.", 1900));
    assert_eq!(set.create_time, set.update_time);
    assert_eq!(anyone.get("de").await.expect("get in any case"), set);
    staff.set("GB", "VAT", 2000).await.expect("set");
    staff.set("AT", "USt.", 2000).await.expect("set");
    assert_eq!(
        anyone.list().await.expect("list"),
        [("AT".to_owned(), 2000), ("DE".to_owned(), 1900), ("GB".to_owned(), 2000)]
    );

    // Setting again replaces the name and rate, and keeps when it was first set.
    let changed = staff.set("DE", "Umsatzsteuer", 1600).await.expect("set again");
    assert_eq!((changed.name.as_str(), changed.rate_basis_points), ("Umsatzsteuer", 1600));
    assert_eq!(changed.create_time, set.create_time);
    let micros = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos)).expect("time");
    assert!(micros(&changed.update_time) > micros(&set.update_time), "{changed:?}");
    assert_eq!(anyone.get("DE").await.expect("get"), changed);

    // A reduced rate for products in the reduced class, set and taken away with the rest.
    let reduced = staff.set_with("AT", "USt.", 2000, Some(1000)).await.expect("reduced");
    assert_eq!(reduced.reduced_rate, Some(ReducedTaxRate { rate_basis_points: 1000 }));
    assert_eq!(anyone.get("AT").await.expect("get").reduced_rate, reduced.reduced_rate);
    assert_eq!(staff.set("AT", "USt.", 2000).await.expect("none").reduced_rate, None);
    assert_eq!(anyone.get("AT").await.expect("get").reduced_rate, None);

    // Each wrong field is named, and nothing changes.
    let wrong = staff.set_with("Germany", "", 10_001, Some(10_001)).await.expect_err("wrong");
    let fields: Vec<String> = violations(&wrong).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        ["country", "tax_rate.name", "tax_rate.rate_basis_points", "tax_rate.reduced_rate.rate_basis_points"]
    );
    let too_high = staff.set("DE", "VAT", 10_001).await.expect_err("over 100%");
    assert_eq!(
        violations(&too_high),
        [("tax_rate.rate_basis_points".to_owned(), "must be at most 10000 (100%); 1900 is 19%".to_owned())]
    );
    assert_eq!(anyone.get("DE").await.expect("unchanged"), changed);
    assert_eq!(violations(&anyone.get("D").await.expect_err("no country"))[0].0, "country");
    assert_eq!(anyone.get("FR").await.expect_err("no rate").code(), Code::NotFound);

    // Removed: gone for everyone; removing again is NOT_FOUND.
    staff.delete("at").await.expect("delete");
    assert_eq!(anyone.get("AT").await.expect_err("gone").code(), Code::NotFound);
    assert_eq!(staff.delete("AT").await.expect_err("again").code(), Code::NotFound);
    assert_eq!(anyone.list().await.expect("list").len(), 2);

    // Customers (and staff without the scope) change nothing; anonymous callers are asked who they are.
    let customer = Rates::new(&server, &["orders:write"]).await;
    assert_eq!(customer.set("DE", "VAT", 0).await.expect_err("customer").code(), Code::PermissionDenied);
    assert_eq!(customer.delete("DE").await.expect_err("customer").code(), Code::PermissionDenied);
    assert_eq!(anyone.set("DE", "VAT", 0).await.expect_err("anonymous").code(), Code::Unauthenticated);
    assert_eq!(anyone.get("DE").await.expect("unchanged"), changed);
    server.stop().await;
}

async fn orders_show_the_tax_their_total_includes(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db, fake.clone(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let staff = Rates::new(&server, &[WRITE]).await;

    // Without a rate for the destination, no tax shows.
    let untaxed = ada.create(to("GB", &[(COFFEE, 2)], "k0")).await.expect("create");
    assert_eq!(of(&untaxed), (vec![], 0));

    // With one: the total is what it was, and shows the tax it includes.
    staff.set("GB", "VAT", 2000).await.expect("set");
    staff.set("DE", "MwSt.", 1900).await.expect("set");
    let order = ada.create(to("gb", &[(COFFEE, 2)], "k1")).await.expect("create");
    assert_eq!(minor(&order.total), 2900, "prices include tax");
    // 2900 × 20 / 120 = 483.33
    assert_eq!(of(&order), (vec![tax("VAT", 2000, 2900, 483)], 483));
    let payment = &fake.payments_of(&order.id)[0];
    assert_eq!((payment.amount, payment.tax), (2900, 483), "the payment is the total, and says its tax");
    assert_eq!(ada.get(&order.id).await.expect("get"), order, "answered as stored");
    // The confirmation carries it to the mail.
    let confirmed: OrderConfirmed = outbox_event(&server.db, &order.id, "order.confirmed").await;
    assert_eq!(confirmed.taxes, order.taxes);
    let confirmed: OrderConfirmed = outbox_event(&server.db, &untaxed.id, "order.confirmed").await;
    assert_eq!(confirmed.taxes, []);

    // Shipping is taxed with the items, after a discount code.
    ship_everywhere_for(&server, 490).await;
    let half = DiscountCode { code: "HALF".into(), percent_off: 50, ..DiscountCode::default() };
    let token = server.staff_token(&["discounts:write"]);
    let request = authorized(Some(&token), CreateDiscountCodeRequest { discount_code: Some(half) });
    DiscountCodeServiceClient::new(connect(&server.url).await).create_discount_code(request).await.expect("code");
    let shipped = CreateOrderRequest { discount_code: "half".into(), ..to("DE", &[(COFFEE, 2)], "k2") };
    let shipped = ada.create(shipped).await.expect("create");
    // 2900 - 1450 + 490 = 1940; × 19 / 119 = 309.75
    assert_eq!(minor(&shipped.total), 1940);
    assert_eq!(of(&shipped), (vec![tax("MwSt.", 1900, 1940, 310)], 310));

    // A preview shows it once the destination is known, as the order would.
    let items = vec![api::mercato::orders::v1::CreateOrderItem { product_id: COFFEE.into(), quantity: 2 }];
    let unknown = ada.preview(&[(COFFEE, 2)], "half").await.expect("preview");
    assert_eq!((unknown.taxes.is_empty(), unknown.tax.is_none()), (true, true));
    let to_de = PreviewOrderRequest {
        items,
        discount_code: "half".into(),
        shipping_address: Some(Address { country: "DE".into(), ..address() }),
        ..PreviewOrderRequest::default()
    };
    let preview = ada.preview_with(to_de.clone()).await.expect("preview");
    assert_eq!(taxes(&preview.taxes, &preview.tax), of(&shipped));
    let to_fr = PreviewOrderRequest { shipping_address: Some(Address { country: "FR".into(), ..address() }), ..to_de };
    let preview = ada.preview_with(to_fr).await.expect("preview");
    assert_eq!(taxes(&preview.taxes, &preview.tax), (vec![], 0), "known: no rate, no tax");

    // Orders keep the rate they were placed with; later ones take the new one, or none once it is removed.
    staff.set("GB", "VAT", 1750).await.expect("lower");
    assert_eq!(ada.get(&order.id).await.expect("get"), order);
    let later = ada.create(to("GB", &[(TEA, 1)], "k3")).await.expect("create");
    // 500 + 490 shipping = 990; × 17.5 / 117.5 = 147.45
    assert_eq!(of(&later), (vec![tax("VAT", 1750, 990, 147)], 147));
    staff.delete("GB").await.expect("delete");
    let after = ada.create(to("GB", &[(TEA, 1)], "k4")).await.expect("create");
    assert_eq!(of(&after), (vec![], 0));
    assert_eq!(ada.get(&later.id).await.expect("get"), later);
    server.stop().await;
}

async fn reduced_products_are_taxed_at_the_reduced_rate(db: Db) {
    let fake = Fake::new();
    fake.reduce_tax(TEA);
    let server = Server::start(db, fake.clone(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let staff = Rates::new(&server, &[WRITE]).await;
    staff.set_with("DE", "MwSt.", 1900, Some(700)).await.expect("set");
    staff.set("GB", "VAT", 2000).await.expect("set");

    // Tea (reduced) 2 × 5.00 and coffee (standard) 14.50: each part at its rate.
    let mixed = ada.create(to("DE", &[(TEA, 2), (COFFEE, 1)], "k1")).await.expect("create");
    // 1450 × 19 / 119 = 231.51; 1000 × 7 / 107 = 65.42
    assert_eq!(of(&mixed), (vec![tax("MwSt.", 1900, 1450, 232), tax("MwSt.", 700, 1000, 65)], 297));

    // Shipping is shared out as the items are: 29.40 charged, 14.50 : 10.00 of the items.
    ship_everywhere_for(&server, 490).await;
    let shipped = ada.create(to("DE", &[(TEA, 2), (COFFEE, 1)], "k2")).await.expect("create");
    // 2940 × 1000 / 2450 = 1200 at 7% (78.50 → 79); the rest, 1740, at 19% (277.82)
    assert_eq!(of(&shipped), (vec![tax("MwSt.", 1900, 1740, 278), tax("MwSt.", 700, 1200, 79)], 357));
    // Only reduced products: one part, at the reduced rate.
    let tea = ada.create(to("DE", &[(TEA, 1)], "k3")).await.expect("create");
    assert_eq!(of(&tea), (vec![tax("MwSt.", 700, 990, 65)], 65));
    // A country without a reduced rate taxes them at its standard rate.
    let to_gb = ada.create(to("GB", &[(TEA, 1)], "k4")).await.expect("create");
    assert_eq!(of(&to_gb), (vec![tax("VAT", 2000, 990, 165)], 165));
    assert_eq!(ada.get(&shipped.id).await.expect("get"), shipped, "answered as stored");
    let confirmed: OrderConfirmed = outbox_event(&server.db, &shipped.id, "order.confirmed").await;
    assert_eq!(confirmed.taxes, shipped.taxes);
    server.stop().await;
}

on_both_engines!(
    staff_set_rates_and_anyone_reads_them,
    orders_show_the_tax_their_total_includes,
    reduced_products_are_taxed_at_the_reduced_rate,
);
