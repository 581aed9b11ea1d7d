//! Shipping rates: staff manage them (`ShippingRateService`), anyone lists the enabled ones, and checkout charges
//! one. Over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL; the services orders
//! calls are the fakes of `harness/`.

mod harness;

use api::common::Money;
use api::mercato::orders::v1::discount_code_service_client::DiscountCodeServiceClient;
use api::mercato::orders::v1::shipping_rate_service_client::ShippingRateServiceClient;
use api::mercato::orders::v1::{
    Address, CreateDiscountCodeRequest, CreateOrderRequest, CreateShippingRateRequest, DiscountCode,
    GetShippingRateRequest, ListOrdersRequest, ListShippingRatesRequest, Order, OrderStatus, PreviewOrderRequest,
    PreviewOrderResponse, ShippingRate, UpdateShippingRateRequest,
};
use orders::domain::LineInput;
use platform::db::Db;
use tonic::transport::Channel;
use tonic::{Code, Status};

use harness::*;

const WRITE: &str = "shipping:write";

/// A client of the shipping rates acting with `scopes` (none: without a token).
struct Rates {
    inner: ShippingRateServiceClient<Channel>,
    token: Option<String>,
}

impl Rates {
    async fn new(server: &Server, scopes: &[&str]) -> Self {
        let token = Some(server.staff_token(scopes));
        Self { inner: ShippingRateServiceClient::new(connect(&server.url).await), token }
    }

    async fn anonymous(server: &Server) -> Self {
        Self { inner: ShippingRateServiceClient::new(connect(&server.url).await), token: None }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        authorized(self.token.as_deref(), message)
    }

    async fn create(&self, rate: ShippingRate) -> Result<ShippingRate, Status> {
        let request = self.request(CreateShippingRateRequest { shipping_rate: Some(rate) });
        Ok(self.inner.clone().create_shipping_rate(request).await?.into_inner().shipping_rate.expect("rate"))
    }

    async fn get(&self, id: &str) -> Result<ShippingRate, Status> {
        let request = self.request(GetShippingRateRequest { id: id.into() });
        Ok(self.inner.clone().get_shipping_rate(request).await?.into_inner().shipping_rate.expect("rate"))
    }

    async fn list(&self, country: &str, currency: &str, show_disabled: bool) -> Result<Vec<String>, Status> {
        let request = self.request(ListShippingRatesRequest {
            country: country.into(),
            currency: currency.into(),
            show_disabled,
        });
        let rates = self.inner.clone().list_shipping_rates(request).await?.into_inner().shipping_rates;
        Ok(rates.into_iter().map(|r| r.id).collect())
    }

    async fn update(&self, id: &str, values: ShippingRate, paths: &[&str]) -> Result<ShippingRate, Status> {
        let request = self.request(UpdateShippingRateRequest {
            id: id.into(),
            shipping_rate: Some(values),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        });
        Ok(self.inner.clone().update_shipping_rate(request).await?.into_inner().shipping_rate.expect("rate"))
    }
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money { currency: "EUR".into(), amount_minor })
}

fn rate(id: &str, name: &str, countries: &[&str], price: i64) -> ShippingRate {
    ShippingRate {
        id: id.into(),
        name: name.into(),
        countries: countries.iter().map(|c| (*c).to_owned()).collect(),
        price: eur(price),
        ..ShippingRate::default()
    }
}

fn to(country: &str) -> Address {
    Address { country: country.into(), ..address() }
}

fn shipped(items: &[(&str, i32)], key: &str, country: &str, rate_id: &str) -> CreateOrderRequest {
    CreateOrderRequest { shipping_address: Some(to(country)), shipping_rate_id: rate_id.into(), ..order_of(items, key) }
}

fn minor(money: &Option<Money>) -> i64 {
    money.as_ref().map_or(-1, |m| m.amount_minor)
}

/// (subtotal, discount, shipping, total) of an order.
fn amounts(order: &Order) -> (i64, i64, i64, i64) {
    (minor(&order.subtotal), minor(&order.discount), minor(&order.shipping), minor(&order.total))
}

