//! All SQL of the notifications service. Every statement is written once, in the subset SQLite and
//! PostgreSQL share, and run on whichever pool the [`Db`] holds through `with_db!`; the one difference is the
//! row lock of the dispatcher's claim (see [`Store::claim_due`]).
//!
//! Events are recorded in batches: the effects of a batch (the recipients they introduce, the payments they
//! link, the notifications they cause) are one transaction with their inbox rows. A delivery's outcome is one
//! statement, or one transaction with the event reporting it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use platform::db::{BeginWrite, Db, finish};
use platform::events::{NewEvent, enqueue};
use platform::with_db;
use sqlx::QueryBuilder;

use crate::domain::{self, Channel, Cursor, ListUnsubscribe, Status};
use crate::error::Error;

/// A user as `user.registered` introduced them (or `user.email_changed` updated them).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Recipient {
    /// The user's id.
    pub user_id: String,
    /// Their email address.
    pub email: String,
    /// Name shown to people.
    pub display_name: String,
    /// BCP 47 tag as given at registration (may be empty).
    pub locale: String,
}

/// A user's entry in the directory of recipients, as an event gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The user: address, name and language.
    pub recipient: Recipient,
    /// Whether it replaces the user's entry: an account's address as it is now (`user.email_changed`) does. A
    /// registration only fills in a user not listed yet: the entry it could meet is a later one (a move handled
    /// before a registration delivered late, as when dead letters are replayed), which must stay.
    pub replaces: bool,
}

impl Listing {
    /// Whether this listing goes in the directory, which lists the user already (`listed`) or not.
    pub fn goes_in(&self, listed: bool) -> bool {
        self.replaces || !listed
    }
}

/// Which order and customer a payment belongs to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentLink {
    /// The payment.
    pub payment_id: String,
    /// The order it paid.
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
}

/// A notification to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The user it is addressed to, or empty.
    pub user_id: String,
    /// The address, or empty when nobody could be addressed.
    pub recipient: String,
    /// Rendered subject.
    pub subject: String,
    /// Rendered text body.
    pub body_text: String,
    /// Rendered HTML body.
    pub body_html: String,
    /// The mail's `List-Unsubscribe`, for bulk mail.
    pub list_unsubscribe: Option<ListUnsubscribe>,
    /// PENDING, or SKIPPED/FAILED with `last_error`.
    pub status: Status,
    /// Why it is skipped or failed.
    pub last_error: String,
}

/// A row of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NotificationRow {
    /// Id.
    pub id: String,
    /// Addressed user or empty.
    pub user_id: String,
    /// Stored channel name.
    pub channel: String,
    /// Event type.
    pub event_type: String,
    /// Event id.
    pub event_id: String,
    /// Address or URL.
    pub recipient: String,
    /// Email subject.
    pub subject: String,
    /// Stored status name.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// Last error or skip reason.
    pub last_error: String,
    /// Created, microseconds.
    pub create_time: i64,
    /// Changed, microseconds.
    pub update_time: i64,
}

const LOG_COLUMNS: &str = "id, user_id, channel, event_type, event_id, recipient, subject, status, attempts, last_error, create_time, update_time";

/// A notification claimed for an attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Due {
    /// Id.
    pub id: String,
    /// Addressed user or empty.
    pub user_id: String,
    /// Stored channel name.
    pub channel: String,
    /// Event type.
    pub event_type: String,
    /// Event id.
    pub event_id: String,
    /// Email address or webhook URL.
    pub recipient: String,
    /// Email subject.
    pub subject: String,
    /// Email text body.
    pub body_text: String,
    /// Email HTML body.
    pub body_html: String,
    /// The email's `List-Unsubscribe` URL, or empty.
    pub list_unsubscribe: String,
    /// Whether that URL takes a one-click unsubscribe (1) or not (0).
    pub list_unsubscribe_one_click: i32,
    /// Webhook endpoint id, empty for emails.
    pub endpoint_id: String,
    /// Webhook JSON body, empty for emails.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// How an attempt ended, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (publishes `notification.sent`).
    Sent,
    /// Written to the log instead (no SMTP server).
    Logged,
    /// Not sendable any more (the endpoint is gone).
    Skipped(String),
    /// Failed; try again at this time (microseconds).
    Retry {
        /// Why.
        error: String,
        /// When.
        at: i64,
    },
    /// Failed for good (publishes `notification.failed`).
    Failed(String),
}

