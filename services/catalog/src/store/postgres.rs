//! The checkout's holds and sales on PostgreSQL, in as few round trips as their rules allow (a checkout holds and
//! then sells stock, so these run once each per order). SQLite runs the same rules a statement at a time
//! (`Store::reserve`, `Store::apply_settlement`).
//!
//! What stays apart: a line's hold is a conditional UPDATE that decides whether the reservation happens at all,
//! and the inventory rows of several lines are locked one statement at a time in product order (one statement
//! updating several rows locks them in whatever order its plan visits them, and two such statements could
//! deadlock). So the first line's hold joins the statement that writes the reservation, and the first line's
//! stock the statement that records the sale; the lines after it (an order of several products) take a statement
//! each, in product-id order, as on SQLite.
//!
//! A checkout's reservation usually has one line, and its hold and sale then run as one statement each, without a
//! transaction around them (no BEGIN and COMMIT: two round trips fewer each). A one-line hold takes that way only
//! when it writes no event (the id is new, the units are there and the hold leaves the product on the same side
//! of the low-stock threshold); anything else takes the transactional way, which says why or writes the event.

use platform::db::{BeginWrite, finish, is_foreign_key_violation, is_unique_violation};
use platform::error::FieldViolation;
use platform::events::{OutboxEntry, bind_outbox_entries, insert_outbox_entries};
use sqlx::{PgPool, Row};

use super::{HOLD_SQL, ItemRow, MOVE_RESERVATION_SQL, RESERVATION_LINES_SQL, SETTLE_STOCK_SQL, sale_reason};
use crate::domain::{self, ReservationStatus, ReserveItem};
use crate::error::{Error, INSUFFICIENT_STOCK, PRODUCT_INACTIVE};

/// The reservation $1 (status $2, time $3), its lines ($4 product ids, $5 quantities) and the hold of its first
/// line ($6 units of product $7), in one statement. A used id writes and holds nothing. Returns whether the
/// reservation is new and the units of the first product left available (NULL when the hold took nothing).
const RESERVE_SQL: &str = "WITH reservation AS (INSERT INTO reservations (id, status, create_time, update_time) \
     VALUES ($1, $2, $3, $3) ON CONFLICT (id) DO NOTHING RETURNING id), \
     lines AS (INSERT INTO reservation_items (reservation_id, product_id, quantity) \
     SELECT reservation.id, line.product_id, line.quantity FROM reservation, \
     unnest($4::text[], $5::bigint[]) AS line (product_id, quantity)), \
     held AS (UPDATE inventory SET reserved = reserved + $6, update_time = $3 \
     WHERE product_id = $7 AND on_hand - reserved >= $6 AND EXISTS (SELECT 1 FROM reservation) \
     AND EXISTS (SELECT 1 FROM products WHERE id = $7 AND active) RETURNING on_hand - reserved AS available) \
     SELECT EXISTS (SELECT 1 FROM reservation), (SELECT available FROM held)";

/// A one-line reservation $1 (status $2, time $3) holding $4 units of product $5, in one statement of its own, which
/// holds and writes only when the product is for sale, the units are there, the id is unused and the hold leaves
/// the available units on the same side of the low-stock threshold $6 (`domain::fell_below` false, so that it
/// writes no event). Returns whether it held.
const HOLD_ONE_LINE_SQL: &str = "WITH held AS (UPDATE inventory SET reserved = reserved + $4, update_time = $3 \
     WHERE product_id = $5 AND on_hand - reserved >= $4 \
     AND NOT (on_hand - reserved >= $6 AND on_hand - reserved - $4 < $6) \
     AND EXISTS (SELECT 1 FROM products WHERE id = $5 AND active) \
     AND NOT EXISTS (SELECT 1 FROM reservations WHERE id = $1) RETURNING product_id), \
     reservation AS (INSERT INTO reservations (id, status, create_time, update_time) \
     SELECT $1, $2, $3, $3 FROM held RETURNING id), \
     line AS (INSERT INTO reservation_items (reservation_id, product_id, quantity) \
     SELECT reservation.id, $5, $4 FROM reservation) \
     SELECT EXISTS (SELECT 1 FROM held)";