/// (shipping, total, rate id, every option as (id, price)) of a preview.
fn quote(preview: &PreviewOrderResponse) -> (i64, i64, &str, Vec<(&str, i64)>) {
    let options = preview.shipping_options.iter().map(|o| (o.shipping_rate_id.as_str(), minor(&o.price))).collect();
    (minor(&preview.shipping), minor(&preview.total), preview.shipping_rate_id.as_str(), options)
}

/// Creates discount code `code` as staff holding `discounts:write`.
async fn create_code(server: &Server, code: DiscountCode) -> DiscountCode {
    let token = server.staff_token(&["discounts:write"]);
    let request = authorized(Some(&token), CreateDiscountCodeRequest { discount_code: Some(code) });
    let mut codes = DiscountCodeServiceClient::new(connect(&server.url).await);
    codes.create_discount_code(request).await.expect("code").into_inner().discount_code.expect("code")
}

/// The one field violation of a refusal.
fn refusal(status: &Status) -> (String, String) {
    match violations(status).as_slice() {
        [one] => one.clone(),
        other => panic!("not one violation: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn staff_manage_rates_and_anyone_lists_the_enabled_ones(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let staff = Rates::new(&server, &[WRITE]).await;
    let created = staff
        .create(ShippingRate { free_from: eur(5000), ..rate(" Standard ", "Standard (3-5 days)", &["de", "AT"], 490) })
        .await
        .expect("create");
    assert_eq!(
        (created.id.as_str(), created.countries.as_slice()),
        ("standard", ["AT", "DE"].map(String::from).as_slice())
    );
    assert_eq!((minor(&created.price), minor(&created.free_from), created.disabled), (490, 5000, false));
    assert_eq!(staff.get("STANDARD").await.expect("get in any case"), created);
    staff.create(rate("express", "Express", &["DE"], 990)).await.expect("create");
    staff.create(rate("world", "World", &[], 1990)).await.expect("create");
    let dollars = ShippingRate {
        price: Some(Money { currency: "USD".into(), amount_minor: 700 }),
        ..rate("us", "US", &["US"], 0)
    };
    staff.create(dollars).await.expect("create");

    assert_eq!(staff.create(rate("standard", "Again", &[], 1)).await.expect_err("taken").code(), Code::AlreadyExists);
    let wrong = ShippingRate {
        free_from: Some(Money { currency: "USD".into(), amount_minor: 0 }),
        ..rate("x", "", &["Germany"], -5)
    };
    let fields: Vec<String> =
        violations(&staff.create(wrong).await.expect_err("wrong")).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "shipping_rate.id",
            "shipping_rate.name",
            "shipping_rate.countries[0]",
            "shipping_rate.price.amount_minor",
            "shipping_rate.free_from.currency",
            "shipping_rate.free_from.amount_minor"
        ]
    );

    // Anyone lists them, cheapest first, and filters by where and in what they ship.
    let anyone = Rates::anonymous(&server).await;
    assert_eq!(anyone.list("", "", false).await.expect("all"), ["standard", "us", "express", "world"]);
    assert_eq!(anyone.list("de", "EUR", false).await.expect("to DE"), ["standard", "express", "world"]);
    assert_eq!(anyone.list("FR", "", false).await.expect("to FR"), ["world"]);
    let bad = anyone.list("France", "euro", false).await.expect_err("bad filters");
    let fields: Vec<String> = violations(&bad).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["country", "currency"]);

    // A disabled rate is gone for customers, not for staff.
    let off = staff.update("express", ShippingRate { disabled: true, ..ShippingRate::default() }, &["disabled"]).await;
    assert!(off.expect("disable").disabled);
    assert_eq!(anyone.list("DE", "", false).await.expect("to DE"), ["standard", "world"]);
    assert_eq!(anyone.get("express").await.expect_err("disabled").code(), Code::NotFound);
    assert_eq!(anyone.list("", "", true).await.expect_err("not staff").code(), Code::PermissionDenied);
    assert_eq!(staff.list("DE", "", true).await.expect("staff"), ["standard", "express", "world"]);
    assert!(staff.get("express").await.expect("staff see it").disabled);

    // An update changes the fields named and checks the whole rate.
    let moved = staff.update("standard", rate("", "ignored", &["fr", "de"], 590), &["countries", "price"]).await;
    let moved = moved.expect("update");
    assert_eq!(
        (moved.name.as_str(), moved.countries.as_slice()),
        ("Standard (3-5 days)", ["DE", "FR"].map(String::from).as_slice())
    );
    assert_eq!((minor(&moved.price), minor(&moved.free_from)), (590, 5000));
    let usd =
        ShippingRate { price: Some(Money { currency: "USD".into(), amount_minor: 590 }), ..ShippingRate::default() };
    let mixed = staff.update("standard", usd, &["price"]).await.expect_err("currencies");
    assert_eq!(refusal(&mixed).0, "shipping_rate.free_from.currency");
    let fixed = staff.update("standard", rate("other", "", &[], 0), &["id"]).await.expect_err("id");
    assert_eq!(refusal(&fixed).0, "update_mask");
    assert_eq!(
        staff.update("nope", rate("", "N", &[], 0), &["name"]).await.expect_err("unknown").code(),
        Code::NotFound
    );

    // Customers (and staff without the scope) do not change them.
    let customer = Rates::new(&server, &["orders:write"]).await;
    assert_eq!(
        customer.create(rate("mine", "Mine", &[], 0)).await.expect_err("customer").code(),
        Code::PermissionDenied
    );
    let grab = customer.update("standard", rate("", "", &[], 0), &["price"]).await.expect_err("customer");
    assert_eq!(grab.code(), Code::PermissionDenied);
    assert_eq!(anyone.create(rate("mine", "Mine", &[], 0)).await.expect_err("anonymous").code(), Code::Unauthenticated);
    server.stop().await;
}

