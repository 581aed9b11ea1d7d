//! The gRPC face of analytics: wire messages in, domain rules and store, wire messages out. Who may call
//! what (`analytics:read`, `analytics:admin`) is declared in the proto and enforced by the platform's
//! access layer before a request gets here.

use api::common::Money;
use api::mercato::analytics::v1::analytics_service_server::AnalyticsService;
use api::mercato::analytics::v1::{
    CurrencySales, CurrencySummary, DiscountCodeSales, GetDiscountCodeReportRequest, GetDiscountCodeReportResponse,
    GetSalesReportRequest, GetSalesReportResponse, GetSummaryRequest, GetSummaryResponse, GetTopProductsRequest,
    GetTopProductsResponse, ProductRanking, RebuildAggregatesRequest, RebuildAggregatesResponse, SalesBucket,
    SalesInterval, TopProduct,
};
use platform::db::Db;
use platform::error::FieldViolation;
use platform::time::now_micros;
use tonic::{Request, Response, Status};

use crate::domain::{self, Interval, Period, Ranking, SalesFigures};
use crate::error::Error;
use crate::events;
use crate::store::Store;

/// Implements `mercato.analytics.v1.AnalyticsService`.
#[derive(Debug, Clone)]
pub struct AnalyticsApi {
    store: Store,
}

impl AnalyticsApi {
    /// The service over a migrated database.
    pub fn new(db: Db) -> Self {
        Self { store: Store::new(db) }
    }
}

fn money(currency: &str, amount_minor: i64) -> Option<Money> {
    Some(Money { currency: currency.to_owned(), amount_minor })
}

fn sales_to_wire(currency: &str, figures: &SalesFigures) -> CurrencySales {
    CurrencySales {
        currency: currency.to_owned(),
        orders: figures.orders,
        gross: money(currency, figures.gross_minor),
        refunded: money(currency, figures.total_refunded()),
        net: money(currency, figures.net()),
        cancelled_orders: figures.cancelled_orders,
        cancelled: money(currency, figures.cancelled_minor),
        refunds: figures.refunds,
        captured: money(currency, figures.captured_minor),
        discounted_orders: figures.discounted_orders,
        discount: money(currency, figures.discount_minor),
        shipping: money(currency, figures.shipping_minor),
        tax: money(currency, figures.tax_minor),
    }
}

fn summary_to_wire(currency: &str, figures: &SalesFigures) -> CurrencySummary {
    CurrencySummary {
        currency: currency.to_owned(),
        orders: figures.orders,
        gross: money(currency, figures.gross_minor),
        refunded: money(currency, figures.total_refunded()),
        net: money(currency, figures.net()),
        cancelled_orders: figures.cancelled_orders,
        cancelled: money(currency, figures.cancelled_minor),
        refunds: figures.refunds,
        average_order_value: money(currency, figures.average_order_value()),
        refund_rate_bps: figures.refund_rate_bps(),
        refund_count_rate_bps: figures.refund_count_rate_bps(),
        captured: money(currency, figures.captured_minor),
        discounted_orders: figures.discounted_orders,
        discount: money(currency, figures.discount_minor),
        shipping: money(currency, figures.shipping_minor),
        tax: money(currency, figures.tax_minor),
    }
}

fn interval_from_wire(value: i32) -> Result<Interval, FieldViolation> {
    match SalesInterval::try_from(value) {
        Ok(SalesInterval::Unspecified | SalesInterval::Day) => Ok(Interval::Day),
        Ok(SalesInterval::Week) => Ok(Interval::Week),
        Ok(SalesInterval::Month) => Ok(Interval::Month),
        Err(_) => Err(FieldViolation::new(
            "interval",
            "must be SALES_INTERVAL_DAY, SALES_INTERVAL_WEEK or SALES_INTERVAL_MONTH",
        )),
    }
}

fn interval_to_wire(interval: Interval) -> SalesInterval {
    match interval {
        Interval::Day => SalesInterval::Day,
        Interval::Week => SalesInterval::Week,
        Interval::Month => SalesInterval::Month,
    }
}

fn ranking_from_wire(value: i32) -> Result<Ranking, FieldViolation> {
    match ProductRanking::try_from(value) {
        Ok(ProductRanking::Unspecified | ProductRanking::Units) => Ok(Ranking::Units),
        Ok(ProductRanking::Revenue) => Ok(Ranking::Revenue),
        Err(_) => Err(FieldViolation::new("by", "must be PRODUCT_RANKING_UNITS or PRODUCT_RANKING_REVENUE")),
    }
}

/// Collects every problem of a request before refusing it, so a client learns them all at once.
#[derive(Default)]
struct Checked(Vec<FieldViolation>);

impl Checked {
    /// The value, or `None` with its violations noted.
    fn take<T>(&mut self, result: Result<T, impl IntoIterator<Item = FieldViolation>>) -> Option<T> {
        result.map_err(|violations| self.0.extend(violations)).ok()
    }

    fn into_error(self) -> Error {
        Error::InvalidArgument(self.0)
    }
}

