//! All SQL of the notifications service. Every statement is written once, in the subset SQLite and
//! PostgreSQL share, and run on whichever pool the [`Db`] holds through `with_db!`; the one difference is the
//! row lock of the dispatcher's claim (see [`Store::claim_due`]).
//!
//! An event's effect (the recipient it introduces, the payment it links, the notifications it causes) is
//! one transaction with its inbox row; a delivery's outcome is one transaction with the event reporting it.

use platform::db::{Db, finish};
use platform::events::{NewEvent, enqueue};
use platform::with_db;

use crate::domain::{Channel, Cursor, Status};
use crate::error::Error;

/// A user as `user.registered` introduced them.
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

/// Inserts one notification row (a macro: it runs on either engine's transaction).
macro_rules! insert_notification {
    ($conn:expr, $channel:expr, $event_type:expr, $event_id:expr, $n:expr, $endpoint_id:expr, $payload:expr, $now:expr) => {{
        let n: &NewNotification = $n;
        sqlx::query(
            "INSERT INTO notifications (id, user_id, channel, event_type, event_id, recipient, subject, body_text, \
             body_html, endpoint_id, payload, status, attempts, last_error, next_attempt_time, create_time, \
             update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $14, $14, $14)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&n.user_id)
        .bind($channel.as_str())
        .bind($event_type)
        .bind($event_id)
        .bind(&n.recipient)
        .bind(&n.subject)
        .bind(&n.body_text)
        .bind(&n.body_html)
        .bind($endpoint_id)
        .bind($payload)
        .bind(n.status.as_str())
        .bind(&n.last_error)
        .bind($now)
        .execute($conn)
        .await?
    }};
}

/// What one consumed event changes, written by [`Store::record_event`].
#[derive(Debug, Clone)]
pub struct EventEffect<'a> {
    /// The event's id (the inbox key).
    pub event_id: &'a str,
    /// Its type.
    pub event_type: &'a str,
    /// A user it introduces.
    pub register: Option<&'a Recipient>,
    /// A payment it links to its order and customer.
    pub payment: Option<&'a PaymentLink>,
    /// The email it causes (possibly SKIPPED).
    pub email: NewNotification,
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

    /// The user `user_id`, if `user.registered` introduced them.
    pub async fn recipient(&self, user_id: &str) -> Result<Option<Recipient>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, Recipient>(
                "SELECT user_id, email, display_name, locale FROM recipients WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// The order and customer of `payment_id`, if `order.confirmed` told them.
    pub async fn payment(&self, payment_id: &str) -> Result<Option<PaymentLink>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, PaymentLink>(
                "SELECT payment_id, order_id, customer_id FROM payments WHERE payment_id = $1",
            )
            .bind(payment_id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Writes the effect of one event, once: false (and nothing written) when the event was handled before.
    /// Every endpoint subscribed to the event type gets a PENDING webhook delivery.
    pub async fn record_event(&self, effect: &EventEffect<'_>, now: i64) -> Result<bool, Error> {
        with_db!(&self.db, pool => {
            let mut tx = platform::db::begin(pool).await?;
            let result: Result<bool, Error> = async {
                if !platform::events::first_delivery(&mut *tx, crate::events::CONSUMER, effect.event_id).await? {
                    return Ok(false);
                }
                if let Some(r) = effect.register {
                    sqlx::query(
                        "INSERT INTO recipients (user_id, email, display_name, locale, update_time) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, \
                         display_name = excluded.display_name, locale = excluded.locale, \
                         update_time = excluded.update_time",
                    )
                    .bind(&r.user_id)
                    .bind(&r.email)
                    .bind(&r.display_name)
                    .bind(&r.locale)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(p) = effect.payment {
                    sqlx::query(
                        "INSERT INTO payments (payment_id, order_id, customer_id, create_time) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (payment_id) DO NOTHING",
                    )
                    .bind(&p.payment_id)
                    .bind(&p.order_id)
                    .bind(&p.customer_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                insert_notification!(&mut *tx, Channel::Email, effect.event_type, effect.event_id, &effect.email, "", "", now);
                let endpoints = sqlx::query_as::<_, EndpointRow>(
                    "SELECT id, url, event_types, create_time FROM webhook_endpoints ORDER BY create_time, id",
                )
                .fetch_all(&mut *tx)
                .await?;
                for endpoint in endpoints.iter().filter(|e| e.event_types.split(' ').any(|t| t == effect.event_type)) {
                    let delivery = NewNotification {
                        user_id: String::new(),
                        recipient: endpoint.url.clone(),
                        subject: String::new(),
                        body_text: String::new(),
                        body_html: String::new(),
                        status: Status::Pending,
                        last_error: String::new(),
                    };
                    insert_notification!(
                        &mut *tx, Channel::Webhook, effect.event_type, effect.event_id, &delivery, &endpoint.id,
                        effect.webhook_body, now
                    );
                }
                Ok(true)
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
        let claim = |lock: &str| {
            format!(
                "UPDATE notifications SET next_attempt_time = $1 WHERE id IN (SELECT id FROM notifications \
                 WHERE status = 'PENDING' AND next_attempt_time <= $2 ORDER BY next_attempt_time, id LIMIT $3{lock}) \
                 RETURNING id, user_id, channel, event_type, event_id, recipient, subject, body_text, body_html, \
                 endpoint_id, payload, attempts"
            )
        };
        let rows = match &self.db {
            Db::Sqlite(pool) => {
                let sql = claim("");
                sqlx::query_as::<_, Due>(&sql).bind(lease_until).bind(now).bind(limit).fetch_all(pool).await?
            }
            Db::Postgres(pool) => {
                let sql = claim(" FOR UPDATE SKIP LOCKED");
                sqlx::query_as::<_, Due>(&sql).bind(lease_until).bind(now).bind(limit).fetch_all(pool).await?
            }
        };
        Ok(rows)
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

    /// Stores how an attempt at `due` ended, with `event` (notification.sent/failed) in the same transaction.
    /// A row no longer PENDING (handled meanwhile) is left alone.
    pub async fn finish_attempt(
        &self,
        due: &Due,
        outcome: &Outcome,
        event: Option<&NewEvent>,
        now: i64,
    ) -> Result<(), Error> {
        let (status, error, next, counted) = match outcome {
            Outcome::Sent => (Status::Sent, "", now, true),
            Outcome::Logged => (Status::Logged, "", now, true),
            Outcome::Skipped(reason) => (Status::Skipped, reason.as_str(), now, false),
            Outcome::Retry { error, at } => (Status::Pending, error.as_str(), *at, true),
            Outcome::Failed(error) => (Status::Failed, error.as_str(), now, true),
        };
        with_db!(&self.db, pool => {
            let mut tx = platform::db::begin(pool).await?;
            let result: Result<(), Error> = async {
                let updated = sqlx::query(
                    "UPDATE notifications SET status = $1, last_error = $2, next_attempt_time = $3, \
                     attempts = attempts + $4, update_time = $5 WHERE id = $6 AND status = 'PENDING'",
                )
                .bind(status.as_str())
                .bind(error)
                .bind(next)
                .bind(i32::from(counted))
                .bind(now)
                .bind(&due.id)
                .execute(&mut *tx)
                .await?;
                if let (1, Some(event)) = (updated.rows_affected(), event) {
                    enqueue(&mut *tx, crate::NAME, event).await?;
                }
                Ok(())
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
            let t = arg(Arg::Int(after.create_time));
            let i = arg(Arg::Text(after.id.clone()));
            sql.push_str(&format!(" AND (create_time < ${t} OR (create_time = ${t} AND id < ${i}))"));
        }
        let n = arg(Arg::Int(q.limit));
        sql.push_str(&format!(" ORDER BY create_time DESC, id DESC LIMIT ${n}"));
        Ok(with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, NotificationRow>(&sql);
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
            let mut tx = platform::db::begin(pool).await?;
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
