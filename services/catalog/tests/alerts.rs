//! Back-in-stock alerts (`StockAlertService`) over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is
//! set) PostgreSQL: who may ask, and the catalog's sweep telling each waiting customer once, whichever way the
//! units came back (a restock, a released hold), with `stock_alert.triggered` as published.

mod harness;

use std::time::Duration;

use api::auth::UserDeleted;
use api::catalog::{
    CreateStockAlertRequest, DeleteStockAlertRequest, ListStockAlertsRequest, StockAlert, StockAlertTriggered,
};
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope};
use prost::Message;
use tonic::{Code, Request, Status};

use harness::*;

impl Server {
    fn waiting_customer(&self, id: &str) -> String {
        self.issuer.token(id, &["cart:write", "alerts:write"], &["customer"])
    }

    async fn ask(&self, token: &str, product_id: &str) -> Result<StockAlert, Status> {
        let request = with_token(CreateStockAlertRequest { product_id: product_id.into() }, token);
        Ok(self.alerts.clone().create_stock_alert(request).await?.into_inner().alert.expect("alert"))
    }

    async fn waiting_for(&self, token: &str) -> Vec<String> {
        let request = with_token(ListStockAlertsRequest {}, token);
        let alerts = self.alerts.clone().list_stock_alerts(request).await.expect("list").into_inner().alerts;
        alerts.into_iter().map(|a| a.product_name).collect()
    }

    async fn withdraw(&self, token: &str, product_id: &str) -> Result<(), Status> {
        let request = with_token(DeleteStockAlertRequest { product_id: product_id.into() }, token);
        self.alerts.clone().delete_stock_alert(request).await?;
        Ok(())
    }

    /// Runs a sweep now (the server's own runs every two seconds); answers how many it told.
    async fn sweep(&self) -> usize {
        catalog::store::Store::new(self.db.clone()).trigger_stock_alerts(100).await.expect("sweep")
    }

    /// The `stock_alert.triggered` events published so far.
    fn told(&self) -> Vec<StockAlertTriggered> {
        self.published_of(catalog::events::STOCK_ALERT_TRIGGERED)
    }

    /// The events once there are `count` (the sweep runs every two seconds; waits up to ten).
    async fn told_at_least(&self, count: usize) -> Vec<StockAlertTriggered> {
        let within = Duration::from_secs(10);
        let told = self.published_at_least(catalog::events::STOCK_ALERT_TRIGGERED, count, within).await;
        assert!(told.len() >= count, "only {told:?} told");
        told
    }
}

