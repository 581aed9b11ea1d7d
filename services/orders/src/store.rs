//! All SQL of the orders service. Every statement is written once, in the subset SQLite and PostgreSQL
//! share, and run on whichever pool the [`Db`] holds through `with_db!` — except the writes of the checkout's
//! hot path (placing an order without a discount code, a saga move that does not end the order), which on
//! PostgreSQL are one data-modifying statement each instead of a transaction of up to six round trips (SQLite
//! has no data-modifying CTEs). A code's use is counted, and given back, in those transactions.
//!
//! Saga moves are compare-and-set on (status, saga_step): of two runners of one saga only one can move it,
//! and the loser learns so. Every transaction writes first, so that on SQLite it takes the write lock up
//! front instead of failing with SQLITE_BUSY when upgrading.

use platform::db::finish;
use platform::db::{BeginWrite, Db, is_unique_violation};
use platform::events::{NewEvent, OutboxEntry, enqueue};
use platform::with_db;

use crate::discount::Refusal;
use crate::domain::{Address, Cursor, Line, Price, Status, Step};
use crate::error::Error;
use crate::tax::{OrderTax, TaxPart};

const ORDER_COLUMNS: &str = "id, customer_id, status, saga_step, step_time, currency, total_minor, ship_name, \
     ship_line1, ship_line2, ship_city, ship_region, ship_postal_code, ship_country, payment_method, payment_id, \
     failure_reason, cancel_reason, from_cart, idempotency_key, request_hash, create_time, update_time, \
     discount_minor, discount_code, shipping_minor, shipping_rate_id, shipping_rate_name, tax_name, \
     tax_rate_basis_points, tax_taxable_minor, tax_minor, reduced_tax_rate_basis_points, reduced_taxable_minor, \
     reduced_tax_minor";

/// What an order's reads select: [`ORDER_COLUMNS`], which a new order is inserted with, and what only changes
/// after (the amount refunded, from the payment's events).
static SELECT_ORDER: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {ORDER_COLUMNS}, refunded_minor FROM orders"));

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: String,
    customer_id: String,
    status: String,
    saga_step: String,
    step_time: i64,
    currency: String,
    total_minor: i64,
    ship_name: String,
    ship_line1: String,
    ship_line2: String,
    ship_city: String,
    ship_region: String,
    ship_postal_code: String,
    ship_country: String,
    payment_method: String,
    payment_id: String,
    failure_reason: String,
    cancel_reason: String,
    from_cart: bool,
    idempotency_key: String,
    request_hash: String,
    create_time: i64,
    update_time: i64,
    discount_minor: i64,
    discount_code: String,
    shipping_minor: i64,
    shipping_rate_id: String,
    shipping_rate_name: String,
    tax_name: String,
    tax_rate_basis_points: Option<i64>,
    tax_taxable_minor: i64,
    tax_minor: i64,
    reduced_tax_rate_basis_points: Option<i64>,
    reduced_taxable_minor: i64,
    reduced_tax_minor: i64,
    refunded_minor: i64,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    order_id: String,
    product_id: String,
    sku: String,
    name: String,
    quantity: i64,
    unit_price_minor: i64,
    returned: i64,
}

/// An order's lines as [`LineRow`]s, each with the units that came back in received returns (the returns of an
/// order are few: `returns_by_order` finds them). Followed by the statement's WHERE clause.
const SELECT_LINES: &str = "SELECT i.order_id, i.product_id, i.sku, i.name, i.quantity, i.unit_price_minor, \
     CAST(COALESCE((SELECT SUM(rl.quantity) FROM returns r JOIN return_lines rl ON rl.return_id = r.id \
         WHERE r.order_id = i.order_id AND rl.product_id = i.product_id AND r.status IN ('received', 'refunded')), \
         0) AS BIGINT) AS returned \
     FROM order_items i";

