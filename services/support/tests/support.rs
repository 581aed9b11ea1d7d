//! The support service over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL:
//! each scenario is an async fn taking a `Db`, run once per engine. What it publishes is caught on an
//! in-process bus.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::google::api::HttpBody;
use api::mercato::support::v1::support_service_client::SupportServiceClient;
use api::mercato::support::v1::{
    AddAttachmentRequest, AddMessageRequest, Attachment, AuthorRole, CreateFaqEntryRequest, CreateTicketRequest,
    DeleteAttachmentRequest, DeleteFaqEntryRequest, FaqEntry, GetAttachmentContentRequest, GetFaqEntryRequest,
    GetTicketRequest, ListFaqEntriesRequest, ListTicketsRequest, ResolveTicketRequest, SubmitContactFormRequest,
    Ticket, TicketReplied, TicketStatus, UpdateFaqEntryRequest,
};
use api::mercato::support::v1::{
    ConfirmNewsletterSubscriptionRequest, DeleteNewsletterSubscriberRequest, GetNewsletterRequest,
    ListNewsletterSubscribersRequest, ListNewsletterSubscribersResponse, ListNewslettersRequest, NewsletterIssued,
    NewsletterSubscriptionRequested, SendNewsletterRequest, SubscribeNewsletterRequest, SubscriptionStatus,
    UnsubscribeNewsletterRequest,
};
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
use platform::testkit::violated_fields as bad_fields;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// A published event: its type, its subject and its payload.
type Published = (String, String, Vec<u8>);

struct Server {
    client: SupportServiceClient<Channel>,
    published: Arc<Mutex<Vec<Published>>>,
    issuer: Arc<TestIssuer>,
    blob_dir: platform::testkit::TempDir,
    db: Db,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), support::Error>>,
}

