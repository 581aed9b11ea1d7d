//! All SQL of the support service. Every statement is written once, in the subset SQLite and PostgreSQL
//! share, and run on whichever pool the [`Db`] holds through `with_db!`.
//!
//! Every change to a ticket is one transaction that writes its row first (`lock_ticket!`): on PostgreSQL that
//! locks the ticket, on SQLite it takes the write lock up front, so its messages are numbered without gaps and
//! its state follows the last message. The event a change causes goes to the outbox in the same transaction.
//! Attachments' rows are in [`attachments`]; their bytes are in the blob store.

use platform::db::{BeginWrite, Db, finish};
use platform::events::enqueue;
use platform::with_db;

use crate::domain::{self, Author, Cursor, MAX_MESSAGES, NewTicket, Status};
use crate::error::{Error, TICKET_FULL};
use crate::events::{self, About};

/// The columns of `tickets`, in `TicketRow`'s order (a macro, so statements are built at compile time).
macro_rules! ticket_columns {
    () => {
        "id, customer_id, email, name, subject, order_id, status, create_time, update_time"
    };
}

/// Writes the ticket's row (a no-op update) so the transaction holds it, and yields it; `None` when there is
/// no such ticket (a macro: it runs on either engine's transaction).
macro_rules! lock_ticket {
    ($conn:expr, $id:expr) => {
        sqlx::query_as::<_, TicketRow>(concat!(
            "UPDATE tickets SET update_time = update_time WHERE id = $1 RETURNING ",
            ticket_columns!()
        ))
        .bind($id)
        .fetch_optional($conn)
        .await?
    };
}

/// Appends a message to a ticket's conversation, numbered after its last one.
macro_rules! add_message {
    ($conn:expr, $ticket_id:expr, $author:expr, $author_id:expr, $body:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO ticket_messages (ticket_id, seq, author_role, author_id, body, create_time) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM ticket_messages WHERE ticket_id = $1",
        )
        .bind($ticket_id)
        .bind($author.as_str())
        .bind($author_id)
        .bind($body)
        .bind($now)
        .execute($conn)
        .await?
    };
}

mod attachments;
mod faq;
mod newsletter;

pub use attachments::{Attachment, NewAttachment};
pub use faq::{FaqEntry, FaqQuery};
pub use newsletter::{NewsletterRow, SubscriberRow};

/// A message of a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who wrote it.
    pub author: Author,
    /// Their user id; empty for the contact form's sender.
    pub author_id: String,
    /// The text.
    pub body: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
}

/// A stored ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Its id.
    pub id: String,
    /// Its customer; empty for a contact-form ticket.
    pub customer_id: String,
    /// The contact form's sender's email.
    pub email: String,
    /// The contact form's sender's name.
    pub name: String,
    /// What it is about.
    pub subject: String,
    /// The order it is about; may be empty.
    pub order_id: String,
    /// State.
    pub status: Status,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
    /// The conversation, oldest first (empty in listings).
    pub messages: Vec<Message>,
    /// Files attached to it, oldest first (empty in listings).
    pub attachments: Vec<Attachment>,
}

impl Ticket {
    fn about(&self) -> About<'_> {
        About {
            ticket_id: &self.id,
            customer_id: &self.customer_id,
            email: &self.email,
            subject: &self.subject,
            name: &self.name,
        }
    }
}

#[derive(sqlx::FromRow)]
struct TicketRow {
    id: String,
    customer_id: String,
    email: String,
    name: String,
    subject: String,
    order_id: String,
    status: String,
    create_time: i64,
    update_time: i64,
}

impl TryFrom<TicketRow> for Ticket {
    type Error = Error;