/// A stored order with its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// UUIDv7.
    pub id: String,
    /// The customer (user id).
    pub customer_id: String,
    /// What customers see.
    pub status: Status,
    /// Where the saga stands.
    pub step: Step,
    /// When the step was entered or last claimed (microseconds).
    pub step_time: i64,
    /// Lines, in the order placed.
    pub lines: Vec<Line>,
    /// What the customer pays: the lines' sum less the discount, plus shipping.
    pub total: Price,
    /// What a discount code took off the lines' sum (0 without one), in the total's currency.
    pub discount_minor: i64,
    /// The discount code, upper case; empty without one. The order holds one of its uses until it fails or is
    /// cancelled.
    pub discount_code: String,
    /// What shipping costs (0 when free or not charged), in the total's currency.
    pub shipping_minor: i64,
    /// The shipping rate charged; empty when the shop had no rates.
    pub shipping_rate_id: String,
    /// The rate's name when the order was placed.
    pub shipping_rate_name: String,
    /// The tax the total includes, at the shipping country's rates when placed; None when it had none.
    pub tax: Option<OrderTax>,
    /// What has been given back of the total so far (staff's refunds and a cancellation's), as the payment's
    /// `payment.refunded` events told; 0 for a new order.
    pub refunded_minor: i64,
    /// Shipping address.
    pub address: Address,
    /// Payment method token.
    pub payment_method: String,
    /// The payment, once made; empty before.
    pub payment_id: String,
    /// Customer-readable failure reason; empty unless failing or FAILED.
    pub failure_reason: String,
    /// Why it was cancelled; empty unless cancelling or CANCELLED.
    pub cancel_reason: String,
    /// Placed from the customer's cart.
    pub from_cart: bool,
    /// The idempotency key it was created with.
    pub idempotency_key: String,
    /// Fingerprint of the creating request.
    pub request_hash: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

impl Order {
    /// The sum of the lines, before the discount and without shipping.
    pub fn subtotal(&self) -> Price {
        Price {
            currency: self.total.currency.clone(),
            amount_minor: self.total.amount_minor + self.discount_minor - self.shipping_minor,
        }
    }

    /// What has been given back so far (zero when nothing was).
    pub fn refunded(&self) -> Price {
        Price { currency: self.total.currency.clone(), amount_minor: self.refunded_minor }
    }

    /// What shipping costs (zero when free or not charged).
    pub fn shipping(&self) -> Price {
        Price { currency: self.total.currency.clone(), amount_minor: self.shipping_minor }
    }

    /// What the discount code took off (zero without one).
    pub fn discount(&self) -> Price {
        Price { currency: self.total.currency.clone(), amount_minor: self.discount_minor }
    }

    /// The cursor of a page ending with this order.
    pub fn cursor(&self) -> Cursor {
        Cursor { key: self.create_time, id: self.id.clone() }
    }
}

/// A stored value no release writes (`what`, as found): the database was changed by hand, or by a newer release.
pub(crate) fn corrupt(what: &str, value: &str) -> Error {
    Error::Database(sqlx::Error::Protocol(format!("unknown {what} {value}")))
}

/// A part of an order's (or an invoice's) tax as stored: none without a rate.
pub(crate) fn tax_part(rate_basis_points: Option<i64>, taxable_minor: i64, amount_minor: i64) -> Option<TaxPart> {
    // The table's CHECK keeps rates within 0..=10000.
    rate_basis_points.map(|rate| TaxPart {
        rate_basis_points: u32::try_from(rate).unwrap_or_default(),
        taxable_minor,
        amount_minor,
    })
}

fn assemble(row: OrderRow, lines: Vec<Line>) -> Result<Order, Error> {
    Ok(Order {
        status: Status::parse(&row.status).ok_or_else(|| corrupt("order status", &row.status))?,
        step: Step::parse(&row.saga_step).ok_or_else(|| corrupt("saga step", &row.saga_step))?,
        id: row.id,
        customer_id: row.customer_id,
        step_time: row.step_time,
        lines,
        total: Price { currency: row.currency, amount_minor: row.total_minor },
        discount_minor: row.discount_minor,
        discount_code: row.discount_code,
        shipping_minor: row.shipping_minor,
        shipping_rate_id: row.shipping_rate_id,
        shipping_rate_name: row.shipping_rate_name,
        // An empty name is an order placed to a country without a rate.
        tax: (!row.tax_name.is_empty()).then(|| OrderTax {
            name: row.tax_name,
            standard: tax_part(row.tax_rate_basis_points, row.tax_taxable_minor, row.tax_minor),
            reduced: tax_part(row.reduced_tax_rate_basis_points, row.reduced_taxable_minor, row.reduced_tax_minor),
        }),
        refunded_minor: row.refunded_minor,
        address: Address {
            name: row.ship_name,
            line1: row.ship_line1,
            line2: row.ship_line2,
            city: row.ship_city,
            region: row.ship_region,
            postal_code: row.ship_postal_code,
            country: row.ship_country,
        },
        payment_method: row.payment_method,
        payment_id: row.payment_id,
        failure_reason: row.failure_reason,
        cancel_reason: row.cancel_reason,
        from_cart: row.from_cart,
        idempotency_key: row.idempotency_key,
        request_hash: row.request_hash,
        create_time: row.create_time,
        update_time: row.update_time,
    })
}

