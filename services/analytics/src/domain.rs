//! The rules of analytics, free of I/O: calendar days (parsing, ISO weeks, months), report periods and their
//! validation, what each consumed fact adds to the aggregates, and the figures a report shows (buckets,
//! rankings, averages, ratios in basis points).
//!
//! Field names in violations are proto field names (`from`, `limit`), so clients can point at the input.

use std::collections::{BTreeMap, BTreeSet};

use platform::error::FieldViolation;

/// A calendar day in UTC, counted in days since 1970-01-01.
pub type Day = i64;

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Days a report covers when the request names no period.
pub const DEFAULT_RANGE_DAYS: i64 = 30;
/// Longest period a report may cover: three years of 366 days.
pub const MAX_RANGE_DAYS: i64 = 3 * 366;
/// Top products listed when the request names no limit.
pub const DEFAULT_LIMIT: i32 = 10;
/// Most top products one request may list.
pub const MAX_LIMIT: i32 = 100;
/// Earliest year a date may name: nothing happened before the epoch.
const MIN_YEAR: i64 = 1970;
/// Latest year a date may name: four digits.
const MAX_YEAR: i64 = 9999;

// ---------------------------------------------------------------------------------------------------------
// Calendar.

/// The day of a time in microseconds since the epoch.
pub fn day_of_micros(micros: i64) -> Day {
    micros.div_euclid(MICROS_PER_DAY)
}

pub use platform::time::{date_of_day, day_from_date};

/// Whether `year` has a 29 February.
pub fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in a month of a year.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses a date written `YYYY-MM-DD` (a real date, years 1970 to 9999).
pub fn parse_date(text: &str) -> Option<Day> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0, |n, b| n * 10 + i64::from(b - b'0')))
    };
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, u32::try_from(digits(5..7)?).ok()?, u32::try_from(digits(8..10)?).ok()?);
    let valid = (MIN_YEAR..=MAX_YEAR).contains(&year)
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day);
    valid.then(|| day_from_date(year, month, day))
}

/// A day written `YYYY-MM-DD`.
pub fn format_date(day: Day) -> String {
    let (year, month, day_of_month) = date_of_day(day);
    format!("{year:04}-{month:02}-{day_of_month:02}")
}

/// The Monday of the ISO week of `day` (1970-01-01 was a Thursday).
pub fn week_start(day: Day) -> Day {
    day - (day + 3).rem_euclid(7)
}

/// The first day of the month of `day`.
pub fn month_start(day: Day) -> Day {
    let (year, month, _) = date_of_day(day);
    day_from_date(year, month, 1)
}

/// The first day of the month after the month of `day`.
pub fn next_month_start(day: Day) -> Day {
    let (year, month, _) = date_of_day(day);
    if month == 12 { day_from_date(year + 1, 1, 1) } else { day_from_date(year, month + 1, 1) }
}

// ---------------------------------------------------------------------------------------------------------
// Report periods and their parameters.

/// Days `from` (inclusive) to `to` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First day.
    pub from: Day,
    /// Day after the last.
    pub to: Day,
}

/// The length of the buckets of a sales report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// One day.
    Day,
    /// An ISO week, Monday to Sunday.
    Week,
    /// A calendar month.
    Month,
}

/// What ranks top products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranking {
    /// Net units, most first.
    Units,
    /// Net revenue in one currency, most first.
    Revenue,
}

/// The period of a request: `from` and `to` as given (empty for the default), resolved against `today`. The
/// default is the last [`DEFAULT_RANGE_DAYS`] days, today included.
pub fn resolve_period(from: &str, to: &str, today: Day) -> Result<Period, Vec<FieldViolation>> {
    let parse = |field: &str, text: &str| match text {
        "" => Ok(None),
        _ => parse_date(text)
            .map(Some)
            .ok_or_else(|| FieldViolation::new(field, "must be a date written YYYY-MM-DD (e.g. 2025-01-31)")),
    };
    let (from_day, to_day) = match (parse("from", from), parse("to", to)) {
        (Ok(from_day), Ok(to_day)) => (from_day, to_day),
        (from_result, to_result) => return Err([from_result.err(), to_result.err()].into_iter().flatten().collect()),
    };
    let to_day = to_day.unwrap_or(today + 1);
    let from_day = from_day.unwrap_or(to_day - DEFAULT_RANGE_DAYS);
    if from_day >= to_day {
        return Err(vec![FieldViolation::new("from", format!("must be before to ({})", format_date(to_day)))]);
    }
    if to_day - from_day > MAX_RANGE_DAYS {
        return Err(vec![FieldViolation::new(
            "from",
            format!(
                "the period from {} to {} is longer than {MAX_RANGE_DAYS} days",
                format_date(from_day),
                format_date(to_day)
            ),
        )]);
    }
    Ok(Period { from: from_day, to: to_day })
}

/// Checks an optional currency filter: empty for none, else an upper-case ISO 4217 code.
pub fn validate_currency(currency: &str) -> Result<Option<String>, FieldViolation> {
    match currency {
        "" => Ok(None),
        code => platform::money::check_currency("currency", code).map(|()| Some(code.to_owned())),
    }
}

