//! The attachments' methods of `SupportService`: files on a ticket, for its customer and agents.

use api::google::api::HttpBody;
use api::mercato::options::v1::HttpBodyHeaders;
use api::mercato::support::v1::{
    AddAttachmentRequest, AddAttachmentResponse, Attachment, DeleteAttachmentRequest, DeleteAttachmentResponse,
    GetAttachmentContentRequest,
};
use platform::auth::Claims;
use platform::media;
use platform::time::{now_micros, timestamp};

use super::{SUPPORT_AGENT, SupportApi, author_in, may_see, may_see_customers};
use crate::domain;
use crate::domain::attachments::{self as rules, attachment_uri};
use crate::error::Error;
use crate::store::{self, NewAttachment};

pub(super) fn attachment_to_wire(a: store::Attachment) -> Attachment {
    Attachment {
        uri: attachment_uri(&a.ticket_id, &a.id),
        id: a.id,
        filename: a.filename,
        content_type: a.content_type,
        size_bytes: a.size_bytes,
        author_role: a.author.to_wire().into(),
        author_id: a.author_id,
        create_time: Some(timestamp(a.create_time)),
    }
}

/// Checks the ticket and attachment ids of an attachment request.
fn check_attachment_ids(ticket_id: &str, attachment_id: &str) -> Result<(), Error> {
    platform::error::check_ids(&[("ticket_id", ticket_id), ("attachment_id", attachment_id)])
        .map_err(Error::InvalidArgument)
}

impl SupportApi {
    /// Adds the file `req` carries to its ticket, as `claims` may.
    pub(super) async fn attach(
        &self,
        claims: &Claims,
        req: AddAttachmentRequest,
    ) -> Result<AddAttachmentResponse, Error> {
        let mut violations = Vec::new();
        if let Err(v) = domain::validate_id("ticket_id", &req.ticket_id) {
            violations.push(v);
        }
        let input = rules::validate_attachment(&req.filename, &req.content_type, &req.data)
            .map_err(|more| violations.extend(more))
            .ok();
        let Some(input) = input.filter(|_| violations.is_empty()) else {
            return Err(Error::InvalidArgument(violations));
        };
        // No bytes are stored for a ticket the caller cannot see (or that is not there); the row's transaction
        // asks again, under the ticket's lock.
        match self.store.customer_of(&req.ticket_id).await? {
            Some(customer_id) if may_see_customers(claims, &customer_id) => {}
            _ => return Err(Error::ticket_not_found(&req.ticket_id)),
        }
        let id = uuid::Uuid::now_v7().to_string();
        let key = rules::blob_key(&req.ticket_id, &id);
        let size_bytes = i64::try_from(req.data.len()).unwrap_or(i64::MAX);
        // The bytes first, then the row that makes them part of the ticket; a refused row takes them back.
        self.blobs.put(&key, req.data.into()).await?;
        let new =
            NewAttachment { id: &id, ticket_id: &req.ticket_id, input: &input, size_bytes, author_id: &claims.sub };
        let attachment = match self.store.add_attachment(&new, now_micros(), |t| author_in(claims, t)).await {
            Ok(attachment) => attachment,
            Err(error) => {
                if let Err(blob_error) = self.blobs.delete(&key).await {
                    tracing::warn!(%key, error = %blob_error, "an attachment's bytes stay behind its refused row");
                }
                return Err(error);
            }
        };
        tracing::info!(ticket_id = %req.ticket_id, attachment_id = %id, size_bytes, "ticket attachment added");
        Ok(AddAttachmentResponse { attachment: Some(attachment_to_wire(attachment)) })
    }

    /// The bytes of the attachment `req` names, if `claims` may see its ticket.
    pub(super) async fn attachment_content(
        &self,
        claims: &Claims,
        req: GetAttachmentContentRequest,
    ) -> Result<HttpBody, Error> {
        check_attachment_ids(&req.ticket_id, &req.attachment_id)?;
        let not_found = || Error::attachment_not_found(&req.ticket_id, &req.attachment_id);
        let attachment = match self.store.attachment(&req.ticket_id, &req.attachment_id).await? {
            Some((attachment, customer_id)) if may_see_customers(claims, &customer_id) => attachment,
            _ => return Err(not_found()),
        };
        let key = rules::blob_key(&attachment.ticket_id, &attachment.id);
        let Some(data) = self.blobs.get(&key).await? else {
            tracing::error!(%key, "an attachment's bytes are missing from the blob store");
            return Err(not_found());
        };
        // Saved under its name rather than shown (a PDF or text from a customer is not the API's page), and
        // revalidated on every use, since who may see it can change; its ETag makes that cheap.
        let headers = HttpBodyHeaders {
            cache_control: "private, no-cache".to_owned(),
            etag: media::etag(&attachment.id),
            content_disposition: media::attachment_disposition(&attachment.filename),
        };
        Ok(media::http_body(attachment.content_type, data.to_vec(), &headers))
    }

    /// Removes the attachment `req` names, if `claims` added it or is an agent.
    pub(super) async fn detach(
        &self,
        claims: &Claims,
        req: DeleteAttachmentRequest,
    ) -> Result<DeleteAttachmentResponse, Error> {
        check_attachment_ids(&req.ticket_id, &req.attachment_id)?;
        let may_remove = |a: &store::Attachment| claims.has_scope(SUPPORT_AGENT) || a.author_id == claims.sub;
        self.store
            .delete_attachment(&req.ticket_id, &req.attachment_id, now_micros(), |t| may_see(claims, t), may_remove)
            .await?;
        // The row is gone, so the attachment is too; bytes that fail to go are only space.
        let key = rules::blob_key(&req.ticket_id, &req.attachment_id);
        if let Err(error) = self.blobs.delete(&key).await {
            tracing::warn!(%key, %error, "a removed attachment's bytes stay behind");
        }
        tracing::info!(ticket_id = %req.ticket_id, attachment_id = %req.attachment_id, "ticket attachment removed");
        Ok(DeleteAttachmentResponse {})
    }
}