impl Outcome {
    /// The row's new status, last error, next attempt time and whether the attempt counts, when stored at `now`.
    fn columns(&self, now: i64) -> (Status, &str, i64, bool) {
        match self {
            Outcome::Sent => (Status::Sent, "", now, true),
            Outcome::Logged => (Status::Logged, "", now, true),
            Outcome::Skipped(reason) => (Status::Skipped, reason.as_str(), now, false),
            Outcome::Retry { error, at } => (Status::Pending, error.as_str(), *at, true),
            Outcome::Failed(error) => (Status::Failed, error.as_str(), now, true),
        }
    }
}

/// How an attempt ended, as [`Store::finish_attempts`] stores it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The notification.
    pub id: String,
    /// How the attempt ended.
    pub outcome: Outcome,
    /// `notification.sent` or `notification.failed`, published with it.
    pub event: Option<NewEvent>,
}

/// Stores an attempt's outcome ($1 to $5) on rows still PENDING; callers add which rows (from $6).
const FINISH_SQL: &str = "UPDATE notifications SET status = $1, last_error = $2, next_attempt_time = $3, \
     attempts = attempts + $4, update_time = $5 WHERE status = 'PENDING'";
/// [`FINISH_SQL`] for one row, made once: the per-row path of [`Store::finish_attempts`] runs it for every row.
static FINISH_ONE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!("{FINISH_SQL} AND id = $6"));

/// A webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EndpointRow {
    /// Id.
    pub id: String,
    /// URL.
    pub url: String,
    /// Space-separated event types.
    pub event_types: String,
    /// Registered, microseconds.
    pub create_time: i64,
}

impl EndpointRow {
    /// Whether events of `event_type` go to this endpoint: it subscribed to the type, and the type may go to
    /// webhooks (an endpoint subscribed before its type became mail-only gets nothing of it either).
    pub fn receives(&self, event_type: &str) -> bool {
        self.received_types().any(|t| t == event_type)
    }

    /// The types whose events go to this endpoint (see [`receives`](Self::receives)).
    pub fn received_types(&self) -> impl Iterator<Item = &str> {
        self.event_types.split(' ').filter(|t| !t.is_empty() && domain::webhooks_may_receive(t))
    }
}

/// Filters and page of a ListNotifications.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this user's.
    pub user_id: Option<String>,
    /// Only in this state.
    pub status: Option<Status>,
    /// After this one (newest first).
    pub after: Option<Cursor>,
    /// At most this many.
    pub limit: i64,
}

enum Arg {
    Text(String),
    Int(i64),
}

/// Rows per multi-row insert of notifications: nineteen parameters each stays far below SQLite's 32766
/// parameters per statement (a batch of events times the endpoints subscribed to them can be thousands).
const INSERT_ROWS: usize = 500;

/// A notification row about to be inserted.
struct NotificationInsert<'a> {
    channel: Channel,
    event: &'a EventEffect<'a>,
    user_id: &'a str,
    recipient: &'a str,
    subject: &'a str,
    body_text: &'a str,
    body_html: &'a str,
    list_unsubscribe: Option<&'a ListUnsubscribe>,
    endpoint_id: &'a str,
    payload: &'a str,
    status: Status,
    last_error: &'a str,
}