/// The number of top products to list: [`DEFAULT_LIMIT`] for 0, else 1 to [`MAX_LIMIT`].
pub fn validate_limit(limit: i32) -> Result<usize, FieldViolation> {
    match limit {
        0 => Ok(DEFAULT_LIMIT as usize),
        1..=MAX_LIMIT => Ok(usize::try_from(limit).unwrap_or(DEFAULT_LIMIT as usize)),
        _ => Err(FieldViolation::new("limit", format!("must be 1 to {MAX_LIMIT}"))),
    }
}

/// Checks that a ranking can be computed: by revenue needs one currency.
pub fn validate_ranking(ranking: Ranking, currency: Option<&str>) -> Result<(), FieldViolation> {
    if ranking == Ranking::Revenue && currency.is_none() {
        return Err(FieldViolation::new(
            "currency",
            "is required when ranking by revenue: amounts in different currencies cannot be compared",
        ));
    }
    Ok(())
}

/// The buckets of `period`: whole days, weeks (Monday to Sunday) or months, the first and last cut to the
/// period.
pub fn buckets(period: Period, interval: Interval) -> Vec<Period> {
    let mut out = Vec::new();
    let mut start = period.from;
    while start < period.to {
        let next = match interval {
            Interval::Day => start + 1,
            Interval::Week => week_start(start) + 7,
            Interval::Month => next_month_start(start),
        };
        let end = next.min(period.to);
        out.push(Period { from: start, to: end });
        start = end;
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Facts (decoded events) and what they add to the aggregates.

/// An amount of money in minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units.
    pub minor: i64,
}

/// A line of an order, as the order's events carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    /// The product.
    pub product_id: String,
    /// Its sku on the order.
    pub sku: String,
    /// Its name on the order.
    pub name: String,
    /// Units.
    pub quantity: i64,
    /// What the line costs.
    pub line_total: Amount,
}

/// What a consumed event says, in the terms of analytics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// An order was paid and its stock sold (`order.confirmed`).
    OrderConfirmed {
        /// What was charged.
        total: Amount,
        /// What a discount code took off (0 without one), in the total's currency.
        discount_minor: i64,
        /// What shipping cost (0 when free or not charged; the total includes it).
        shipping_minor: i64,
        /// The tax the total includes (0 when its country had no rate).
        tax_minor: i64,
        /// The discount code it used, upper case; empty without one.
        discount_code: String,
        /// Its lines.
        lines: Vec<OrderLine>,
        /// Whether it was placed from the customer's cart.
        from_cart: bool,
    },
    /// A confirmed order was cancelled and refunded (`order.cancelled`).
    OrderCancelled {
        /// What was given back.
        refunded: Amount,
        /// The lines whose units went back to stock.
        lines: Vec<OrderLine>,
    },
    /// A payment was charged (`payment.captured`).
    PaymentCaptured {
        /// What was charged.
        amount: Amount,
    },
    /// A refund was given back (`refund.completed`).
    RefundCompleted {
        /// What was given back.
        amount: Amount,
    },
    /// A return's items arrived (`return.received`).
    ReturnReceived {
        /// What came back: product, its currency (of the order) and units.
        lines: Vec<(String, String, i64)>,
    },
    /// A product was put into a cart (`cart.item_added`).
    CartItemAdded {
        /// Whether the cart was empty before: a new cart.
        cart_was_empty: bool,
    },
}

/// Sales figures of one currency: an event's contribution, or the sum over days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesFigures {
    /// Orders confirmed.
    pub orders: i64,
    /// What confirmed orders cost.
    pub gross_minor: i64,
    /// Orders cancelled.
    pub cancelled_orders: i64,
    /// What cancelled orders gave back.
    pub cancelled_minor: i64,
    /// Refunds completed.
    pub refunds: i64,
    /// What refunds gave back (cancellations not included).
    pub refunded_minor: i64,
    /// What payments captured.
    pub captured_minor: i64,
    /// Confirmed orders that used a discount code.
    pub discounted_orders: i64,
    /// What discount codes took off confirmed orders.
    pub discount_minor: i64,
    /// What confirmed orders paid for shipping.
    pub shipping_minor: i64,
    /// The tax confirmed orders' totals include.
    pub tax_minor: i64,
}

impl SalesFigures {
    /// Adds `other` to these figures, saturating (a sum past `i64::MAX` is not a figure to panic over).
    pub fn add(&mut self, other: &SalesFigures) {
        self.orders = self.orders.saturating_add(other.orders);
        self.gross_minor = self.gross_minor.saturating_add(other.gross_minor);
        self.cancelled_orders = self.cancelled_orders.saturating_add(other.cancelled_orders);
        self.cancelled_minor = self.cancelled_minor.saturating_add(other.cancelled_minor);
        self.refunds = self.refunds.saturating_add(other.refunds);
        self.refunded_minor = self.refunded_minor.saturating_add(other.refunded_minor);
        self.captured_minor = self.captured_minor.saturating_add(other.captured_minor);
        self.discounted_orders = self.discounted_orders.saturating_add(other.discounted_orders);
        self.discount_minor = self.discount_minor.saturating_add(other.discount_minor);
        self.shipping_minor = self.shipping_minor.saturating_add(other.shipping_minor);
        self.tax_minor = self.tax_minor.saturating_add(other.tax_minor);
    }