impl Server {
    async fn start(db: Db) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let bus = Arc::new(InProcessBus::new());
        let published = Arc::new(Mutex::new(Vec::new()));
        let recorded = published.clone();
        bus.subscribe(
            "test",
            &[
                support::events::TICKET_CREATED,
                support::events::TICKET_REPLIED,
                support::events::TICKET_RESOLVED,
                support::events::NEWSLETTER_SUBSCRIPTION_REQUESTED,
                support::events::NEWSLETTER_ISSUED,
            ],
            Arc::new(move |envelope: Arc<EventEnvelope>| {
                let recorded = recorded.clone();
                Box::pin(async move {
                    let entry = (envelope.r#type.clone(), envelope.subject.clone(), envelope.data.clone());
                    recorded.lock().expect("lock").push(entry);
                    Ok(())
                })
            }),
        );
        let blob_dir = platform::testkit::TempDir::new("support-blobs").expect("temp dir");
        let blobs = platform::blob::Blobs::in_directory(blob_dir.path()).expect("blobs");
        let task = tokio::spawn(support::serve(listener, db.clone(), blobs, issuer.verifier(), bus, shutdown.clone()));
        let url = format!("http://{addr}");
        let client = SupportServiceClient::new(platform::testkit::connect_when_up(&url, "support").await);
        Self { client, published, issuer, blob_dir, db, shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
    }

    fn customer(&self, id: &str) -> String {
        self.issuer.token(id, &["cart:write", "orders:read", "orders:write"], &["customer"])
    }

    fn agent(&self) -> String {
        self.issuer.token("agent-1", &["support:agent"], &["admin"])
    }

    async fn open(&self, token: &str, subject: &str, message: &str) -> Result<Ticket, Status> {
        let request = CreateTicketRequest { subject: subject.into(), message: message.into(), order_id: "o-1".into() };
        Ok(self.client.clone().create_ticket(with_token(request, token)).await?.into_inner().ticket.expect("ticket"))
    }

    async fn contact(&self, request: SubmitContactFormRequest) -> Result<String, Status> {
        Ok(self.client.clone().submit_contact_form(Request::new(request)).await?.into_inner().ticket_id)
    }

    async fn get(&self, token: &str, id: &str) -> Result<Ticket, Status> {
        let request = with_token(GetTicketRequest { id: id.into() }, token);
        Ok(self.client.clone().get_ticket(request).await?.into_inner().ticket.expect("ticket"))
    }

    async fn write(&self, token: &str, id: &str, body: &str) -> Result<Ticket, Status> {
        let request = with_token(AddMessageRequest { ticket_id: id.into(), body: body.into() }, token);
        Ok(self.client.clone().add_message(request).await?.into_inner().ticket.expect("ticket"))
    }

    async fn resolve(&self, token: &str, id: &str) -> Result<Ticket, Status> {
        let request = with_token(ResolveTicketRequest { id: id.into() }, token);
        Ok(self.client.clone().resolve_ticket(request).await?.into_inner().ticket.expect("ticket"))
    }

    async fn list(&self, token: &str, request: ListTicketsRequest) -> Result<(Vec<Ticket>, String), Status> {
        let answer = self.client.clone().list_tickets(with_token(request, token)).await?.into_inner();
        Ok((answer.tickets, answer.next_page_token))
    }

    async fn attach(&self, token: &str, ticket_id: &str, file: (&str, &str, &[u8])) -> Result<Attachment, Status> {
        let (filename, content_type, data) = file;
        let request = AddAttachmentRequest {
            ticket_id: ticket_id.into(),
            filename: filename.into(),
            content_type: content_type.into(),
            data: data.to_vec(),
        };
        let answer = self.client.clone().add_attachment(with_token(request, token)).await?.into_inner();
        Ok(answer.attachment.expect("attachment"))
    }

    async fn content(&self, token: &str, ticket_id: &str, attachment_id: &str) -> Result<HttpBody, Status> {
        let request = GetAttachmentContentRequest { ticket_id: ticket_id.into(), attachment_id: attachment_id.into() };
        Ok(self.client.clone().get_attachment_content(with_token(request, token)).await?.into_inner())
    }

    async fn detach(&self, token: &str, ticket_id: &str, attachment_id: &str) -> Result<(), Status> {
        let request = DeleteAttachmentRequest { ticket_id: ticket_id.into(), attachment_id: attachment_id.into() };
        self.client.clone().delete_attachment(with_token(request, token)).await?;
        Ok(())
    }

    async fn write_faq(&self, token: &str, entry: FaqEntry) -> Result<FaqEntry, Status> {
        let request = with_token(CreateFaqEntryRequest { entry: Some(entry) }, token);
        Ok(self.client.clone().create_faq_entry(request).await?.into_inner().entry.expect("entry"))
    }

    async fn change_faq(&self, token: &str, id: &str, entry: FaqEntry, paths: &[&str]) -> Result<FaqEntry, Status> {
        let update_mask = Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() });
        let request = with_token(UpdateFaqEntryRequest { id: id.into(), entry: Some(entry), update_mask }, token);
        Ok(self.client.clone().update_faq_entry(request).await?.into_inner().entry.expect("entry"))
    }

    /// A FAQ entry as `token` (or, without one, anybody) sees it.
    async fn faq_entry(&self, token: Option<&str>, id: &str) -> Result<FaqEntry, Status> {
        let request = maybe_token(GetFaqEntryRequest { id: id.into() }, token);
        Ok(self.client.clone().get_faq_entry(request).await?.into_inner().entry.expect("entry"))
    }

    /// The questions of a FAQ listing, and its next page token.
    async fn faq(&self, token: Option<&str>, request: ListFaqEntriesRequest) -> Result<(Vec<String>, String), Status> {
        let answer = self.client.clone().list_faq_entries(maybe_token(request, token)).await?.into_inner();
        Ok((answer.entries.into_iter().map(|e| e.question).collect(), answer.next_page_token))
    }

    async fn subscribe(&self, email: &str, locale: &str) -> Result<(), Status> {
        let request = SubscribeNewsletterRequest { email: email.into(), locale: locale.into() };
        self.client.clone().subscribe_newsletter(Request::new(request)).await?;
        Ok(())
    }

    async fn confirm(&self, token: &str) -> Result<String, Status> {
        let request = ConfirmNewsletterSubscriptionRequest { token: token.into() };
        Ok(self.client.clone().confirm_newsletter_subscription(Request::new(request)).await?.into_inner().email)
    }

    async fn unsubscribe(&self, token: &str) -> Result<String, Status> {
        self.unsubscribe_marked(token, "").await
    }

    /// Unsubscribes as a mail client's one-click does (RFC 8058), with `marker` as `List-Unsubscribe`.
    async fn unsubscribe_marked(&self, token: &str, marker: &str) -> Result<String, Status> {
        let request = UnsubscribeNewsletterRequest { token: token.into(), list_unsubscribe: marker.into() };
        Ok(self.client.clone().unsubscribe_newsletter(Request::new(request)).await?.into_inner().email)
    }

    /// Sends a newsletter; returns its id and how many it went to.
    async fn send_newsletter(&self, token: &str, subject: &str, request_id: &str) -> Result<(String, i32), Status> {
        let request = SendNewsletterRequest {
            subject: subject.into(),
            body: "Ten percent off.\nAll week.".into(),
            request_id: request_id.into(),
        };
        let sent = self.client.clone().send_newsletter(with_token(request, token)).await?.into_inner();
        let newsletter = sent.newsletter.expect("newsletter");
        Ok((newsletter.id, newsletter.recipient_count))
    }

    fn marketing(&self) -> String {
        self.issuer.token("staff-1", &["newsletter:send"], &["admin"])
    }

    /// The events of type `kind` published so far (after a moment for the relay).
    async fn published_of(&self, kind: &str) -> Vec<Vec<u8>> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.published.lock().expect("lock").iter().filter(|(t, _, _)| t == kind).map(|(_, _, d)| d.clone()).collect()
    }

    /// The files in the blob directory of `ticket_id`'s attachments.
    fn stored_files(&self, ticket_id: &str) -> usize {
        std::fs::read_dir(self.blob_dir.path().join("tickets").join(ticket_id)).map_or(0, |dir| dir.count())
    }

    /// The events published so far, waiting up to 5 s for `count` of them.
    async fn published(&self, count: usize) -> Vec<Published> {
        for _ in 0..100 {
            if self.published.lock().expect("lock").len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.published.lock().expect("lock").clone()
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

fn maybe_token<T>(message: T, token: Option<&str>) -> Request<T> {
    match token {
        Some(token) => with_token(message, token),
        None => Request::new(message),
    }
}

fn faq_entry(question: &str, answer: &str, category: &str, position: i32, published: bool) -> FaqEntry {
    FaqEntry {
        question: question.into(),
        answer: answer.into(),
        category: category.into(),
        position,
        published,
        ..Default::default()
    }
}

fn status(ticket: &Ticket) -> TicketStatus {
    TicketStatus::try_from(ticket.status).expect("a known status")
}

/// (author role, body) of each message.
fn conversation(ticket: &Ticket) -> Vec<(AuthorRole, &str)> {
    ticket
        .messages
        .iter()
        .map(|m| (AuthorRole::try_from(m.author_role).expect("a known role"), m.body.as_str()))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn a_conversation_moves_the_ticket_between_shop_and_customer(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    let agent = server.agent();

    let opened = server.open(&ada, " Parcel missing ", "It never arrived.").await.expect("open");
    assert_eq!(
        (status(&opened), opened.subject.as_str(), opened.order_id.as_str()),
        (TicketStatus::Open, "Parcel missing", "o-1")
    );
    assert_eq!(conversation(&opened), [(AuthorRole::Customer, "It never arrived.")]);

    let answered = server.write(&agent, &opened.id, "We are asking the carrier.").await.expect("agent answers");
    assert_eq!(status(&answered), TicketStatus::Pending, "the customer's turn");
    let reopened = server.write(&ada, &opened.id, "Thanks, any news?").await.expect("customer writes");
    assert_eq!(status(&reopened), TicketStatus::Open, "the shop's turn again");
    let resolved = server.resolve(&agent, &opened.id).await.expect("resolve");
    assert_eq!(status(&resolved), TicketStatus::Resolved);
    assert_eq!(server.resolve(&ada, &opened.id).await.expect("again"), resolved, "resolving twice changes nothing");

    let seen = server.get(&ada, &opened.id).await.expect("the customer reads it");
    assert_eq!(
        conversation(&seen),
        [
            (AuthorRole::Customer, "It never arrived."),
            (AuthorRole::Agent, "We are asking the carrier."),
            (AuthorRole::Customer, "Thanks, any news?"),
        ]
    );
    let later = server.write(&ada, &opened.id, "It came today!").await.expect("a reply to a resolved ticket");
    assert_eq!(status(&later), TicketStatus::Open, "a customer's message reopens it");

    let published = server.published(3).await;
    let types: Vec<_> = published.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["ticket.created", "ticket.replied", "ticket.resolved"], "customers' messages publish nothing");
    let replied = TicketReplied::decode(published[1].2.as_slice()).expect("TicketReplied");
    assert_eq!((replied.customer_id.as_str(), replied.body.as_str()), ("u-ada", "We are asking the carrier."));
    server.stop().await;
}

async fn tickets_are_private_and_agents_see_them_all(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    let bob = server.customer("u-bob");
    let agent = server.agent();
    let first = server.open(&ada, "One", "first").await.expect("open");
    let second = server.open(&ada, "Two", "second").await.expect("open");
    let bobs = server.open(&bob, "Bob's", "hello").await.expect("open");
    let form = SubmitContactFormRequest {
        name: "Grace".into(),
        email: "grace@example.com".into(),
        subject: "Do you ship to Norway?".into(),
        message: "Thinking of ordering.".into(),
    };
    let contact = server.contact(form).await.expect("the contact form needs no account");

    for (token, id) in [(&bob, &first.id), (&ada, &bobs.id), (&ada, &contact)] {
        assert_eq!(server.get(token, id).await.expect_err("not theirs").code(), Code::NotFound);
        assert_eq!(server.write(token, id, "hi").await.expect_err("not theirs").code(), Code::NotFound);
        assert_eq!(server.resolve(token, id).await.expect_err("not theirs").code(), Code::NotFound);
    }
    let (own, _) = server.list(&ada, ListTicketsRequest::default()).await.expect("list");
    assert_eq!(own.iter().map(|t| t.subject.as_str()).collect::<Vec<_>>(), ["Two", "One"], "latest change first");
    assert!(own.iter().all(|t| t.messages.is_empty()), "listings leave the conversation out");

    // Agents see everything, the contact form's ticket included, most recently changed first.
    server.write(&agent, &first.id, "On it.").await.expect("answer");
    let (page1, token) =
        server.list(&agent, ListTicketsRequest { page_size: 3, ..Default::default() }).await.expect("page 1");
    let (page2, end) = server
        .list(&agent, ListTicketsRequest { page_size: 3, page_token: token.clone(), ..Default::default() })
        .await
        .expect("page 2");
    let subjects: Vec<_> = page1.iter().chain(&page2).map(|t| t.subject.as_str()).collect();
    assert_eq!(subjects, ["One", "Do you ship to Norway?", "Bob's", "Two"]);
    assert!(!token.is_empty() && end.is_empty());
    let from_form = server.get(&agent, &contact).await.expect("agents read it");
    assert_eq!(
        (from_form.customer_id.as_str(), from_form.email.as_str(), from_form.name.as_str()),
        ("", "grace@example.com", "Grace")
    );
    let pending = ListTicketsRequest { status: TicketStatus::Pending as i32, ..Default::default() };
    let (only_pending, _) = server.list(&agent, pending).await.expect("by state");
    assert_eq!(only_pending.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);
    assert_eq!(conversation(&second), [(AuthorRole::Customer, "second")]);
    server.stop().await;
}

async fn bad_requests_name_their_fields_and_save_nothing(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    let refused = server.open(&ada, "", &"x".repeat(5001)).await.expect_err("bad ticket");
    assert_eq!(bad_fields(&refused), ["subject", "message"]);
    let form = SubmitContactFormRequest {
        name: "G".into(),
        email: "not-an-address".into(),
        subject: "s".into(),
        message: " ".into(),
    };
    let refused = server.contact(form).await.expect_err("bad form");
    assert_eq!(bad_fields(&refused), ["email", "message"]);
    let page = server
        .list(&ada, ListTicketsRequest { page_size: -1, page_token: "' OR 1=1".into(), ..Default::default() })
        .await
        .expect_err("bad listing");
    assert_eq!(bad_fields(&page), ["page_size", "page_token"]);
    let ticket = server.open(&ada, "ok", "ok").await.expect("open");
    let empty = server.write(&ada, &ticket.id, "\u{7}").await.expect_err("a bell is no message");
    assert_eq!(bad_fields(&empty), ["body"]);
    let (all, _) = server.list(&server.agent(), ListTicketsRequest::default()).await.expect("list");
    assert_eq!(all.len(), 1, "only the valid ticket was saved");
    assert_eq!(server.get(&ada, &ticket.id).await.expect("get").messages.len(), 1);
    server.stop().await;
}

const PNG: &[u8] = b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR broken mug";
const PDF: &[u8] = b"%PDF-1.7\n% return label\n";

async fn attachments_are_kept_served_and_removed_by_who_may(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    let bob = server.customer("u-bob");
    let agent = server.agent();
    let ticket = server.open(&ada, "Broken mug", "It arrived in pieces.").await.expect("open");

    let photo = server.attach(&ada, &ticket.id, (" mug.png ", "image/png", PNG)).await.expect("the customer attaches");
    let label = server.attach(&agent, &ticket.id, ("label.pdf", "application/pdf", PDF)).await.expect("the agent");
    assert_eq!(
        (photo.filename.as_str(), photo.content_type.as_str(), photo.size_bytes, photo.author_role),
        ("mug.png", "image/png", PNG.len() as i64, AuthorRole::Customer as i32)
    );
    assert_eq!((label.author_role, label.author_id.as_str()), (AuthorRole::Agent as i32, "agent-1"));
    assert_eq!(photo.uri, format!("/v1/tickets/{}/attachments/{}/content", ticket.id, photo.id));

    let seen = server.get(&ada, &ticket.id).await.expect("get");
    assert_eq!(seen.attachments, [photo.clone(), label.clone()], "oldest first");
    assert_eq!(status(&seen), TicketStatus::Open, "attaching a file leaves the ticket's state as it was");
    let micros = |t: &Ticket| t.update_time.map(|ts| ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1000);
    assert!(micros(&seen) > micros(&ticket), "but it is a change to the ticket");
    let (listed, _) = server.list(&ada, ListTicketsRequest::default()).await.expect("list");
    assert!(listed[0].attachments.is_empty(), "listings leave attachments out");

    for token in [&ada, &agent] {
        let body = server.content(token, &ticket.id, &label.id).await.expect("content");
        assert_eq!((body.content_type.as_str(), body.data.as_slice()), ("application/pdf", PDF));
    }
    let asked =
        platform::media::http_body_headers(&server.content(&ada, &ticket.id, &label.id).await.expect("content"));
    assert_eq!(asked.content_disposition, "attachment; filename=\"label.pdf\"; filename*=UTF-8''label.pdf");
    assert_eq!((asked.cache_control.as_str(), asked.etag), ("private, no-cache", format!("\"{}\"", label.id)));
    // Another customer learns nothing: not the file, not whether it exists, and cannot add or remove one.
    assert_eq!(server.content(&bob, &ticket.id, &photo.id).await.expect_err("not bob's").code(), Code::NotFound);
    let intruder = server.attach(&bob, &ticket.id, ("x.txt", "text/plain", b"hi")).await.expect_err("not bob's");
    assert_eq!(intruder.code(), Code::NotFound);
    assert_eq!(server.detach(&bob, &ticket.id, &photo.id).await.expect_err("not bob's").code(), Code::NotFound);
    // The customer removes their own file, not the agent's.
    let denied = server.detach(&ada, &ticket.id, &label.id).await.expect_err("the agent's file");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(server.stored_files(&ticket.id), 2);
    server.detach(&ada, &ticket.id, &photo.id).await.expect("their own");
    assert_eq!(server.content(&ada, &ticket.id, &photo.id).await.expect_err("gone").code(), Code::NotFound);
    assert_eq!(server.detach(&ada, &ticket.id, &photo.id).await.expect_err("twice").code(), Code::NotFound);
    assert_eq!(server.stored_files(&ticket.id), 1, "its bytes went with it");
    server.detach(&agent, &ticket.id, &label.id).await.expect("agents remove any");
    assert!(server.get(&ada, &ticket.id).await.expect("get").attachments.is_empty());
    assert_eq!(server.stored_files(&ticket.id), 0);

    // A contact-form ticket belongs to no customer: only agents attach to it.
    let form = SubmitContactFormRequest {
        name: "Grace".into(),
        email: "grace@example.com".into(),
        subject: "Invoice".into(),
        message: "Please send my invoice.".into(),
    };
    let contact = server.contact(form).await.expect("contact");
    let refused = server.attach(&ada, &contact, ("a.txt", "text/plain", b"x")).await.expect_err("not ada's");
    assert_eq!(refused.code(), Code::NotFound);
    server.attach(&agent, &contact, ("invoice.pdf", "application/pdf", PDF)).await.expect("an agent");
    server.stop().await;
}

async fn attachments_are_checked_and_limited(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("u-ada");
    let ticket = server.open(&ada, "Files", "Some files.").await.expect("open");
    let refused = server.attach(&ada, &ticket.id, ("../etc/passwd", "text/html", b"<script>")).await;
    assert_eq!(bad_fields(&refused.expect_err("bad")), ["filename", "content_type"]);
    let refused = server.attach(&ada, &ticket.id, ("mug.png", "image/png", PDF)).await;
    assert_eq!(bad_fields(&refused.expect_err("a PDF is no PNG")), ["data"]);
    let refused = server.attach(&ada, "", ("a.txt", "text/plain", b"")).await;
    assert_eq!(bad_fields(&refused.expect_err("bad")), ["ticket_id", "data"]);
    let missing = server.attach(&ada, "0190-missing", ("a.txt", "text/plain", b"x")).await;
    assert_eq!(missing.expect_err("no such ticket").code(), Code::NotFound);
    assert_eq!(server.stored_files(&ticket.id), 0, "nothing refused was kept");
    assert_eq!(server.stored_files("0190-missing"), 0, "not even the bytes of a ticket that is not there");
    let bob = server.customer("u-bob");
    let intruder = server.attach(&bob, &ticket.id, ("a.txt", "text/plain", b"x")).await;
    assert_eq!(intruder.expect_err("not bob's").code(), Code::NotFound);
    assert_eq!(server.stored_files(&ticket.id), 0, "nor of a ticket the caller may not see");

    // Twelve at once on one ticket: the limit counts them one at a time.
    let attempts = (0..12).map(|i| {
        let (server, ada, id) = (&server, &ada, &ticket.id);
        async move { server.attach(ada, id, (&format!("note-{i}.txt"), "text/plain", b"a note")).await }
    });
    let results = futures::future::join_all(attempts).await;
    let added = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(added, 10, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        let details = platform::error::decode_details(refused).expect("details");
        let info = details.details.iter().find(|d| d.type_url.ends_with("ErrorInfo")).expect("ErrorInfo");
        let info = api::google::rpc::ErrorInfo::decode(info.value.as_slice()).expect("decodes");
        assert_eq!(info.reason, "ATTACHMENT_LIMIT");
    }
    assert_eq!(server.get(&ada, &ticket.id).await.expect("get").attachments.len(), 10);
    assert_eq!(server.stored_files(&ticket.id), 10, "refused ones took their bytes back");

    // Bytes no row names (a crash between the two writes) are swept once they are old enough.
    let blobs = platform::blob::Blobs::in_directory(server.blob_dir.path()).expect("blobs");
    blobs.put(&format!("tickets/{}/crashed-upload", ticket.id), b"orphan".to_vec().into()).await.expect("put");
    let now = platform::time::now_micros();
    assert_eq!(support::sweep_orphan_attachments(&server.db, &blobs, now + 1_000_000).await.expect("sweep"), 1);
    assert_eq!(server.stored_files(&ticket.id), 10, "every attachment's bytes stayed");
    server.stop().await;
}

async fn agents_write_the_faq_and_everyone_reads_what_is_published(db: Db) {
    let server = Server::start(db).await;
    let agent = server.agent();
    let ada = server.customer("u-ada");
    let write = |question: &str, answer: &str, category: &str, position: i32, published: bool| {
        server.write_faq(&agent, faq_entry(question, answer, category, position, published))
    };
    let later = write("Can I change my address?", "Until it ships, yes.", "shipping", 2, true).await.expect("write");
    let first = write("How long does shipping take?", "Two to four days.", "shipping", 1, true).await.expect("write");
    let draft = write("Can I return a gift?", "With the gift receipt, for a refund.", "returns", 0, false).await;
    let draft = draft.expect("a draft");
    let general = write("Who are you?", "A small shop.", "", 0, true).await.expect("no category");
    assert_eq!(general.category, "general", "an entry without a category is general");
    assert!(first.create_time.is_some() && !first.id.is_empty());

    // Anybody, signed in or not, reads the published entries by category, then position.
    let (questions, _) = server.faq(None, ListFaqEntriesRequest::default()).await.expect("anonymous");
    assert_eq!(questions, ["Who are you?", "How long does shipping take?", "Can I change my address?"]);
    assert_eq!(server.faq(Some(&ada), ListFaqEntriesRequest::default()).await.expect("customer").0, questions);
    assert_eq!(server.faq_entry(None, &draft.id).await.expect_err("a draft").code(), Code::NotFound);
    assert_eq!(server.faq_entry(None, &later.id).await.expect("published").answer, "Until it ships, yes.");

    // Agents see drafts too, a page at a time.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = ListFaqEntriesRequest { page_size: 3, page_token: token.clone(), ..Default::default() };
        let (questions, next) = server.faq(Some(&agent), page).await.expect("page");
        seen.extend(questions);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(
        seen,
        ["Who are you?", "Can I return a gift?", "How long does shipping take?", "Can I change my address?"]
    );
    assert_eq!(server.faq_entry(Some(&agent), &draft.id).await.expect("agents read drafts").id, draft.id);

    // A category, a search in questions and answers (any case, wildcards taken literally).
    let shipping = ListFaqEntriesRequest { category: "shipping".into(), ..Default::default() };
    assert_eq!(server.faq(None, shipping).await.expect("category").0.len(), 2);
    let search = ListFaqEntriesRequest { query: "FOUR".into(), ..Default::default() };
    assert_eq!(server.faq(None, search).await.expect("search").0, ["How long does shipping take?"]);
    let wildcard = ListFaqEntriesRequest { query: "%".into(), ..Default::default() };
    assert!(server.faq(None, wildcard).await.expect("search").0.is_empty(), "% is a character, not a wildcard");

    // Publishing a draft shows it; the update changes only the fields named.
    let published = server.change_faq(&agent, &draft.id, faq_entry("", "", "", 0, true), &["published"]).await;
    let published = published.expect("publish");
    assert_eq!((published.published, published.question.as_str()), (true, "Can I return a gift?"));
    assert_eq!(server.faq(None, ListFaqEntriesRequest::default()).await.expect("list").0.len(), 4);

    // Customers cannot write; agents delete.
    let denied = server.write_faq(&ada, faq_entry("Q?", "A.", "", 0, true)).await.expect_err("a customer");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let delete = with_token(DeleteFaqEntryRequest { id: general.id.clone() }, &agent);
    server.client.clone().delete_faq_entry(delete).await.expect("delete");
    assert_eq!(server.faq_entry(Some(&agent), &general.id).await.expect_err("gone").code(), Code::NotFound);
    let again = with_token(DeleteFaqEntryRequest { id: general.id.clone() }, &agent);
    assert_eq!(server.client.clone().delete_faq_entry(again).await.expect_err("twice").code(), Code::NotFound);
    server.stop().await;
}

/// The FAQ search finds letters beyond ASCII in any case, on SQLite too (whose LOWER folds ASCII only), also in
/// entries stored before the service kept case-folded keys.
async fn faq_search_folds_every_letters_case(db: Db) {
    let server = Server::start(db.clone()).await;
    let agent = server.agent();
    let entry = faq_entry("Zahlen per Überweisung?", "Ja, auf unser KONTO bei der Bank.", "zahlung", 0, true);
    let written = server.write_faq(&agent, entry).await.expect("write");
    let search = |query: &str| ListFaqEntriesRequest { query: query.into(), ..Default::default() };
    for query in ["überweisung", "ÜBERWEISUNG", "konto"] {
        assert_eq!(server.faq(None, search(query)).await.expect("search").0, ["Zahlen per Überweisung?"], "{query}");
    }
    // An answer changed is searched as changed.
    let changed = faq_entry("", "Ja, auch per Lastschrift.", "", 0, true);
    server.change_faq(&agent, &written.id, changed, &["answer"]).await.expect("change");
    assert!(server.faq(None, search("konto")).await.expect("search").0.is_empty());
    assert_eq!(server.faq(None, search("LASTSCHRIFT")).await.expect("search").0.len(), 1);

    platform::with_db!(&db, pool => {
        sqlx::query("UPDATE faq_entries SET question_key = '', answer_key = ''").execute(pool).await.expect("sql");
    });
    server.stop().await;
    let server = Server::start(db).await;
    assert_eq!(server.faq(None, search("überweisung")).await.expect("search").0.len(), 1, "keys filled at start");
    server.stop().await;
}

async fn bad_faq_entries_name_their_fields_and_change_nothing(db: Db) {
    let server = Server::start(db).await;
    let agent = server.agent();
    let refused = server.write_faq(&agent, faq_entry("a\nb", "", "Shipping & Returns", -1, true)).await;
    assert_eq!(
        bad_fields(&refused.expect_err("bad")),
        ["entry.question", "entry.answer", "entry.category", "entry.position"]
    );
    let entry = server.write_faq(&agent, faq_entry("Q?", "A.", "shipping", 0, true)).await.expect("write");
    let blank = server.change_faq(&agent, &entry.id, faq_entry("", "", "", 0, false), &["question"]).await;
    assert_eq!(bad_fields(&blank.expect_err("a blank question")), ["entry.question"]);
    let unknown = server.change_faq(&agent, &entry.id, faq_entry("", "", "", 0, false), &["id"]).await;
    assert_eq!(bad_fields(&unknown.expect_err("id cannot change")), ["update_mask"]);
    let missing = server.change_faq(&agent, "0190-missing", faq_entry("Q", "", "", 0, false), &["question"]).await;
    assert_eq!(missing.expect_err("no such entry").code(), Code::NotFound);
    assert_eq!(server.faq_entry(None, &entry.id).await.expect("unchanged"), entry);
    let listing =
        ListFaqEntriesRequest { page_size: -1, page_token: "x".into(), category: "A B".into(), query: "q".repeat(101) };
    assert_eq!(
        bad_fields(&server.faq(None, listing).await.expect_err("bad")),
        ["page_size", "page_token", "category", "query"]
    );
    server.stop().await;
}

async fn the_newsletter_goes_only_to_addresses_that_confirmed(db: Db) {
    let server = Server::start(db).await;
    let staff = server.marketing();

    server.subscribe(" Ada@Example.com ", "de").await.expect("anyone subscribes");
    let asked = requested(&server).await;
    assert_eq!(asked.len(), 1);
    let (email, token) = (asked[0].email.clone(), asked[0].token.clone());
    assert_eq!((email.as_str(), asked[0].locale.as_str()), ("ada@example.com", "de"));
    server.subscribe("ada@example.com", "de").await.expect("again");
    assert_eq!(requested(&server).await.len(), 1, "a waiting address is not mailed again at once");
    assert_eq!(server.send_newsletter(&staff, "Before", "").await.expect("send").1, 0, "unconfirmed get nothing");

    assert_eq!(server.confirm(&token).await.expect("confirm"), "ada@example.com");
    assert_eq!(server.confirm(&token).await.expect("twice"), "ada@example.com");
    server.subscribe("ADA@example.com", "").await.expect("subscribed already");
    assert_eq!(requested(&server).await.len(), 1, "a subscribed address is not asked again");

    let (id, count) = server.send_newsletter(&staff, "Spring sale", "req-1").await.expect("send");
    assert_eq!(count, 1);
    assert_eq!(server.send_newsletter(&staff, "Spring sale", "req-1").await.expect("retry"), (id.clone(), 1));
    let reused = server.send_newsletter(&staff, "Summer sale", "req-1").await.expect_err("another newsletter");
    assert_eq!(reused.code(), Code::InvalidArgument, "{reused:?}");
    let issued = server.published_of("newsletter.issued").await;
    assert_eq!(issued.len(), 1, "a retried request sends nothing more");
    let mail = NewsletterIssued::decode(issued[0].as_slice()).expect("payload");
    assert_eq!(
        (mail.newsletter_id.as_str(), mail.email.as_str(), mail.locale.as_str(), mail.subject.as_str()),
        (id.as_str(), "ada@example.com", "de", "Spring sale")
    );
    assert_eq!(mail.unsubscribe_token, token, "the mail carries the way out");

    let odd = server.unsubscribe_marked(&token, "Yes").await.expect_err("not RFC 8058's marker");
    assert_eq!(bad_fields(&odd), ["list_unsubscribe"]);
    assert_eq!(server.send_newsletter(&staff, "Still", "").await.expect("send").1, 1, "a refusal changes nothing");
    assert_eq!(server.unsubscribe_marked(&token, "One-Click").await.expect("one click"), "ada@example.com");
    assert_eq!(server.unsubscribe(&token).await.expect("twice"), "ada@example.com");
    assert_eq!(server.send_newsletter(&staff, "After", "").await.expect("send").1, 0);
    let ended = server.confirm(&token).await.expect_err("an ended subscription is not confirmed by its old token");
    assert_eq!(ended.code(), Code::FailedPrecondition);
    server.subscribe("ada@example.com", "en").await.expect("subscribe again");
    let asked = requested(&server).await;
    assert_eq!(asked.len(), 2);
    assert_ne!(asked[1].token, token, "a new request, a new token");
    assert_eq!(server.confirm(&token).await.expect_err("the old token is gone").code(), Code::NotFound);

    // Only staff with newsletter:send send; bad input names its fields.
    let agent = server.agent();
    assert_eq!(server.send_newsletter(&agent, "S", "").await.expect_err("agent").code(), Code::PermissionDenied);
    assert_eq!(bad_fields(&server.subscribe("nope", "de AT").await.expect_err("bad")), ["email", "locale"]);
    assert_eq!(bad_fields(&server.confirm("' OR 1=1").await.expect_err("bad")), ["token"]);
    assert_eq!(bad_fields(&server.send_newsletter(&staff, "", "").await.expect_err("bad")), ["subject"]);
    server.stop().await;
}

/// The confirmation requests published so far.
async fn requested(server: &Server) -> Vec<NewsletterSubscriptionRequested> {
    let published = server.published_of("newsletter.subscription_requested").await;
    published.iter().map(|d| NewsletterSubscriptionRequested::decode(d.as_slice()).expect("payload")).collect()
}

async fn one_address_asking_many_times_at_once_is_mailed_once(db: Db) {
    let server = Server::start(db).await;
    let attempts = (0..10).map(|_| server.subscribe("rush@example.com", ""));
    for result in futures::future::join_all(attempts).await {
        result.expect("every request is answered alike");
    }
    assert_eq!(server.published_of("newsletter.subscription_requested").await.len(), 1);
    server.stop().await;
}

async fn staff_see_the_addresses_and_newsletters_and_forget_an_address(db: Db) {
    let server = Server::start(db).await;
    let staff = server.marketing();
    for email in ["cleo@example.com", "ada@example.com", "bo@example.com"] {
        server.subscribe(email, "").await.expect("subscribes");
    }
    let tokens: Vec<(String, String)> = requested(&server).await.into_iter().map(|r| (r.email, r.token)).collect();
    let token_of = |email: &str| tokens.iter().find(|(e, _)| e == email).map(|(_, t)| t.clone()).expect("mailed");
    server.confirm(&token_of("bo@example.com")).await.expect("confirms");
    server.confirm(&token_of("cleo@example.com")).await.expect("confirms");
    let mut client = server.client.clone();
    let list = |status: SubscriptionStatus, page_size: i32, page_token: &str| {
        let request =
            ListNewsletterSubscribersRequest { page_size, page_token: page_token.into(), status: status.into() };
        with_token(request, &staff)
    };

    // By address, a page at a time, with their states and never their tokens.
    let first = client.list_newsletter_subscribers(list(SubscriptionStatus::Unspecified, 2, "")).await;
    let first = first.expect("lists").into_inner();
    let shown = |page: &ListNewsletterSubscribersResponse| -> Vec<(String, SubscriptionStatus)> {
        page.subscribers.iter().map(|s| (s.email.clone(), s.status())).collect()
    };
    assert_eq!(
        shown(&first),
        [
            ("ada@example.com".into(), SubscriptionStatus::Pending),
            ("bo@example.com".into(), SubscriptionStatus::Confirmed)
        ]
    );
    let rest = client.list_newsletter_subscribers(list(SubscriptionStatus::Unspecified, 2, &first.next_page_token));
    let rest = rest.await.expect("next page").into_inner();
    assert_eq!(shown(&rest), [("cleo@example.com".into(), SubscriptionStatus::Confirmed)]);
    assert_eq!(rest.next_page_token, "", "the last page");
    let confirmed = client.list_newsletter_subscribers(list(SubscriptionStatus::Confirmed, 0, "")).await;
    let emails: Vec<String> = confirmed.expect("lists").into_inner().subscribers.into_iter().map(|s| s.email).collect();
    assert_eq!(emails, ["bo@example.com", "cleo@example.com"]);
    let bad = client.list_newsletter_subscribers(list(SubscriptionStatus::Unspecified, -1, "not a token")).await;
    assert_eq!(bad_fields(&bad.expect_err("bad")), ["page_size", "page_token"]);
    let agent = server.agent();
    let denied = client.list_newsletter_subscribers(with_token(ListNewsletterSubscribersRequest::default(), &agent));
    assert_eq!(denied.await.expect_err("agents do not see the list").code(), Code::PermissionDenied);

    // The newsletters sent, newest first.
    let (older, _) = server.send_newsletter(&staff, "Spring sale", "").await.expect("sends");
    let (newer, _) = server.send_newsletter(&staff, "Summer sale", "").await.expect("sends");
    let page =
        |page_token: &str| with_token(ListNewslettersRequest { page_size: 1, page_token: page_token.into() }, &staff);
    let first = client.list_newsletters(page("")).await.expect("lists").into_inner();
    assert_eq!(first.newsletters.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), [newer.as_str()]);
    let second = client.list_newsletters(page(&first.next_page_token)).await.expect("lists").into_inner();
    assert_eq!(second.newsletters[0].id, older);
    assert_eq!((second.newsletters[0].subject.as_str(), second.newsletters[0].recipient_count), ("Spring sale", 2));
    assert_eq!(second.next_page_token, "", "the last page");
    let got = client.get_newsletter(with_token(GetNewsletterRequest { id: newer.clone() }, &staff)).await;
    assert_eq!(got.expect("one").into_inner().newsletter.expect("newsletter").subject, "Summer sale");
    let missing = client.get_newsletter(with_token(GetNewsletterRequest { id: "n-none".into() }, &staff)).await;
    assert_eq!(missing.expect_err("unknown").code(), Code::NotFound);

    // Forgetting an address deletes it and its token: nothing more is sent to it.
    let forget = |email: &str| with_token(DeleteNewsletterSubscriberRequest { email: email.into() }, &staff);
    client.delete_newsletter_subscriber(forget(" Cleo@Example.com ")).await.expect("forgotten");
    let again = client.delete_newsletter_subscriber(forget("cleo@example.com")).await;
    assert_eq!(again.expect_err("already forgotten").code(), Code::NotFound);
    assert_eq!(server.unsubscribe(&token_of("cleo@example.com")).await.expect_err("its token").code(), Code::NotFound);
    assert_eq!(server.send_newsletter(&staff, "Autumn sale", "").await.expect("sends").1, 1, "bo only");
    server.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("support").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("support").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
    a_conversation_moves_the_ticket_between_shop_and_customer,
    tickets_are_private_and_agents_see_them_all,
    bad_requests_name_their_fields_and_save_nothing,
    attachments_are_kept_served_and_removed_by_who_may,
    attachments_are_checked_and_limited,
    agents_write_the_faq_and_everyone_reads_what_is_published,
    bad_faq_entries_name_their_fields_and_change_nothing,
    faq_search_folds_every_letters_case,
    the_newsletter_goes_only_to_addresses_that_confirmed,
    one_address_asking_many_times_at_once_is_mailed_once,
    staff_see_the_addresses_and_newsletters_and_forget_an_address,
);
