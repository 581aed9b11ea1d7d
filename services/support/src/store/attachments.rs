//! The SQL of ticket attachments. Their bytes are in the blob store: the caller writes them before
//! [`Store::add_attachment`] and removes them after [`Store::delete_attachment`].

use platform::db::{BeginWrite, finish};
use platform::with_db;

use super::{Store, Ticket, TicketRow};
use crate::domain::Author;
use crate::domain::attachments::{AttachmentInput, MAX_ATTACHMENTS};
use crate::error::{ATTACHMENT_LIMIT, Error};

/// The columns of `ticket_attachments`, in [`AttachmentRow`]'s order (a macro, so statements are built at
/// compile time).
macro_rules! attachment_columns {
    () => {
        "id, ticket_id, filename, content_type, size_bytes, author_role, author_id, create_time"
    };
}

/// Moves the update time of ticket `$id` to `$now`: its attachments changed.
macro_rules! touch_ticket {
    ($conn:expr, $id:expr, $now:expr) => {
        sqlx::query("UPDATE tickets SET update_time = $1 WHERE id = $2").bind($now).bind($id).execute($conn).await?
    };
}

/// A file attached to a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// UUIDv7.
    pub id: String,
    /// Its ticket.
    pub ticket_id: String,
    /// The name its sender gave it.
    pub filename: String,
    /// Its media type.
    pub content_type: String,
    /// Bytes.
    pub size_bytes: i64,
    /// Who added it.
    pub author: Author,
    /// Their user id.
    pub author_id: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
}

#[derive(sqlx::FromRow)]
struct AttachmentRow {
    id: String,
    ticket_id: String,
    filename: String,
    content_type: String,
    size_bytes: i64,
    author_role: String,
    author_id: String,
    create_time: i64,
}

/// An attachment with its ticket's customer, read in one query.
#[derive(sqlx::FromRow)]
struct AttachmentOfCustomer {
    #[sqlx(flatten)]
    attachment: AttachmentRow,
    customer_id: String,
}

impl TryFrom<AttachmentRow> for Attachment {
    type Error = Error;

    fn try_from(r: AttachmentRow) -> Result<Self, Error> {
        Ok(Attachment {
            author: Author::parse(&r.author_role)
                .ok_or_else(|| Error::Corrupt(format!("attachment author {:?}", r.author_role)))?,
            id: r.id,
            ticket_id: r.ticket_id,
            filename: r.filename,
            content_type: r.content_type,
            size_bytes: r.size_bytes,
            author_id: r.author_id,
            create_time: r.create_time,
        })
    }
}

/// An attachment to add, its bytes already stored.
#[derive(Debug, Clone)]
pub struct NewAttachment<'a> {
    /// Its id (the blob's key names it).
    pub id: &'a str,
    /// The ticket.
    pub ticket_id: &'a str,
    /// Name and type, checked.
    pub input: &'a AttachmentInput,
    /// Bytes.
    pub size_bytes: i64,
    /// The user adding it.
    pub author_id: &'a str,
}