async fn checkout_charges_the_cheapest_rate_or_the_one_asked_for(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;

    // A shop without rates charges no shipping.
    let free = ada.create(order_of(&[(TEA, 1)], "k0")).await.expect("create");
    assert_eq!((amounts(&free), free.shipping_rate_id.as_str()), ((500, 0, 0, 500), ""));

    let staff = Rates::new(&server, &[WRITE]).await;
    staff
        .create(ShippingRate { free_from: eur(5000), ..rate("standard", "Standard", &["GB", "DE"], 490) })
        .await
        .expect("create");
    staff.create(rate("express", "Express", &["GB"], 990)).await.expect("create");
    staff.create(rate("de-pickup", "Pick-up point", &["DE"], 0)).await.expect("create");
    staff.create(ShippingRate { disabled: true, ..rate("courier", "Courier", &[], 100) }).await.expect("create");

    // The cheapest rate serving the order, charged with the items.
    let order = ada.create(shipped(&[(COFFEE, 2)], "k1", "GB", "")).await.expect("create");
    assert_eq!(status(&order), OrderStatus::Confirmed, "{order:?}");
    assert_eq!(amounts(&order), (2900, 0, 490, 3390));
    assert_eq!((order.shipping_rate_id.as_str(), order.shipping_rate_name.as_str()), ("standard", "Standard"));
    assert_eq!(fake.payments_of(&order.id)[0].amount, 3390, "the payment includes shipping");
    assert_eq!(ada.get(&order.id).await.expect("get"), order, "answered as stored");
    // The one asked for, in any case; free from its threshold; another country's cheapest.
    let express = ada.create(shipped(&[(COFFEE, 2)], "k2", "gb", " EXPRESS ")).await.expect("create");
    assert_eq!((amounts(&express), express.shipping_rate_id.as_str()), ((2900, 0, 990, 3890), "express"));
    let big = ada.create(shipped(&[(COFFEE, 4)], "k3", "GB", "")).await.expect("create");
    assert_eq!((amounts(&big), big.shipping_rate_id.as_str()), ((5800, 0, 0, 5800), "standard"));
    let pickup = ada.create(shipped(&[(TEA, 1)], "k4", "DE", "")).await.expect("create");
    assert_eq!((amounts(&pickup), pickup.shipping_rate_name.as_str()), ((500, 0, 0, 500), "Pick-up point"));

    // Cancelling refunds what was paid, shipping included.
    let cancelled = ada.cancel(&order.id).await.expect("cancel");
    assert_eq!(status(&cancelled), OrderStatus::Cancelled);
    assert_eq!(fake.payments_of(&order.id)[0].refunded, 3390);

    // Each refusal names the field and why, and places nothing: the same key then goes through.
    let placed_before = ada.list(ListOrdersRequest::default()).await.expect("list").0.len();
    let cases = [
        (shipped(&[(TEA, 1)], "r1", "GB", "de-pickup"), ("shipping_rate_id", "does not ship to GB")),
        (shipped(&[(TEA, 1)], "r1", "GB", "courier"), ("shipping_rate_id", "is not offered at the moment")),
        (shipped(&[(TEA, 1)], "r1", "GB", "by-sea"), ("shipping_rate_id", "is not a shipping rate of this shop")),
        (shipped(&[(BOOK, 1)], "r1", "GB", "express"), ("shipping_rate_id", "is for orders in EUR")),
        (
            shipped(&[(TEA, 1)], "r1", "FR", ""),
            ("shipping_address.country", "FR is not a country this shop ships orders in EUR to"),
        ),
        (
            shipped(&[(BOOK, 1)], "r1", "GB", ""),
            ("shipping_address.country", "GB is not a country this shop ships orders in USD to"),
        ),
        (
            shipped(&[(TEA, 1)], "r1", "GB", "a b"),
            ("shipping_rate_id", "must be 2 to 40 lower-case letters, digits or '-'"),
        ),
    ];
    for (request, (field, why)) in cases {
        let refused = ada.create(request).await.expect_err(why);
        assert_eq!(refusal(&refused), (field.to_owned(), why.to_owned()));
    }
    assert_eq!(ada.list(ListOrdersRequest::default()).await.expect("list").0.len(), placed_before, "nothing placed");
    let later = ada.create(shipped(&[(TEA, 1)], "r1", "GB", "")).await.expect("the same key, shipped where served");
    assert_eq!(amounts(&later), (500, 0, 490, 990));

    // Orders keep what they were charged when a rate changes later.
    staff.update("standard", rate("", "Standard", &[], 690), &["price"]).await.expect("update");
    assert_eq!(ada.get(&later.id).await.expect("get"), later);
    let dearer = ada.create(shipped(&[(TEA, 1)], "k5", "GB", "")).await.expect("create");
    assert_eq!(amounts(&dearer), (500, 0, 690, 1190));

    // Free shipping counts what the items cost after a discount code.
    let half = DiscountCode { code: "HALF".into(), percent_off: 50, ..DiscountCode::default() };
    create_code(&server, half).await;
    let halved = CreateOrderRequest { discount_code: "half".into(), ..shipped(&[(COFFEE, 4)], "k6", "GB", "") };
    let halved = ada.create(halved).await.expect("create");
    assert_eq!(amounts(&halved), (5800, 2900, 690, 3590));

    // A free-shipping code takes the shipping off: the discount is what shipping would have cost.
    let free = DiscountCode { code: "FREESHIP".into(), free_shipping: true, ..DiscountCode::default() };
    let made = create_code(&server, free).await;
    assert!(made.free_shipping && made.percent_off == 0 && made.amount_off.is_none(), "{made:?}");
    let express =
        CreateOrderRequest { discount_code: "freeship".into(), ..shipped(&[(TEA, 1)], "k7", "GB", "express") };
    let express = ada.create(express).await.expect("create");
    assert_eq!((amounts(&express), express.shipping_rate_id.as_str()), ((500, 990, 990, 500), "express"));
    assert_eq!(fake.payments_of(&express.id)[0].amount, 500, "the customer pays the items only");
    server.stop().await;
}