async fn customers_hear_once_when_a_product_is_back(db: Db) {
    let server = Server::start(db).await;
    let tea = server.create(product("TEA-1", "Sencha", "tea", 1890)).await;
    let cup = server.create(product("CUP-1", "Cup", "kitchen", 700)).await;
    server.adjust(&cup.id, 3).await.expect("cups in stock");
    let (ada, bob, cat) =
        (server.waiting_customer("ada"), server.waiting_customer("bob"), server.waiting_customer("cat"));

    // Ada waits for the sold-out tea; asking twice is one alert.
    let alert = server.ask(&ada, &tea.id).await.expect("ask");
    assert_eq!((alert.product_id.as_str(), alert.product_name.as_str()), (tea.id.as_str(), "Sencha"));
    server.ask(&ada, &tea.id).await.expect("again: the same alert");
    assert_eq!(server.waiting_for(&ada).await, ["Sencha"]);
    // What can be ordered now, or does not exist, is not waited for; a token without the scope asks nothing.
    let in_stock = server.ask(&ada, &cup.id).await.expect_err("in stock");
    assert_eq!((in_stock.code(), reason(&in_stock)), (Code::FailedPrecondition, "IN_STOCK".to_owned()));
    assert_eq!(server.ask(&ada, "no-such-product").await.expect_err("unknown").code(), Code::NotFound);
    assert_eq!(server.ask(&server.customer(), &tea.id).await.expect_err("scope").code(), Code::PermissionDenied);
    let request = Request::new(CreateStockAlertRequest { product_id: tea.id.clone() });
    assert_eq!(
        server.alerts.clone().create_stock_alert(request).await.expect_err("anonymous").code(),
        Code::Unauthenticated
    );

    // Bob changes his mind; Cat deletes her account. Neither is told.
    server.ask(&bob, &tea.id).await.expect("ask");
    server.withdraw(&bob, &tea.id).await.expect("withdraw");
    assert_eq!(server.withdraw(&bob, &tea.id).await.expect_err("gone").code(), Code::NotFound);
    server.ask(&cat, &tea.id).await.expect("ask");
    let deleted = UserDeleted { user_id: "cat".into(), ..UserDeleted::default() };
    let event = EventEnvelope {
        id: "cat-deleted".into(),
        r#type: "user.deleted".into(),
        subject: "cat".into(),
        data: deleted.encode_to_vec(),
        ..EventEnvelope::default()
    };
    server.bus.publish(event).await.expect("taken");
    assert!(server.waiting_for(&cat).await.is_empty(), "erased with the account");
    assert_eq!(server.sweep().await, 0, "nobody is told while the tea is sold out");
    assert_eq!(server.waiting_for(&ada).await, ["Sencha"]);

    // The tea is restocked: Ada is told, once, with what she needs to order it; her alert is gone.
    server.adjust(&tea.id, 5).await.expect("restock");
    let told = server.told_at_least(1).await;
    assert_eq!(told.len(), 1, "{told:?}");
    let ada_told = &told[0];
    assert_eq!((ada_told.customer_id.as_str(), ada_told.product_id.as_str()), ("ada", tea.id.as_str()));
    assert_eq!((ada_told.name.as_str(), ada_told.sku.as_str(), ada_told.available), ("Sencha", "TEA-1", 5));
    assert_eq!(ada_told.price.as_ref().map(|m| m.amount_minor), Some(1890));
    assert!(server.waiting_for(&ada).await.is_empty());

    // Units freed by a released hold count as much as a restock: the last cup is held, Dan waits, it is released.
    let dan = server.waiting_customer("dan");
    server.reserve("hold-1", &[(&cup.id, 3)]).await.expect("all three held");
    server.ask(&dan, &cup.id).await.expect("none available: Dan may wait");
    assert_eq!(server.sweep().await, 0, "held units are not available");
    server.release("hold-1").await.expect("released");
    let told = server.told_at_least(2).await;
    assert_eq!(
        (told[1].customer_id.as_str(), told[1].product_id.as_str(), told[1].available),
        ("dan", cup.id.as_str(), 3)
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.told().len(), 2, "each told once, whatever later sweeps find");
    server.stop().await;
}

/// Everyone waiting for one product is told, each with the product as it is now (a sweep reads it once for all).
async fn everyone_waiting_for_a_product_is_told(db: Db) {
    let server = Server::start(db).await;
    let tea = server.create(product("TEA-2", "Bancha", "tea", 990)).await;
    for customer in ["ann", "ben", "cy"] {
        server.ask(&server.waiting_customer(customer), &tea.id).await.expect("ask");
    }
    server.adjust(&tea.id, 2).await.expect("restock");
    let told = server.told_at_least(3).await;
    let mut customers: Vec<&str> = told.iter().map(|t| t.customer_id.as_str()).collect();
    customers.sort_unstable();
    assert_eq!(customers, ["ann", "ben", "cy"]);
    for t in &told {
        let price = t.price.as_ref().map(|m| m.amount_minor);
        assert_eq!(
            (t.product_id.as_str(), t.name.as_str(), t.available, price),
            (tea.id.as_str(), "Bancha", 2, Some(990))
        );
    }
    server.stop().await;
}

on_both_engines!(customers_hear_once_when_a_product_is_back, everyone_waiting_for_a_product_is_told);