impl<'a> NotificationInsert<'a> {
    /// The email `event` causes.
    fn email(event: &'a EventEffect<'a>, n: &'a NewNotification) -> Self {
        Self {
            channel: Channel::Email,
            event,
            user_id: &n.user_id,
            recipient: &n.recipient,
            subject: &n.subject,
            body_text: &n.body_text,
            body_html: &n.body_html,
            list_unsubscribe: n.list_unsubscribe.as_ref(),
            endpoint_id: "",
            payload: "",
            status: n.status,
            last_error: &n.last_error,
        }
    }

    /// The webhook delivery of `event` to `endpoint`.
    fn webhook(event: &'a EventEffect<'a>, endpoint: &'a EndpointRow) -> Self {
        Self {
            channel: Channel::Webhook,
            event,
            user_id: "",
            recipient: &endpoint.url,
            subject: "",
            body_text: "",
            body_html: "",
            list_unsubscribe: None,
            endpoint_id: &endpoint.id,
            payload: event.webhook_body,
            status: Status::Pending,
            last_error: "",
        }
    }
}

/// What one consumed event changes, written by [`Store::record_events`] (borrowed from the decoded delivery).
#[derive(Debug, Clone)]
pub struct EventEffect<'a> {
    /// The event's id (the inbox key).
    pub event_id: &'a str,
    /// Its type.
    pub event_type: &'a str,
    /// A user it lists (or whose entry it updates).
    pub register: Option<&'a Listing>,
    /// A deleted user to erase: their directory entry, and the address, subject and texts of their mails sent
    /// (or given up on) before.
    pub forget: Option<&'a str>,
    /// A payment it links to its order and customer.
    pub payment: Option<&'a PaymentLink>,
    /// The email it causes (possibly SKIPPED); none for an event only webhooks hear of.
    pub email: Option<NewNotification>,
    /// The JSON body for the webhook endpoints subscribed to its type.
    pub webhook_body: &'a str,
}

