//! What the support service publishes (it consumes nothing): `ticket.created` when a ticket is opened,
//! `ticket.replied` when an agent answers, `ticket.resolved` when a ticket is settled; each with the ticket as
//! its subject, so one ticket's events arrive in order. For the newsletter, `newsletter.subscription_requested`
//! (an address to confirm) and `newsletter.issued` (one per subscriber of a newsletter sent), which the
//! notifications service mails.

use api::mercato::support::v1::{
    NewsletterIssued, NewsletterSubscriptionRequested, TicketCreated, TicketReplied, TicketResolved,
};
use platform::events::NewEvent;

/// Event type published when a ticket is opened (payload `TicketCreated`).
pub const TICKET_CREATED: &str = "ticket.created";
/// Event type published when an agent answers a ticket (payload `TicketReplied`).
pub const TICKET_REPLIED: &str = "ticket.replied";
/// Event type published when a ticket is marked resolved (payload `TicketResolved`).
pub const TICKET_RESOLVED: &str = "ticket.resolved";

/// Event type published when an address asks for the newsletter (payload `NewsletterSubscriptionRequested`).
pub const NEWSLETTER_SUBSCRIPTION_REQUESTED: &str = "newsletter.subscription_requested";
/// Event type published for each subscriber of a newsletter sent (payload `NewsletterIssued`).
pub const NEWSLETTER_ISSUED: &str = "newsletter.issued";

/// Who a ticket belongs to and what it is about, as its events tell it.
#[derive(Debug, Clone, Copy)]
pub struct About<'a> {
    /// The ticket.
    pub ticket_id: &'a str,
    /// Its customer; empty for a contact-form ticket.
    pub customer_id: &'a str,
    /// Where to answer a contact-form ticket.
    pub email: &'a str,
    /// What it is about.
    pub subject: &'a str,
    /// The contact form's sender's name.
    pub name: &'a str,
}

/// The `ticket.created` event of a ticket opened with `message`.
pub fn created(about: About<'_>, message: &str) -> NewEvent {
    let payload = TicketCreated {
        ticket_id: about.ticket_id.to_owned(),
        customer_id: about.customer_id.to_owned(),
        email: about.email.to_owned(),
        subject: about.subject.to_owned(),
        message: message.to_owned(),
        name: about.name.to_owned(),
    };
    NewEvent::new(TICKET_CREATED, about.ticket_id, &payload)
}

/// The `ticket.replied` event of an agent's message `body`.
pub fn replied(about: About<'_>, body: &str) -> NewEvent {
    let payload = TicketReplied {
        ticket_id: about.ticket_id.to_owned(),
        customer_id: about.customer_id.to_owned(),
        email: about.email.to_owned(),
        subject: about.subject.to_owned(),
        body: body.to_owned(),
        name: about.name.to_owned(),
    };
    NewEvent::new(TICKET_REPLIED, about.ticket_id, &payload)
}

/// The `ticket.resolved` event.
pub fn resolved(about: About<'_>, resolved_by: &str) -> NewEvent {
    let payload = TicketResolved {
        ticket_id: about.ticket_id.to_owned(),
        customer_id: about.customer_id.to_owned(),
        resolved_by: resolved_by.to_owned(),
    };
    NewEvent::new(TICKET_RESOLVED, about.ticket_id, &payload)
}

/// The `newsletter.subscription_requested` event: mail `token` to `email` to confirm it. Its subject is an id
/// of its own, neither the address nor the token: subjects show in logs.
pub fn subscription_requested(email: &str, token: &str, locale: &str) -> NewEvent {
    let payload =
        NewsletterSubscriptionRequested { email: email.to_owned(), token: token.to_owned(), locale: locale.to_owned() };
    NewEvent::new(NEWSLETTER_SUBSCRIPTION_REQUESTED, uuid::Uuid::now_v7().to_string(), &payload)
}

/// One subscriber's copy of a newsletter.
#[derive(Debug, Clone, Copy)]
pub struct Issue<'a> {
    /// The newsletter.
    pub newsletter_id: &'a str,
    /// Its subject line.
    pub subject: &'a str,
    /// Its text.
    pub body: &'a str,
}

/// The `newsletter.issued` event of `issue` for the subscriber at `email`.
pub fn issued(issue: Issue<'_>, email: &str, locale: &str, unsubscribe_token: &str) -> NewEvent {
    let payload = NewsletterIssued {
        newsletter_id: issue.newsletter_id.to_owned(),
        email: email.to_owned(),
        locale: locale.to_owned(),
        subject: issue.subject.to_owned(),
        body: issue.body.to_owned(),
        unsubscribe_token: unsubscribe_token.to_owned(),
    };
    NewEvent::new(NEWSLETTER_ISSUED, issue.newsletter_id, &payload)
}
