//! `mercato.catalog.v1.StockAlertService`: a customer (`alerts:write`) asks to hear when a sold-out product is back,
//! lists and withdraws their alerts. The sweep that tells them runs beside the server ([`crate::sweep_stock_alerts`]).

use api::catalog::stock_alert_service_server::StockAlertService;
use api::catalog::{
    CreateStockAlertRequest, CreateStockAlertResponse, DeleteStockAlertRequest, DeleteStockAlertResponse,
    ListStockAlertsRequest, ListStockAlertsResponse, StockAlert,
};
use platform::auth::caller;
use platform::db::Db;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use super::require;
use crate::store::{AlertRow, Store};

/// Implements `mercato.catalog.v1.StockAlertService`.
#[derive(Debug, Clone)]
pub struct StockAlertsApi {
    store: Store,
}

impl StockAlertsApi {
    /// The service over a migrated database.
    pub fn new(db: Db) -> Self {
        Self { store: Store::new(db) }
    }
}

fn alert_to_wire(row: AlertRow) -> StockAlert {
    StockAlert {
        product_id: row.product_id,
        product_name: row.product_name,
        create_time: Some(timestamp(row.create_time)),
    }
}

#[tonic::async_trait]
impl StockAlertService for StockAlertsApi {
    async fn create_stock_alert(
        &self,
        request: Request<CreateStockAlertRequest>,
    ) -> Result<Response<CreateStockAlertResponse>, Status> {
        let customer = caller(&request)?.sub.clone();
        let product_id = request.into_inner().product_id;
        require("product_id", &product_id)?;
        let row = self.store.create_alert(&customer, &product_id, now_micros()).await?;
        Ok(Response::new(CreateStockAlertResponse { alert: Some(alert_to_wire(row)) }))
    }

    async fn list_stock_alerts(
        &self,
        request: Request<ListStockAlertsRequest>,
    ) -> Result<Response<ListStockAlertsResponse>, Status> {
        let customer = caller(&request)?.sub.clone();
        let rows = self.store.alerts(&customer).await?;
        Ok(Response::new(ListStockAlertsResponse { alerts: rows.into_iter().map(alert_to_wire).collect() }))
    }

    async fn delete_stock_alert(
        &self,
        request: Request<DeleteStockAlertRequest>,
    ) -> Result<Response<DeleteStockAlertResponse>, Status> {
        let customer = caller(&request)?.sub.clone();
        let product_id = request.into_inner().product_id;
        require("product_id", &product_id)?;
        self.store.delete_alert(&customer, &product_id).await?;
        Ok(Response::new(DeleteStockAlertResponse {}))
    }
}
