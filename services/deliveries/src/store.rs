//! All SQL of the deliveries service. Every statement is written once, in the subset SQLite and PostgreSQL
//! share, and run on whichever pool the [`Db`] holds through `with_db!`.
//!
//! Every change is one transaction that writes the shipment's row first (`lock_shipment!`): on PostgreSQL
//! that locks the shipment, on SQLite it takes the write lock up front, so changes to one shipment are
//! serialised and the state read next is the state the change applies to. The events a change causes are
//! written to the outbox in the same transaction; an event consumed is recorded in the inbox in the
//! transaction of its effect.

use std::collections::HashMap;

use api::mercato::orders::v1::Address;
use platform::db::{BeginWrite, Db, finish};
use platform::events::{enqueue, first_delivery};
use platform::with_db;

use crate::domain::{self, Dispatch, NewTrackingEvent, OnOrderCancelled, Status, Tracking, TrackingRefusal};
use crate::error::{Error, INVALID_SHIPMENT_TRANSITION, SHIPMENT_DISPATCHED, SHIPMENT_NOT_PENDING};
use crate::events;

/// Who wrote a history entry: the service itself or a carrier.
const ORIGIN_SERVICE: &str = "service";
const ORIGIN_CARRIER: &str = "carrier";

/// The columns of `shipments`, in `ShipmentRow`'s order (a macro, so statements are built at compile time).
macro_rules! shipment_columns {
    () => {
        "id, order_id, customer_id, status, name, line1, line2, city, region, postal_code, country, carrier, \
         tracking_number, create_time, update_time, ship_time, deliver_time, shipping_method"
    };
}

/// Writes the shipment's row (a no-op update) so the transaction holds it, and yields it; `None` when there
/// is no such shipment (a macro: it runs on either engine's transaction).
macro_rules! lock_shipment {
    ($conn:expr, $id:expr) => {
        sqlx::query_as::<_, ShipmentRow>(concat!(
            "UPDATE shipments SET update_time = update_time WHERE id = $1 RETURNING ",
            shipment_columns!()
        ))
        .bind($id)
        .fetch_optional($conn)
        .await?
    };
}

/// Appends an entry to a shipment's history, numbered after its last one.
macro_rules! add_history {
    ($conn:expr, $shipment_id:expr, $origin:expr, $status:expr, $location:expr, $description:expr, $occur_time:expr,
     $now:expr, $carrier_event_id:expr) => {
        sqlx::query(
            "INSERT INTO tracking_events (shipment_id, seq, origin, status, location, description, occur_time, \
             record_time, carrier_event_id) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7, $8 FROM tracking_events \
             WHERE shipment_id = $1",
        )
        .bind($shipment_id)
        .bind($origin)
        .bind($status)
        .bind($location)
        .bind($description)
        .bind($occur_time)
        .bind($now)
        .bind($carrier_event_id)
        .execute($conn)
        .await?
    };
}

/// A line of a shipment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Item {
    /// The product.
    pub product_id: String,
    /// Its sku when ordered.
    pub sku: String,
    /// Its name when ordered.
    pub name: String,
    /// Units.
    pub quantity: i32,
}

/// An entry of a shipment's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The state the shipment moved to or stayed in.
    pub status: Status,
    /// Where; may be empty.
    pub location: String,
    /// What happened.
    pub description: String,
    /// When it happened, microseconds since the epoch.
    pub occur_time: i64,
    /// The carrier's id of the event, if any.
    pub carrier_event_id: Option<String>,
}

/// A stored shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    /// Its id.
    pub id: String,
    /// Its order.
    pub order_id: String,
    /// The customer who placed the order.
    pub customer_id: String,
    /// State.
    pub status: Status,
    /// Where it goes.
    pub address: Address,
    /// The carrier; empty until dispatched.
    pub carrier: String,
    /// The tracking number; empty until dispatched.
    pub tracking_number: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
    /// When dispatched.
    pub ship_time: Option<i64>,
    /// When delivered.
    pub deliver_time: Option<i64>,
    /// The shipping rate the customer chose, by name; empty when the shop charges no shipping.
    pub shipping_method: String,
    /// What goes in the parcel.
    pub items: Vec<Item>,
    /// The history in the order it happened (empty in listings).
    pub history: Vec<HistoryEntry>,
}

/// The shipment a confirmed order asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShipment {
    /// The order.
    pub order_id: String,
    /// Its customer.
    pub customer_id: String,
    /// Its shipping address.
    pub address: Address,
    /// Its lines.
    pub items: Vec<Item>,
    /// The order's shipping rate, by name.
    pub shipping_method: String,
}