/// The notifications service's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The users among `user_ids` that `user.registered` introduced, by id.
    pub async fn recipients(&self, user_ids: &BTreeSet<&str>) -> Result<HashMap<String, Recipient>, Error> {
        let select = "SELECT user_id, email, display_name, locale FROM recipients WHERE user_id IN (";
        let rows: Vec<Recipient> = self.select_by_ids(select, user_ids).await?;
        Ok(rows.into_iter().map(|r| (r.user_id.clone(), r)).collect())
    }

    /// The order and customer of those among `payment_ids` that `order.confirmed` told, by payment id.
    pub async fn payments(&self, payment_ids: &BTreeSet<&str>) -> Result<HashMap<String, PaymentLink>, Error> {
        let select = "SELECT payment_id, order_id, customer_id FROM payments WHERE payment_id IN (";
        let rows: Vec<PaymentLink> = self.select_by_ids(select, payment_ids).await?;
        Ok(rows.into_iter().map(|p| (p.payment_id.clone(), p)).collect())
    }

    /// The rows of `select` (a query ending in `IN (`) for `ids`, in one query; none without ids.
    async fn select_by_ids<T>(&self, select: &str, ids: &BTreeSet<&str>) -> Result<Vec<T>, Error>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(with_db!(&self.db, pool => {
            let mut query = QueryBuilder::new(select);
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            query.push(")");
            query.build_query_as::<T>().fetch_all(pool).await?
        }))
    }

    /// Writes the effects of `events` in one transaction, each once: says for each, in order, whether it was
    /// new (false, and nothing written for it, when it was handled before or earlier in `events`). Every
    /// endpoint subscribed to an event's type gets a PENDING webhook delivery of it.
    pub async fn record_events(&self, events: &[EventEffect<'_>], now: i64) -> Result<Vec<bool>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<Vec<bool>, Error> = async {
                let endpoints = sqlx::query_as::<_, EndpointRow>(
                    "SELECT id, url, event_types, create_time FROM webhook_endpoints ORDER BY create_time, id",
                )
                .fetch_all(&mut *tx)
                .await?;
                // An event that writes nothing here (a webhooks-only type no endpoint subscribes to: most events of
                // a checkout) needs no inbox row either: a redelivery would write nothing again.
                let writes = |e: &EventEffect<'_>| {
                    e.email.is_some()
                        || e.register.is_some()
                        || e.forget.is_some()
                        || e.payment.is_some()
                        || endpoints.iter().any(|endpoint| endpoint.receives(e.event_type))
                };
                let ids: Vec<&str> = events.iter().filter(|e| writes(e)).map(|e| e.event_id).collect();
                let mut first = platform::events::first_deliveries(&mut *tx, crate::events::CONSUMER, &ids).await?;
                // `remove`: a second copy of an event in the batch is a repeat.
                let new: Vec<bool> = events.iter().map(|e| !writes(e) || first.remove(e.event_id)).collect();
                let kept: Vec<&EventEffect<'_>> =
                    events.iter().zip(&new).filter(|(_, new)| **new).map(|(event, _)| event).collect();
                if kept.is_empty() {
                    return Ok(new);
                }
                let forgotten: BTreeSet<&str> = kept.iter().filter_map(|e| e.forget).collect();
                for user_id in &forgotten {
                    sqlx::query("DELETE FROM recipients WHERE user_id = $1").bind(*user_id).execute(&mut *tx).await?;
                    // Mails still to send keep what they need; they are erased by the next deletion or not at all.
                    sqlx::query(
                        "UPDATE notifications SET recipient = '', subject = '', body_text = '', body_html = '', \
                         list_unsubscribe = '' \
                         WHERE user_id = $1 AND channel = 'EMAIL' AND status <> 'PENDING'",
                    )
                    .bind(*user_id)
                    .execute(&mut *tx)
                    .await?;
                }
                // One row per key and statement, as PostgreSQL requires: a user's listing in the batch is the one
                // that would be left one event at a time ([`Listing::goes_in`]); a payment's first link stays.
                let mut listed: BTreeMap<&str, &Listing> = BTreeMap::new();
                for listing in kept.iter().filter_map(|e| e.register) {
                    let user_id = listing.recipient.user_id.as_str();
                    if listing.goes_in(listed.contains_key(user_id)) {
                        listed.insert(user_id, listing);
                    }
                }
                for replacing in [false, true] {
                    let rows: Vec<&Recipient> =
                        listed.values().filter(|l| l.replaces == replacing).map(|l| &l.recipient).collect();
                    if rows.is_empty() {
                        continue;
                    }
                    let mut upsert = QueryBuilder::new(
                        "INSERT INTO recipients (user_id, email, display_name, locale, update_time) ",
                    );
                    upsert.push_values(rows, |mut row, r| {
                        row.push_bind(r.user_id.as_str())
                            .push_bind(r.email.as_str())
                            .push_bind(r.display_name.as_str())
                            .push_bind(r.locale.as_str())
                            .push_bind(now);
                    });
                    upsert.push(if replacing {
                        " ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, \
                         display_name = excluded.display_name, locale = excluded.locale, \
                         update_time = excluded.update_time"
                    } else {
                        " ON CONFLICT (user_id) DO NOTHING"
                    });
                    upsert.build().execute(&mut *tx).await?;
                }
                let mut links: BTreeMap<&str, &PaymentLink> = BTreeMap::new();
                for link in kept.iter().filter_map(|e| e.payment) {
                    links.entry(link.payment_id.as_str()).or_insert(link);
                }
                if !links.is_empty() {
                    let mut insert =
                        QueryBuilder::new("INSERT INTO payments (payment_id, order_id, customer_id, create_time) ");
                    insert.push_values(links.values(), |mut row, p| {
                        row.push_bind(p.payment_id.as_str())
                            .push_bind(p.order_id.as_str())
                            .push_bind(p.customer_id.as_str())
                            .push_bind(now);
                    });
                    insert.push(" ON CONFLICT (payment_id) DO NOTHING");
                    insert.build().execute(&mut *tx).await?;
                }
                let mut rows = Vec::with_capacity(kept.len());
                for event in &kept {
                    rows.extend(event.email.as_ref().map(|email| NotificationInsert::email(event, email)));
                    let subscribed = endpoints.iter().filter(|e| e.receives(event.event_type));
                    rows.extend(subscribed.map(|endpoint| NotificationInsert::webhook(event, endpoint)));
                }
                for chunk in rows.chunks(INSERT_ROWS) {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO notifications (id, user_id, channel, event_type, event_id, recipient, subject, \
                         body_text, body_html, list_unsubscribe, list_unsubscribe_one_click, endpoint_id, payload, \
                         status, attempts, last_error, next_attempt_time, create_time, update_time) ",
                    );
                    insert.push_values(chunk, |mut row, n| {
                        // Version 7 ids follow creation order, which the dispatcher's claim goes by.
                        row.push_bind(uuid::Uuid::now_v7().to_string())
                            .push_bind(n.user_id)
                            .push_bind(n.channel.as_str())
                            .push_bind(n.event.event_type)
                            .push_bind(n.event.event_id)
                            .push_bind(n.recipient)
                            .push_bind(n.subject)
                            .push_bind(n.body_text)
                            .push_bind(n.body_html)
                            .push_bind(n.list_unsubscribe.map_or("", |l| l.url.as_str()))
                            .push_bind(i32::from(n.list_unsubscribe.is_some_and(|l| l.one_click)))
                            .push_bind(n.endpoint_id)
                            .push_bind(n.payload)
                            .push_bind(n.status.as_str())
                            .push_bind(0_i32)
                            .push_bind(n.last_error)
                            .push_bind(now)
                            .push_bind(now)
                            .push_bind(now);
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                Ok(new)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Claims up to `limit` PENDING notifications due at `now` for one attempt each: their next attempt moves
    /// to `lease_until`, so that nobody else picks them up meanwhile, and a crash mid-send retries them then.
    ///
    /// On PostgreSQL the candidate rows are locked with `FOR UPDATE SKIP LOCKED`, so replicas claiming at the
    /// same moment take different rows instead of sending the same ones twice. SQLite serves one process and
    /// serialises writers: the same statement without the lock clause.
    pub async fn claim_due(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<Due>, Error> {
        let lock = match &self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE notifications SET next_attempt_time = $1 WHERE id IN (SELECT id FROM notifications \
             WHERE status = 'PENDING' AND next_attempt_time <= $2 ORDER BY next_attempt_time, id LIMIT $3{lock}) \
             RETURNING id, user_id, channel, event_type, event_id, recipient, subject, body_text, body_html, \
             list_unsubscribe, list_unsubscribe_one_click, endpoint_id, payload, attempts"
        );
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, Due>(sqlx::AssertSqlSafe(sql))
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Deletes the notifications made before `before` that are done with (not PENDING), a batch per statement;
    /// returns how many. Several replicas doing it at once delete each row once.
    pub async fn delete_finished_before(&self, before: i64) -> Result<u64, Error> {
        const DELETE: &str = "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications \
                              WHERE create_time < $1 AND status <> 'PENDING' LIMIT $2)";
        Ok(platform::db::delete_in_batches(&self.db, DELETE, before, 1000).await?)
    }

    /// When the earliest PENDING notification is due, if any.
    pub async fn next_due(&self) -> Result<Option<i64>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MIN(next_attempt_time) FROM notifications WHERE status = 'PENDING'")
                .fetch_one(pool)
                .await?
        }))
    }

    /// The signing secret of endpoint `id`, if it still exists.
    pub async fn endpoint_secret(&self, id: &str) -> Result<Option<String>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, String>("SELECT secret FROM webhook_endpoints WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Stores how attempts ended, each with its event (notification.sent/failed) in the same transaction; says
    /// for each, in order, whether it was stored (false: the row was no longer PENDING, handled meanwhile, and
    /// is left alone). Attempts that all ended alike and publish nothing — the usual batch: mails LOGGED, or
    /// SENT through a channel without events — are one statement.
    pub async fn finish_attempts(&self, finished: &[Finished], now: i64) -> Result<Vec<bool>, Error> {
        let Some(first) = finished.first() else { return Ok(Vec::new()) };
        let alike = finished.iter().all(|f| f.event.is_none() && f.outcome.columns(now) == first.outcome.columns(now));
        with_db!(&self.db, pool => {
            if alike {
                let (status, error, next, counted) = first.outcome.columns(now);
                let ids = platform::db::placeholders(6, finished.len());
                let sql = format!("{FINISH_SQL} AND id IN ({ids}) RETURNING id");
                let mut update = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                    .bind(status.as_str())
                    .bind(error)
                    .bind(next)
                    .bind(i32::from(counted))
                    .bind(now);
                for f in finished {
                    update = update.bind(f.id.as_str());
                }
                let stored: std::collections::HashSet<String> = update.fetch_all(pool).await?.into_iter().collect();
                return Ok(finished.iter().map(|f| stored.contains(&f.id)).collect());
            }
            let mut tx = pool.begin_write().await?;
            let result: Result<Vec<bool>, Error> = async {
                let mut stored = Vec::with_capacity(finished.len());
                for f in finished {
                    let (status, error, next, counted) = f.outcome.columns(now);
                    let updated = sqlx::query(FINISH_ONE_SQL.as_str())
                        .bind(status.as_str())
                        .bind(error)
                        .bind(next)
                        .bind(i32::from(counted))
                        .bind(now)
                        .bind(f.id.as_str())
                        .execute(&mut *tx)
                        .await?;
                    let changed = updated.rows_affected() == 1;
                    if let (true, Some(event)) = (changed, &f.event) {
                        enqueue(&mut *tx, crate::NAME, event).await?;
                    }
                    stored.push(changed);
                }
                Ok(stored)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// One page of the delivery log, newest first.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<NotificationRow>, Error> {
        let mut sql = format!("SELECT {LOG_COLUMNS} FROM notifications WHERE 1 = 1");
        let mut args = Vec::new();
        let mut arg = |a: Arg| {
            args.push(a);
            args.len()
        };
        if let Some(user) = &q.user_id {
            let n = arg(Arg::Text(user.clone()));
            sql.push_str(&format!(" AND user_id = ${n}"));
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
        let n = arg(Arg::Int(q.limit));
        sql.push_str(&format!(" ORDER BY create_time DESC, id DESC LIMIT ${n}"));
        Ok(with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, NotificationRow>(sqlx::AssertSqlSafe(sql));
            for a in &args {
                query = match a {
                    Arg::Text(s) => query.bind(s.as_str()),
                    Arg::Int(i) => query.bind(*i),
                };
            }
            query.fetch_all(pool).await?
        }))
    }

    /// Registers a webhook endpoint.
    pub async fn create_endpoint(
        &self,
        id: &str,
        url: &str,
        event_types: &[String],
        secret: &str,
        now: i64,
    ) -> Result<EndpointRow, Error> {
        let event_types = event_types.join(" ");
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, url, event_types, secret, create_time) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(url)
            .bind(&event_types)
            .bind(secret)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(EndpointRow { id: id.to_owned(), url: url.to_owned(), event_types, create_time: now })
    }

    /// Every webhook endpoint, newest first.
    pub async fn endpoints(&self) -> Result<Vec<EndpointRow>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, EndpointRow>(
                "SELECT id, url, event_types, create_time FROM webhook_endpoints ORDER BY create_time DESC, id DESC",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Deletes endpoint `id` and skips its deliveries still waiting; false when there was no such endpoint.
    pub async fn delete_endpoint(&self, id: &str, now: i64) -> Result<bool, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<bool, Error> = async {
                let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&mut *tx).await?;
                if deleted.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE notifications SET status = 'SKIPPED', last_error = 'the webhook endpoint was deleted', \
                     update_time = $1 WHERE endpoint_id = $2 AND status = 'PENDING'",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                Ok(true)
            }
            .await;
            finish(tx, result).await
        })
    }
}
