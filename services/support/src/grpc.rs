//! The gRPC face of the support service: wire messages in, domain rules and store, wire messages out. Tickets
//! are served here; attachments in [`attachments`], the FAQ in [`faq`], the newsletter in [`newsletter`].

mod attachments;
mod faq;
mod newsletter;

use api::google::api::HttpBody;
use api::mercato::support::v1::support_service_server::SupportService;
use api::mercato::support::v1::{
    AddAttachmentRequest, AddAttachmentResponse, AddMessageRequest, AddMessageResponse, CreateFaqEntryRequest,
    CreateFaqEntryResponse, CreateTicketRequest, CreateTicketResponse, DeleteAttachmentRequest,
    DeleteAttachmentResponse, DeleteFaqEntryRequest, DeleteFaqEntryResponse, GetAttachmentContentRequest,
    GetFaqEntryRequest, GetFaqEntryResponse, GetTicketRequest, GetTicketResponse, ListFaqEntriesRequest,
    ListFaqEntriesResponse, ListTicketsRequest, ListTicketsResponse, ResolveTicketRequest, ResolveTicketResponse,
    SubmitContactFormRequest, SubmitContactFormResponse, Ticket, TicketMessage, UpdateFaqEntryRequest,
    UpdateFaqEntryResponse,
};
use api::mercato::support::v1::{
    ConfirmNewsletterSubscriptionRequest, ConfirmNewsletterSubscriptionResponse, DeleteNewsletterSubscriberRequest,
    DeleteNewsletterSubscriberResponse, GetNewsletterRequest, GetNewsletterResponse, ListNewsletterSubscribersRequest,
    ListNewsletterSubscribersResponse, ListNewslettersRequest, ListNewslettersResponse, SendNewsletterRequest,
    SendNewsletterResponse, SubscribeNewsletterRequest, SubscribeNewsletterResponse, UnsubscribeNewsletterRequest,
    UnsubscribeNewsletterResponse,
};
use platform::auth::{Claims, caller, optional_caller};
use platform::blob::Blobs;
use platform::db::Db;
use platform::error::FieldViolation;
use platform::events::RelayHandle;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::domain::{self, Author, Cursor};
use crate::error::Error;
use crate::store::{self, ListQuery, Store};

/// The scope of support agents: they see and answer every ticket.
pub const SUPPORT_AGENT: &str = "support:agent";

/// Implements `mercato.support.v1.SupportService`.
#[derive(Debug, Clone)]
pub struct SupportApi {
    store: Store,
    blobs: Blobs,
    relay: RelayHandle,
}

impl SupportApi {
    /// The service over a migrated database and the blob store of its attachments; `relay` is woken when
    /// events were written.
    pub fn new(db: Db, blobs: Blobs, relay: RelayHandle) -> Self {
        Self { store: Store::new(db), blobs, relay }
    }

    /// Ticket `id` with its conversation, as `claims` may see it; else NOT_FOUND.
    async fn visible(&self, claims: &Claims, id: &str) -> Result<Ticket, Error> {
        match self.store.ticket(id).await? {
            Some(t) if may_see(claims, &t) => Ok(ticket_to_wire(t)),
            _ => Err(Error::ticket_not_found(id)),
        }
    }
}

/// Whether `claims` may see `ticket`: an agent, or the customer who opened it (a contact-form ticket has no
/// customer, so only agents see it).
fn may_see(claims: &Claims, ticket: &store::Ticket) -> bool {
    may_see_customers(claims, &ticket.customer_id)
}

/// Whether `claims` may see a ticket of `customer_id` (empty for a contact-form ticket).
fn may_see_customers(claims: &Claims, customer_id: &str) -> bool {
    claims.has_scope(SUPPORT_AGENT) || (!customer_id.is_empty() && customer_id == claims.sub)
}

/// As whom `claims` writes in `ticket` (a message, an attachment): its own customer as the customer (an agent
/// too, on their own ticket), anyone else who may see it as an agent; `None` when they may not see it.
fn author_in(claims: &Claims, ticket: &store::Ticket) -> Option<Author> {
    may_see(claims, ticket).then(|| if ticket.customer_id == claims.sub { Author::Customer } else { Author::Agent })
}

fn ticket_to_wire(t: store::Ticket) -> Ticket {
    Ticket {
        id: t.id,
        customer_id: t.customer_id,
        email: t.email,
        name: t.name,
        subject: t.subject,
        order_id: t.order_id,
        status: t.status.to_wire().into(),
        messages: t
            .messages
            .into_iter()
            .map(|m| TicketMessage {
                author_role: m.author.to_wire().into(),
                author_id: m.author_id,
                body: m.body,
                create_time: Some(timestamp(m.create_time)),
            })
            .collect(),
        create_time: Some(timestamp(t.create_time)),
        update_time: Some(timestamp(t.update_time)),
        attachments: t.attachments.into_iter().map(attachments::attachment_to_wire).collect(),
    }
}

