//! The gRPC face of shipping rates: `mercato.orders.v1.ShippingRateService`. Anyone reads the enabled rates;
//! changing them, and seeing the disabled ones, needs `shipping:write`.

use api::common::Money;
use api::mercato::orders::v1::shipping_rate_service_server::ShippingRateService;
use api::mercato::orders::v1::{
    CreateShippingRateRequest, CreateShippingRateResponse, GetShippingRateRequest, GetShippingRateResponse,
    ListShippingRatesRequest, ListShippingRatesResponse, ShippingRate as WireRate, UpdateShippingRateRequest,
    UpdateShippingRateResponse,
};
use platform::auth::optional_caller;
use platform::error::FieldViolation;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::domain::Price;
use crate::error::Error;
use crate::shipping::{self, Draft, ShippingRate};
use crate::store::Store;

/// The scope that lets staff manage rates and see the disabled ones.
pub const SHIPPING_WRITE: &str = "shipping:write";
/// How often an update is tried again when another one changed the rate between its read and its write.
const UPDATE_ATTEMPTS: usize = 3;

/// Implements `mercato.orders.v1.ShippingRateService`.
#[derive(Debug, Clone)]
pub struct ShippingRatesApi {
    store: Store,
}

impl ShippingRatesApi {
    /// The service over the orders store (already migrated).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Rate `raw`; a disabled one only for staff (`staff`), else NOT_FOUND as an unknown one.
    async fn existing(&self, raw: &str, staff: bool) -> Result<ShippingRate, Error> {
        let id = shipping::normalize_id("id", raw).map_err(Error::invalid)?;
        match self.store.shipping_rate(&id).await? {
            Some(rate) if staff || !rate.disabled => Ok(rate),
            _ => Err(Error::NotFound(format!("shipping rate {id} not found"))),
        }
    }
}

fn is_staff<T>(request: &Request<T>) -> bool {
    optional_caller(request).is_some_and(|claims| claims.has_scope(SHIPPING_WRITE))
}

fn price(money: Option<Money>) -> Option<Price> {
    money.map(|m| Price { currency: m.currency.trim().to_owned(), amount_minor: m.amount_minor })
}

fn draft(rate: WireRate) -> Draft {
    Draft {
        id: rate.id,
        name: rate.name,
        countries: rate.countries,
        price: price(rate.price),
        free_from: price(rate.free_from),
        disabled: rate.disabled,
    }
}

/// A rate on the wire.
pub fn rate_to_wire(rate: ShippingRate) -> WireRate {
    WireRate {
        free_from: rate
            .free_from_minor
            .map(|amount_minor| Money { currency: rate.price.currency.clone(), amount_minor }),
        price: Some(Money { currency: rate.price.currency, amount_minor: rate.price.amount_minor }),
        id: rate.id,
        name: rate.name,
        countries: rate.countries,
        disabled: rate.disabled,
        create_time: Some(timestamp(rate.create_time)),
        update_time: Some(timestamp(rate.update_time)),
    }
}

#[tonic::async_trait]
impl ShippingRateService for ShippingRatesApi {
    async fn create_shipping_rate(
        &self,
        request: Request<CreateShippingRateRequest>,
    ) -> Result<Response<CreateShippingRateResponse>, GrpcStatus> {
        let wire = request
            .into_inner()
            .shipping_rate
            .ok_or_else(|| Error::invalid(FieldViolation::new("shipping_rate", "is required")))?;
        let rate = shipping::validate(draft(wire), now_micros()).map_err(Error::InvalidArgument)?;
        if !self.store.insert_shipping_rate(&rate).await? {
            return Err(Error::AlreadyExists(format!("shipping rate {} exists", rate.id)).into());
        }
        tracing::info!(rate = %rate.id, "shipping rate created");
        Ok(Response::new(CreateShippingRateResponse { shipping_rate: Some(rate_to_wire(rate)) }))
    }

    async fn get_shipping_rate(
        &self,
        request: Request<GetShippingRateRequest>,
    ) -> Result<Response<GetShippingRateResponse>, GrpcStatus> {
        let staff = is_staff(&request);
        let rate = self.existing(&request.into_inner().id, staff).await?;
        Ok(Response::new(GetShippingRateResponse { shipping_rate: Some(rate_to_wire(rate)) }))
    }

    async fn list_shipping_rates(
        &self,
        request: Request<ListShippingRatesRequest>,
    ) -> Result<Response<ListShippingRatesResponse>, GrpcStatus> {
        let staff = is_staff(&request);
        let req = request.into_inner();
        let country = req.country.trim().to_ascii_uppercase();
        let currency = req.currency.trim().to_owned();
        let mut violations = Vec::new();
        if !country.is_empty() {
            violations.extend(platform::address::check_country("country", &country).err());
        }
        if !currency.is_empty() {
            violations.extend(platform::money::check_currency("currency", &currency).err());
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        if req.show_disabled && !staff {
            return Err(Error::PermissionDenied(format!("showing disabled rates needs {SHIPPING_WRITE}")).into());
        }
        let rates = self
            .store
            .shipping_rates()
            .await?
            .into_iter()
            .filter(|r| req.show_disabled || !r.disabled)
            .filter(|r| country.is_empty() || r.countries.is_empty() || r.countries.contains(&country))
            .filter(|r| currency.is_empty() || r.price.currency == currency)
            .map(rate_to_wire)
            .collect();
        Ok(Response::new(ListShippingRatesResponse { shipping_rates: rates }))
    }

    async fn update_shipping_rate(
        &self,
        request: Request<UpdateShippingRateRequest>,
    ) -> Result<Response<UpdateShippingRateResponse>, GrpcStatus> {
        let req = request.into_inner();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        shipping::check_update_mask(&paths).map_err(Error::InvalidArgument)?;
        let draft = draft(req.shipping_rate.unwrap_or_default());
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.existing(&req.id, true).await?;
            let next = shipping::apply_update(&current, &draft, &paths, now_micros().max(current.update_time + 1))
                .map_err(Error::InvalidArgument)?;
            if self.store.update_shipping_rate(&next, current.update_time).await? {
                tracing::info!(rate = %next.id, ?paths, "shipping rate updated");
                return Ok(Response::new(UpdateShippingRateResponse { shipping_rate: Some(rate_to_wire(next)) }));
            }
        }
        Err(Error::Aborted("the shipping rate changed while it was updated; try again".to_owned()).into())
    }
}