async fn a_preview_offers_the_rates_of_the_destination(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Grpc).await;
    let staff = Rates::new(&server, &[WRITE]).await;
    staff
        .create(ShippingRate { free_from: eur(3000), ..rate("standard", "Standard", &["GB", "DE"], 490) })
        .await
        .expect("create");
    staff.create(rate("express", "Express", &["GB"], 990)).await.expect("create");
    let ada = server.client("ada", false).await;
    let items = vec![api::mercato::orders::v1::CreateOrderItem { product_id: COFFEE.into(), quantity: 2 }];

    // Without a destination (no address named, none saved) shipping is not priced yet.
    let unknown = ada.preview(&[(COFFEE, 2)], "").await.expect("preview");
    assert_eq!((unknown.shipping.is_none(), minor(&unknown.total)), (true, 2900));
    assert!(unknown.shipping_options.is_empty() && unknown.shipping_rate_id.is_empty());
    let asked = PreviewOrderRequest {
        items: items.clone(),
        shipping_rate_id: "express".into(),
        ..PreviewOrderRequest::default()
    };
    assert_eq!(refusal(&ada.preview_with(asked).await.expect_err("where to")).0, "shipping_address");

    // With an address: every option, cheapest first, and the cheapest priced.
    let to_gb = PreviewOrderRequest {
        items: items.clone(),
        shipping_address: Some(to("GB")),
        ..PreviewOrderRequest::default()
    };
    let gb = ada.preview_with(to_gb.clone()).await.expect("preview");
    assert_eq!(quote(&gb), (490, 3390, "standard", vec![("standard", 490), ("express", 990)]));
    assert_eq!(gb.shipping_rate_name, "Standard");
    let express = PreviewOrderRequest { shipping_rate_id: "express".into(), ..to_gb.clone() };
    assert_eq!(quote(&ada.preview_with(express).await.expect("preview")).0, 990);
    let far = PreviewOrderRequest { shipping_address: Some(to("JP")), ..to_gb };
    assert_eq!(refusal(&ada.preview_with(far).await.expect_err("not served")).0, "shipping_address.country");

    // The default saved address counts as at checkout, and free shipping shows as free.
    fake.state().addresses.insert("ada".into(), vec![("addr-1".into(), to("DE"), true)]);
    fake.state().carts.insert("ada".into(), vec![LineInput { product_id: COFFEE.into(), quantity: 3 }]);
    let cart = ada.preview(&[], "").await.expect("the cart to the default address");
    assert_eq!(quote(&cart), (0, 4350, "standard", vec![("standard", 0)]));
    let order = ada
        .create(CreateOrderRequest { shipping_address: None, ..order_of(&[(COFFEE, 2)], "p1") })
        .await
        .expect("to the default address");
    assert_eq!(
        (amounts(&order), order.shipping_address.expect("address").country.as_str()),
        ((2900, 0, 490, 3390), "DE")
    );
    assert_eq!((fake.calls(Op::Reserve), fake.calls(Op::Pay)), (1, 1), "previews held nothing");
    server.stop().await;
}