/// Which shipments a listing returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this customer's.
    pub customer_id: Option<String>,
    /// Only this order's.
    pub order_id: Option<String>,
    /// Only in this state.
    pub status: Option<Status>,
    /// Only those created before this one (the page token).
    pub before_id: Option<String>,
    /// At most this many.
    pub limit: i64,
}

#[derive(sqlx::FromRow)]
struct ShipmentRow {
    id: String,
    order_id: String,
    customer_id: String,
    status: String,
    name: String,
    line1: String,
    line2: String,
    city: String,
    region: String,
    postal_code: String,
    country: String,
    carrier: String,
    tracking_number: String,
    create_time: i64,
    update_time: i64,
    ship_time: Option<i64>,
    deliver_time: Option<i64>,
    shipping_method: String,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    shipment_id: String,
    product_id: String,
    sku: String,
    name: String,
    quantity: i32,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    status: String,
    location: String,
    description: String,
    occur_time: i64,
    carrier_event_id: Option<String>,
}

fn parse_status(name: &str) -> Result<Status, Error> {
    Status::parse(name).ok_or_else(|| Error::Corrupt(format!("unknown shipment status {name:?}")))
}

fn assemble(row: ShipmentRow, items: Vec<Item>, history: Vec<HistoryEntry>) -> Result<Shipment, Error> {
    Ok(Shipment {
        status: parse_status(&row.status)?,
        id: row.id,
        order_id: row.order_id,
        customer_id: row.customer_id,
        address: Address {
            name: row.name,
            line1: row.line1,
            line2: row.line2,
            city: row.city,
            region: row.region,
            postal_code: row.postal_code,
            country: row.country,
        },
        carrier: row.carrier,
        tracking_number: row.tracking_number,
        create_time: row.create_time,
        update_time: row.update_time,
        ship_time: row.ship_time,
        deliver_time: row.deliver_time,
        shipping_method: row.shipping_method,
        items,
        history,
    })
}

/// What a dispatch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    /// The shipment is SHIPPED now.
    Now,
    /// It already was, with this very carrier and tracking number (a retried request).
    Already,
}

/// What recording a carrier's event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The event was added to the history (and moved the state, unless it was late).
    Added(Tracking),
    /// The shipment already had this carrier event: nothing changed.
    Duplicate,
}

/// A cancelled order, as [`Store::cancel_order`] applies it.
struct Cancellation<'a> {
    order_id: &'a str,
    /// Why, for the history; may be empty.
    reason: &'a str,
    /// The `order.cancelled` event that says so (recorded in the inbox, applied once); `None` for a call.
    event_id: Option<&'a str>,
    /// Whether a shipment with the carrier refuses it (a call from orders) or gets a note (the event).
    refuse_dispatched: bool,
}

