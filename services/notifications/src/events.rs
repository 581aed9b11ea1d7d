//! What the service consumes and publishes.
//!
//! Consumed: `user.registered` (fills the directory of recipients and welcomes the user), `order.confirmed`
//! (also links its payment to the order and customer), `order.failed`, `payment.failed` and
//! `refund.completed` (addressed through that link, as its payload names only the payment), `shipment.shipped`
//! (with the carrier and tracking number), `shipment.delivered`, orders' `return.approved`, `return.rejected` (with
//! staff's reason) and `return.received` (what came back and what is refunded), `return.requested` (to the shop's
//! support inbox: a return to decide on), `ticket.replied` (to the ticket's customer,
//! or to the address a contact form gave), `ticket.created`, the catalog's `inventory.low` and `review.submitted` (a
//! review to publish) and `refund.failed` (to the shop's support inbox, `MERCATO_SUPPORT_EMAIL`),
//! the newsletter's `newsletter.subscription_requested` (the confirmation token) and `newsletter.issued` (one
//! subscriber's copy), both to the address they name, and auth's `user.password_reset_requested` (the reset token),
//! `user.email_verification_requested` (the token that verifies the address) and `user.password_changed`, `user.roles_changed`, `user.disabled` and `user.enabled` (the owner is told), to
//! the account's address, `user.email_change_requested` (the token, to the new address), `user.email_changed`
//! (the directory takes the new address), `user.email_change_confirmed` (the previous address is told, with the
//! token that undoes the change), and `user.deleted`, which erases
//! the user's directory entry and the addresses and texts of their past mails, then confirms to the address. Each event
//! becomes one email notification — PENDING, or SKIPPED with the reason when nobody can be addressed — and a
//! webhook delivery per endpoint subscribed to its type, all in the transaction of its inbox row. Deliveries
//! are recorded in batches: those that arrive while one is being written go together into the next. The
//! events nobody is mailed of ([`domain::WEBHOOKS_ONLY`]) are acknowledged at once, with no transaction, while no
//! endpoint subscribes to their type ([`crate::subscriptions`]).
//!
//! Published (through the outbox, see [`crate::dispatch`]): `notification.sent` and `notification.failed`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use api::mercato::auth::v1::{
    EmailChangeConfirmed, EmailChangeRequested, EmailChanged, EmailVerificationRequested, PasswordChangeMethod,
    PasswordChanged, PasswordResetRequested, UserDeleted, UserDisabled, UserEnabled, UserRegistered, UserRolesChanged,
};
use api::mercato::catalog::v1::{InventoryLow, ReviewSubmitted, StockAlertTriggered};
use api::mercato::deliveries::v1::{ShipmentDelivered, ShipmentShipped};
use api::mercato::notifications::v1::{NotificationChannel, NotificationFailed, NotificationSent};
use api::mercato::orders::v1::{
    OrderConfirmed, OrderFailed, ReturnApproved, ReturnReceived, ReturnRejected, ReturnRequested,
};
use api::mercato::payments::v1::PaymentFailed;
use api::mercato::refunds::v1::{RefundCompleted, RefundFailed};
use api::mercato::support::v1::{NewsletterIssued, NewsletterSubscriptionRequested, TicketCreated, TicketReplied};
use platform::events::{BatchRecorder, EventBus, EventEnvelope, GroupCommit, NewEvent};
use prost::Message;
use tokio::sync::Notify;

use crate::domain::{self, Channel, Money, Status};
use crate::error::Error;
use crate::store::{Due, EventEffect, Listing, NewNotification, PaymentLink, Recipient, Store};
use crate::subscriptions::Subscriptions;
use crate::templates::{Facts, ItemLine, Templates};

/// The service's consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "notifications";

/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    domain::CONSUMED.iter().map(|(event_type, _)| *event_type).collect()
}

/// Most events recorded in one transaction.
const MAX_BATCH: usize = 64;

/// What the consumer needs: the store, the templates, and the dispatcher to wake.
#[derive(Debug, Clone)]
pub struct Consumer {
    store: Store,
    templates: Arc<Templates>,
    dispatcher: Arc<Notify>,
    support_inbox: Option<Recipient>,
    subscriptions: Arc<Subscriptions>,
}

/// A delivery decoded: what its event asks for, before anybody is addressed.
#[derive(Debug)]
pub struct Delivery {
    event_id: String,
    event_type: String,
    plan: Plan,
    webhook_body: String,
}

/// Whom a batch's emails can go to: the recipients and payment links stored before it, then those its own
/// events introduce, in order.
#[derive(Debug, Default)]
struct Directory {
    recipients: HashMap<String, Recipient>,
    payments: HashMap<String, PaymentLink>,
}