/// Moves reservation $3 from HELD to $1 at time $2 and gives back its one line's $5 held units of product $6, $4 of
/// them sold, all only if it was HELD; then `also`, more CTEs on the same condition. Returns whether it moved.
fn settle_one_line_sql(also: &str) -> String {
    format!(
        "WITH moved AS ({MOVE_RESERVATION_SQL} RETURNING id), \
         settled AS (UPDATE inventory SET on_hand = on_hand - $4, reserved = reserved - $5, update_time = $2 \
         WHERE product_id = $6 AND EXISTS (SELECT 1 FROM moved)){also} \
         SELECT EXISTS (SELECT 1 FROM moved)"
    )
}

/// [`settle_one_line_sql`] releasing the units.
static RELEASE_ONE_LINE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| settle_one_line_sql(""));

/// [`settle_one_line_sql`] selling them: also the sale's stock adjustment ($7 id, $8 delta, $9 reason, $10 actor)
/// and its `inventory.adjusted` event ($11 to $17).
static SELL_ONE_LINE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    settle_one_line_sql(&format!(
        ", adjusted AS (INSERT INTO inventory_adjustments (id, product_id, delta, reason, actor, create_time) \
         SELECT $7, $6, $8, $9, $10, $2 FROM moved), \
         published AS ({} WHERE EXISTS (SELECT 1 FROM moved))",
        insert_outbox_entries(11)
    ))
});

/// A sale's stock adjustments ($5 ids, $6 products, $7 deltas; reason $8, actor $9, time $3), their
/// `inventory.adjusted` events ($10 to $16) and the first line's stock ([`SETTLE_STOCK_SQL`]'s $1 to $4), in one
/// statement.
static SELL_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH adjusted AS (INSERT INTO inventory_adjustments (id, product_id, delta, reason, actor, create_time) \
         SELECT adjustment.id, adjustment.product_id, adjustment.delta, $8, $9, $3 \
         FROM unnest($5::text[], $6::text[], $7::bigint[]) AS adjustment (id, product_id, delta)), \
         published AS ({}) {SETTLE_STOCK_SQL}",
        insert_outbox_entries(10)
    )
});