    /// Everything given back: refunds and cancellations.
    pub fn total_refunded(&self) -> i64 {
        self.refunded_minor + self.cancelled_minor
    }

    /// Gross minus everything given back.
    pub fn net(&self) -> i64 {
        self.gross_minor - self.total_refunded()
    }

    /// Gross per order, rounded half up; 0 without orders.
    pub fn average_order_value(&self) -> i64 {
        divide_rounded(self.gross_minor, self.orders)
    }

    /// Money given back per money taken, in basis points.
    pub fn refund_rate_bps(&self) -> i64 {
        basis_points(self.total_refunded(), self.gross_minor)
    }

    /// Refunds and cancellations per order, in basis points.
    pub fn refund_count_rate_bps(&self) -> i64 {
        basis_points(self.refunds + self.cancelled_orders, self.orders)
    }
}

/// One product's sales in one currency: an event's contribution to a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductFigures {
    /// The product.
    pub product_id: String,
    /// The currency of the line totals.
    pub currency: String,
    /// Units on confirmed orders.
    pub units_sold: i64,
    /// Line totals of confirmed orders.
    pub sold_minor: i64,
    /// Units on cancelled orders.
    pub units_cancelled: i64,
    /// Line totals of cancelled orders.
    pub cancelled_minor: i64,
    /// Units sent back (returns received).
    pub units_returned: i64,
}

/// The cart funnel: an event's contribution to a day, or the sum over days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Funnel {
    /// Products put into empty carts.
    pub carts_started: i64,
    /// Orders confirmed from a cart.
    pub orders_from_carts: i64,
}

impl Funnel {
    /// Orders from carts per cart started, in basis points.
    pub fn conversion_bps(&self) -> i64 {
        basis_points(self.orders_from_carts, self.carts_started)
    }
}

/// A product's sku and name as an order showed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductLabel {
    /// The product.
    pub product_id: String,
    /// Its sku.
    pub sku: String,
    /// Its name.
    pub name: String,
}

/// Everything one event adds to the aggregates, all on the event's day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// The day the event counts on.
    pub day: Day,
    /// Sales figures, by currency.
    pub sales: Option<(String, SalesFigures)>,
    /// Product figures, one per line.
    pub products: Vec<ProductFigures>,
    /// Skus and names the event shows.
    pub labels: Vec<ProductLabel>,
    /// The cart funnel.
    pub funnel: Option<Funnel>,
    /// What a discount code brought in: the code, the currency and the figures.
    pub code: Option<(String, String, CodeFigures)>,
}

/// What orders with one discount code add up to, in one currency: an event's contribution, or a sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeFigures {
    /// Confirmed orders that used it.
    pub orders: i64,
    /// What it took off them.
    pub discount_minor: i64,
    /// What they cost (after the discount).
    pub gross_minor: i64,
}

impl CodeFigures {
    /// Adds `other` to these figures (saturating).
    pub fn add(&mut self, other: &CodeFigures) {
        self.orders = self.orders.saturating_add(other.orders);
        self.discount_minor = self.discount_minor.saturating_add(other.discount_minor);
        self.gross_minor = self.gross_minor.saturating_add(other.gross_minor);
    }
}

/// One discount code's figures over a period, in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSales {
    /// The code.
    pub code: String,
    /// The currency.
    pub currency: String,
    /// Its figures.
    pub figures: CodeFigures,
}

/// `rows` the most used first, then by code and currency.
pub fn rank_codes(mut rows: Vec<CodeSales>) -> Vec<CodeSales> {
    rows.sort_by(|a, b| {
        b.figures
            .orders
            .cmp(&a.figures.orders)
            .then_with(|| a.code.cmp(&b.code))
            .then_with(|| a.currency.cmp(&b.currency))
    });
    rows
}