impl Store {
    /// Adds an attachment to its ticket and moves the ticket's update time. `role` says, from the locked
    /// ticket, as whom the caller adds it, or `None` when they may not see it (NOT_FOUND); FAILED_PRECONDITION
    /// (ATTACHMENT_LIMIT) when the ticket has [`MAX_ATTACHMENTS`] already. The ticket's row is written first,
    /// so concurrent additions are counted one at a time.
    pub async fn add_attachment(
        &self,
        new: &NewAttachment<'_>,
        now: i64,
        role: impl Fn(&Ticket) -> Option<Author>,
    ) -> Result<Attachment, Error> {
        let ticket_id = new.ticket_id;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let row = lock_ticket!(&mut *tx, ticket_id).ok_or_else(|| Error::ticket_not_found(ticket_id))?;
                let author = role(&Ticket::try_from(row)?).ok_or_else(|| Error::ticket_not_found(ticket_id))?;
                let count =
                    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM ticket_attachments WHERE ticket_id = $1")
                        .bind(ticket_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if count >= MAX_ATTACHMENTS {
                    return Err(Error::FailedPrecondition {
                        reason: ATTACHMENT_LIMIT,
                        message: format!("a ticket holds at most {MAX_ATTACHMENTS} attachments; remove one first"),
                    });
                }
                let attachment = Attachment {
                    id: new.id.to_owned(),
                    ticket_id: ticket_id.to_owned(),
                    filename: new.input.filename.clone(),
                    content_type: new.input.content_type.clone(),
                    size_bytes: new.size_bytes,
                    author,
                    author_id: new.author_id.to_owned(),
                    create_time: now,
                };
                sqlx::query(concat!(
                    "INSERT INTO ticket_attachments (",
                    attachment_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(&attachment.id)
                .bind(&attachment.ticket_id)
                .bind(&attachment.filename)
                .bind(&attachment.content_type)
                .bind(attachment.size_bytes)
                .bind(attachment.author.as_str())
                .bind(&attachment.author_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                touch_ticket!(&mut *tx, ticket_id, now);
                Ok(attachment)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Attachment `id` of ticket `ticket_id` with that ticket's customer (empty for a contact-form ticket), if
    /// both exist.
    pub async fn attachment(&self, ticket_id: &str, id: &str) -> Result<Option<(Attachment, String)>, Error> {
        let found = with_db!(&self.db, pool => {
            sqlx::query_as::<_, AttachmentOfCustomer>(
                "SELECT a.id, a.ticket_id, a.filename, a.content_type, a.size_bytes, a.author_role, a.author_id, \
                 a.create_time, t.customer_id FROM ticket_attachments a JOIN tickets t ON t.id = a.ticket_id \
                 WHERE a.ticket_id = $1 AND a.id = $2",
            )
            .bind(ticket_id)
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        found.map(|f| Ok((Attachment::try_from(f.attachment)?, f.customer_id))).transpose()
    }

    /// Removes attachment `id` of ticket `ticket_id` and moves the ticket's update time: NOT_FOUND when the
    /// locked ticket is not `visible` to the caller or has no such attachment, PERMISSION_DENIED when the caller
    /// may see it but not remove it (`may_remove`).
    pub async fn delete_attachment(
        &self,
        ticket_id: &str,
        id: &str,
        now: i64,
        visible: impl Fn(&Ticket) -> bool,
        may_remove: impl Fn(&Attachment) -> bool,
    ) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let row = lock_ticket!(&mut *tx, ticket_id).ok_or_else(|| Error::ticket_not_found(ticket_id))?;
                if !visible(&Ticket::try_from(row)?) {
                    return Err(Error::ticket_not_found(ticket_id));
                }
                let attachment = sqlx::query_as::<_, AttachmentRow>(concat!(
                    "SELECT ",
                    attachment_columns!(),
                    " FROM ticket_attachments WHERE ticket_id = $1 AND id = $2"
                ))
                .bind(ticket_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::attachment_not_found(ticket_id, id))?;
                if !may_remove(&Attachment::try_from(attachment)?) {
                    return Err(Error::PermissionDenied(
                        "only who added an attachment, or an agent, may remove it".to_owned(),
                    ));
                }
                sqlx::query("DELETE FROM ticket_attachments WHERE ticket_id = $1 AND id = $2")
                    .bind(ticket_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                touch_ticket!(&mut *tx, ticket_id, now);
                Ok(())
            }
            .await;
            finish(tx, result).await
        })
    }

    /// The (ticket, attachment) ids of every attachment: what the blob store may keep.
    pub async fn attachment_ids(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, (String, String)>("SELECT ticket_id, id FROM ticket_attachments").fetch_all(pool).await?
        }))
    }

    /// The attachments of ticket `ticket_id`, oldest first.
    pub(super) async fn attachments_of(&self, ticket_id: &str) -> Result<Vec<Attachment>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, AttachmentRow>(concat!(
                "SELECT ",
                attachment_columns!(),
                " FROM ticket_attachments WHERE ticket_id = $1 ORDER BY create_time, id"
            ))
            .bind(ticket_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Attachment::try_from).collect()
    }
}