/// Holds `items` (sorted by product id) under `reservation_id`, all or none: Some(whether it wrote an event)
/// when the reservation is new, None when the id was used before.
pub(super) async fn reserve(
    pool: &PgPool,
    reservation_id: &str,
    items: &[ReserveItem],
    now: i64,
) -> Result<Option<bool>, Error> {
    let Some((first, rest)) = items.split_first() else {
        return Err(Error::InvalidArgument(vec![FieldViolation::new(
            "items",
            "a reservation needs at least one item",
        )]));
    };
    if rest.is_empty() {
        let held = sqlx::query_scalar::<_, bool>(HOLD_ONE_LINE_SQL)
            .bind(reservation_id)
            .bind(ReservationStatus::Held.as_str())
            .bind(now)
            .bind(first.quantity)
            .bind(&first.product_id)
            .bind(domain::LOW_STOCK_THRESHOLD)
            .fetch_one(pool)
            .await;
        match held {
            Ok(true) => return Ok(Some(false)),
            // Refused, used id or low stock: the transactional way says why, replays, or writes the event. A unique
            // violation is the same id reserved at the same time, which that way replays.
            Ok(false) => {}
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut tx = pool.begin_write().await?;
    let written = sqlx::query_as::<_, (bool, Option<i64>)>(RESERVE_SQL)
        .bind(reservation_id)
        .bind(ReservationStatus::Held.as_str())
        .bind(now)
        .bind(items.iter().map(|item| item.product_id.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|item| item.quantity).collect::<Vec<_>>())
        .bind(first.quantity)
        .bind(&first.product_id)
        .fetch_one(&mut *tx)
        .await;
    let available = match written {
        Err(e) if is_foreign_key_violation(&e) => {
            // A line names a product that does not exist: which one, now that nothing was written.
            tx.rollback().await?;
            return Err(missing_product(pool, items).await?);
        }
        Err(e) => {
            tx.rollback().await?;
            return Err(e.into());
        }
        Ok((false, _)) => {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok((true, available)) => available,
    };
    let result = async {
        let Some(available) = available else {
            return Err(refused_hold!(&mut *tx, first));
        };
        let mut wrote_events = report_low_stock!(&mut *tx, first.product_id.as_str(), available, first.quantity);
        for item in rest {
            wrote_events |= hold_stock!(&mut *tx, item, now);
        }
        Ok(wrote_events)
    }
    .await;
    finish(tx, result).await.map(Some)
}

/// The first of `items` whose product does not exist, as the error that says so.
async fn missing_product(pool: &PgPool, items: &[ReserveItem]) -> Result<Error, Error> {
    let ids: Vec<&str> = items.iter().map(|item| item.product_id.as_str()).collect();
    let found: Vec<String> =
        sqlx::query_scalar("SELECT id FROM products WHERE id = ANY($1)").bind(&ids).fetch_all(pool).await?;
    let missing = ids.iter().find(|id| !found.iter().any(|f| f == *id)).copied().unwrap_or_default();
    Ok(Error::product_not_found(missing))
}

/// Settles a HELD reservation (RELEASED gives its units back, COMMITTED sells them); false when it was no longer
/// HELD.
pub(super) async fn settle(
    pool: &PgPool,
    id: &str,
    target: ReservationStatus,
    actor: &str,
    now: i64,
) -> Result<bool, Error> {
    // A reservation's lines never change: read outside the settlement, they choose its way and serve it.
    let items: Vec<ItemRow> = sqlx::query_as(RESERVATION_LINES_SQL).bind(id).fetch_all(pool).await?;
    if let [line] = items.as_slice() {
        return settle_one_line(pool, id, line, target, actor, now).await;
    }
    let mut tx = pool.begin_write().await?;
    let result: Result<_, Error> = async {
        let moved =
            sqlx::query(MOVE_RESERVATION_SQL).bind(target.as_str()).bind(now).bind(id).execute(&mut *tx).await?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        let Some((first, rest)) = items.split_first() else {
            return Ok(true);
        };
        let commit = target == ReservationStatus::Committed;
        let sold = |item: &ItemRow| if commit { item.quantity } else { 0 };
        let query = if commit {
            let reason = sale_reason(id);
            let adjustment_ids: Vec<String> = items.iter().map(|_| uuid::Uuid::now_v7().to_string()).collect();
            let events = items
                .iter()
                .zip(&adjustment_ids)
                .map(|(item, adjustment)| sold_event(adjustment, item, &reason, actor));
            let events: Vec<OutboxEntry> = events.collect();
            let query = sqlx::query(SELL_SQL.as_str())
                .bind(sold(first))
                .bind(first.quantity)
                .bind(now)
                .bind(first.product_id.clone())
                .bind(adjustment_ids)
                .bind(items.iter().map(|item| item.product_id.clone()).collect::<Vec<_>>())
                .bind(items.iter().map(|item| -item.quantity).collect::<Vec<_>>())
                .bind(reason)
                .bind(actor.to_owned());
            bind_outbox_entries(query, events)
        } else {
            sqlx::query(SETTLE_STOCK_SQL).bind(0_i64).bind(first.quantity).bind(now).bind(first.product_id.clone())
        };
        query.execute(&mut *tx).await?;
        for item in rest {
            settle_stock!(&mut *tx, item, sold(item), now);
        }
        Ok(true)
    }
    .await;
    finish(tx, result).await
}

/// Settles a reservation of one line in one statement (see the module documentation); false when it was no longer
/// HELD.
async fn settle_one_line(
    pool: &PgPool,
    id: &str,
    line: &ItemRow,
    target: ReservationStatus,
    actor: &str,
    now: i64,
) -> Result<bool, Error> {
    let commit = target == ReservationStatus::Committed;
    let sql = if commit { SELL_ONE_LINE_SQL.as_str() } else { RELEASE_ONE_LINE_SQL.as_str() };
    let query = sqlx::query(sql)
        .bind(target.as_str())
        .bind(now)
        .bind(id)
        .bind(if commit { line.quantity } else { 0 })
        .bind(line.quantity)
        .bind(&line.product_id);
    let query = if commit {
        let (adjustment, reason) = (uuid::Uuid::now_v7().to_string(), sale_reason(id));
        let event = sold_event(&adjustment, line, &reason, actor);
        let query = query.bind(adjustment).bind(-line.quantity).bind(reason).bind(actor.to_owned());
        bind_outbox_entries(query, vec![event])
    } else {
        query
    };
    Ok(query.fetch_one(pool).await?.try_get(0)?)
}

/// The `inventory.adjusted` event of a sale's adjustment `adjustment` of `item`.
fn sold_event(adjustment: &str, item: &ItemRow, reason: &str, actor: &str) -> OutboxEntry {
    let event = crate::events::inventory_adjusted(adjustment, &item.product_id, -item.quantity, reason, actor);
    OutboxEntry::new(crate::NAME, &event)
}