/// The deliveries service's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Creates the shipment of a confirmed order for event `event_id`, once: a redelivered event, or another
    /// event for an order that already has its shipment, changes nothing. Writes `shipment.created`. Returns
    /// the new shipment's id, or `None` when nothing was created.
    pub async fn create_for_order(&self, event_id: &str, new: &NewShipment, now: i64) -> Result<Option<String>, Error> {
        let id = uuid::Uuid::now_v7().to_string();
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                if !first_delivery(&mut *tx, events::CONSUMER, event_id).await? {
                    return Ok(None);
                }
                // The order's row first (see the migration): a cancellation that came before this event leaves
                // no shipment to make.
                let cancelled = sqlx::query_scalar::<_, bool>(
                    "INSERT INTO orders_known (order_id, cancelled, update_time) VALUES ($1, $2, $3) \
                     ON CONFLICT (order_id) DO UPDATE SET update_time = excluded.update_time RETURNING cancelled",
                )
                .bind(&new.order_id)
                .bind(false)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                if cancelled {
                    return Ok(None);
                }
                let a = &new.address;
                let inserted = sqlx::query(concat!(
                    "INSERT INTO shipments (",
                    shipment_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '', '', $12, $12, NULL, NULL, $13) \
                     ON CONFLICT (order_id) DO NOTHING"
                ))
                    .bind(&id)
                    .bind(&new.order_id)
                    .bind(&new.customer_id)
                    .bind(Status::Pending.as_str())
                    .bind(&a.name)
                    .bind(&a.line1)
                    .bind(&a.line2)
                    .bind(&a.city)
                    .bind(&a.region)
                    .bind(&a.postal_code)
                    .bind(&a.country)
                    .bind(now)
                    .bind(&new.shipping_method)
                    .execute(&mut *tx)
                    .await?;
                if inserted.rows_affected() == 0 {
                    return Ok(None);
                }
                for (line, item) in new.items.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO shipment_items (shipment_id, line, product_id, sku, name, quantity) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&id)
                    .bind(i64::try_from(line).unwrap_or(i64::MAX))
                    .bind(&item.product_id)
                    .bind(&item.sku)
                    .bind(&item.name)
                    .bind(item.quantity)
                    .execute(&mut *tx)
                    .await?;
                }
                add_history!(&mut *tx, &id, ORIGIN_SERVICE, Status::Pending.as_str(), "",
                    "order confirmed, waiting to be dispatched", now, now, None::<String>);
                enqueue(&mut *tx, crate::NAME, &events::created(&id, &new.order_id, &new.customer_id)).await?;
                Ok(Some(id.clone()))
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Applies the cancellation of order `order_id` (event `event_id`, once) to its shipment, as
    /// [`domain::on_order_cancelled`] says; writes `shipment.cancelled` when it cancels one. An order without a
    /// shipment yet is remembered as cancelled, so its confirmation makes none.
    pub async fn cancel_for_order(&self, event_id: &str, order_id: &str, now: i64) -> Result<OnOrderCancelled, Error> {
        let cancellation = Cancellation { order_id, reason: "", event_id: Some(event_id), refuse_dispatched: false };
        Ok(self.cancel_order(&cancellation, now).await?.0)
    }

    /// Cancels the shipment of order `order_id` for the orders service, before it refunds the order, as
    /// [`domain::on_cancel_request`] says: a shipment with the carrier is FAILED_PRECONDITION
    /// (SHIPMENT_DISPATCHED) and nothing changes. An order without a shipment yet is remembered as cancelled.
    /// Returns the id of the order's shipment, if it has one.
    pub async fn cancel_order_shipment(&self, order_id: &str, reason: &str, now: i64) -> Result<Option<String>, Error> {
        let cancellation = Cancellation { order_id, reason, event_id: None, refuse_dispatched: true };
        Ok(self.cancel_order(&cancellation, now).await?.1)
    }

    async fn cancel_order(&self, c: &Cancellation<'_>, now: i64) -> Result<(OnOrderCancelled, Option<String>), Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                if let Some(event_id) = c.event_id
                    && !first_delivery(&mut *tx, events::CONSUMER, event_id).await?
                {
                    return Ok((OnOrderCancelled::Nothing, None));
                }
                // The order's row first (see the migration), so a confirmation racing this one is serialised
                // with it: either its shipment is found below, or it sees `cancelled` and makes none.
                sqlx::query(
                    "INSERT INTO orders_known (order_id, cancelled, update_time) VALUES ($1, $2, $3) \
                     ON CONFLICT (order_id) DO UPDATE SET cancelled = excluded.cancelled, \
                     update_time = excluded.update_time",
                )
                .bind(c.order_id)
                .bind(true)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let id = sqlx::query_scalar::<_, String>("SELECT id FROM shipments WHERE order_id = $1")
                    .bind(c.order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(id) = id else { return Ok((OnOrderCancelled::Nothing, None)) };
                let Some(row) = lock_shipment!(&mut *tx, &id) else {
                    return Ok((OnOrderCancelled::Nothing, None));
                };
                let (status, customer_id) = (parse_status(&row.status)?, row.customer_id);
                let outcome = if c.refuse_dispatched {
                    domain::on_cancel_request(status).ok_or_else(|| Error::FailedPrecondition {
                        reason: SHIPMENT_DISPATCHED,
                        message: format!(
                            "the order's shipment was handed to {} ({}): it can no longer be cancelled",
                            row.carrier,
                            status.as_str().to_lowercase().replace('_', " ")
                        ),
                    })?
                } else {
                    domain::on_order_cancelled(status)
                };
                match outcome {
                    OnOrderCancelled::Cancel => {
                        sqlx::query("UPDATE shipments SET status = $1, update_time = $2 WHERE id = $3")
                            .bind(Status::Cancelled.as_str())
                            .bind(now)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                        let description = if c.reason.is_empty() {
                            "order cancelled before dispatch".to_owned()
                        } else {
                            format!("order cancelled before dispatch: {}", c.reason)
                        };
                        add_history!(&mut *tx, &id, ORIGIN_SERVICE, Status::Cancelled.as_str(), "",
                            &description, now, now, None::<String>);
                        enqueue(&mut *tx, crate::NAME, &events::cancelled(&id, c.order_id, &customer_id)).await?;
                    }
                    OnOrderCancelled::Note => {
                        sqlx::query("UPDATE shipments SET update_time = $1 WHERE id = $2")
                            .bind(now)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await?;
                        add_history!(&mut *tx, &id, ORIGIN_SERVICE, status.as_str(), "",
                            "order cancelled after dispatch: intercept the parcel or expect it back", now, now,
                            None::<String>);
                    }
                    OnOrderCancelled::Nothing => {}
                }
                Ok((outcome, Some(id)))
            }
            .await;
            finish(tx, result).await
        })
    }

    /// The ids of every order that has a shipment.
    pub async fn order_ids(&self) -> Result<std::collections::HashSet<String>, Error> {
        let ids = with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, String>("SELECT order_id FROM shipments").fetch_all(pool).await?
        });
        Ok(ids.into_iter().collect())
    }

    /// Every delivered shipment's order with when it was delivered, by order id.
    pub async fn deliveries(&self) -> Result<Vec<(String, i64)>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT order_id, deliver_time FROM shipments WHERE deliver_time IS NOT NULL ORDER BY order_id",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Shipment `id` with its items and history, if it exists.
    pub async fn shipment(&self, id: &str) -> Result<Option<Shipment>, Error> {
        let (row, items, history) = with_db!(&self.db, pool => {
            let row = sqlx::query_as::<_, ShipmentRow>(concat!("SELECT ", shipment_columns!(), " FROM shipments WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            let items = sqlx::query_as::<_, Item>(
                "SELECT product_id, sku, name, quantity FROM shipment_items WHERE shipment_id = $1 ORDER BY line",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            let history = sqlx::query_as::<_, HistoryRow>(
                "SELECT status, location, description, occur_time, carrier_event_id FROM tracking_events \
                 WHERE shipment_id = $1 ORDER BY occur_time, seq",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            (row, items, history)
        });
        let history = history
            .into_iter()
            .map(|h| {
                Ok(HistoryEntry {
                    status: parse_status(&h.status)?,
                    location: h.location,
                    description: h.description,
                    occur_time: h.occur_time,
                    carrier_event_id: h.carrier_event_id,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        row.map(|row| assemble(row, items, history)).transpose()
    }

    /// Shipments newest first, filtered as asked, with their items (not their history).
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Shipment>, Error> {
        let mut sql = concat!("SELECT ", shipment_columns!(), " FROM shipments WHERE 1 = 1").to_owned();
        let mut args: Vec<String> = Vec::new();
        let mut filter = |column: &str, op: &str, value: &str| {
            args.push(value.to_owned());
            sql.push_str(&format!(" AND {column} {op} ${}", args.len()));
        };
        if let Some(customer) = &q.customer_id {
            filter("customer_id", "=", customer);
        }
        if let Some(order) = &q.order_id {
            filter("order_id", "=", order);
        }
        if let Some(status) = q.status {
            filter("status", "=", status.as_str());
        }
        if let Some(before) = &q.before_id {
            filter("id", "<", before);
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", q.limit.max(0)));
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, ShipmentRow>(sqlx::AssertSqlSafe(sql));
            for a in &args {
                query = query.bind(a.as_str());
            }
            query.fetch_all(pool).await?
        });
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=rows.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let items_sql = format!(
            "SELECT shipment_id, product_id, sku, name, quantity FROM shipment_items \
             WHERE shipment_id IN ({placeholders}) ORDER BY shipment_id, line"
        );
        let item_rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, ItemRow>(sqlx::AssertSqlSafe(items_sql));
            for row in &rows {
                query = query.bind(row.id.as_str());
            }
            query.fetch_all(pool).await?
        });
        let mut by_shipment: HashMap<String, Vec<Item>> = HashMap::new();
        for i in item_rows {
            by_shipment.entry(i.shipment_id).or_default().push(Item {
                product_id: i.product_id,
                sku: i.sku,
                name: i.name,
                quantity: i.quantity,
            });
        }
        rows.into_iter()
            .map(|row| {
                let items = by_shipment.remove(&row.id).unwrap_or_default();
                assemble(row, items, Vec::new())
            })
            .collect()
    }

    /// Hands PENDING shipment `id` to a carrier and writes `shipment.shipped`. NOT_FOUND for an unknown
    /// shipment; FAILED_PRECONDITION when it is not PENDING, unless it was dispatched with this very carrier
    /// and tracking number (a retry, answered as [`Dispatched::Already`]).
    pub async fn dispatch(&self, id: &str, dispatch: &Dispatch, now: i64) -> Result<Dispatched, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let Some(row) = lock_shipment!(&mut *tx, id) else {
                    return Err(Error::shipment_not_found(id));
                };
                let status = parse_status(&row.status)?;
                let (order_id, customer_id) = (row.order_id, row.customer_id);
                if status != Status::Pending {
                    if status.is_with_carrier()
                        && row.carrier == dispatch.carrier
                        && row.tracking_number == dispatch.tracking_number
                    {
                        return Ok(Dispatched::Already);
                    }
                    return Err(Error::FailedPrecondition {
                        reason: SHIPMENT_NOT_PENDING,
                        message: format!("shipment {id} is {}, not PENDING", status.as_str()),
                    });
                }
                sqlx::query(
                    "UPDATE shipments SET status = $1, carrier = $2, tracking_number = $3, ship_time = $4, \
                     update_time = $4 WHERE id = $5",
                )
                .bind(Status::Shipped.as_str())
                .bind(&dispatch.carrier)
                .bind(&dispatch.tracking_number)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let description = format!("handed to {} ({})", dispatch.carrier, dispatch.tracking_number);
                add_history!(&mut *tx, id, ORIGIN_SERVICE, Status::Shipped.as_str(), "", description, now, now,
                    None::<String>);
                let shipped = events::shipped(id, &order_id, &customer_id, &dispatch.carrier, &dispatch.tracking_number);
                enqueue(&mut *tx, crate::NAME, &shipped).await?;
                Ok(Dispatched::Now)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Records a carrier's event on shipment `id`, moving its state as [`domain::track`] says; writes
    /// `shipment.delivered` when it is delivered. NOT_FOUND for an unknown shipment; FAILED_PRECONDITION
    /// when the shipment is not with a carrier.
    pub async fn record(&self, id: &str, event: &NewTrackingEvent, now: i64) -> Result<Recorded, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let Some(row) = lock_shipment!(&mut *tx, id) else {
                    return Err(Error::shipment_not_found(id));
                };
                let (status, order_id, customer_id) = (row.status, row.order_id, row.customer_id);
                if let Some(carrier_event_id) = &event.carrier_event_id {
                    let seen = sqlx::query_scalar::<_, i64>(
                        "SELECT COUNT(*) FROM tracking_events WHERE shipment_id = $1 AND carrier_event_id = $2",
                    )
                    .bind(id)
                    .bind(carrier_event_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    if seen > 0 {
                        return Ok(Recorded::Duplicate);
                    }
                }
                let latest = sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT MAX(occur_time) FROM tracking_events WHERE shipment_id = $1 AND origin = $2",
                )
                .bind(id)
                .bind(ORIGIN_CARRIER)
                .fetch_one(&mut *tx)
                .await?
                .unwrap_or(0);
                let current = parse_status(&status)?;
                let tracking = domain::track(current, latest, event.status, event.occur_time).map_err(
                    |TrackingRefusal::NotWithCarrier(s)| Error::FailedPrecondition {
                        reason: INVALID_SHIPMENT_TRANSITION,
                        message: format!("shipment {id} is {}: no carrier event can move it", s.as_str()),
                    },
                )?;
                // A late event is history only: the entry keeps the state it reported, the shipment its own.
                match tracking {
                    Tracking::Moves(Status::Delivered) => {
                        sqlx::query(
                            "UPDATE shipments SET status = $1, update_time = $2, deliver_time = $3 WHERE id = $4",
                        )
                        .bind(Status::Delivered.as_str())
                        .bind(now)
                        .bind(event.occur_time)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                        enqueue(&mut *tx, crate::NAME, &events::delivered(id, &order_id, &customer_id)).await?;
                    }
                    Tracking::Moves(to) => {
                        sqlx::query("UPDATE shipments SET status = $1, update_time = $2 WHERE id = $3")
                            .bind(to.as_str())
                            .bind(now)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Tracking::Late => {
                        sqlx::query("UPDATE shipments SET update_time = $1 WHERE id = $2")
                            .bind(now)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                add_history!(&mut *tx, id, ORIGIN_CARRIER, event.status.as_str(), &event.location,
                    &event.description, event.occur_time, now, &event.carrier_event_id);
                Ok(Recorded::Added(tracking))
            }
            .await;
            finish(tx, result).await
        })
    }
}
