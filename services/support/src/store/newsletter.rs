//! The SQL of the newsletter: subscribers (one row per mailbox) and the newsletters sent. Each change of a
//! subscription writes its row first, so two requests for one address apply one after the other; the mail it
//! causes goes to the outbox in the same transaction.

use platform::db::{BeginWrite, finish, is_unique_violation};
use platform::events::enqueue;
use platform::with_db;

use super::Store;
use crate::domain::Cursor;
use crate::domain::newsletter::{self, NewNewsletter, OnSubscribe, Subscription};
use crate::error::{Error, SUBSCRIPTION_ENDED, TOKEN_EXPIRED};
use crate::events::{self, Issue};

/// A newsletter as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NewsletterRow {
    /// UUIDv7.
    pub id: String,
    /// Its subject line.
    pub subject: String,
    /// Its text.
    pub body: String,
    /// How many confirmed subscribers it went to.
    pub recipient_count: i32,
    /// Microseconds since the epoch.
    pub create_time: i64,
}

/// An address of the newsletter, as staff see it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriberRow {
    /// The address, lower-cased.
    pub email: String,
    /// PENDING, CONFIRMED or UNSUBSCRIBED.
    pub status: String,
    /// The language of its mails.
    pub locale: String,
    /// When it last asked for the newsletter, microseconds.
    pub request_time: i64,
    /// When its state last changed, microseconds.
    pub update_time: i64,
}

const NEWSLETTER_COLUMNS: &str = "id, subject, body, recipient_count, create_time";

/// Locks the subscription whose `$column` is `$value` (a no-op update) and yields `(email, status, request_time)`.
macro_rules! lock_subscriber {
    ($conn:expr, $column:literal, $value:expr) => {
        sqlx::query_as::<_, (String, String, i64)>(concat!(
            "UPDATE newsletter_subscribers SET update_time = update_time WHERE ",
            $column,
            " = $1 RETURNING email, status, request_time"
        ))
        .bind($value)
        .fetch_optional($conn)
        .await?
        .map(|(email, status, requested)| {
            Subscription::parse(&status)
                .map(|status| (email, status, requested))
                .ok_or_else(|| Error::Corrupt(format!("subscription status {status:?}")))
        })
        .transpose()?
    };
}

/// Moves the subscription of `$email` to `$status` at `$now`.
macro_rules! set_status {
    ($conn:expr, $email:expr, $status:expr, $now:expr) => {
        sqlx::query("UPDATE newsletter_subscribers SET status = $1, update_time = $2 WHERE email = $3")
            .bind($status.as_str())
            .bind($now)
            .bind($email)
            .execute($conn)
            .await?
    };
}