fn line(row: LineRow) -> Line {
    Line {
        product_id: row.product_id,
        sku: row.sku,
        name: row.name,
        quantity: i32::try_from(row.quantity).unwrap_or(i32::MAX),
        unit_price_minor: row.unit_price_minor,
        returned: i32::try_from(row.returned).unwrap_or(i32::MAX),
    }
}

/// How placing an order went ([`Store::insert_order`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Stored, with its lines, its event and its discount code's use.
    Placed,
    /// The customer used the order's idempotency key before: nothing was written.
    KeyUsed,
    /// Its discount code cannot be used by it after all (used up, or by this customer before, or switched off
    /// since it was read): nothing was written.
    Refused(Refusal),
}

/// A saga move: the state an order goes to, and what it records on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// New status.
    pub status: Status,
    /// New step.
    pub step: Step,
    /// Sets the payment id.
    pub payment_id: Option<String>,
    /// Sets the failure reason.
    pub failure_reason: Option<String>,
    /// Sets the cancel reason.
    pub cancel_reason: Option<String>,
}

impl Change {
    /// A move to `status` and `step` changing nothing else.
    pub fn to(status: Status, step: Step) -> Self {
        Self { status, step, payment_id: None, failure_reason: None, cancel_reason: None }
    }

    /// Applies the move [`Store::advance`] stored at `now` to a copy of the order, field for field as its
    /// UPDATE does, so the saga need not read the order back after each step.
    pub fn apply(self, order: &mut Order, now: i64) {
        order.status = self.status;
        order.step = self.step;
        order.step_time = now;
        order.update_time = now;
        if let Some(payment_id) = self.payment_id {
            order.payment_id = payment_id;
        }
        if let Some(reason) = self.failure_reason {
            order.failure_reason = reason;
        }
        if let Some(reason) = self.cancel_reason {
            order.cancel_reason = reason;
        }
    }
}

/// A saga move: compare-and-set on the order's status and step. [`bind_move`] binds $1 to $9.
const MOVE_SQL: &str = "UPDATE orders SET status = $1, saga_step = $2, step_time = $3, update_time = $3, \
     payment_id = COALESCE($4, payment_id), failure_reason = COALESCE($5, failure_reason), \
     cancel_reason = COALESCE($6, cancel_reason) WHERE id = $7 AND status = $8 AND saga_step = $9";

/// The start of every `saga_log` insert.
const INSERT_SAGA_LOG: &str = "INSERT INTO saga_log (id, order_id, from_step, to_step, status, note, create_time)";

/// The `saga_log` line of a move that `moved` (a CTE of [`MOVE_SQL`] returning the order's id) applied: $10 is the
/// line's id, $11 its note.
static LOG_MOVED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{INSERT_SAGA_LOG} SELECT $10, id, $9, $2, $1, $11, $3 FROM moved"));

/// What a saga move does to the saga's row in `sagas_in_flight` (a row while the step is not `done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    /// In flight before and after, or done before and after: the row stays as it is.
    Stays,
    /// The saga lands on `done`: its row goes.
    Lands,
    /// A done saga starts again (a confirmed order's cancellation): it gets a row.
    TakesOff,
}

impl Flight {
    fn of(from: Step, to: Step) -> Self {
        match (from.in_flight(), to.in_flight()) {
            (true, false) => Self::Lands,
            (false, true) => Self::TakesOff,
            _ => Self::Stays,
        }
    }

    /// The statement that keeps `sagas_in_flight` in step with a move of order `$1`, if the move needs one.
    fn sql(self) -> Option<&'static str> {
        match self {
            Self::Stays => None,
            Self::Lands => Some("DELETE FROM sagas_in_flight WHERE order_id = $1"),
            Self::TakesOff => Some("INSERT INTO sagas_in_flight (order_id) VALUES ($1)"),
        }
    }

    /// The same as a CTE after `moved` (a CTE of [`MOVE_SQL`] returning the order's id), with its leading comma.
    fn cte(self) -> &'static str {
        match self {
            Self::Stays => "",
            Self::Lands => ", landed AS (DELETE FROM sagas_in_flight WHERE order_id IN (SELECT id FROM moved))",
            Self::TakesOff => ", took_off AS (INSERT INTO sagas_in_flight (order_id) SELECT id FROM moved)",
        }
    }
}

