//! The gRPC face of tax rates: `mercato.orders.v1.TaxRateService`. Anyone reads them; setting and removing
//! them needs `tax:write`.

use api::mercato::orders::v1::tax_rate_service_server::TaxRateService;
use api::mercato::orders::v1::{
    DeleteTaxRateRequest, DeleteTaxRateResponse, GetTaxRateRequest, GetTaxRateResponse, ListTaxRatesRequest,
    ListTaxRatesResponse, ReducedTaxRate, SetTaxRateRequest, SetTaxRateResponse, TaxRate as WireRate,
};
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::error::Error;
use crate::store::Store;
use crate::tax::{self, TaxRate};

/// Implements `mercato.orders.v1.TaxRateService`.
#[derive(Debug, Clone)]
pub struct TaxRatesApi {
    store: Store,
}

impl TaxRatesApi {
    /// The service over the orders store (already migrated).
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn not_found(country: &str) -> Error {
    Error::NotFound(format!("{country} has no tax rate"))
}

/// A rate on the wire.
pub fn rate_to_wire(rate: TaxRate) -> WireRate {
    WireRate {
        country: rate.country,
        name: rate.name,
        rate_basis_points: rate.rate_basis_points,
        reduced_rate: rate.reduced_rate_basis_points.map(|rate_basis_points| ReducedTaxRate { rate_basis_points }),
        create_time: Some(timestamp(rate.create_time)),
        update_time: Some(timestamp(rate.update_time)),
    }
}

#[tonic::async_trait]
impl TaxRateService for TaxRatesApi {
    async fn set_tax_rate(
        &self,
        request: Request<SetTaxRateRequest>,
    ) -> Result<Response<SetTaxRateResponse>, GrpcStatus> {
        let req = request.into_inner();
        let wire = req.tax_rate.unwrap_or_default();
        let now = now_micros();
        // A new rate is first set now; replacing one keeps its create_time (the store's upsert).
        let draft = tax::Draft {
            country: req.country,
            name: wire.name,
            rate_basis_points: wire.rate_basis_points,
            reduced_rate_basis_points: wire.reduced_rate.map(|r| r.rate_basis_points),
        };
        let rate = tax::validate(draft, now, now).map_err(Error::InvalidArgument)?;
        let stored = self.store.set_tax_rate(&rate).await?;
        tracing::info!(country = %stored.country, rate = stored.rate_basis_points, "tax rate set");
        Ok(Response::new(SetTaxRateResponse { tax_rate: Some(rate_to_wire(stored)) }))
    }

    async fn get_tax_rate(
        &self,
        request: Request<GetTaxRateRequest>,
    ) -> Result<Response<GetTaxRateResponse>, GrpcStatus> {
        let country = tax::normalize_country("country", &request.into_inner().country).map_err(Error::invalid)?;
        let rate = self.store.tax_rate(&country).await?.ok_or_else(|| not_found(&country))?;
        Ok(Response::new(GetTaxRateResponse { tax_rate: Some(rate_to_wire(rate)) }))
    }

    async fn list_tax_rates(
        &self,
        _request: Request<ListTaxRatesRequest>,
    ) -> Result<Response<ListTaxRatesResponse>, GrpcStatus> {
        let rates = self.store.tax_rates().await?.into_iter().map(rate_to_wire).collect();
        Ok(Response::new(ListTaxRatesResponse { tax_rates: rates }))
    }

    async fn delete_tax_rate(
        &self,
        request: Request<DeleteTaxRateRequest>,
    ) -> Result<Response<DeleteTaxRateResponse>, GrpcStatus> {
        let country = tax::normalize_country("country", &request.into_inner().country).map_err(Error::invalid)?;
        if !self.store.delete_tax_rate(&country).await? {
            return Err(not_found(&country).into());
        }
        tracing::info!(%country, "tax rate removed");
        Ok(Response::new(DeleteTaxRateResponse {}))
    }
}