impl Store {
    /// Asks for the newsletter at `email` (normalised) as [`newsletter::on_subscribe`] says: a new token and
    /// `newsletter.subscription_requested` when the address is to be mailed; true when it was.
    pub async fn subscribe(&self, email: &str, locale: &str, now: i64) -> Result<bool, Error> {
        let token = newsletter::new_token();
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                // A new address gets its row at once; a known one's row is locked, so concurrent requests for
                // one address apply one after the other.
                let inserted = sqlx::query(
                    "INSERT INTO newsletter_subscribers (email, status, token, locale, request_time, update_time) \
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (email) DO NOTHING",
                )
                .bind(email)
                .bind(Subscription::Pending.as_str())
                .bind(&token)
                .bind(locale)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !inserted {
                    let (_, status, requested) = lock_subscriber!(&mut *tx, "email", email)
                        .ok_or_else(|| Error::Corrupt(format!("subscriber {email} vanished")))?;
                    if newsletter::on_subscribe(Some((status, requested)), now) == OnSubscribe::Nothing {
                        return Ok(false);
                    }
                    sqlx::query(
                        "UPDATE newsletter_subscribers SET status = $1, token = $2, locale = $3, request_time = $4, \
                         update_time = $4 WHERE email = $5",
                    )
                    .bind(Subscription::Pending.as_str())
                    .bind(&token)
                    .bind(locale)
                    .bind(now)
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
                }
                enqueue(&mut *tx, crate::NAME, &events::subscription_requested(email, &token, locale)).await?;
                Ok(true)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Confirms the subscription of `token`; returns its address. NOT_FOUND for an unknown token,
    /// FAILED_PRECONDITION for one older than a week (TOKEN_EXPIRED) or of an ended subscription
    /// (SUBSCRIPTION_ENDED).
    pub async fn confirm_subscription(&self, token: &str, now: i64) -> Result<String, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let (email, status, requested) =
                    lock_subscriber!(&mut *tx, "token", token).ok_or_else(Error::unknown_token)?;
                match status {
                    Subscription::Confirmed => return Ok(email),
                    Subscription::Unsubscribed => {
                        return Err(Error::FailedPrecondition {
                            reason: SUBSCRIPTION_ENDED,
                            message: "this subscription was ended; subscribe again".to_owned(),
                        });
                    }
                    Subscription::Pending if !newsletter::token_fresh(requested, now) => {
                        return Err(Error::FailedPrecondition {
                            reason: TOKEN_EXPIRED,
                            message: "this token is older than a week; subscribe again for a new one".to_owned(),
                        });
                    }
                    Subscription::Pending => {}
                }
                set_status!(&mut *tx, &email, Subscription::Confirmed, now);
                Ok(email)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Ends the subscription of `token` (whatever its state); returns its address. NOT_FOUND for an unknown
    /// token. The token stays, so the same link ends it again without error.
    pub async fn unsubscribe(&self, token: &str, now: i64) -> Result<String, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let (email, status, _) = lock_subscriber!(&mut *tx, "token", token).ok_or_else(Error::unknown_token)?;
                if status != Subscription::Unsubscribed {
                    set_status!(&mut *tx, &email, Subscription::Unsubscribed, now);
                }
                Ok(email)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Sends newsletter `id` to every confirmed subscriber: its row and a `newsletter.issued` per subscriber in
    /// one transaction. With a request id sent before, sends nothing and returns the newsletter sent then.
    pub async fn send_newsletter(
        &self,
        id: &str,
        new: &NewNewsletter,
        sent_by: &str,
        now: i64,
    ) -> Result<NewsletterRow, Error> {
        if let Some(sent) = self.newsletter_by_request(&new.request_id).await? {
            return same_request(sent, new);
        }
        let request_id = (!new.request_id.is_empty()).then_some(new.request_id.as_str());
        let sent = with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let subscribers = sqlx::query_as::<_, (String, String, String)>(
                    "SELECT email, locale, token FROM newsletter_subscribers WHERE status = $1 ORDER BY email",
                )
                .bind(Subscription::Confirmed.as_str())
                .fetch_all(&mut *tx)
                .await?;
                let row = NewsletterRow {
                    id: id.to_owned(),
                    subject: new.subject.clone(),
                    body: new.body.clone(),
                    recipient_count: i32::try_from(subscribers.len()).unwrap_or(i32::MAX),
                    create_time: now,
                };
                sqlx::query(
                    "INSERT INTO newsletters (id, request_id, subject, body, recipient_count, sent_by, create_time) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&row.id)
                .bind(request_id)
                .bind(&row.subject)
                .bind(&row.body)
                .bind(row.recipient_count)
                .bind(sent_by)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let issue = Issue { newsletter_id: id, subject: &new.subject, body: &new.body };
                for (email, locale, token) in &subscribers {
                    enqueue(&mut *tx, crate::NAME, &events::issued(issue, email, locale, token)).await?;
                }
                Ok(row)
            }
            .await;
            finish(tx, result).await
        });
        match sent {
            // The same request id, sent at the same moment: the other request's newsletter is the answer.
            Err(Error::Database(error)) if is_unique_violation(&error) && request_id.is_some() => {
                let sent = self.newsletter_by_request(&new.request_id).await?;
                same_request(
                    sent.ok_or_else(|| Error::Corrupt(format!("newsletter of request {} vanished", new.request_id)))?,
                    new,
                )
            }
            other => other,
        }
    }

    /// Newsletters sent, newest first: at most `limit`, after `after` (the last of the previous page).
    pub async fn newsletters(&self, after: Option<&Cursor>, limit: i64) -> Result<Vec<NewsletterRow>, Error> {
        // The first page starts after a newsletter of the end of time.
        let (time, id) = after.map_or((i64::MAX, ""), |c| (c.time, c.id.as_str()));
        let sql = format!(
            "SELECT {NEWSLETTER_COLUMNS} FROM newsletters WHERE create_time < $1 OR (create_time = $1 AND id < $2) \
             ORDER BY create_time DESC, id DESC LIMIT $3"
        );
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, NewsletterRow>(sqlx::AssertSqlSafe(sql))
                .bind(time)
                .bind(id)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The newsletter `id`.
    pub async fn newsletter(&self, id: &str) -> Result<Option<NewsletterRow>, Error> {
        let sql = format!("SELECT {NEWSLETTER_COLUMNS} FROM newsletters WHERE id = $1");
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, NewsletterRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        }))
    }

    /// Addresses by address, only those in `status` if given: at most `limit`, after the address `after`.
    pub async fn subscribers(
        &self,
        status: Option<Subscription>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SubscriberRow>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, SubscriberRow>(
                "SELECT email, status, locale, request_time, update_time FROM newsletter_subscribers \
                 WHERE ($1 = '' OR status = $1) AND email > $2 ORDER BY email LIMIT $3",
            )
            .bind(status.map_or("", Subscription::as_str))
            .bind(after.unwrap_or_default())
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Forgets `email` altogether (its row and token); false when it was not known.
    pub async fn delete_subscriber(&self, email: &str) -> Result<bool, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM newsletter_subscribers WHERE email = $1")
                .bind(email)
                .execute(pool)
                .await?
                .rows_affected()
                > 0
        }))
    }

    /// The newsletter sent for `request_id`, if any (never for an empty one).
    async fn newsletter_by_request(&self, request_id: &str) -> Result<Option<NewsletterRow>, Error> {
        if request_id.is_empty() {
            return Ok(None);
        }
        Ok(with_db!(&self.db, pool => {
            let sql = format!("SELECT {NEWSLETTER_COLUMNS} FROM newsletters WHERE request_id = $1");
            sqlx::query_as::<_, NewsletterRow>(sqlx::AssertSqlSafe(sql))
            .bind(request_id)
            .fetch_optional(pool)
            .await?
        }))
    }
}

/// The newsletter `sent` under `new`'s request id, if `new` is the same request; INVALID_ARGUMENT
/// (REQUEST_ID_REUSED) when the id was used for another subject or text.
fn same_request(sent: NewsletterRow, new: &NewNewsletter) -> Result<NewsletterRow, Error> {
    if sent.subject == new.subject && sent.body == new.body {
        Ok(sent)
    } else {
        Err(Error::RequestIdReused(format!(
            "request_id {} sent newsletter {} with another subject or text; use a new request id",
            new.request_id, sent.id
        )))
    }
}