/// What `fact`, happening on `day`, adds to the aggregates.
pub fn effect(fact: &Fact, day: Day) -> Effect {
    let labels = |lines: &[OrderLine]| {
        lines
            .iter()
            .map(|l| ProductLabel { product_id: l.product_id.clone(), sku: l.sku.clone(), name: l.name.clone() })
            .collect()
    };
    let product = |line: &OrderLine, sold: bool| ProductFigures {
        product_id: line.product_id.clone(),
        currency: line.line_total.currency.clone(),
        units_sold: if sold { line.quantity } else { 0 },
        sold_minor: if sold { line.line_total.minor } else { 0 },
        units_cancelled: if sold { 0 } else { line.quantity },
        cancelled_minor: if sold { 0 } else { line.line_total.minor },
        units_returned: 0,
    };
    let sales = |amount: &Amount, figures: SalesFigures| Some((amount.currency.clone(), figures));
    match fact {
        Fact::OrderConfirmed { total, discount_minor, shipping_minor, tax_minor, discount_code, lines, from_cart } => {
            Effect {
                day,
                sales: sales(
                    total,
                    SalesFigures {
                        orders: 1,
                        gross_minor: total.minor,
                        discounted_orders: i64::from(*discount_minor > 0),
                        discount_minor: *discount_minor,
                        shipping_minor: *shipping_minor,
                        tax_minor: *tax_minor,
                        ..SalesFigures::default()
                    },
                ),
                products: lines.iter().map(|l| product(l, true)).collect(),
                labels: labels(lines),
                funnel: from_cart.then_some(Funnel { carts_started: 0, orders_from_carts: 1 }),
                code: (!discount_code.is_empty()).then(|| {
                    let figures = CodeFigures { orders: 1, discount_minor: *discount_minor, gross_minor: total.minor };
                    (discount_code.clone(), total.currency.clone(), figures)
                }),
            }
        }
        Fact::OrderCancelled { refunded, lines } => Effect {
            day,
            sales: sales(
                refunded,
                SalesFigures { cancelled_orders: 1, cancelled_minor: refunded.minor, ..SalesFigures::default() },
            ),
            products: lines.iter().map(|l| product(l, false)).collect(),
            labels: labels(lines),
            ..Effect::default()
        },
        Fact::PaymentCaptured { amount } => Effect {
            day,
            sales: sales(amount, SalesFigures { captured_minor: amount.minor, ..SalesFigures::default() }),
            ..Effect::default()
        },
        Fact::RefundCompleted { amount } => Effect {
            day,
            sales: sales(amount, SalesFigures { refunds: 1, refunded_minor: amount.minor, ..SalesFigures::default() }),
            ..Effect::default()
        },
        Fact::ReturnReceived { lines } => Effect {
            day,
            products: lines
                .iter()
                .map(|(product_id, currency, units)| ProductFigures {
                    product_id: product_id.clone(),
                    currency: currency.clone(),
                    units_sold: 0,
                    sold_minor: 0,
                    units_cancelled: 0,
                    cancelled_minor: 0,
                    units_returned: *units,
                })
                .collect(),
            ..Effect::default()
        },
        Fact::CartItemAdded { cart_was_empty } => Effect {
            day,
            funnel: cart_was_empty.then_some(Funnel { carts_started: 1, orders_from_carts: 0 }),
            ..Effect::default()
        },
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reports.

/// One bucket of a sales report: its days and the figures of every currency of the report, by code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesBucket {
    /// The days counted.
    pub period: Period,
    /// Figures per currency; zeros where nothing happened.
    pub sales: Vec<(String, SalesFigures)>,
}

/// Sums daily figures `(day, currency, figures)` into the buckets of `period`. Every bucket lists the same
/// currencies: `only_currency` when given, else every currency of the rows.
pub fn sales_buckets(
    period: Period,
    interval: Interval,
    rows: &[(Day, String, SalesFigures)],
    only_currency: Option<&str>,
) -> Vec<SalesBucket> {
    let currencies: BTreeSet<&str> = match only_currency {
        Some(currency) => BTreeSet::from([currency]),
        None => rows.iter().map(|(_, currency, _)| currency.as_str()).collect(),
    };
    let periods = buckets(period, interval);
    let mut sums: Vec<BTreeMap<&str, SalesFigures>> =
        periods.iter().map(|_| currencies.iter().map(|c| (*c, SalesFigures::default())).collect()).collect();
    for (day, currency, figures) in rows {
        // The buckets are sorted and contiguous: the one holding `day` is the first that ends after it.
        let index = periods.partition_point(|p| p.to <= *day);
        if periods.get(index).is_some_and(|p| p.from <= *day)
            && let Some(sum) = sums.get_mut(index).and_then(|s| s.get_mut(currency.as_str()))
        {
            sum.add(figures);
        }
    }
    periods
        .into_iter()
        .zip(sums)
        .map(|(period, sums)| SalesBucket {
            period,
            sales: sums.into_iter().map(|(currency, figures)| (currency.to_owned(), figures)).collect(),
        })
        .collect()
}

/// Sums daily figures into one total per currency, by code.
pub fn totals_by_currency(rows: &[(Day, String, SalesFigures)]) -> Vec<(String, SalesFigures)> {
    let mut totals: BTreeMap<&str, SalesFigures> = BTreeMap::new();
    for (_, currency, figures) in rows {
        totals.entry(currency.as_str()).or_default().add(figures);
    }
    totals.into_iter().map(|(currency, figures)| (currency.to_owned(), figures)).collect()
}

/// A product's net sales in one currency over a period, as the store sums them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSales {
    /// The product.
    pub product_id: String,
    /// Its latest sku.
    pub sku: String,
    /// Its latest name.
    pub name: String,
    /// The currency.
    pub currency: String,
    /// Units sold minus units cancelled.
    pub units: i64,
    /// Line totals sold minus cancelled.
    pub revenue_minor: i64,
    /// Units sent back.
    pub units_returned: i64,
}

/// A ranked product: its net units over every currency, its net revenue per currency (by code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopProduct {
    /// The product.
    pub product_id: String,
    /// Its latest sku.
    pub sku: String,
    /// Its latest name.
    pub name: String,
    /// Net units.
    pub units: i64,
    /// Net revenue per currency, by code.
    pub revenue: Vec<Amount>,
    /// Units sent back.
    pub units_returned: i64,
}