/// [`MOVE_SQL`], its `saga_log` line and its `sagas_in_flight` change in one statement (PostgreSQL's
/// data-modifying CTEs); $10 is the log line's id, $11 its note. With an event, its outbox row ($12 to $18) too,
/// written only when the move applied, so the statement changes one outbox row or none.
fn move_statement(flight: Flight, event: bool) -> String {
    let head = format!("WITH moved AS ({MOVE_SQL} RETURNING id){}", flight.cte());
    if event {
        format!("{head}, logged AS ({} RETURNING order_id) {}", *LOG_MOVED, OutboxEntry::insert_from("logged", 12))
    } else {
        format!("{head} {}", *LOG_MOVED)
    }
}

/// The [`move_statement`] of a move, each built once.
fn move_sql(flight: Flight, event: bool) -> &'static str {
    // Indexed by the flight's discriminant (its place in this list), then by whether there is an event.
    static STATEMENTS: std::sync::LazyLock<[[String; 2]; 3]> = std::sync::LazyLock::new(|| {
        [Flight::Stays, Flight::Lands, Flight::TakesOff]
            .map(|flight| [false, true].map(|event| move_statement(flight, event)))
    });
    &STATEMENTS[flight as usize][usize::from(event)]
}

/// Placing an order without a discount code in one statement (PostgreSQL): the order ($1 to $35, as
/// [`bind_order`] binds them), its lines as arrays ($36 to $41), its first `saga_log` line ($42) and its
/// `order.placed` event ($43 to $49). A used idempotency key inserts nothing at all: the statement then changes
/// no outbox row.
static PLACE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH placed AS ({} \
         ON CONFLICT (customer_id, idempotency_key) DO NOTHING RETURNING id), \
         lines AS (INSERT INTO order_items (order_id, line_no, product_id, sku, name, quantity, unit_price_minor) \
         SELECT placed.id, l.line_no, l.product_id, l.sku, l.name, l.quantity, l.unit_price_minor FROM placed, \
         unnest($36::bigint[], $37::text[], $38::text[], $39::text[], $40::bigint[], $41::bigint[]) \
         AS l (line_no, product_id, sku, name, quantity, unit_price_minor)), \
         flying AS (INSERT INTO sagas_in_flight (order_id) SELECT id FROM placed), \
         logged AS ({INSERT_SAGA_LOG} SELECT $42, id, '', $4, $3, 'order placed', $22 FROM placed \
         RETURNING order_id) {}",
        *INSERT_ORDER_SQL,
        OutboxEntry::insert_from("logged", 43)
    )
});

/// Inserts an order; [`bind_order`] binds $1 to $35.
static INSERT_ORDER_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("INSERT INTO orders ({ORDER_COLUMNS}) VALUES ({})", platform::db::values_for(ORDER_COLUMNS))
});

/// Binds the columns of an order, in the order of [`ORDER_COLUMNS`] ($1 to $35).
fn bind_order<'q, DB>(query: platform::db::Query<'q, DB>, order: &'q Order) -> platform::db::Query<'q, DB>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let (standard, reduced) = order.tax.as_ref().map_or((None, None), |t| (t.standard, t.reduced));
    query
        .bind(order.id.as_str())
        .bind(order.customer_id.as_str())
        .bind(order.status.as_str())
        .bind(order.step.as_str())
        .bind(order.step_time)
        .bind(order.total.currency.as_str())
        .bind(order.total.amount_minor)
        .bind(order.address.name.as_str())
        .bind(order.address.line1.as_str())
        .bind(order.address.line2.as_str())
        .bind(order.address.city.as_str())
        .bind(order.address.region.as_str())
        .bind(order.address.postal_code.as_str())
        .bind(order.address.country.as_str())
        .bind(order.payment_method.as_str())
        .bind(order.payment_id.as_str())
        .bind(order.failure_reason.as_str())
        .bind(order.cancel_reason.as_str())
        .bind(order.from_cart)
        .bind(order.idempotency_key.as_str())
        .bind(order.request_hash.as_str())
        .bind(order.create_time)
        .bind(order.update_time)
        .bind(order.discount_minor)
        .bind(order.discount_code.as_str())
        .bind(order.shipping_minor)
        .bind(order.shipping_rate_id.as_str())
        .bind(order.shipping_rate_name.as_str())
        .bind(order.tax.as_ref().map_or("", |t| t.name.as_str()))
        .bind(standard.map(|p| i64::from(p.rate_basis_points)))
        .bind(standard.map_or(0, |p| p.taxable_minor))
        .bind(standard.map_or(0, |p| p.amount_minor))
        .bind(reduced.map(|p| i64::from(p.rate_basis_points)))
        .bind(reduced.map_or(0, |p| p.taxable_minor))
        .bind(reduced.map_or(0, |p| p.amount_minor))
}