impl Consumer {
    /// A consumer writing to `store`, rendering with `templates`, waking `dispatcher` after new work.
    pub fn new(store: Store, templates: Arc<Templates>, dispatcher: Arc<Notify>) -> Self {
        Self { store, templates, dispatcher, support_inbox: None, subscriptions: Arc::default() }
    }

    /// Lets the events nobody is mailed of go without a transaction while `subscriptions` says no endpoint
    /// receives their type; without it every event is recorded in the database's terms.
    pub fn with_subscriptions(mut self, subscriptions: Arc<Subscriptions>) -> Self {
        self.subscriptions = subscriptions;
        self
    }

    /// Tells `inbox` (a mailbox, `Support <help@example.com>` or a bare address) of every new support ticket,
    /// every product running low and every refused refund; without one, those are SKIPPED.
    pub fn with_support_inbox(mut self, inbox: Option<&str>) -> Self {
        self.support_inbox = inbox.map(|mailbox| {
            let name = mailbox.split_once('<').map(|(name, _)| name.trim().trim_matches('"')).unwrap_or_default();
            Recipient {
                user_id: String::new(),
                email: mailbox.to_owned(),
                display_name: if name.is_empty() { "support team".to_owned() } else { name.to_owned() },
                locale: String::new(),
            }
        });
        self
    }