/// The `limit` best products of `rows`, best first; ties go to the product id. Products with no net units
/// (everything cancelled) are left out. Ranking by revenue expects rows of one currency.
pub fn top_products(rows: Vec<ProductSales>, ranking: Ranking, limit: usize) -> Vec<TopProduct> {
    let mut products: BTreeMap<String, TopProduct> = BTreeMap::new();
    for row in rows {
        let product = products.entry(row.product_id.clone()).or_insert_with(|| TopProduct {
            product_id: row.product_id,
            sku: row.sku,
            name: row.name,
            units: 0,
            revenue: Vec::new(),
            units_returned: 0,
        });
        product.units += row.units;
        product.units_returned += row.units_returned;
        product.revenue.push(Amount { currency: row.currency, minor: row.revenue_minor });
    }
    // A product only returned in the period is listed too (last, by units): what comes back is worth seeing.
    let mut ranked: Vec<TopProduct> = products.into_values().filter(|p| p.units > 0 || p.units_returned > 0).collect();
    for product in &mut ranked {
        product.revenue.sort_by(|a, b| a.currency.cmp(&b.currency));
    }
    let revenue = |p: &TopProduct| p.revenue.iter().map(|a| a.minor).sum::<i64>();
    // A stable sort over products already ordered by id: equal keys keep the id order.
    match ranking {
        Ranking::Units => ranked.sort_by_key(|p| std::cmp::Reverse(p.units)),
        Ranking::Revenue => ranked.sort_by_key(|p| std::cmp::Reverse(revenue(p))),
    }
    ranked.truncate(limit);
    ranked
}

/// `numerator / denominator` rounded half up (to the nearest, halves away from minus infinity); 0 when
/// `denominator` is not positive.
pub fn divide_rounded(numerator: i64, denominator: i64) -> i64 {
    if denominator <= 0 {
        return 0;
    }
    let (numerator, denominator) = (i128::from(numerator), i128::from(denominator));
    i64::try_from((2 * numerator + denominator).div_euclid(2 * denominator)).unwrap_or(i64::MAX)
}