/// Binds the parameters of [`MOVE_SQL`] (also inside the statement that logs the move with it).
fn bind_move<'q, DB>(
    query: platform::db::Query<'q, DB>,
    id: &'q str,
    (from_status, from_step): (Status, Step),
    change: &'q Change,
    now: i64,
) -> platform::db::Query<'q, DB>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(change.status.as_str())
        .bind(change.step.as_str())
        .bind(now)
        .bind(change.payment_id.as_deref())
        .bind(change.failure_reason.as_deref())
        .bind(change.cancel_reason.as_deref())
        .bind(id)
        .bind(from_status.as_str())
        .bind(from_step.as_str())
}

/// What ListOrders asks of the store.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this customer's orders, when set.
    pub customer_id: Option<String>,
    /// Only orders in this state, when set.
    pub status: Option<Status>,
    /// Start after this order.
    pub after: Option<Cursor>,
    /// Only orders placed in this period (microseconds, start inclusive, end exclusive).
    pub period: (i64, i64),
    /// At most this many rows.
    pub limit: i64,
}

enum Arg {
    Text(String),
    Int(i64),
}

/// A confirmed order as the cross-service audit checks it against the catalog and payments.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConfirmedOrder {
    /// The order (and its stock reservation in the catalog).
    pub id: String,
    /// The payment that paid it.
    pub payment_id: String,
    /// ISO 4217 code of its total.
    pub currency: String,
    /// Its total in minor units.
    pub total_minor: i64,
    /// The tax its total includes, in minor units (0: none).
    pub tax_minor: i64,
    /// When it last changed (its confirmation, or a refund since), microseconds since the epoch.
    pub update_time: i64,
}

/// What a customer bought with one order (confirmed, or cancelled since), for the catalog's record of buyers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// Its products, each once.
    pub product_ids: Vec<String>,
    /// Whether it was cancelled after its confirmation.
    pub cancelled: bool,
}

