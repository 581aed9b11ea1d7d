//! The gRPC face of discount codes: `mercato.orders.v1.DiscountCodeService`, for staff holding
//! `discounts:write` (the gateway and the server's access layer check the scope the proto declares).

use api::common::Money;
use api::mercato::orders::v1::discount_code_service_server::DiscountCodeService;
use api::mercato::orders::v1::{
    CreateDiscountCodeRequest, CreateDiscountCodeResponse, DiscountCode as WireCode, GetDiscountCodeRequest,
    GetDiscountCodeResponse, ListDiscountCodesRequest, ListDiscountCodesResponse, UpdateDiscountCodeRequest,
    UpdateDiscountCodeResponse,
};
use platform::error::FieldViolation;
use platform::paging::KeyCursor;
use platform::time::{micros, now_micros, timestamp};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::discount::{self, DiscountCode, Draft, Off};
use crate::domain::{self, Price};
use crate::error::Error;
use crate::store::Store;

/// How often an update is tried again when the code changed between its read and its write (a use counted).
const UPDATE_ATTEMPTS: usize = 3;

/// Implements `mercato.orders.v1.DiscountCodeService`.
#[derive(Debug, Clone)]
pub struct DiscountCodesApi {
    store: Store,
}

impl DiscountCodesApi {
    /// The service over the orders store (already migrated).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn existing(&self, raw: &str) -> Result<DiscountCode, Error> {
        let code = discount::normalize_code("code", raw).map_err(Error::invalid)?;
        self.store.discount_code(&code).await?.ok_or_else(|| Error::NotFound(format!("discount code {code} not found")))
    }
}

fn price(money: Option<Money>) -> Option<Price> {
    money.map(|m| Price { currency: m.currency.trim().to_owned(), amount_minor: m.amount_minor })
}

fn wire_price(price: &Price) -> Money {
    Money { currency: price.currency.clone(), amount_minor: price.amount_minor }
}

/// What staff sent, with its times in microseconds (an out-of-range time is named).
fn draft(code: WireCode) -> Result<Draft, Vec<FieldViolation>> {
    let time = |field: &str, t: Option<prost_types::Timestamp>| match t {
        None => Ok(None),
        Some(t) => micros(&t).map(Some).ok_or_else(|| FieldViolation::new(field, "is out of range")),
    };
    let start_time = time("discount_code.start_time", code.start_time);
    let end_time = time("discount_code.end_time", code.end_time);
    match (start_time, end_time) {
        (Ok(start_time), Ok(end_time)) => Ok(Draft {
            code: code.code,
            description: code.description,
            percent_off: code.percent_off,
            amount_off: price(code.amount_off),
            free_shipping: code.free_shipping,
            minimum: price(code.minimum_subtotal),
            start_time,
            end_time,
            max_redemptions: code.max_redemptions,
            once_per_customer: code.once_per_customer,
            disabled: code.disabled,
        }),
        (start, end) => Err(start.err().into_iter().chain(end.err()).collect()),
    }
}

/// A code on the wire.
pub fn code_to_wire(code: DiscountCode) -> WireCode {
    let (percent_off, amount_off) = match &code.off {
        Off::Percent(percent) => (i32::try_from(*percent).unwrap_or(0), None),
        Off::Amount(amount) => (0, Some(wire_price(amount))),
        Off::FreeShipping => (0, None),
    };
    WireCode {
        free_shipping: code.off == Off::FreeShipping,
        percent_off,
        amount_off,
        minimum_subtotal: code.minimum.as_ref().map(wire_price),
        start_time: Some(timestamp(code.start_time)),
        end_time: code.end_time.map(timestamp),
        max_redemptions: i32::try_from(code.max_redemptions).unwrap_or(i32::MAX),
        once_per_customer: code.once_per_customer,
        disabled: code.disabled,
        times_redeemed: i32::try_from(code.times_redeemed).unwrap_or(i32::MAX),
        create_time: Some(timestamp(code.create_time)),
        update_time: Some(timestamp(code.update_time)),
        code: code.code,
        description: code.description,
    }
}

#[tonic::async_trait]
impl DiscountCodeService for DiscountCodesApi {
    async fn create_discount_code(
        &self,
        request: Request<CreateDiscountCodeRequest>,
    ) -> Result<Response<CreateDiscountCodeResponse>, GrpcStatus> {
        let wire = request
            .into_inner()
            .discount_code
            .ok_or_else(|| Error::invalid(FieldViolation::new("discount_code", "is required")))?;
        let code = discount::validate(draft(wire).map_err(Error::InvalidArgument)?, now_micros())
            .map_err(Error::InvalidArgument)?;
        if !self.store.insert_discount_code(&code).await? {
            return Err(Error::AlreadyExists(format!("discount code {} exists", code.code)).into());
        }
        tracing::info!(code = %code.code, "discount code created");
        Ok(Response::new(CreateDiscountCodeResponse { discount_code: Some(code_to_wire(code)) }))
    }

    async fn get_discount_code(
        &self,
        request: Request<GetDiscountCodeRequest>,
    ) -> Result<Response<GetDiscountCodeResponse>, GrpcStatus> {
        let code = self.existing(&request.into_inner().code).await?;
        Ok(Response::new(GetDiscountCodeResponse { discount_code: Some(code_to_wire(code)) }))
    }

    async fn list_discount_codes(
        &self,
        request: Request<ListDiscountCodesRequest>,
    ) -> Result<Response<ListDiscountCodesResponse>, GrpcStatus> {
        let req = request.into_inner();
        let mut violations = Vec::new();
        let size = domain::page_size(req.page_size).unwrap_or_else(|v| {
            violations.push(v);
            domain::DEFAULT_PAGE_SIZE
        });
        let after = KeyCursor::decode(&req.page_token).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let rows = self.store.discount_codes(after.as_ref(), size + 1).await?;
        let (rows, next_page_token) = platform::paging::page(rows, size, |last| {
            KeyCursor { key: last.create_time, id: last.code.clone() }.encode()
        });
        Ok(Response::new(ListDiscountCodesResponse {
            discount_codes: rows.into_iter().map(code_to_wire).collect(),
            next_page_token,
        }))
    }

    async fn update_discount_code(
        &self,
        request: Request<UpdateDiscountCodeRequest>,
    ) -> Result<Response<UpdateDiscountCodeResponse>, GrpcStatus> {
        let req = request.into_inner();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        discount::check_update_mask(&paths).map_err(Error::InvalidArgument)?;
        let draft = draft(req.discount_code.unwrap_or_default()).map_err(Error::InvalidArgument)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.existing(&req.code).await?;
            let next = discount::apply_update(&current, &draft, &paths, now_micros().max(current.update_time + 1))
                .map_err(Error::InvalidArgument)?;
            if self.store.update_discount_code(&next, current.update_time).await? {
                tracing::info!(code = %next.code, ?paths, "discount code updated");
                return Ok(Response::new(UpdateDiscountCodeResponse { discount_code: Some(code_to_wire(next)) }));
            }
        }
        Err(Error::Aborted("the discount code changed while it was updated; try again".to_owned()).into())
    }
}