    fn try_from(r: TicketRow) -> Result<Self, Error> {
        Ok(Ticket {
            status: Status::parse(&r.status).ok_or_else(|| Error::Corrupt(format!("ticket status {:?}", r.status)))?,
            id: r.id,
            customer_id: r.customer_id,
            email: r.email,
            name: r.name,
            subject: r.subject,
            order_id: r.order_id,
            create_time: r.create_time,
            update_time: r.update_time,
            messages: Vec::new(),
            attachments: Vec::new(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    author_role: String,
    author_id: String,
    body: String,
    create_time: i64,
}

/// Which tickets a listing returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this customer's.
    pub customer_id: Option<String>,
    /// Only in this state.
    pub status: Option<Status>,
    /// Only those after this one (the page token).
    pub after: Option<Cursor>,
    /// At most this many.
    pub limit: i64,
}

/// The support service's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Opens a ticket for `customer_id` (empty for the contact form) with its first message, OPEN, and writes
    /// `ticket.created`; returns its id.
    pub async fn open(&self, customer_id: &str, new: &NewTicket, now: i64) -> Result<String, Error> {
        let id = uuid::Uuid::now_v7().to_string();
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                sqlx::query(concat!(
                    "INSERT INTO tickets (",
                    ticket_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
                ))
                    .bind(&id)
                    .bind(customer_id)
                    .bind(&new.email)
                    .bind(&new.name)
                    .bind(&new.subject)
                    .bind(&new.order_id)
                    .bind(Status::Open.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                add_message!(&mut *tx, &id, Author::Customer, customer_id, &new.message, now);
                let about =
                    About { ticket_id: &id, customer_id, email: &new.email, subject: &new.subject, name: &new.name };
                enqueue(&mut *tx, crate::NAME, &events::created(about, &new.message)).await?;
                Ok(id.clone())
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Ticket `id` with its conversation, if it exists.
    pub async fn ticket(&self, id: &str) -> Result<Option<Ticket>, Error> {
        let (row, messages) = with_db!(&self.db, pool => {
            let row = sqlx::query_as::<_, TicketRow>(concat!("SELECT ", ticket_columns!(), " FROM tickets WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            let messages = sqlx::query_as::<_, MessageRow>(
                "SELECT author_role, author_id, body, create_time FROM ticket_messages WHERE ticket_id = $1 \
                 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            (row, messages)
        });
        let Some(row) = row else { return Ok(None) };
        let mut ticket = Ticket::try_from(row)?;
        ticket.messages = messages
            .into_iter()
            .map(|m| {
                Ok(Message {
                    author: Author::parse(&m.author_role)
                        .ok_or_else(|| Error::Corrupt(format!("message author {:?}", m.author_role)))?,
                    author_id: m.author_id,
                    body: m.body,
                    create_time: m.create_time,
                })
            })
            .collect::<Result<_, Error>>()?;
        ticket.attachments = self.attachments_of(id).await?;
        Ok(Some(ticket))
    }

    /// The customer of ticket `id` (empty for a contact-form ticket), if it exists.
    pub async fn customer_of(&self, id: &str) -> Result<Option<String>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, String>("SELECT customer_id FROM tickets WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Tickets, the most recently changed first, filtered as asked (without their conversations).
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Ticket>, Error> {
        let mut sql = concat!("SELECT ", ticket_columns!(), " FROM tickets WHERE 1 = 1").to_owned();
        let mut texts: Vec<String> = Vec::new();
        let mut placeholder = |value: String| {
            texts.push(value);
            format!("${}", texts.len())
        };
        if let Some(customer) = &q.customer_id {
            let p = placeholder(customer.clone());
            sql.push_str(&format!(" AND customer_id = {p}"));
        }
        if let Some(status) = q.status {
            let p = placeholder(status.as_str().to_owned());
            sql.push_str(&format!(" AND status = {p}"));
        }
        if let Some(after) = &q.after {
            // The time is a number the service parsed from the token: written into the statement, not bound,
            // so every placeholder is text.
            let t = after.time;
            let i = placeholder(after.id.clone());
            sql.push_str(&format!(" AND (update_time < {t} OR (update_time = {t} AND id < {i}))"));
        }
        sql.push_str(&format!(" ORDER BY update_time DESC, id DESC LIMIT {}", q.limit.max(0)));
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, TicketRow>(sqlx::AssertSqlSafe(sql));
            for text in &texts {
                query = query.bind(text.as_str());
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(Ticket::try_from).collect()
    }

    /// Adds a message by user `author_id` to ticket `id`, moves its state as [`domain::after_message`] says,
    /// and writes `ticket.replied` for an agent's. `role` says, from the locked ticket, as whom the caller
    /// writes, or `None` when they may not see it (NOT_FOUND); FAILED_PRECONDITION when it is full. Returns the
    /// role written as.
    pub async fn add_message(
        &self,
        id: &str,
        author_id: &str,
        body: &str,
        now: i64,
        role: impl Fn(&Ticket) -> Option<Author>,
    ) -> Result<Author, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let row = lock_ticket!(&mut *tx, id).ok_or_else(|| Error::ticket_not_found(id))?;
                let ticket = Ticket::try_from(row)?;
                let author = role(&ticket).ok_or_else(|| Error::ticket_not_found(id))?;
                let count = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ticket_messages WHERE ticket_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                if count >= MAX_MESSAGES {
                    return Err(Error::FailedPrecondition {
                        reason: TICKET_FULL,
                        message: format!("a ticket holds at most {MAX_MESSAGES} messages; open a new one"),
                    });
                }
                add_message!(&mut *tx, id, author, author_id, body, now);
                sqlx::query("UPDATE tickets SET status = $1, update_time = $2 WHERE id = $3")
                    .bind(domain::after_message(author).as_str())
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if author == Author::Agent {
                    enqueue(&mut *tx, crate::NAME, &events::replied(ticket.about(), body)).await?;
                }
                Ok(author)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Marks ticket `id` RESOLVED by user `by` and writes `ticket.resolved`; a resolved ticket stays as it is.
    /// `visible` decides whether the caller may see the ticket (NOT_FOUND when not).
    pub async fn resolve(&self, id: &str, by: &str, now: i64, visible: impl Fn(&Ticket) -> bool) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let row = lock_ticket!(&mut *tx, id).ok_or_else(|| Error::ticket_not_found(id))?;
                let ticket = Ticket::try_from(row)?;
                if !visible(&ticket) {
                    return Err(Error::ticket_not_found(id));
                }
                if ticket.status == Status::Resolved {
                    return Ok(());
                }
                sqlx::query("UPDATE tickets SET status = $1, update_time = $2 WHERE id = $3")
                    .bind(Status::Resolved.as_str())
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                enqueue(&mut *tx, crate::NAME, &events::resolved(ticket.about(), by)).await?;
                Ok(())
            }
            .await;
            finish(tx, result).await
        })
    }
}