/// The orders service's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a new order with its lines and its `order.placed` event, and counts the use of its discount code,
    /// in one transaction (one statement on PostgreSQL for an order without a code). Nothing is written when the
    /// customer already used the order's idempotency key, or when the code cannot be used by this order after all.
    pub async fn insert_order(&self, order: &Order, placed: &NewEvent) -> Result<Placement, Error> {
        if let (Db::Postgres(pool), true) = (&self.db, order.discount_code.is_empty()) {
            let line_nos: Vec<i64> = (0..order.lines.len()).map(|n| i64::try_from(n).unwrap_or(i64::MAX)).collect();
            let query = bind_order(sqlx::query(PLACE_SQL.as_str()), order)
                .bind(line_nos)
                .bind(order.lines.iter().map(|l| l.product_id.as_str()).collect::<Vec<_>>())
                .bind(order.lines.iter().map(|l| l.sku.as_str()).collect::<Vec<_>>())
                .bind(order.lines.iter().map(|l| l.name.as_str()).collect::<Vec<_>>())
                .bind(order.lines.iter().map(|l| i64::from(l.quantity)).collect::<Vec<_>>())
                .bind(order.lines.iter().map(|l| l.unit_price_minor).collect::<Vec<_>>())
                .bind(uuid::Uuid::now_v7().to_string());
            let placed = OutboxEntry::new(crate::NAME, placed).bind(query).execute(pool).await?;
            return Ok(if placed.rows_affected() == 1 { Placement::Placed } else { Placement::KeyUsed });
        }
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<Placement, Error> = async {
                match bind_order(sqlx::query(INSERT_ORDER_SQL.as_str()), order).execute(&mut *tx).await {
                    Err(e) if is_unique_violation(&e) => return Ok(Placement::KeyUsed),
                    inserted => inserted?,
                };
                if !order.discount_code.is_empty() {
                    // The code's row is written first: concurrent uses of one code queue on its row lock
                    // (PostgreSQL) or the write lock (SQLite), so the limit and the customer's earlier uses
                    // below are read after every earlier use committed.
                    let once_per_customer = sqlx::query_scalar::<_, bool>(
                        "UPDATE discount_codes SET times_redeemed = times_redeemed + 1, update_time = $2 \
                         WHERE code = $1 AND disabled = FALSE \
                         AND (max_redemptions = 0 OR times_redeemed < max_redemptions) RETURNING once_per_customer",
                    )
                    .bind(&order.discount_code)
                    .bind(order.create_time)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(once_per_customer) = once_per_customer else {
                        let disabled = sqlx::query_scalar::<_, bool>("SELECT disabled FROM discount_codes WHERE code = $1")
                            .bind(&order.discount_code)
                            .fetch_optional(&mut *tx)
                            .await?;
                        return Ok(Placement::Refused(match disabled {
                            None => Refusal::Unknown,
                            Some(true) => Refusal::Disabled,
                            Some(false) => Refusal::UsedUp,
                        }));
                    };
                    if once_per_customer {
                        let used: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM discount_redemptions WHERE code = $1 AND customer_id = $2",
                        )
                        .bind(&order.discount_code)
                        .bind(&order.customer_id)
                        .fetch_one(&mut *tx)
                        .await?;
                        if used > 0 {
                            return Ok(Placement::Refused(Refusal::UsedBefore));
                        }
                    }
                    sqlx::query(
                        "INSERT INTO discount_redemptions (order_id, code, customer_id, create_time) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&order.id)
                    .bind(&order.discount_code)
                    .bind(&order.customer_id)
                    .bind(order.create_time)
                    .execute(&mut *tx)
                    .await?;
                }
                for (n, l) in order.lines.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO order_items (order_id, line_no, product_id, sku, name, quantity, \
                             unit_price_minor) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&order.id)
                    .bind(i64::try_from(n).unwrap_or(i64::MAX))
                    .bind(&l.product_id)
                    .bind(&l.sku)
                    .bind(&l.name)
                    .bind(i64::from(l.quantity))
                    .bind(l.unit_price_minor)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "{INSERT_SAGA_LOG} VALUES ($1, $2, '', $3, $4, 'order placed', $5)"
                )))
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&order.id)
                .bind(order.step.as_str())
                .bind(order.status.as_str())
                .bind(order.create_time)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO sagas_in_flight (order_id) VALUES ($1)")
                    .bind(&order.id)
                    .execute(&mut *tx)
                    .await?;
                enqueue(&mut *tx, crate::NAME, placed).await?;
                Ok(Placement::Placed)
            }
            .await;
            match result {
                Ok(Placement::Placed) => {
                    tx.commit().await?;
                    Ok(Placement::Placed)
                }
                // A used key or a refused code writes nothing.
                other => {
                    tx.rollback().await?;
                    other
                }
            }
        })
    }

    /// The id of the order `customer_id` created with idempotency key `key`, if any.
    pub async fn id_by_key(&self, customer_id: &str, key: &str) -> Result<Option<String>, Error> {
        let id = with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, String>("SELECT id FROM orders WHERE customer_id = $1 AND idempotency_key = $2")
                .bind(customer_id)
                .bind(key)
                .fetch_optional(pool)
                .await?
        });
        Ok(id)
    }

    /// Order `id` with its lines, if it exists.
    pub async fn order(&self, id: &str) -> Result<Option<Order>, Error> {
        let sql = format!("{} WHERE id = $1", *SELECT_ORDER);
        let lines_sql = format!("{SELECT_LINES} WHERE i.order_id = $1 ORDER BY i.line_no");
        let (row, lines) = with_db!(&self.db, pool => {
            let row = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
            let lines = sqlx::query_as::<_, LineRow>(sqlx::AssertSqlSafe(lines_sql))
            .bind(id)
            .fetch_all(pool)
            .await?;
            (row, lines)
        });
        row.map(|row| assemble(row, lines.into_iter().map(line).collect())).transpose()
    }

    /// Orders newest first, after the cursor, filtered as asked, with their lines.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Order>, Error> {
        let mut sql = format!("{} WHERE 1 = 1", *SELECT_ORDER);
        let mut args = Vec::new();
        let mut arg = |a: Arg| {
            args.push(a);
            args.len()
        };
        if let Some(customer) = &q.customer_id {
            let n = arg(Arg::Text(customer.clone()));
            sql.push_str(&format!(" AND customer_id = ${n}"));
        }
        if let Some(status) = q.status {
            let n = arg(Arg::Text(status.as_str().to_owned()));
            sql.push_str(&format!(" AND status = ${n}"));
        }
        if let Some(after) = &q.after {
            let t = arg(Arg::Int(after.key));
            let i = arg(Arg::Text(after.id.clone()));
            sql.push_str(&format!(" AND (create_time < ${t} OR (create_time = ${t} AND id < ${i}))"));
        }
        let (start, end) = (arg(Arg::Int(q.period.0)), arg(Arg::Int(q.period.1)));
        sql.push_str(&format!(" AND create_time >= ${start} AND create_time < ${end}"));
        let n = arg(Arg::Int(q.limit));
        sql.push_str(&format!(" ORDER BY create_time DESC, id DESC LIMIT ${n}"));
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(sql));
            for a in &args {
                query = match a {
                    Arg::Text(s) => query.bind(s.as_str()),
                    Arg::Int(i) => query.bind(*i),
                };
            }
            query.fetch_all(pool).await?
        });
        self.with_lines(rows).await
    }

    /// The orders with these ids that exist, with their lines, in no particular order.
    pub async fn orders(&self, ids: &[&str]) -> Result<Vec<Order>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!("{} WHERE id IN ({placeholders})", *SELECT_ORDER);
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(sql));
            for id in ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?
        });
        self.with_lines(rows).await
    }

    /// Orders of `rows`, in their order, with their lines (one statement for all).
    async fn with_lines(&self, rows: Vec<OrderRow>) -> Result<Vec<Order>, Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=rows.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let lines_sql = format!("{SELECT_LINES} WHERE i.order_id IN ({placeholders}) ORDER BY i.order_id, i.line_no");
        let line_rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, LineRow>(sqlx::AssertSqlSafe(lines_sql));
            for row in &rows {
                query = query.bind(row.id.as_str());
            }
            query.fetch_all(pool).await?
        });
        let mut by_order: std::collections::HashMap<String, Vec<Line>> = std::collections::HashMap::new();
        for l in line_rows {
            by_order.entry(l.order_id.clone()).or_default().push(line(l));
        }
        rows.into_iter()
            .map(|row| {
                let lines = by_order.remove(&row.id).unwrap_or_default();
                assemble(row, lines)
            })
            .collect()
    }

    /// Moves order `id` from its (status, step) as `change` says, logging the move and enqueuing
    /// `event` in the same transaction. False when the order was no longer there (another runner moved it).
    pub async fn advance(
        &self,
        id: &str,
        (from_status, from_step): (Status, Step),
        change: &Change,
        event: Option<&NewEvent>,
        note: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let flight = Flight::of(from_step, change.step);
        // An order that fails or is cancelled gives its discount code's use back, in the same transaction.
        let gives_back = matches!(change.status, Status::Failed | Status::Cancelled);
        if let (Db::Postgres(pool), false) = (&self.db, gives_back) {
            // A move is one statement on PostgreSQL: the compare-and-set, its log line, its in-flight row and
            // its event in one round trip instead of up to six (BEGIN, UPDATE, INSERT, DELETE, INSERT,
            // COMMIT). SQLite has no data-modifying CTEs; the rarer moves that end an order take a transaction.
            let query =
                bind_move(sqlx::query(move_sql(flight, event.is_some())), id, (from_status, from_step), change, now)
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(note);
            let query = match event {
                Some(event) => OutboxEntry::new(crate::NAME, event).bind(query),
                None => query,
            };
            return Ok(query.execute(pool).await?.rows_affected() == 1);
        }
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<_, Error> = async {
                let updated = bind_move(sqlx::query(MOVE_SQL), id, (from_status, from_step), change, now)
                    .execute(&mut *tx)
                    .await?;
                if updated.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query(sqlx::AssertSqlSafe(format!("{INSERT_SAGA_LOG} VALUES ($1, $2, $3, $4, $5, $6, $7)")))
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(id)
                    .bind(from_step.as_str())
                    .bind(change.step.as_str())
                    .bind(change.status.as_str())
                    .bind(note)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if let Some(sql) = flight.sql() {
                    sqlx::query(sql).bind(id).execute(&mut *tx).await?;
                }
                if gives_back {
                    let code = sqlx::query_scalar::<_, String>(
                        "DELETE FROM discount_redemptions WHERE order_id = $1 RETURNING code",
                    )
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(code) = code {
                        sqlx::query(
                            "UPDATE discount_codes SET times_redeemed = times_redeemed - 1, update_time = $2 \
                             WHERE code = $1",
                        )
                        .bind(&code)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                if let Some(event) = event {
                    enqueue(&mut *tx, crate::NAME, event).await?;
                }
                Ok(true)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Orders whose saga has work left (PENDING, or CONFIRMED while cancelling: listed in `sagas_in_flight`),
    /// with their step times; only those whose step is older than `before` when given.
    pub async fn in_flight(&self, before: Option<i64>) -> Result<Vec<(String, i64)>, Error> {
        let before = before.unwrap_or(i64::MAX);
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT o.id, o.step_time FROM sagas_in_flight f JOIN orders o ON o.id = f.order_id \
                 WHERE o.step_time < $1 ORDER BY o.step_time, o.id",
            )
            .bind(before)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Claims a stalled saga for this runner: moves its step time from `seen` to `now`. False when someone
    /// else claimed or moved it meanwhile.
    pub async fn claim(&self, id: &str, seen: i64, now: i64) -> Result<bool, Error> {
        let n = with_db!(&self.db, pool => {
            sqlx::query("UPDATE orders SET step_time = $1 WHERE id = $2 AND step_time = $3")
                .bind(now)
                .bind(id)
                .bind(seen)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Records that payment `payment_id` of order `order_id` has given back `refunded_minor` in all (a cumulative
    /// amount): raises the order's amount refunded to it, never lowers it, so events redelivered or out of order
    /// change nothing. False when nothing changed (no such order paid by that payment, or it knew as much).
    pub async fn record_refunded(
        &self,
        order_id: &str,
        payment_id: &str,
        refunded_minor: i64,
        now: i64,
    ) -> Result<bool, Error> {
        let n = with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE orders SET refunded_minor = $1, update_time = $2 \
                 WHERE id = $3 AND payment_id = $4 AND refunded_minor < $1",
            )
            .bind(refunded_minor)
            .bind(now)
            .bind(order_id)
            .bind(payment_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Up to `limit` orders that were confirmed (CONFIRMED, or CANCELLED since) after order id `after`, by id, with
    /// their products: one statement a page.
    pub async fn purchases(&self, after: &str, limit: i64) -> Result<Vec<Purchase>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, (String, String, String, String)>(
                "SELECT o.id, o.customer_id, o.status, i.product_id FROM orders o \
                 JOIN order_items i ON i.order_id = o.id \
                 WHERE o.id IN (SELECT id FROM orders WHERE status IN ('CONFIRMED', 'CANCELLED') AND id > $1 \
                     ORDER BY id LIMIT $2) \
                 ORDER BY o.id, i.product_id",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let mut purchases: Vec<Purchase> = Vec::new();
        for (order_id, customer_id, status, product_id) in rows {
            match purchases.last_mut() {
                Some(last) if last.order_id == order_id => {
                    if last.product_ids.last() != Some(&product_id) {
                        last.product_ids.push(product_id);
                    }
                }
                _ => purchases.push(Purchase {
                    order_id,
                    customer_id,
                    product_ids: vec![product_id],
                    cancelled: status == Status::Cancelled.as_str(),
                }),
            }
        }
        Ok(purchases)
    }

    /// Every CONFIRMED order with its payment and total, for the cross-service audit.
    pub async fn confirmed(&self) -> Result<Vec<ConfirmedOrder>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, ConfirmedOrder>(
                "SELECT id, payment_id, currency, total_minor, tax_minor + reduced_tax_minor AS tax_minor, update_time \
                 FROM orders WHERE status = 'CONFIRMED' ORDER BY id",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// What is wrong with the orders on their own, in words: orders stuck in checkout or cancellation since
    /// before `stuck_before`, sagas the recovery task would miss or resume though done, confirmed or
    /// cancelled orders without a payment, and what [`Store::audit_invoices`] finds.
    pub async fn audit(&self, stuck_before: i64) -> Result<Vec<String>, Error> {
        let (stuck, untracked, unpaid) = with_db!(&self.db, pool => {
            let stuck = sqlx::query_as::<_, (String, String, String, i64)>(
                "SELECT id, status, saga_step, step_time FROM orders \
                 WHERE saga_step <> 'done' AND step_time < $1 ORDER BY step_time, id",
            )
            .bind(stuck_before)
            .fetch_all(pool)
            .await?;
            let untracked = sqlx::query_as::<_, (String, String, bool)>(
                "SELECT o.id, o.saga_step, f.order_id IS NOT NULL FROM orders o \
                 LEFT JOIN sagas_in_flight f ON f.order_id = o.id \
                 WHERE (o.saga_step <> 'done') <> (f.order_id IS NOT NULL) ORDER BY o.id",
            )
            .fetch_all(pool)
            .await?;
            let unpaid = sqlx::query_as::<_, (String, String)>(
                "SELECT id, status FROM orders WHERE status IN ('CONFIRMED', 'CANCELLED') AND payment_id = '' \
                 ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            (stuck, untracked, unpaid)
        });
        let mut problems: Vec<String> = stuck
            .into_iter()
            .map(|(id, status, step, time)| {
                format!("order {id} is stuck: {status} at saga step {step} since {time} (µs since the epoch)")
            })
            .collect();
        problems.extend(untracked.into_iter().map(|(id, step, tracked)| {
            if tracked {
                format!("order {id} is listed as in flight, but its saga is {step}")
            } else {
                format!("order {id} has work left at saga step {step}, but the recovery task does not see it")
            }
        }));
        problems.extend(unpaid.into_iter().map(|(id, status)| format!("order {id} is {status} without a payment")));
        problems.extend(self.audit_invoices().await?);
        problems.extend(self.audit_returns(stuck_before).await?);
        Ok(problems)
    }
}