async fn the_demo_ships_with_two_rates_once(db: Db) {
    // Two shipping rates and four countries' tax rates.
    assert_eq!(orders::seed_demo_into(&db).await.expect("seed"), 6);
    assert_eq!(orders::seed_demo_into(&db).await.expect("seed again"), 0, "a shop with rates keeps its own");
    // And who issues its invoices, unless the shop said so itself.
    let store = orders::store::Store::new(db.clone());
    let (issuer, _) = store.invoice_issuer().await.expect("read").expect("the demo's issuer");
    assert_eq!(issuer, orders::invoice::demo_issuer());
    let own = orders::invoice::Issuer { vat_id: String::new(), ..issuer };
    store.set_invoice_issuer(&own, 1).await.expect("set");
    orders::seed_demo_into(&db).await.expect("seed once more");
    assert_eq!(store.invoice_issuer().await.expect("read"), Some((own, 1)), "the shop's own is kept");
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let order = ada.create(order_of(&[(COFFEE, 1)], "d1")).await.expect("create");
    assert_eq!((amounts(&order), order.shipping_rate_id.as_str()), ((1450, 0, 490, 1940), "standard"));
    let listed = Rates::anonymous(&server).await.list("", "", false).await.expect("list");
    assert_eq!(listed, ["standard", "express"]);
    server.stop().await;
}

on_both_engines!(
    the_demo_ships_with_two_rates_once,
    staff_manage_rates_and_anyone_lists_the_enabled_ones,
    checkout_charges_the_cheapest_rate_or_the_one_asked_for,
    a_preview_offers_the_rates_of_the_destination,
);