/// `part / whole` in basis points (10 000 = 100%), rounded half up; 0 when `whole` is not positive.
pub fn basis_points(part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return 0;
    }
    let scaled = i128::from(part) * 10_000;
    let whole = i128::from(whole);
    i64::try_from((2 * scaled + whole).div_euclid(2 * whole)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Day {
        parse_date(text).expect("a valid date")
    }

    fn dates(periods: &[Period]) -> Vec<(String, String)> {
        periods.iter().map(|p| (format_date(p.from), format_date(p.to))).collect()
    }

    #[test]
    fn dates_round_trip_through_days() {
        assert_eq!(day("1970-01-01"), 0);
        assert_eq!(day("2000-03-01"), 11_017);
        assert_eq!(day("2024-02-29"), 19_782);
        for d in [-1, 0, 59, 60, 365, 11_016, 11_017, 19_782, 2_932_896] {
            let (y, m, dd) = date_of_day(d);
            assert_eq!(day_from_date(y, m, dd), d, "{d}");
        }
        assert_eq!(format_date(19_782), "2024-02-29");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(day_of_micros(-1), -1, "a microsecond before the epoch is the day before");
        assert_eq!(day_of_micros(MICROS_PER_DAY - 1), 0);
    }

    #[test]
    fn only_real_dates_parse() {
        assert_eq!(parse_date("2025-12-31"), Some(day_from_date(2025, 12, 31)));
        assert!(parse_date("2024-02-29").is_some(), "leap year");
        assert!(parse_date("2000-02-29").is_some(), "divisible by 400");
        for bad in [
            "",
            "2023-02-29",
            "1900-02-29",
            "2025-04-31",
            "2025-13-01",
            "2025-00-10",
            "2025-01-00",
            "2025-1-01",
            "25-01-01",
            "2025/01/01",
            "2025-01-01T00:00:00Z",
            "1969-12-31",
            "+025-01-01",
            "２０２５-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn month_lengths() {
        let lengths: Vec<u32> = (1..=12).map(|m| days_in_month(2025, m)).collect();
        assert_eq!(lengths, [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2025-01-01 was a Wednesday; its ISO week starts on Monday 2024-12-30.
        assert_eq!(format_date(week_start(day("2025-01-01"))), "2024-12-30");
        assert_eq!(format_date(week_start(day("2024-12-30"))), "2024-12-30", "a Monday starts its own week");
        assert_eq!(format_date(week_start(day("2025-01-05"))), "2024-12-30", "Sunday ends the week");
        assert_eq!(format_date(week_start(day("2025-01-06"))), "2025-01-06");
        assert_eq!(format_date(week_start(0)), "1969-12-29", "the epoch was a Thursday");
    }

    #[test]
    fn daily_buckets_cover_every_day() {
        let period = Period { from: day("2025-02-27"), to: day("2025-03-02") };
        assert_eq!(
            dates(&buckets(period, Interval::Day)),
            [("2025-02-27", "2025-02-28"), ("2025-02-28", "2025-03-01"), ("2025-03-01", "2025-03-02")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn weekly_buckets_are_iso_weeks_cut_to_the_period() {
        // Wednesday 2025-01-01 to Thursday 2025-01-16 (exclusive).
        let period = Period { from: day("2025-01-01"), to: day("2025-01-16") };
        assert_eq!(
            dates(&buckets(period, Interval::Week)),
            [("2025-01-01", "2025-01-06"), ("2025-01-06", "2025-01-13"), ("2025-01-13", "2025-01-16")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        let whole = Period { from: day("2025-01-06"), to: day("2025-01-20") };
        assert_eq!(buckets(whole, Interval::Week).len(), 2, "from Monday to Monday: whole weeks");
    }

    #[test]
    fn monthly_buckets_follow_month_lengths() {
        let period = Period { from: day("2024-01-15"), to: day("2024-04-10") };
        assert_eq!(
            dates(&buckets(period, Interval::Month)),
            [
                ("2024-01-15", "2024-02-01"),
                ("2024-02-01", "2024-03-01"),
                ("2024-03-01", "2024-04-01"),
                ("2024-04-01", "2024-04-10"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        let year_end = Period { from: day("2024-12-01"), to: day("2025-02-01") };
        assert_eq!(
            dates(&buckets(year_end, Interval::Month)),
            [("2024-12-01", "2025-01-01"), ("2025-01-01", "2025-02-01")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(format_date(month_start(day("2024-02-29"))), "2024-02-01");
    }

    #[test]
    fn periods_default_to_the_last_30_days() {
        let today = day("2025-03-15");
        let period = resolve_period("", "", today).expect("default");
        assert_eq!((format_date(period.from), format_date(period.to)), ("2025-02-14".into(), "2025-03-16".into()));
        assert_eq!(period.to - period.from, 30);
        let from_only = resolve_period("2025-03-01", "", today).expect("from only");
        assert_eq!(from_only, Period { from: day("2025-03-01"), to: day("2025-03-16") });
        let to_only = resolve_period("", "2025-01-31", today).expect("to only");
        assert_eq!(to_only, Period { from: day("2025-01-01"), to: day("2025-01-31") });
    }

    #[test]
    fn bad_periods_name_their_field() {
        let today = day("2025-03-15");
        let fields = |from: &str, to: &str| -> Vec<String> {
            resolve_period(from, to, today).expect_err("refused").into_iter().map(|v| v.field).collect()
        };
        assert_eq!(fields("2025-02-30", ""), ["from"]);
        assert_eq!(fields("", "yesterday"), ["to"]);
        assert_eq!(fields("x", "y"), ["from", "to"]);
        assert_eq!(fields("2025-03-01", "2025-03-01"), ["from"], "an empty period");
        assert_eq!(fields("2025-03-02", "2025-03-01"), ["from"], "backwards");
        assert_eq!(fields("2025-04-01", ""), ["from"], "from after the default end");
        assert_eq!(fields("2020-01-01", "2025-01-01"), ["from"], "longer than three years");
        assert!(resolve_period("2021-12-30", "2025-01-01", today).is_ok(), "1098 days, the most");
        assert_eq!(fields("2021-12-29", "2025-01-01"), ["from"], "1099 days");
    }

    #[test]
    fn limits_and_currencies() {
        assert_eq!(validate_limit(0), Ok(10));
        assert_eq!(validate_limit(1), Ok(1));
        assert_eq!(validate_limit(100), Ok(100));
        assert_eq!(validate_limit(101).expect_err("too many").field, "limit");
        assert_eq!(validate_limit(-1).expect_err("negative").field, "limit");
        assert_eq!(validate_currency(""), Ok(None));
        assert_eq!(validate_currency("EUR"), Ok(Some("EUR".to_owned())));
        for bad in ["eur", "EURO", "E1R", "€"] {
            assert_eq!(validate_currency(bad).expect_err(bad).field, "currency");
        }
        assert_eq!(validate_ranking(Ranking::Revenue, None).expect_err("no currency").field, "currency");
        assert!(validate_ranking(Ranking::Revenue, Some("EUR")).is_ok());
        assert!(validate_ranking(Ranking::Units, None).is_ok());
    }

    #[test]
    fn ratios_round_half_up_and_never_divide_by_zero() {
        assert_eq!(basis_points(1, 3), 3_333);
        assert_eq!(basis_points(2, 3), 6_667);
        assert_eq!(basis_points(1, 8), 1_250);
        assert_eq!(basis_points(1, 20_000), 1, "half a basis point rounds up");
        assert_eq!(basis_points(5, 0), 0);
        assert_eq!(basis_points(3, 2), 15_000, "refunds of earlier orders can pass 100%");
        assert_eq!(basis_points(i64::MAX, i64::MAX), 10_000, "no overflow");
        assert_eq!(divide_rounded(10, 4), 3, "2.5 rounds up");
        assert_eq!(divide_rounded(10, 3), 3);
        assert_eq!(divide_rounded(-10, 4), -2, "halves go up, also below zero");
        assert_eq!(divide_rounded(7, 0), 0);
    }

    #[test]
    fn figures_derive_net_average_and_rates() {
        let figures = SalesFigures {
            orders: 4,
            gross_minor: 10_001,
            cancelled_orders: 1,
            cancelled_minor: 2_000,
            refunds: 1,
            refunded_minor: 500,
            captured_minor: 10_001,
            ..SalesFigures::default()
        };
        assert_eq!(figures.total_refunded(), 2_500);
        assert_eq!(figures.net(), 7_501);
        assert_eq!(figures.average_order_value(), 2_500, "10001 / 4 = 2500.25");
        assert_eq!(figures.refund_rate_bps(), 2_500, "2500 / 10001 = 24.9975%");
        assert_eq!(figures.refund_count_rate_bps(), 5_000);
        assert_eq!(SalesFigures::default().average_order_value(), 0);
        assert_eq!(Funnel { carts_started: 3, orders_from_carts: 2 }.conversion_bps(), 6_667);
    }

    fn eur(minor: i64) -> Amount {
        Amount { currency: "EUR".into(), minor }
    }

    fn line(product_id: &str, quantity: i64, minor: i64) -> OrderLine {
        OrderLine {
            product_id: product_id.into(),
            sku: format!("SKU-{product_id}"),
            name: product_id.to_uppercase(),
            quantity,
            line_total: eur(minor),
        }
    }

    #[test]
    fn a_confirmed_order_adds_revenue_units_and_the_funnel() {
        let fact = Fact::OrderConfirmed {
            total: eur(3_500),
            discount_minor: 0,
            shipping_minor: 0,
            tax_minor: 0,
            discount_code: String::new(),
            lines: vec![line("a", 2, 3_000), line("b", 1, 500)],
            from_cart: true,
        };
        let effect = effect(&fact, 7);
        assert_eq!(effect.day, 7);
        assert_eq!(
            effect.sales,
            Some(("EUR".into(), SalesFigures { orders: 1, gross_minor: 3_500, ..SalesFigures::default() }))
        );
        assert_eq!(
            effect.products.iter().map(|p| (p.units_sold, p.sold_minor)).collect::<Vec<_>>(),
            [(2, 3_000), (1, 500)]
        );
        assert_eq!(effect.labels[1], ProductLabel { product_id: "b".into(), sku: "SKU-b".into(), name: "B".into() });
        assert_eq!(effect.funnel, Some(Funnel { carts_started: 0, orders_from_carts: 1 }));
        let direct = Fact::OrderConfirmed {
            total: eur(1),
            discount_minor: 0,
            shipping_minor: 0,
            tax_minor: 0,
            discount_code: String::new(),
            lines: vec![],
            from_cart: false,
        };
        assert_eq!(super::effect(&direct, 7).funnel, None, "a direct order is not a cart conversion");
    }

    #[test]
    fn a_discounted_order_counts_what_its_code_took_off_and_its_shipping_beside_what_it_cost() {
        let fact = Fact::OrderConfirmed {
            total: eur(3_640),
            discount_minor: 350,
            shipping_minor: 490,
            tax_minor: 581,
            discount_code: "SAVE-10".into(),
            lines: vec![line("a", 1, 3_500)],
            from_cart: false,
        };
        let sales = effect(&fact, 7).sales.expect("sales").1;
        assert_eq!(
            (sales.orders, sales.gross_minor, sales.discounted_orders, sales.discount_minor, sales.shipping_minor),
            (1, 3_640, 1, 350, 490)
        );
        assert_eq!(sales.tax_minor, 581, "the tax its total includes");
        let mut day = sales.clone();
        let code = effect(&fact, 7).code.expect("a code");
        assert_eq!(
            code,
            ("SAVE-10".into(), "EUR".into(), CodeFigures { orders: 1, discount_minor: 350, gross_minor: 3_640 })
        );
        let plain = Fact::OrderConfirmed {
            total: eur(3_500),
            discount_minor: 0,
            shipping_minor: 0,
            tax_minor: 0,
            discount_code: String::new(),
            lines: vec![],
            from_cart: false,
        };
        assert_eq!(effect(&plain, 7).code, None, "an order without a code counts for none");
        day.add(&effect(&plain, 7).sales.expect("sales").1);
        assert_eq!((day.orders, day.discounted_orders, day.discount_minor, day.tax_minor), (2, 1, 350, 581));
    }

    #[test]
    fn codes_rank_by_orders_then_by_code() {
        let row = |code: &str, currency: &str, orders| CodeSales {
            code: code.into(),
            currency: currency.into(),
            figures: CodeFigures { orders, ..CodeFigures::default() },
        };
        let ranked = rank_codes(vec![row("B", "EUR", 2), row("A", "USD", 2), row("C", "EUR", 5), row("A", "EUR", 2)]);
        let order: Vec<_> = ranked.iter().map(|r| (r.code.as_str(), r.currency.as_str())).collect();
        assert_eq!(order, [("C", "EUR"), ("A", "EUR"), ("A", "USD"), ("B", "EUR")]);
    }

    #[test]
    fn cancellations_refunds_and_carts_have_their_own_columns() {
        let cancelled = effect(&Fact::OrderCancelled { refunded: eur(3_000), lines: vec![line("a", 2, 3_000)] }, 9);
        assert_eq!(
            cancelled.sales.expect("sales").1,
            SalesFigures { cancelled_orders: 1, cancelled_minor: 3_000, ..SalesFigures::default() }
        );
        assert_eq!((cancelled.products[0].units_cancelled, cancelled.products[0].units_sold), (2, 0));
        let refund = effect(&Fact::RefundCompleted { amount: eur(250) }, 9);
        assert_eq!(
            refund.sales.expect("sales").1,
            SalesFigures { refunds: 1, refunded_minor: 250, ..SalesFigures::default() }
        );
        let captured = effect(&Fact::PaymentCaptured { amount: eur(250) }, 9);
        assert_eq!(captured.sales.expect("sales").1.captured_minor, 250);
        assert_eq!(
            effect(&Fact::CartItemAdded { cart_was_empty: true }, 9).funnel,
            Some(Funnel { carts_started: 1, orders_from_carts: 0 })
        );
        assert_eq!(effect(&Fact::CartItemAdded { cart_was_empty: false }, 9), Effect { day: 9, ..Effect::default() });
    }

    #[test]
    fn buckets_sum_days_and_keep_empty_ones() {
        let period = Period { from: day("2025-01-01"), to: day("2025-01-16") };
        let sale = |orders: i64, gross: i64| SalesFigures { orders, gross_minor: gross, ..SalesFigures::default() };
        let rows = vec![
            (day("2025-01-01"), "EUR".to_owned(), sale(1, 100)),
            (day("2025-01-05"), "EUR".to_owned(), sale(2, 200)),
            (day("2025-01-05"), "USD".to_owned(), sale(1, 50)),
            (day("2025-01-15"), "EUR".to_owned(), sale(1, 10)),
        ];
        let weeks = sales_buckets(period, Interval::Week, &rows, None);
        let summary: Vec<Vec<(&str, i64, i64)>> = weeks
            .iter()
            .map(|b| b.sales.iter().map(|(c, f)| (c.as_str(), f.orders, f.gross_minor)).collect())
            .collect();
        assert_eq!(
            summary,
            [
                vec![("EUR", 3, 300), ("USD", 1, 50)],
                vec![("EUR", 0, 0), ("USD", 0, 0)],
                vec![("EUR", 1, 10), ("USD", 0, 0)]
            ]
        );
        let only_usd = sales_buckets(period, Interval::Month, &rows, Some("USD"));
        assert_eq!(only_usd.len(), 1);
        assert_eq!(only_usd[0].sales, [("USD".to_owned(), sale(1, 50))]);
        let none = sales_buckets(period, Interval::Day, &[], None);
        assert_eq!((none.len(), none[0].sales.len()), (15, 0), "days without any sale are still there");
        assert_eq!(totals_by_currency(&rows), [("EUR".to_owned(), sale(4, 310)), ("USD".to_owned(), sale(1, 50))]);
    }

    #[test]
    fn products_rank_by_units_or_revenue_with_ties_by_id() {
        let row = |id: &str, currency: &str, units: i64, revenue: i64| ProductSales {
            product_id: id.into(),
            sku: id.into(),
            name: id.into(),
            currency: currency.into(),
            units,
            revenue_minor: revenue,
            units_returned: 0,
        };
        let rows = vec![
            row("b", "EUR", 3, 300),
            row("a", "EUR", 3, 900),
            row("a", "USD", 1, 50),
            row("c", "EUR", 5, 100),
            row("d", "EUR", 0, 0),
        ];
        let by_units = top_products(rows.clone(), Ranking::Units, 10);
        let ids = |ranked: &[TopProduct]| ranked.iter().map(|p| (p.product_id.clone(), p.units)).collect::<Vec<_>>();
        assert_eq!(ids(&by_units), [("c".into(), 5), ("a".into(), 4), ("b".into(), 3)], "d sold nothing net");
        assert_eq!(by_units[1].revenue, [eur(900), Amount { currency: "USD".into(), minor: 50 }]);
        let eur_rows: Vec<ProductSales> = rows.into_iter().filter(|r| r.currency == "EUR").collect();
        let by_revenue = top_products(eur_rows.clone(), Ranking::Revenue, 2);
        assert_eq!(ids(&by_revenue), [("a".into(), 3), ("b".into(), 3)]);
        let tie = vec![row("z", "EUR", 1, 10), row("y", "EUR", 1, 10)];
        assert_eq!(ids(&top_products(tie, Ranking::Units, 10)), [("y".into(), 1), ("z".into(), 1)]);
        // Returns are summed over currencies, and a product only sent back in the period is listed, last.
        let returned = |id: &str, currency: &str, units: i64, units_returned: i64| ProductSales {
            units_returned,
            ..row(id, currency, units, units * 100)
        };
        let rows = vec![returned("a", "EUR", 4, 1), returned("a", "USD", 1, 1), returned("r", "EUR", 0, 2)];
        let ranked = top_products(rows, Ranking::Units, 10);
        let units = ranked.iter().map(|p| (p.product_id.as_str(), p.units, p.units_returned)).collect::<Vec<_>>();
        assert_eq!(units, [("a", 5, 2), ("r", 0, 2)]);
    }

    #[test]
    fn a_received_return_counts_its_units_back_by_product() {
        let lines = vec![("a".to_owned(), "EUR".to_owned(), 2), ("b".to_owned(), "EUR".to_owned(), 1)];
        let returned = effect(&Fact::ReturnReceived { lines }, 9);
        let counts: Vec<_> =
            returned.products.iter().map(|p| (p.product_id.as_str(), p.units_returned, p.units_sold)).collect();
        assert_eq!(counts, [("a", 2, 0), ("b", 1, 0)]);
        assert_eq!(returned.sales, None, "the money comes with return.refunded");
    }
}