/// Whether the caller (if any) is an agent: agents see the FAQ's drafts.
fn is_agent<T>(request: &Request<T>) -> bool {
    optional_caller(request).is_some_and(|c| c.has_scope(SUPPORT_AGENT))
}

/// The caller's claims, with a subject.
fn signed_in<T>(request: &Request<T>) -> Result<Claims, Status> {
    let claims = caller(request)?.clone();
    if claims.sub.is_empty() {
        return Err(Status::unauthenticated("the access token names no subject"));
    }
    Ok(claims)
}

#[tonic::async_trait]
impl SupportService for SupportApi {
    async fn create_ticket(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<CreateTicketResponse>, Status> {
        let claims = signed_in(&request)?;
        let req = request.into_inner();
        let new = domain::customer_ticket(&req.subject, &req.message, &req.order_id).map_err(Error::InvalidArgument)?;
        let id = self.store.open(&claims.sub, &new, now_micros()).await?;
        self.relay.wake();
        tracing::info!(ticket_id = %id, customer_id = %claims.sub, "ticket opened");
        let ticket = self.visible(&claims, &id).await?;
        Ok(Response::new(CreateTicketResponse { ticket: Some(ticket) }))
    }

    async fn submit_contact_form(
        &self,
        request: Request<SubmitContactFormRequest>,
    ) -> Result<Response<SubmitContactFormResponse>, Status> {
        let req = request.into_inner();
        let new =
            domain::contact_form(&req.name, &req.email, &req.subject, &req.message).map_err(Error::InvalidArgument)?;
        // Signed in or not, a contact-form ticket belongs to no account: its sender is answered by email.
        let ticket_id = self.store.open("", &new, now_micros()).await?;
        self.relay.wake();
        tracing::info!(ticket_id = %ticket_id, "contact form received");
        Ok(Response::new(SubmitContactFormResponse { ticket_id }))
    }

    async fn get_ticket(&self, request: Request<GetTicketRequest>) -> Result<Response<GetTicketResponse>, Status> {
        let claims = signed_in(&request)?;
        let id = request.into_inner().id;
        domain::validate_id("id", &id).map_err(Error::invalid)?;
        let ticket = self.visible(&claims, &id).await?;
        Ok(Response::new(GetTicketResponse { ticket: Some(ticket) }))
    }

    async fn list_tickets(
        &self,
        request: Request<ListTicketsRequest>,
    ) -> Result<Response<ListTicketsResponse>, Status> {
        let claims = signed_in(&request)?;
        let req = request.into_inner();
        let mut violations = Vec::new();
        let limit = domain::page_size(req.page_size).map_err(|v| violations.push(v)).unwrap_or_default();
        let after = domain::parse_page_token(&req.page_token).map_err(|v| violations.push(v)).unwrap_or_default();
        let status = match req.status {
            0 => None,
            value => {
                let parsed = domain::Status::from_wire(value);
                if parsed.is_none() {
                    violations.push(FieldViolation::new("status", "is not a ticket state"));
                }
                parsed
            }
        };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let customer_id = (!claims.has_scope(SUPPORT_AGENT)).then(|| claims.sub.clone());
        // One more than the page: whether there is a next page.
        let query = ListQuery { customer_id, status, after, limit: limit + 1 };
        let tickets = self.store.list(&query).await?;
        let (tickets, next_page_token) = platform::paging::page(tickets, limit, |last| {
            domain::page_token(&Cursor { time: last.update_time, id: last.id.clone() })
        });
        Ok(Response::new(ListTicketsResponse {
            tickets: tickets.into_iter().map(ticket_to_wire).collect(),
            next_page_token,
        }))
    }

    async fn add_message(&self, request: Request<AddMessageRequest>) -> Result<Response<AddMessageResponse>, Status> {
        let claims = signed_in(&request)?;
        let req = request.into_inner();
        let mut violations = Vec::new();
        if let Err(v) = domain::validate_id("ticket_id", &req.ticket_id) {
            violations.push(v);
        }
        let body = domain::body(&req.body).map_err(|why| violations.push(FieldViolation::new("body", why)));
        let Ok(body) = body else { return Err(Error::InvalidArgument(violations).into()) };
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let role = |ticket: &store::Ticket| author_in(&claims, ticket);
        let by = self.store.add_message(&req.ticket_id, &claims.sub, &body, now_micros(), role).await?;
        self.relay.wake();
        tracing::info!(ticket_id = %req.ticket_id, author = by.as_str(), "ticket message added");
        let ticket = self.visible(&claims, &req.ticket_id).await?;
        Ok(Response::new(AddMessageResponse { ticket: Some(ticket) }))
    }

    async fn resolve_ticket(
        &self,
        request: Request<ResolveTicketRequest>,
    ) -> Result<Response<ResolveTicketResponse>, Status> {
        let claims = signed_in(&request)?;
        let id = request.into_inner().id;
        domain::validate_id("id", &id).map_err(Error::invalid)?;
        self.store.resolve(&id, &claims.sub, now_micros(), |t| may_see(&claims, t)).await?;
        self.relay.wake();
        let ticket = self.visible(&claims, &id).await?;
        Ok(Response::new(ResolveTicketResponse { ticket: Some(ticket) }))
    }

    async fn add_attachment(
        &self,
        request: Request<AddAttachmentRequest>,
    ) -> Result<Response<AddAttachmentResponse>, Status> {
        let claims = signed_in(&request)?;
        Ok(Response::new(self.attach(&claims, request.into_inner()).await?))
    }

    async fn get_attachment_content(
        &self,
        request: Request<GetAttachmentContentRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let claims = signed_in(&request)?;
        Ok(Response::new(self.attachment_content(&claims, request.into_inner()).await?))
    }

    async fn delete_attachment(
        &self,
        request: Request<DeleteAttachmentRequest>,
    ) -> Result<Response<DeleteAttachmentResponse>, Status> {
        let claims = signed_in(&request)?;
        Ok(Response::new(self.detach(&claims, request.into_inner()).await?))
    }

    async fn list_faq_entries(
        &self,
        request: Request<ListFaqEntriesRequest>,
    ) -> Result<Response<ListFaqEntriesResponse>, Status> {
        let drafts = is_agent(&request);
        Ok(Response::new(self.list_faq(drafts, request.into_inner()).await?))
    }

    async fn get_faq_entry(
        &self,
        request: Request<GetFaqEntryRequest>,
    ) -> Result<Response<GetFaqEntryResponse>, Status> {
        let drafts = is_agent(&request);
        Ok(Response::new(self.get_faq(drafts, request.into_inner()).await?))
    }

    async fn create_faq_entry(
        &self,
        request: Request<CreateFaqEntryRequest>,
    ) -> Result<Response<CreateFaqEntryResponse>, Status> {
        Ok(Response::new(self.create_faq(request.into_inner()).await?))
    }

    async fn update_faq_entry(
        &self,
        request: Request<UpdateFaqEntryRequest>,
    ) -> Result<Response<UpdateFaqEntryResponse>, Status> {
        Ok(Response::new(self.update_faq(request.into_inner()).await?))
    }

    async fn delete_faq_entry(
        &self,
        request: Request<DeleteFaqEntryRequest>,
    ) -> Result<Response<DeleteFaqEntryResponse>, Status> {
        Ok(Response::new(self.delete_faq(request.into_inner()).await?))
    }

    async fn subscribe_newsletter(
        &self,
        request: Request<SubscribeNewsletterRequest>,
    ) -> Result<Response<SubscribeNewsletterResponse>, Status> {
        Ok(Response::new(self.subscribe(request.into_inner()).await?))
    }

    async fn confirm_newsletter_subscription(
        &self,
        request: Request<ConfirmNewsletterSubscriptionRequest>,
    ) -> Result<Response<ConfirmNewsletterSubscriptionResponse>, Status> {
        Ok(Response::new(self.confirm_subscription(request.into_inner()).await?))
    }

    async fn unsubscribe_newsletter(
        &self,
        request: Request<UnsubscribeNewsletterRequest>,
    ) -> Result<Response<UnsubscribeNewsletterResponse>, Status> {
        Ok(Response::new(self.unsubscribe(request.into_inner()).await?))
    }

    async fn send_newsletter(
        &self,
        request: Request<SendNewsletterRequest>,
    ) -> Result<Response<SendNewsletterResponse>, Status> {
        let claims = signed_in(&request)?;
        Ok(Response::new(self.send_to_subscribers(&claims, request.into_inner()).await?))
    }

    async fn list_newsletters(
        &self,
        request: Request<ListNewslettersRequest>,
    ) -> Result<Response<ListNewslettersResponse>, Status> {
        Ok(Response::new(self.newsletters_sent(request.into_inner()).await?))
    }

    async fn get_newsletter(
        &self,
        request: Request<GetNewsletterRequest>,
    ) -> Result<Response<GetNewsletterResponse>, Status> {
        Ok(Response::new(self.newsletter_sent(request.into_inner()).await?))
    }

    async fn list_newsletter_subscribers(
        &self,
        request: Request<ListNewsletterSubscribersRequest>,
    ) -> Result<Response<ListNewsletterSubscribersResponse>, Status> {
        Ok(Response::new(self.subscribers(request.into_inner()).await?))
    }

    async fn delete_newsletter_subscriber(
        &self,
        request: Request<DeleteNewsletterSubscriberRequest>,
    ) -> Result<Response<DeleteNewsletterSubscriberResponse>, Status> {
        let claims = signed_in(&request)?;
        Ok(Response::new(self.forget_subscriber(&claims, request.into_inner()).await?))
    }
}