/// Today's UTC day.
fn today() -> domain::Day {
    domain::day_of_micros(now_micros())
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_sales_report(
        &self,
        request: Request<GetSalesReportRequest>,
    ) -> Result<Response<GetSalesReportResponse>, Status> {
        let req = request.into_inner();
        let mut checked = Checked::default();
        let period = checked.take(domain::resolve_period(&req.from, &req.to, today()));
        let interval = checked.take(interval_from_wire(req.interval).map_err(|v| [v]));
        let currency = checked.take(domain::validate_currency(&req.currency).map_err(|v| [v]));
        let (Some(period), Some(interval), Some(currency)) = (period, interval, currency) else {
            return Err(checked.into_error().into());
        };
        let rows = self.store.daily_sales(period, currency.as_deref()).await?;
        let buckets = domain::sales_buckets(period, interval, &rows, currency.as_deref())
            .into_iter()
            .map(|bucket| SalesBucket {
                start: domain::format_date(bucket.period.from),
                end: domain::format_date(bucket.period.to),
                sales: bucket.sales.iter().map(|(currency, figures)| sales_to_wire(currency, figures)).collect(),
            })
            .collect();
        Ok(Response::new(GetSalesReportResponse {
            from: domain::format_date(period.from),
            to: domain::format_date(period.to),
            interval: interval_to_wire(interval) as i32,
            buckets,
        }))
    }

    async fn get_top_products(
        &self,
        request: Request<GetTopProductsRequest>,
    ) -> Result<Response<GetTopProductsResponse>, Status> {
        let req = request.into_inner();
        let mut checked = Checked::default();
        let period = checked.take(domain::resolve_period(&req.from, &req.to, today()));
        let ranking = checked.take(ranking_from_wire(req.by).map_err(|v| [v]));
        let limit = checked.take(domain::validate_limit(req.limit).map_err(|v| [v]));
        let currency = checked.take(domain::validate_currency(&req.currency).map_err(|v| [v]));
        if let (Some(ranking), Some(currency)) = (ranking, &currency) {
            checked.take(domain::validate_ranking(ranking, currency.as_deref()).map_err(|v| [v]));
        }
        let (Some(period), Some(ranking), Some(limit), Some(currency), true) =
            (period, ranking, limit, currency, checked.0.is_empty())
        else {
            return Err(checked.into_error().into());
        };
        let rows = self.store.product_sales(period, currency.as_deref()).await?;
        let products = domain::top_products(rows, ranking, limit)
            .into_iter()
            .map(|p| TopProduct {
                product_id: p.product_id,
                sku: p.sku,
                name: p.name,
                units: p.units,
                units_returned: p.units_returned,
                revenue: p.revenue.into_iter().map(|a| Money { currency: a.currency, amount_minor: a.minor }).collect(),
            })
            .collect();
        Ok(Response::new(GetTopProductsResponse {
            from: domain::format_date(period.from),
            to: domain::format_date(period.to),
            products,
        }))
    }

    async fn get_discount_code_report(
        &self,
        request: Request<GetDiscountCodeReportRequest>,
    ) -> Result<Response<GetDiscountCodeReportResponse>, Status> {
        let req = request.into_inner();
        let mut checked = Checked::default();
        let period = checked.take(domain::resolve_period(&req.from, &req.to, today()));
        let currency = checked.take(domain::validate_currency(&req.currency).map_err(|v| [v]));
        let (Some(period), Some(currency), true) = (period, currency, checked.0.is_empty()) else {
            return Err(checked.into_error().into());
        };
        let rows = self.store.code_sales(period, currency.as_deref()).await?;
        let codes = domain::rank_codes(rows)
            .into_iter()
            .map(|row| DiscountCodeSales {
                orders: row.figures.orders,
                discount: money(&row.currency, row.figures.discount_minor),
                gross: money(&row.currency, row.figures.gross_minor),
                code: row.code,
                currency: row.currency,
            })
            .collect();
        Ok(Response::new(GetDiscountCodeReportResponse {
            codes,
            from: domain::format_date(period.from),
            to: domain::format_date(period.to),
        }))
    }

    async fn get_summary(&self, request: Request<GetSummaryRequest>) -> Result<Response<GetSummaryResponse>, Status> {
        let req = request.into_inner();
        let period: Period = domain::resolve_period(&req.from, &req.to, today()).map_err(Error::InvalidArgument)?;
        let rows = self.store.daily_sales(period, None).await?;
        let funnel = self.store.funnel(period).await?;
        Ok(Response::new(GetSummaryResponse {
            from: domain::format_date(period.from),
            to: domain::format_date(period.to),
            currencies: domain::totals_by_currency(&rows)
                .iter()
                .map(|(currency, figures)| summary_to_wire(currency, figures))
                .collect(),
            carts_started: funnel.carts_started,
            orders_from_carts: funnel.orders_from_carts,
            cart_conversion_bps: funnel.conversion_bps(),
        }))
    }

    async fn rebuild_aggregates(
        &self,
        _request: Request<RebuildAggregatesRequest>,
    ) -> Result<Response<RebuildAggregatesResponse>, Status> {
        let replayed_events = self.store.rebuild(events::effect_of).await?;
        tracing::info!(replayed_events, "aggregates rebuilt from the event history");
        Ok(Response::new(RebuildAggregatesResponse { replayed_events }))
    }
}