    /// Subscribes for every consumed event type on `bus`. Deliveries that arrive while a batch is being
    /// recorded wait and are recorded together in the next one ([`GroupCommit`]); each is acknowledged once
    /// its batch has committed. Must be called inside a Tokio runtime (it starts the task recording batches).
    pub fn subscribe(self, bus: &dyn EventBus) {
        let types = event_types();
        let subscriptions = self.subscriptions.clone();
        let batches = GroupCommit::start(self, MAX_BATCH);
        bus.subscribe(
            CONSUMER,
            &types,
            Arc::new(move |envelope: Arc<EventEnvelope>| {
                let batches = batches.clone();
                let unwanted = domain::WEBHOOKS_ONLY.contains(&envelope.r#type.as_str())
                    && !subscriptions.may_receive(&envelope.r#type);
                Box::pin(async move {
                    if unwanted {
                        // It would write nothing: no mail, no endpoint, so no inbox row either.
                        tracing::debug!(event_id = %envelope.id, event_type = %envelope.r#type, "no endpoint subscribes, let go");
                        return Ok(());
                    }
                    let delivery = Delivery::decode(&envelope)?;
                    let recorded =
                        batches.record(delivery).await.map_err(|e| format!("recording event {}: {e}", envelope.id))?;
                    log_outcome(&envelope, recorded);
                    Ok(())
                })
            }),
        );
    }

    /// What the stored directory knows of the recipients and payments `deliveries` address.
    async fn directory(&self, deliveries: &[Delivery]) -> Result<Directory, Error> {
        let payment_ids: BTreeSet<&str> = deliveries
            .iter()
            .filter_map(|d| match d.plan.addressee() {
                Some(Addressee::Payment(id)) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let payments = self.store.payments(&payment_ids).await?;
        let mut customers: BTreeSet<&str> = deliveries
            .iter()
            .filter_map(|d| match d.plan.addressee() {
                Some(Addressee::Customer(id)) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        // The customers of refunded payments, linked before the batch or in it.
        customers.extend(payments.values().map(|link| link.customer_id.as_str()));
        customers.extend(deliveries.iter().filter_map(|d| d.plan.payment.as_ref()).map(|l| l.customer_id.as_str()));
        let recipients = self.store.recipients(&customers).await?;
        Ok(Directory { recipients, payments })
    }

    /// The email for `plan`: rendered for its recipient, or SKIPPED saying why nobody can be addressed; `None`
    /// for an event no one is mailed of.
    fn email(&self, plan: &Plan, directory: &Directory) -> Option<NewNotification> {
        let Mail { to, facts } = plan.mail.as_ref()?;
        Some(self.email_telling(to, facts, plan, directory))
    }

    fn email_telling(&self, to: &Addressee, facts: &Facts, plan: &Plan, directory: &Directory) -> NewNotification {
        let (recipient, order_id) = match to {
            Addressee::Registered => (plan.register.as_ref().map(|listing| listing.recipient.clone()), None),
            Addressee::Customer(id) => match directory.recipients.get(id) {
                Some(r) => (Some(r.clone()), None),
                None => return skipped(id, format!("no address for customer {id}: no user.registered seen")),
            },
            Addressee::Payment(payment_id) => match directory.payments.get(payment_id) {
                None => {
                    return skipped(
                        "",
                        format!("no customer known for payment {payment_id}: no order.confirmed seen for it"),
                    );
                }
                Some(link) => match directory.recipients.get(&link.customer_id) {
                    Some(r) => (Some(r.clone()), Some(link.order_id.clone())),
                    None => {
                        let id = &link.customer_id;
                        return skipped(id, format!("no address for customer {id}: no user.registered seen"));
                    }
                },
            },
            Addressee::Direct(recipient) => (Some(recipient.clone()), None),
            Addressee::SupportInbox => match &self.support_inbox {
                Some(inbox) => (Some(inbox.clone()), None),
                None => {
                    return skipped("", "MERCATO_SUPPORT_EMAIL is not set: the shop has no inbox to tell".to_owned());
                }
            },
            Addressee::Nobody(reason) => return skipped("", reason.clone()),
        };
        let Some(recipient) = recipient else { return skipped("", "no recipient".to_owned()) };
        let facts = match (facts, order_id) {
            (Facts::RefundCompleted { amount, reason, .. }, Some(order_id)) => {
                Facts::RefundCompleted { order_id, amount: amount.clone(), reason: reason.clone() }
            }
            (facts, _) => facts.clone(),
        };
        let base = NewNotification {
            user_id: recipient.user_id.clone(),
            recipient: recipient.email.clone(),
            subject: String::new(),
            body_text: String::new(),
            body_html: String::new(),
            list_unsubscribe: None,
            status: Status::Pending,
            last_error: String::new(),
        };
        match self.templates.render(&facts, &recipient.display_name, &recipient.locale) {
            Ok(email) => NewNotification {
                subject: email.subject,
                body_text: email.text,
                body_html: email.html,
                list_unsubscribe: email.list_unsubscribe,
                ..base
            },
            // A broken template must not block the event stream: the notification fails, visibly.
            Err(e) => {
                tracing::error!(error = %e, "rendering a notification failed");
                NewNotification { status: Status::Failed, last_error: e.to_string(), ..base }
            }
        }
    }
}

/// What became of a delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Its email was written, in this state (and its webhook deliveries, if any).
    Email(Status),
    /// No email is written for its type; its webhook deliveries, if any, were.
    WebhooksOnly,
    /// It was handled before: nothing was written.
    SeenBefore,
}

impl BatchRecorder for Consumer {
    type Item = Delivery;
    type Outcome = Recorded;
    type Error = Error;

    /// Addresses and renders the batch's emails, then writes them and the rest of the effects in one
    /// transaction; wakes the dispatcher when anything new was written.
    async fn record_batch(&self, deliveries: &[Delivery]) -> Result<Vec<Recorded>, Error> {
        let mut directory = self.directory(deliveries).await?;
        let effects: Vec<EventEffect> = deliveries
            .iter()
            .map(|d| {
                let email = self.email(&d.plan, &directory);
                // Whom this event introduces is known to the events after it.
                if let Some(listing) = &d.plan.register {
                    let user_id = &listing.recipient.user_id;
                    if listing.goes_in(directory.recipients.contains_key(user_id)) {
                        directory.recipients.insert(user_id.clone(), listing.recipient.clone());
                    }
                }
                if let Some(link) = &d.plan.payment {
                    directory.payments.entry(link.payment_id.clone()).or_insert_with(|| link.clone());
                }
                EventEffect {
                    event_id: &d.event_id,
                    event_type: &d.event_type,
                    register: d.plan.register.as_ref(),
                    forget: d.plan.forget.as_deref(),
                    payment: d.plan.payment.as_ref(),
                    email,
                    webhook_body: &d.webhook_body,
                }
            })
            .collect();
        let new = self.store.record_events(&effects, platform::time::now_micros()).await?;
        if new.iter().any(|new| *new) {
            self.dispatcher.notify_one();
        }
        let outcome = |(effect, new): (&EventEffect, bool)| match (new, &effect.email) {
            (false, _) => Recorded::SeenBefore,
            (true, Some(email)) => Recorded::Email(email.status),
            (true, None) => Recorded::WebhooksOnly,
        };
        Ok(effects.iter().zip(new).map(outcome).collect())
    }
}

impl Delivery {
    /// Decodes a delivery; an error names the event and is final for it (the bus dead-letters it in the end).
    pub fn decode(envelope: &EventEnvelope) -> Result<Self, String> {
        let plan = plan(envelope).map_err(|e| format!("event {} ({}): {e}", envelope.id, envelope.r#type))?;
        let webhook_body = webhook_body(envelope).map_err(|e| format!("event {}: {e}", envelope.id))?;
        Ok(Self { event_id: envelope.id.clone(), event_type: envelope.r#type.clone(), plan, webhook_body })
    }
}

/// Logs what became of a delivery, in its consumer span.
fn log_outcome(envelope: &EventEnvelope, recorded: Recorded) {
    let (event_id, event_type) = (&envelope.id, &envelope.r#type);
    match recorded {
        Recorded::Email(status) => {
            tracing::info!(%event_id, %event_type, status = status.as_str(), "notification recorded")
        }
        Recorded::WebhooksOnly => tracing::info!(%event_id, %event_type, "recorded for webhooks only"),
        Recorded::SeenBefore => tracing::info!(%event_id, %event_type, "event seen before, skipped"),
    }
}

fn skipped(user_id: &str, reason: String) -> NewNotification {
    NewNotification {
        user_id: user_id.to_owned(),
        recipient: String::new(),
        subject: String::new(),
        body_text: String::new(),
        body_html: String::new(),
        list_unsubscribe: None,
        status: Status::Skipped,
        last_error: reason,
    }
}

/// Whom an event's email goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Addressee {
    /// The user the event registers.
    Registered,
    /// A customer by user id.
    Customer(String),
    /// The customer of a payment (known from `order.confirmed`).
    Payment(String),
    /// Someone without an account, at the address the event names (a contact form's sender).
    Direct(Recipient),
    /// The shop's support inbox (`MERCATO_SUPPORT_EMAIL`), if it has one.
    SupportInbox,
    /// Nobody, for this reason.
    Nobody(String),
}

/// What an event asks for: an email, changes to the directory of recipients, and (to every endpoint subscribed
/// to its type) a webhook delivery.
#[derive(Debug, Clone)]
struct Plan {
    /// The email; `None` for an event only webhook endpoints hear of.
    mail: Option<Mail>,
    /// A user to add to the directory, or whose entry to replace.
    register: Option<Listing>,
    /// A payment's order and customer, for the refunds of that payment later.
    payment: Option<PaymentLink>,
    /// A deleted user whose directory entry and mail addresses are to be erased.
    forget: Option<String>,
}

/// An email an event asks for: to whom, telling what.
#[derive(Debug, Clone)]
struct Mail {
    to: Addressee,
    facts: Facts,
}

fn money(m: Option<api::common::Money>) -> Money {
    m.map(|m| Money { currency: m.currency, amount_minor: m.amount_minor }).unwrap_or_default()
}

fn customer(id: String) -> Addressee {
    if id.is_empty() { Addressee::Nobody("the event names no customer".to_owned()) } else { Addressee::Customer(id) }
}

/// Whom an event names by address (a newsletter's subscriber, an account's owner): that address as the event
/// gives it, not the directory's copy, which a later change could have made stale; nobody when it names none.
fn to_address(recipient: Recipient) -> Addressee {
    if recipient.email.is_empty() {
        return Addressee::Nobody("the event names no email address".to_owned());
    }
    Addressee::Direct(recipient)
}

/// A newsletter's address: no account, greeted by the address itself.
fn subscriber(email: String, locale: String) -> Addressee {
    to_address(Recipient { user_id: String::new(), display_name: email.clone(), email, locale })
}

/// The owner of an account, at the address the auth event names.
fn account_owner(user_id: String, email: String, display_name: String, locale: String) -> Addressee {
    to_address(Recipient { user_id, email, display_name, locale })
}

impl Plan {
    /// One email to `to` telling `facts`.
    fn mail(to: Addressee, facts: Facts) -> Self {
        Self { mail: Some(Mail { to, facts }), ..Self::webhooks_only() }
    }

    /// No email: the event goes to the webhook endpoints subscribed to its type, if any ([`domain::WEBHOOKS_ONLY`]).
    fn webhooks_only() -> Self {
        Self { mail: None, register: None, payment: None, forget: None }
    }

    /// Adds `recipient`, a new account, to the directory too (unless it lists the user already).
    fn registering(self, recipient: Recipient) -> Self {
        Self { register: Some(Listing { recipient, replaces: false }), ..self }
    }

    /// Puts `recipient`, an account as it is now, in the directory too, in place of its entry.
    fn relisting(self, recipient: Recipient) -> Self {
        Self { register: Some(Listing { recipient, replaces: true }), ..self }
    }

    /// Links a payment to its order and customer too.
    fn linking(self, payment: Option<PaymentLink>) -> Self {
        Self { payment, ..self }
    }

    /// Erases what is kept of `user_id` too.
    fn forgetting(self, user_id: String) -> Self {
        Self { forget: Some(user_id), ..self }
    }

    /// Whom the email goes to, if there is one.
    fn addressee(&self) -> Option<&Addressee> {
        self.mail.as_ref().map(|mail| &mail.to)
    }
}

/// Decodes an event's payload into what it asks for.
fn plan(envelope: &EventEnvelope) -> Result<Plan, String> {
    let data = envelope.data.as_slice();
    let bad = |e: prost::DecodeError| format!("bad payload: {e}");
    let plan = match envelope.r#type.as_str() {
        domain::USER_REGISTERED => {
            let e = UserRegistered::decode(data).map_err(bad)?;
            let addressee = if e.email.is_empty() {
                Addressee::Nobody(format!("user {} registered without an email address", e.user_id))
            } else {
                Addressee::Registered
            };
            Plan::mail(addressee, Facts::Welcome).registering(Recipient {
                user_id: e.user_id,
                email: e.email,
                display_name: e.display_name,
                locale: e.locale,
            })
        }
        domain::ORDER_CONFIRMED => {
            let e = OrderConfirmed::decode(data).map_err(bad)?;
            let payment = (!e.payment_id.is_empty() && !e.customer_id.is_empty()).then(|| PaymentLink {
                payment_id: e.payment_id.clone(),
                order_id: e.order_id.clone(),
                customer_id: e.customer_id.clone(),
            });
            let items = e
                .items
                .into_iter()
                .map(|i| ItemLine { name: i.name, quantity: i.quantity, line_total: money(i.line_total) })
                .collect();
            // A code that took nothing off (free shipping on an order that shipped free anyway) shows no line.
            let discount = money(e.discount);
            let discount =
                (!e.discount_code.is_empty() && discount.amount_minor > 0).then_some((e.discount_code, discount));
            let shipping = (!e.shipping_rate_id.is_empty()).then(|| (e.shipping_rate_name, money(e.shipping)));
            let taxes = e.taxes.into_iter().map(|t| (t.name, t.rate_basis_points, money(t.amount))).collect();
            let facts = Facts::OrderConfirmed {
                order_id: e.order_id,
                total: money(e.total),
                items,
                discount,
                shipping,
                taxes,
                invoice_number: e.invoice_number,
            };
            Plan::mail(customer(e.customer_id), facts).linking(payment)
        }
        domain::ORDER_FAILED => {
            let e = OrderFailed::decode(data).map_err(bad)?;
            Plan::mail(customer(e.customer_id), Facts::OrderFailed { order_id: e.order_id, reason: e.reason })
        }
        domain::PAYMENT_FAILED => {
            let e = PaymentFailed::decode(data).map_err(bad)?;
            Plan::mail(
                customer(e.customer_id),
                Facts::PaymentFailed { order_id: e.order_id, amount: money(e.amount), reason: e.failure_reason },
            )
        }
        domain::REFUND_COMPLETED => {
            let e = RefundCompleted::decode(data).map_err(bad)?;
            let addressee = if e.payment_id.is_empty() {
                Addressee::Nobody("the refund names no payment".to_owned())
            } else {
                Addressee::Payment(e.payment_id)
            };
            // The order comes from the payment's link once it is looked up.
            let facts = Facts::RefundCompleted { order_id: String::new(), amount: money(e.amount), reason: e.reason };
            Plan::mail(addressee, facts)
        }
        domain::REFUND_FAILED => {
            let e = RefundFailed::decode(data).map_err(bad)?;
            let facts = Facts::RefundFailed {
                refund_id: e.refund_id,
                payment_id: e.payment_id,
                amount: money(e.amount),
                reason: e.reason,
                failure_reason: e.failure_reason,
            };
            Plan::mail(Addressee::SupportInbox, facts)
        }
        domain::SHIPMENT_SHIPPED => {
            let e = ShipmentShipped::decode(data).map_err(bad)?;
            Plan::mail(
                customer(e.customer_id),
                Facts::ShipmentShipped { order_id: e.order_id, carrier: e.carrier, tracking_number: e.tracking_number },
            )
        }
        domain::SHIPMENT_DELIVERED => {
            let e = ShipmentDelivered::decode(data).map_err(bad)?;
            Plan::mail(customer(e.customer_id), Facts::ShipmentDelivered { order_id: e.order_id })
        }
        domain::RETURN_REQUESTED => {
            let e = ReturnRequested::decode(data).map_err(bad)?;
            let facts = Facts::ReturnRequested {
                return_id: e.return_id,
                order_id: e.order_id,
                customer_id: e.customer_id,
                items: e.items.into_iter().map(|i| (i.name, i.quantity)).collect(),
                refund: money(e.refund),
                reason: e.reason,
            };
            Plan::mail(Addressee::SupportInbox, facts)
        }
        domain::RETURN_APPROVED => {
            let e = ReturnApproved::decode(data).map_err(bad)?;
            Plan::mail(customer(e.customer_id), Facts::ReturnApproved { return_id: e.return_id, order_id: e.order_id })
        }
        domain::RETURN_REJECTED => {
            let e = ReturnRejected::decode(data).map_err(bad)?;
            let facts = Facts::ReturnRejected { return_id: e.return_id, order_id: e.order_id, reason: e.reason };
            Plan::mail(customer(e.customer_id), facts)
        }
        domain::RETURN_RECEIVED => {
            let e = ReturnReceived::decode(data).map_err(bad)?;
            let facts = Facts::ReturnReceived {
                return_id: e.return_id,
                order_id: e.order_id,
                items: e.items.into_iter().map(|i| (i.name, i.quantity)).collect(),
                refund: money(e.refund),
            };
            Plan::mail(customer(e.customer_id), facts)
        }
        domain::TICKET_REPLIED => {
            let e = TicketReplied::decode(data).map_err(bad)?;
            let addressee = if !e.customer_id.is_empty() {
                Addressee::Customer(e.customer_id)
            } else if !e.email.is_empty() {
                let name = if e.name.is_empty() { e.email.clone() } else { e.name };
                Addressee::Direct(Recipient {
                    user_id: String::new(),
                    email: e.email,
                    display_name: name,
                    locale: String::new(),
                })
            } else {
                Addressee::Nobody("the ticket names neither a customer nor an email address".to_owned())
            };
            Plan::mail(addressee, Facts::TicketReplied { ticket_id: e.ticket_id, subject: e.subject, body: e.body })
        }
        domain::TICKET_CREATED => {
            let e = TicketCreated::decode(data).map_err(bad)?;
            // Who wrote: the contact form's sender by name and address, a customer by account.
            let from = if e.customer_id.is_empty() {
                format!("{} <{}>", e.name, e.email)
            } else {
                format!("customer {}", e.customer_id)
            };
            Plan::mail(
                Addressee::SupportInbox,
                Facts::TicketCreated { ticket_id: e.ticket_id, subject: e.subject, from, message: e.message },
            )
        }
        domain::INVENTORY_LOW => {
            let e = InventoryLow::decode(data).map_err(bad)?;
            let facts = Facts::InventoryLow {
                product_id: e.product_id,
                sku: e.sku,
                product_name: e.name,
                available: e.available,
                threshold: e.threshold,
            };
            Plan::mail(Addressee::SupportInbox, facts)
        }
        domain::REVIEW_SUBMITTED => {
            let e = ReviewSubmitted::decode(data).map_err(bad)?;
            let facts = Facts::ReviewSubmitted {
                review_id: e.review_id,
                product_id: e.product_id,
                product_name: e.product_name,
                customer_id: e.customer_id,
                rating: e.rating,
                title: e.title,
                body: e.body,
                author_name: e.author_name,
            };
            Plan::mail(Addressee::SupportInbox, facts)
        }
        domain::STOCK_ALERT_TRIGGERED => {
            let e = StockAlertTriggered::decode(data).map_err(bad)?;
            let facts = Facts::BackInStock { product_id: e.product_id, product_name: e.name, price: money(e.price) };
            Plan::mail(customer(e.customer_id), facts)
        }
        domain::NEWSLETTER_SUBSCRIPTION_REQUESTED => {
            let e = NewsletterSubscriptionRequested::decode(data).map_err(bad)?;
            Plan::mail(subscriber(e.email, e.locale), Facts::NewsletterConfirmation { token: e.token })
        }
        domain::NEWSLETTER_ISSUED => {
            let e = NewsletterIssued::decode(data).map_err(bad)?;
            Plan::mail(
                subscriber(e.email, e.locale),
                Facts::Newsletter { subject: e.subject, body: e.body, unsubscribe_token: e.unsubscribe_token },
            )
        }
        domain::PASSWORD_RESET_REQUESTED => {
            let e = PasswordResetRequested::decode(data).map_err(bad)?;
            Plan::mail(
                account_owner(e.user_id, e.email, e.display_name, e.locale),
                Facts::PasswordReset { token: e.token },
            )
        }
        domain::EMAIL_VERIFICATION_REQUESTED => {
            let e = EmailVerificationRequested::decode(data).map_err(bad)?;
            let facts = Facts::EmailVerification { email: e.email.clone(), token: e.token };
            Plan::mail(account_owner(e.user_id, e.email, e.display_name, e.locale), facts)
        }
        domain::EMAIL_CHANGE_REQUESTED => {
            let e = EmailChangeRequested::decode(data).map_err(bad)?;
            let facts = Facts::EmailChangeConfirmation {
                current_email: e.current_email,
                email: e.email.clone(),
                token: e.token,
            };
            Plan::mail(account_owner(e.user_id, e.email, e.display_name, e.locale), facts)
        }
        domain::EMAIL_CHANGED => {
            let e = EmailChanged::decode(data).map_err(bad)?;
            if e.user_id.is_empty() || e.email.is_empty() {
                return Err("user.email_changed names no user or no address".to_owned());
            }
            // The directory takes the new address, where every later mail goes. The address the account left is
            // told by `user.email_change_confirmed`, which carries the token that undoes the change.
            Plan::webhooks_only().relisting(Recipient {
                user_id: e.user_id,
                email: e.email,
                display_name: e.display_name,
                locale: e.locale,
            })
        }
        domain::EMAIL_CHANGE_CONFIRMED => {
            let e = EmailChangeConfirmed::decode(data).map_err(bad)?;
            let facts = Facts::EmailChanged { new_email: e.email, token: e.token };
            Plan::mail(account_owner(e.user_id, e.previous_email, e.display_name, e.locale), facts)
        }
        domain::PASSWORD_CHANGED => {
            let e = PasswordChanged::decode(data).map_err(bad)?;
            let by_reset = e.method() == PasswordChangeMethod::Reset;
            Plan::mail(account_owner(e.user_id, e.email, e.display_name, e.locale), Facts::PasswordChanged { by_reset })
        }
        domain::USER_DELETED => {
            let e = UserDeleted::decode(data).map_err(bad)?;
            if e.user_id.is_empty() {
                return Err("user.deleted names no user".to_owned());
            }
            // The confirmation goes to the address the event carries, unlinked from the account being erased.
            let farewell = to_address(Recipient {
                user_id: String::new(),
                email: e.email,
                display_name: e.display_name,
                locale: e.locale,
            });
            Plan::mail(farewell, Facts::AccountDeleted).forgetting(e.user_id)
        }
        domain::USER_ROLES_CHANGED => {
            let e = UserRolesChanged::decode(data).map_err(bad)?;
            Plan::mail(
                account_owner(e.user_id, e.email, e.display_name, e.locale),
                Facts::RolesChanged { roles: e.roles, previous_roles: e.previous_roles },
            )
        }
        domain::USER_DISABLED => {
            let e = UserDisabled::decode(data).map_err(bad)?;
            Plan::mail(account_owner(e.user_id, e.email, e.display_name, e.locale), Facts::AccountDisabled)
        }
        domain::USER_ENABLED => {
            let e = UserEnabled::decode(data).map_err(bad)?;
            Plan::mail(account_owner(e.user_id, e.email, e.display_name, e.locale), Facts::AccountEnabled)
        }
        other if domain::WEBHOOKS_ONLY.contains(&other) => Plan::webhooks_only(),
        other => return Err(format!("event type {other} is not consumed here")),
    };
    Ok(plan)
}

/// The JSON a webhook endpoint receives: `{"id","type","time","subject","data"}`, `data` being the payload
/// in the proto3 JSON mapping (lowerCamelCase names, int64 as strings).
pub fn webhook_body(envelope: &EventEnvelope) -> Result<String, String> {
    let message = domain::payload_message(&envelope.r#type)
        .ok_or_else(|| format!("event type {} has no payload message", envelope.r#type))?;
    let pool = platform::descriptors::pool().map_err(|e| e.to_string())?;
    let descriptor = pool.get_message_by_name(message).ok_or_else(|| format!("{message} is not in the contracts"))?;
    let data = prost_reflect::DynamicMessage::decode(descriptor, envelope.data.as_slice())
        .map_err(|e| format!("bad payload: {e}"))?;
    let body = serde_json::json!({
        "id": envelope.id,
        "type": envelope.r#type,
        "time": envelope.time.as_ref().map(ToString::to_string).unwrap_or_default(),
        "subject": envelope.subject,
        "data": data,
    });
    serde_json::to_string(&body).map_err(|e| format!("encoding the webhook body: {e}"))
}

fn channel_to_wire(channel: &str) -> NotificationChannel {
    match Channel::parse(channel) {
        Some(Channel::Email) => NotificationChannel::Email,
        Some(Channel::Webhook) => NotificationChannel::Webhook,
        None => NotificationChannel::Unspecified,
    }
}

/// `notification.sent` for `due`, delivered after `attempts` attempts.
pub fn sent(due: &Due, attempts: i32) -> NewEvent {
    let payload = NotificationSent {
        notification_id: due.id.clone(),
        user_id: due.user_id.clone(),
        channel: channel_to_wire(&due.channel) as i32,
        event_type: due.event_type.clone(),
        event_id: due.event_id.clone(),
        attempts,
    };
    NewEvent::new(domain::NOTIFICATION_SENT, due.id.clone(), &payload)
}

/// `notification.failed` for `due`, given up after `attempts` attempts with `error`.
pub fn failed(due: &Due, attempts: i32, error: &str) -> NewEvent {
    let payload = NotificationFailed {
        notification_id: due.id.clone(),
        user_id: due.user_id.clone(),
        channel: channel_to_wire(&due.channel) as i32,
        event_type: due.event_type.clone(),
        event_id: due.event_id.clone(),
        attempts,
        error: error.to_owned(),
    };
    NewEvent::new(domain::NOTIFICATION_FAILED, due.id.clone(), &payload)
}

#[cfg(test)]
mod tests {
    use api::common::Money;
    use api::mercato::orders::v1::OrderConfirmed;
    use prost::Message;

    use super::*;

    fn confirmed(discount_code: &str, discount_minor: i64) -> EventEnvelope {
        shipped(discount_code, discount_minor, "", "", 0)
    }

    fn shipped(
        discount_code: &str,
        discount_minor: i64,
        rate_id: &str,
        rate_name: &str,
        shipping: i64,
    ) -> EventEnvelope {
        let eur = |amount_minor| Some(Money { currency: "EUR".into(), amount_minor });
        let payload = OrderConfirmed {
            order_id: "o-1".into(),
            customer_id: "u-1".into(),
            total: eur(2900 - discount_minor + shipping),
            discount: eur(discount_minor),
            discount_code: discount_code.into(),
            shipping: eur(shipping),
            shipping_rate_id: rate_id.into(),
            shipping_rate_name: rate_name.into(),
            ..OrderConfirmed::default()
        };
        EventEnvelope {
            r#type: domain::ORDER_CONFIRMED.into(),
            data: payload.encode_to_vec(),
            ..EventEnvelope::default()
        }
    }

    fn discount_mailed(envelope: &EventEnvelope) -> Option<(String, i64)> {
        let plan = plan(envelope).expect("planned");
        match plan.mail.expect("a mail").facts {
            Facts::OrderConfirmed { discount, .. } => discount.map(|(code, amount)| (code, amount.amount_minor)),
            other => panic!("not an order's mail: {other:?}"),
        }
    }

    #[test]
    fn an_order_confirmation_tells_the_discount_of_its_code_only() {
        assert_eq!(discount_mailed(&confirmed("SUMMER-10", 290)), Some(("SUMMER-10".to_owned(), 290)));
        assert_eq!(discount_mailed(&confirmed("", 0)), None);
        assert_eq!(discount_mailed(&confirmed("FREESHIP", 0)), None, "nothing off: no line");
    }

    fn shipping_mailed(envelope: &EventEnvelope) -> Option<(String, i64)> {
        let plan = plan(envelope).expect("planned");
        match plan.mail.expect("a mail").facts {
            Facts::OrderConfirmed { shipping, .. } => shipping.map(|(name, cost)| (name, cost.amount_minor)),
            other => panic!("not an order's mail: {other:?}"),
        }
    }

    #[test]
    fn an_order_confirmation_tells_its_shipping_when_the_shop_charges_it() {
        assert_eq!(shipping_mailed(&shipped("", 0, "standard", "Standard", 490)), Some(("Standard".to_owned(), 490)));
        assert_eq!(shipping_mailed(&shipped("", 0, "pickup", "Pick-up", 0)), Some(("Pick-up".to_owned(), 0)));
        assert_eq!(shipping_mailed(&confirmed("", 0)), None, "no rate: the shop charges no shipping");
    }

    #[test]
    fn an_order_confirmation_tells_the_tax_its_total_includes_and_its_invoice() {
        use api::mercato::orders::v1::OrderTax;
        let eur = |amount_minor| Some(Money { currency: "EUR".into(), amount_minor });
        let payload = OrderConfirmed {
            order_id: "o-1".into(),
            customer_id: "u-1".into(),
            total: eur(2900),
            taxes: vec![OrderTax { name: "VAT".into(), rate_basis_points: 2000, taxable: eur(2900), amount: eur(483) }],
            invoice_number: "INV-2026-000007".into(),
            ..OrderConfirmed::default()
        };
        let envelope = EventEnvelope {
            r#type: domain::ORDER_CONFIRMED.into(),
            data: payload.encode_to_vec(),
            ..EventEnvelope::default()
        };
        let taxes = |envelope: &EventEnvelope| match plan(envelope).expect("planned").mail.expect("a mail").facts {
            Facts::OrderConfirmed { taxes, .. } => {
                taxes.into_iter().map(|(name, rate, amount)| (name, rate, amount.amount_minor)).collect::<Vec<_>>()
            }
            other => panic!("not an order's mail: {other:?}"),
        };
        assert_eq!(taxes(&envelope), [("VAT".to_owned(), 2000, 483)]);
        assert_eq!(taxes(&confirmed("", 0)), [], "no rate: no tax line");
        match plan(&envelope).expect("planned").mail.expect("a mail").facts {
            Facts::OrderConfirmed { invoice_number, .. } => assert_eq!(invoice_number, "INV-2026-000007"),
            other => panic!("not an order's mail: {other:?}"),
        }
    }
}
