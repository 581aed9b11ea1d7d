//! The email templates: a subject, a text and an HTML body per event type and locale, embedded from
//! `templates/<locale>/<event type>.{subject.txt,txt,html}` and rendered with minijinja.
//!
//! minijinja escapes by file name: `.html` templates escape every value for HTML, so a display name such as
//! `<script>` arrives as text; `.txt` templates are left as written.

use minijinja::{Environment, Value, context};

use crate::domain::{self, ListUnsubscribe, Money, format_money, format_rate};
use crate::error::Error;

/// The three templates of each locale and event type.
macro_rules! embedded {
    ($($locale:literal: [$($event:literal),* $(,)?]),* $(,)?) => {
        &[$($(
            (concat!($locale, "/", $event, ".subject.txt"),
             include_str!(concat!("../templates/", $locale, "/", $event, ".subject.txt"))),
            (concat!($locale, "/", $event, ".txt"), include_str!(concat!("../templates/", $locale, "/", $event, ".txt"))),
            (concat!($locale, "/", $event, ".html"), include_str!(concat!("../templates/", $locale, "/", $event, ".html"))),
        )*)*]
    };
}

/// Every template by name, e.g. `de/order.confirmed.html`.
const TEMPLATES: &[(&str, &str)] = embedded!(
    "en": ["user.registered", "order.confirmed", "order.failed", "payment.failed", "refund.completed",
           "shipment.shipped", "shipment.delivered", "ticket.created", "inventory.low", "stock_alert.triggered", "refund.failed", "ticket.replied", "newsletter.subscription_requested",
           "newsletter.issued", "user.password_reset_requested", "user.email_verification_requested",
           "user.email_change_requested", "user.email_change_confirmed", "user.password_changed", "user.deleted",
           "user.roles_changed", "user.disabled", "user.enabled", "return.requested", "return.approved", "return.rejected",
           "return.received", "review.submitted"],
    "de": ["user.registered", "order.confirmed", "order.failed", "payment.failed", "refund.completed",
           "shipment.shipped", "shipment.delivered", "ticket.created", "inventory.low", "stock_alert.triggered", "refund.failed", "ticket.replied", "newsletter.subscription_requested",
           "newsletter.issued", "user.password_reset_requested", "user.email_verification_requested",
           "user.email_change_requested", "user.email_change_confirmed", "user.password_changed", "user.deleted",
           "user.roles_changed", "user.disabled", "user.enabled", "return.requested", "return.approved", "return.rejected",
           "return.received", "review.submitted"],
);

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// One line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
    /// Where a mail client's own "unsubscribe" goes: bulk mail (newsletters) only.
    pub list_unsubscribe: Option<ListUnsubscribe>,
}

/// One line of an order, as the email shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLine {
    /// Product name.
    pub name: String,
    /// Units.
    pub quantity: i32,
    /// Unit price times quantity.
    pub line_total: Money,
}

/// What an email tells, by event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facts {
    /// `user.registered`: welcome.
    Welcome,
    /// `order.confirmed`.
    OrderConfirmed {
        /// The order.
        order_id: String,
        /// What was charged.
        total: Money,
        /// The lines.
        items: Vec<ItemLine>,
        /// What a discount code took off the lines' sum, with the code; None without one.
        discount: Option<(String, Money)>,
        /// The shipping rate's name and what it cost (zero: free); None when the shop charges no shipping.
        shipping: Option<(String, Money)>,
        /// The tax the total includes, by rate: its name, the rate in basis points, the amount; empty when the
        /// order's country had no rate.
        taxes: Vec<(String, u32, Money)>,
        /// The number of its invoice; empty from a release of the orders service before invoices.
        invoice_number: String,
    },
    /// `order.failed`.
    OrderFailed {
        /// The order.
        order_id: String,
        /// Why, in words a customer can read.
        reason: String,
    },
    /// `payment.failed`.
    PaymentFailed {
        /// The order that was to be paid.
        order_id: String,
        /// What was to be charged.
        amount: Money,
        /// Why, in words a customer can read.
        reason: String,
    },
    /// `refund.completed`.
    RefundCompleted {
        /// The order refunded.
        order_id: String,
        /// What was given back.
        amount: Money,
        /// Why, as the requester wrote it (may be empty).
        reason: String,
    },
    /// `shipment.shipped`.
    ShipmentShipped {
        /// The order shipped.
        order_id: String,
        /// The carrier.
        carrier: String,
        /// The carrier's tracking number.
        tracking_number: String,
    },
    /// `shipment.delivered`.
    ShipmentDelivered {
        /// The order delivered.
        order_id: String,
    },
    /// `ticket.created`: to the support inbox.
    TicketCreated {
        /// The ticket.
        ticket_id: String,
        /// What it is about.
        subject: String,
        /// Who wrote it, for people.
        from: String,
        /// The first message.
        message: String,
    },
    /// `inventory.low`: a product is running out (to the shop's inbox).
    InventoryLow {
        /// The product.
        product_id: String,
        /// Its SKU.
        sku: String,
        /// Its name.
        product_name: String,
        /// Units available now.
        available: i64,
        /// The threshold it fell below.
        threshold: i64,
    },
    /// `review.submitted`: a customer's review waits for staff to publish it (to the shop's inbox).
    ReviewSubmitted {
        /// The review.
        review_id: String,
        /// The product reviewed.
        product_id: String,
        /// Its name.
        product_name: String,
        /// The author (user id).
        customer_id: String,
        /// Stars, 1 to 5.
        rating: i32,
        /// The headline; may be empty.
        title: String,
        /// The text; may be empty.
        body: String,
        /// The name shown with it; may be empty.
        author_name: String,
    },
    /// `stock_alert.triggered`: a product the customer waited for can be ordered again.
    BackInStock {
        /// The product.
        product_id: String,
        /// Its name.
        product_name: String,
        /// Its price now.
        price: Money,
    },
    /// `refund.failed`: the processor refused a refund (to the shop's inbox).
    RefundFailed {
        /// The refund.
        refund_id: String,
        /// The payment it was to give back from.
        payment_id: String,
        /// What was to be given back.
        amount: Money,
        /// Why it was asked for (may be empty).
        reason: String,
        /// Why it was refused (may be empty).
        failure_reason: String,
    },
    /// `ticket.replied`.
    TicketReplied {
        /// The ticket.
        ticket_id: String,
        /// What it is about.
        subject: String,
        /// The agent's answer.
        body: String,
    },
    /// `newsletter.subscription_requested`: confirm the address.
    NewsletterConfirmation {
        /// The secret that confirms it.
        token: String,
    },
    /// `newsletter.issued`: one subscriber's newsletter.
    Newsletter {
        /// Its subject line.
        subject: String,
        /// Its text.
        body: String,
        /// The subscriber's secret for unsubscribing.
        unsubscribe_token: String,
    },
    /// `user.password_reset_requested`: the code that sets a new password.
    PasswordReset {
        /// The single-use secret.
        token: String,
    },
    /// `user.email_verification_requested`: the code that proves the address is the account owner's.
    EmailVerification {
        /// The address to verify.
        email: String,
        /// The secret.
        token: String,
    },
    /// `user.email_change_requested`, to the new address: the code that moves the account there.
    EmailChangeConfirmation {
        /// The address the account keeps until the change.
        current_email: String,
        /// The new address (this mail's).
        email: String,
        /// The secret.
        token: String,
    },
    /// `user.email_change_confirmed`, to the previous address: the account moved; the code that undoes it.
    EmailChanged {
        /// Where it moved to.
        new_email: String,
        /// The secret that takes it back.
        token: String,
    },
    /// `user.deleted`: the account is gone.
    AccountDeleted,
    /// `user.roles_changed`: staff changed the account's roles.
    RolesChanged {
        /// Its roles now.
        roles: Vec<String>,
        /// Its roles before.
        previous_roles: Vec<String>,
    },
    /// `return.requested`: a return to decide on (to the shop's inbox).
    ReturnRequested {
        /// The return.
        return_id: String,
        /// Its order.
        order_id: String,
        /// The customer who asked.
        customer_id: String,
        /// What is to come back: name and units.
        items: Vec<(String, i32)>,
        /// What it will give back.
        refund: Money,
        /// Why, in the customer's words (may be empty).
        reason: String,
    },
    /// `return.approved`: the customer sends the items back.
    ReturnApproved {
        /// The return, for the parcel.
        return_id: String,
        /// Its order.
        order_id: String,
    },
    /// `return.rejected`: staff said no, and why.
    ReturnRejected {
        /// The return.
        return_id: String,
        /// Its order.
        order_id: String,
        /// Why, in staff's words.
        reason: String,
    },
    /// `return.received`: the items arrived; what is refunded.
    ReturnReceived {
        /// The return.
        return_id: String,
        /// Its order.
        order_id: String,
        /// What came back: name and units.
        items: Vec<(String, i32)>,
        /// What is given back.
        refund: Money,
    },
    /// `user.disabled`: staff disabled the account.
    AccountDisabled,
    /// `user.enabled`: staff enabled it again.
    AccountEnabled,
    /// `user.password_changed`: the owner is told.
    PasswordChanged {
        /// Whether a reset code did it (else the signed-in owner, with the old password).
        by_reset: bool,
    },
}

impl Facts {
    /// The event type whose templates tell these facts.
    pub fn event_type(&self) -> &'static str {
        match self {
            Facts::Welcome => domain::USER_REGISTERED,
            Facts::OrderConfirmed { .. } => domain::ORDER_CONFIRMED,
            Facts::OrderFailed { .. } => domain::ORDER_FAILED,
            Facts::PaymentFailed { .. } => domain::PAYMENT_FAILED,
            Facts::RefundCompleted { .. } => domain::REFUND_COMPLETED,
            Facts::ShipmentShipped { .. } => domain::SHIPMENT_SHIPPED,
            Facts::ShipmentDelivered { .. } => domain::SHIPMENT_DELIVERED,
            Facts::TicketCreated { .. } => domain::TICKET_CREATED,
            Facts::InventoryLow { .. } => domain::INVENTORY_LOW,
            Facts::BackInStock { .. } => domain::STOCK_ALERT_TRIGGERED,
            Facts::ReviewSubmitted { .. } => domain::REVIEW_SUBMITTED,
            Facts::RefundFailed { .. } => domain::REFUND_FAILED,
            Facts::TicketReplied { .. } => domain::TICKET_REPLIED,
            Facts::NewsletterConfirmation { .. } => domain::NEWSLETTER_SUBSCRIPTION_REQUESTED,
            Facts::Newsletter { .. } => domain::NEWSLETTER_ISSUED,
            Facts::PasswordReset { .. } => domain::PASSWORD_RESET_REQUESTED,
            Facts::EmailVerification { .. } => domain::EMAIL_VERIFICATION_REQUESTED,
            Facts::EmailChangeConfirmation { .. } => domain::EMAIL_CHANGE_REQUESTED,
            Facts::EmailChanged { .. } => domain::EMAIL_CHANGE_CONFIRMED,
            Facts::PasswordChanged { .. } => domain::PASSWORD_CHANGED,
            Facts::AccountDeleted => domain::USER_DELETED,
            Facts::RolesChanged { .. } => domain::USER_ROLES_CHANGED,
            Facts::AccountDisabled => domain::USER_DISABLED,
            Facts::AccountEnabled => domain::USER_ENABLED,
            Facts::ReturnRequested { .. } => domain::RETURN_REQUESTED,
            Facts::ReturnApproved { .. } => domain::RETURN_APPROVED,
            Facts::ReturnRejected { .. } => domain::RETURN_REJECTED,
            Facts::ReturnReceived { .. } => domain::RETURN_RECEIVED,
        }
    }

    /// The storefront page that takes this email's token, if it carries one and the shop has a storefront.
    fn link(&self, storefront: Option<&str>) -> Option<String> {
        let (page, token) = match self {
            Facts::PasswordReset { token } => ("reset-password", token),
            Facts::EmailVerification { token, .. } => ("verify-email", token),
            Facts::EmailChangeConfirmation { token, .. } => ("change-email", token),
            Facts::EmailChanged { token, .. } => ("revert-email-change", token),
            Facts::NewsletterConfirmation { token } => ("newsletter/confirm", token),
            Facts::Newsletter { unsubscribe_token, .. } => ("newsletter/unsubscribe", unsubscribe_token),
            _ => return None,
        };
        let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
        storefront.map(|base| format!("{base}/{page}?token={token}"))
    }

    /// The `List-Unsubscribe` of a newsletter: the gateway's one-click route when the shop names its public
    /// address, else the storefront's unsubscribe page, else none.
    fn list_unsubscribe(&self, public_api: Option<&str>, storefront: Option<&str>) -> Option<ListUnsubscribe> {
        let Facts::Newsletter { unsubscribe_token, .. } = self else { return None };
        match public_api {
            Some(api) => {
                let token: String = percent_encoding::utf8_percent_encode(unsubscribe_token, PATH_SEGMENT).collect();
                let url = format!("{api}/v1/newsletter/tokens/{token}:unsubscribe");
                Some(ListUnsubscribe { url, one_click: true })
            }
            None => self.link(storefront).map(|url| ListUnsubscribe { url, one_click: false }),
        }
    }

    fn context(&self, name: &str, storefront: Option<&str>) -> Value {
        let link = self.link(storefront);
        match self {
            Facts::Welcome => context! { name },
            Facts::OrderConfirmed { order_id, total, items, discount, shipping, taxes, invoice_number } => {
                let items: Vec<Value> = items
                    .iter()
                    .map(|i| context! { name => i.name.as_str(), quantity => i.quantity, line_total => format_money(&i.line_total) })
                    .collect();
                // Shown as taken off: "-EUR 3.40".
                let discount = discount.as_ref().map(|(code, amount)| {
                    context! { code, amount => format_money(&Money { amount_minor: -amount.amount_minor, ..amount.clone() }) }
                });
                // Free shipping says so rather than "EUR 0.00".
                let shipping = shipping.as_ref().map(|(rate, cost)| {
                    let free = cost.amount_minor == 0;
                    context! { name => rate, free, amount => format_money(cost) }
                });
                let taxes: Vec<Value> = taxes
                    .iter()
                    .map(|(tax, rate, amount)| {
                        context! { name => tax, rate => format_rate(*rate), amount => format_money(amount) }
                    })
                    .collect();
                context! { name, order_id, total => format_money(total), items, discount, shipping, taxes, invoice_number }
            }
            Facts::OrderFailed { order_id, reason } => context! { name, order_id, reason },
            Facts::PaymentFailed { order_id, amount, reason } => {
                context! { name, order_id, amount => format_money(amount), reason }
            }
            Facts::RefundCompleted { order_id, amount, reason } => {
                context! { name, order_id, amount => format_money(amount), reason }
            }
            Facts::ShipmentShipped { order_id, carrier, tracking_number } => {
                context! { name, order_id, carrier, tracking_number }
            }
            Facts::ShipmentDelivered { order_id } => context! { name, order_id },
            Facts::TicketCreated { ticket_id, subject, from, message } => {
                context! { name, ticket_id, subject, from, message }
            }
            Facts::InventoryLow { product_id, sku, product_name, available, threshold } => {
                context! { name, product_id, sku, product_name, available, threshold }
            }
            Facts::ReviewSubmitted {
                review_id,
                product_id,
                product_name,
                customer_id,
                rating,
                title,
                body,
                author_name,
            } => {
                let stars = "★".repeat(usize::try_from(*rating).unwrap_or(0).min(5));
                context! { name, review_id, product_id, product_name, customer_id, rating, stars, title, body, author_name }
            }
            Facts::BackInStock { product_id, product_name, price } => {
                context! { name, product_id, product_name, price => format_money(price) }
            }
            Facts::RefundFailed { refund_id, payment_id, amount, reason, failure_reason } => {
                context! { name, refund_id, payment_id, amount => format_money(amount), reason, failure_reason }
            }
            Facts::TicketReplied { ticket_id, subject, body } => context! { name, ticket_id, subject, body },
            Facts::NewsletterConfirmation { token } => context! { name, token, link },
            Facts::Newsletter { subject, body, unsubscribe_token } => {
                context! { name, subject, body, unsubscribe_token, link }
            }
            Facts::PasswordReset { token } => context! { name, token, link },
            Facts::EmailVerification { email, token } => context! { name, email, token, link },
            Facts::EmailChangeConfirmation { current_email, email, token } => {
                context! { name, current_email, email, token, link }
            }
            Facts::EmailChanged { new_email, token } => context! { name, new_email, token, link },
            Facts::PasswordChanged { by_reset } => context! { name, by_reset },
            Facts::AccountDeleted | Facts::AccountDisabled | Facts::AccountEnabled => context! { name },
            Facts::RolesChanged { roles, previous_roles } => context! { name, roles, previous_roles },
            Facts::ReturnRequested { return_id, order_id, customer_id, items, refund, reason } => {
                let items: Vec<Value> =
                    items.iter().map(|(item, quantity)| context! { name => item, quantity }).collect();
                context! { name, return_id, order_id, customer_id, items, refund => format_money(refund), reason }
            }
            Facts::ReturnApproved { return_id, order_id } => context! { name, return_id, order_id },
            Facts::ReturnRejected { return_id, order_id, reason } => context! { name, return_id, order_id, reason },
            Facts::ReturnReceived { return_id, order_id, items, refund } => {
                let items: Vec<Value> =
                    items.iter().map(|(item, quantity)| context! { name => item, quantity }).collect();
                context! { name, return_id, order_id, items, refund => format_money(refund) }
            }
        }
    }
}

/// The loaded templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    storefront: Option<String>,
    public_api: Option<String>,
    return_address: Vec<String>,
}

/// What a path segment must escape (RFC 3986's pchar, `:` included: the route's verb follows the token).
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

impl Templates {
    /// Loads (and so checks the syntax of) every embedded template.
    pub fn load() -> Result<Self, Error> {
        let mut env = Environment::new();
        // A typo in a template shows as an error, not as an empty string in a customer's mail.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).map_err(|e| Error::Template(format!("{name}: {e}")))?;
        }
        Ok(Self { env, storefront: None, public_api: None, return_address: Vec::new() })
    }

    /// Tells customers whose return was approved where to send it: the lines of `return_address`
    /// (`MERCATO_RETURN_ADDRESS`); none, and the mail asks them to send it back without saying where.
    pub fn with_return_address(mut self, return_address: Vec<String>) -> Self {
        self.return_address = return_address;
        self
    }

    /// Links the emails carrying a token to the pages of `storefront` (`MERCATO_STOREFRONT_URL`, no trailing `/`):
    /// `/reset-password`, `/newsletter/confirm` and `/newsletter/unsubscribe`, each with `?token=`.
    pub fn with_storefront(mut self, storefront: Option<String>) -> Self {
        self.storefront = storefront;
        self
    }

    /// Names the gateway's address as mail recipients reach it (`MERCATO_PUBLIC_API_URL`, no trailing `/`):
    /// newsletters then offer a one-click unsubscribe through it (see [`ListUnsubscribe`]).
    pub fn with_public_api(mut self, public_api: Option<String>) -> Self {
        self.public_api = public_api;
        self
    }

    /// The email telling `facts` to `name`, in the shipped locale closest to `locale` (see
    /// [`domain::resolve_locale`]).
    pub fn render(&self, facts: &Facts, name: &str, locale: &str) -> Result<Email, Error> {
        let prefix = format!("{}/{}", domain::resolve_locale(locale), facts.event_type());
        // The shop's facts (its return address) beside the event's, for the templates that show them.
        let ctx =
            context! { return_address => &self.return_address, ..facts.context(name, self.storefront.as_deref()) };
        let render = |suffix: &str| {
            let template = format!("{prefix}{suffix}");
            self.env
                .get_template(&template)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| Error::Template(format!("{template}: {e}")))
        };
        // A subject is one line: line breaks in values cannot start new headers.
        let subject = render(".subject.txt")?.split_whitespace().collect::<Vec<_>>().join(" ");
        let list_unsubscribe = facts.list_unsubscribe(self.public_api.as_deref(), self.storefront.as_deref());
        Ok(Email { subject, text: render(".txt")?, html: render(".html")?, list_unsubscribe })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount_minor: i64) -> Money {
        Money { currency: "EUR".into(), amount_minor }
    }

    fn every_fact() -> Vec<Facts> {
        vec![
            Facts::Welcome,
            Facts::OrderConfirmed {
                order_id: "o-1".into(),
                total: eur(3100),
                items: vec![ItemLine { name: "Coffee".into(), quantity: 2, line_total: eur(2900) }],
                discount: Some(("SUMMER-10".into(), eur(290))),
                shipping: Some(("Standard".into(), eur(490))),
                taxes: vec![("VAT".into(), 2000, eur(517))],
                invoice_number: "INV-2026-000042".into(),
            },
            Facts::OrderFailed { order_id: "o-2".into(), reason: "the card was declined".into() },
            Facts::PaymentFailed { order_id: "o-3".into(), amount: eur(500), reason: "insufficient funds".into() },
            Facts::RefundCompleted { order_id: "o-4".into(), amount: eur(1999), reason: String::new() },
            Facts::ShipmentShipped { order_id: "o-5".into(), carrier: "DHL".into(), tracking_number: "JJD0001".into() },
            Facts::ShipmentDelivered { order_id: "o-6".into() },
            Facts::TicketReplied { ticket_id: "t-1".into(), subject: "Sizes".into(), body: "Yes.".into() },
            Facts::TicketCreated {
                ticket_id: "t-2".into(),
                subject: "Broken mug".into(),
                from: "customer u-1".into(),
                message: "It arrived broken.".into(),
            },
            Facts::NewsletterConfirmation { token: "tok-1".into() },
            Facts::Newsletter {
                subject: "Sale".into(),
                body: "Ten percent.".into(),
                unsubscribe_token: "tok-2".into(),
            },
            Facts::PasswordReset { token: "tok-3".into() },
            Facts::EmailVerification { email: "ada@example.com".into(), token: "tok-4".into() },
            Facts::PasswordChanged { by_reset: false },
            Facts::PasswordChanged { by_reset: true },
            Facts::AccountDeleted,
            Facts::RolesChanged {
                roles: vec!["customer".into(), "catalog".into()],
                previous_roles: vec!["customer".into()],
            },
            Facts::AccountDisabled,
            Facts::AccountEnabled,
            Facts::RefundFailed {
                refund_id: "r-1".into(),
                payment_id: "pay-1".into(),
                amount: eur(1250),
                reason: "broken on arrival".into(),
                failure_reason: "the card account is closed".into(),
            },
            Facts::InventoryLow {
                product_id: "p-1".into(),
                sku: "TEA-1".into(),
                product_name: "Sencha".into(),
                available: 4,
                threshold: 5,
            },
            Facts::EmailChangeConfirmation {
                current_email: "ada@example.com".into(),
                email: "ada@example.org".into(),
                token: "tok-5".into(),
            },
            Facts::EmailChanged { new_email: "ada@example.org".into(), token: "tok-6".into() },
            // Appended: the tests above name some of these by position.
            Facts::BackInStock { product_id: "p-2".into(), product_name: "Gyokuro".into(), price: eur(1890) },
            Facts::ReturnRequested {
                return_id: "r-0".into(),
                order_id: "o-7".into(),
                customer_id: "u-7".into(),
                items: vec![("Mug".into(), 2)],
                refund: eur(2400),
                reason: "too small".into(),
            },
            Facts::ReturnApproved { return_id: "r-1".into(), order_id: "o-7".into() },
            Facts::ReturnRejected { return_id: "r-2".into(), order_id: "o-7".into(), reason: "opened".into() },
            Facts::ReturnReceived {
                return_id: "r-3".into(),
                order_id: "o-7".into(),
                items: vec![("Mug".into(), 2), ("Sencha".into(), 1)],
                refund: eur(2950),
            },
            Facts::ReviewSubmitted {
                review_id: "rv-1".into(),
                product_id: "p-3".into(),
                product_name: "Genmaicha".into(),
                customer_id: "u-8".into(),
                rating: 4,
                title: "Toasty".into(),
                body: "Tastes of rice, in a good way.".into(),
                author_name: "Ada L.".into(),
            },
        ]
    }

    #[test]
    fn a_return_tells_what_staff_decided_and_what_is_refunded() {
        let templates = Templates::load().expect("templates load");
        let facts = every_fact();
        let of = |event_type: &str| facts.iter().find(|f| f.event_type() == event_type).expect("in every_fact");
        let [requested, approved, rejected, received] =
            [domain::RETURN_REQUESTED, domain::RETURN_APPROVED, domain::RETURN_REJECTED, domain::RETURN_RECEIVED]
                .map(of);
        let inbox = templates.render(requested, "Support", "en").expect("renders");
        assert_eq!(inbox.subject, "Return to decide: r-0 of order o-7 (EUR 24.00)");
        assert!(inbox.text.contains("- 2 x Mug") && inbox.text.contains("Reason: too small"), "{}", inbox.text);
        assert!(inbox.text.contains("POST /v1/returns/r-0:approve"), "{}", inbox.text);
        let en = templates.render(approved, "Ada", "en").expect("renders");
        assert!(en.text.contains("return r-1 of order o-7") && en.text.contains("send the items back"), "{}", en.text);
        let de = templates.render(rejected, "Ada", "de").expect("renders");
        assert!(de.text.contains("Grund: opened") && de.html.contains("Grund: opened"), "{}", de.text);
        let en = templates.render(received, "Ada", "en").expect("renders");
        assert_eq!(en.subject, "Your return arrived: we refund EUR 29.50");
        assert!(en.text.contains("- 2 x Mug\n- 1 x Sencha\n") && en.html.contains("<li>2 × Mug</li>"), "{}", en.text);
        let de = templates.render(received, "Ada", "de").expect("renders");
        assert!(de.text.contains("Wir erstatten EUR 29.50"), "{}", de.text);
    }

    #[test]
    fn an_approved_return_says_where_to_send_it_when_the_shop_gave_its_address() {
        let facts = every_fact();
        let approved = facts.iter().find(|f| f.event_type() == domain::RETURN_APPROVED).expect("in every_fact");
        let without = Templates::load().expect("templates load").render(approved, "Ada", "en").expect("renders");
        assert!(!without.text.contains("Send them to"), "{}", without.text);
        let address = vec!["Mercato Returns".to_owned(), "Lagerstraße 1".to_owned(), "10115 Berlin, DE".to_owned()];
        let templates = Templates::load().expect("templates load").with_return_address(address);
        let en = templates.render(approved, "Ada", "en").expect("renders");
        assert!(en.text.contains("Send them to:\n\nMercato Returns\nLagerstraße 1\n10115 Berlin, DE\n"), "{}", en.text);
        assert!(en.html.contains("Mercato Returns<br>Lagerstraße 1<br>10115 Berlin, DE"), "{}", en.html);
        let de = templates.render(approved, "Ada", "de").expect("renders");
        assert!(de.text.contains("Bitte senden Sie sie an:\n\nMercato Returns\n"), "{}", de.text);
    }

    #[test]
    fn a_review_waiting_tells_the_shop_what_it_says_and_how_to_publish_it() {
        let templates = Templates::load().expect("templates load");
        let facts = every_fact();
        let waiting = facts.iter().find(|f| f.event_type() == domain::REVIEW_SUBMITTED).expect("in every_fact");
        let en = templates.render(waiting, "Support", "en").expect("renders");
        assert_eq!(en.subject, "Review to publish: Genmaicha, 4 of 5 stars");
        assert!(
            en.text.contains("★★★★ Toasty\nTastes of rice, in a good way.\n— Ada L. (customer u-8)"),
            "{}",
            en.text
        );
        assert!(en.text.contains("POST /v1/products/p-3/reviews/rv-1:publish"), "{}", en.text);
        assert!(en.html.contains("<code>DELETE /v1/products/p-3/reviews/rv-1</code>"), "{}", en.html);
        let de = templates.render(waiting, "Support", "de").expect("renders");
        assert_eq!(de.subject, "Bewertung freizugeben: Genmaicha, 4 von 5 Sternen");
    }

    #[test]
    fn every_event_renders_in_every_locale() {
        let templates = Templates::load().expect("templates load");
        for locale in domain::LOCALES {
            for facts in every_fact() {
                let email = templates.render(&facts, "Ada", locale).expect("renders");
                assert!(!email.subject.is_empty() && !email.subject.contains('\n'), "{locale} {facts:?}");
                assert!(email.text.contains("Ada") && email.html.contains("Ada"), "{locale} {facts:?}");
                assert!(email.html.contains(&format!("lang=\"{locale}\"")), "{locale} {facts:?}");
            }
        }
    }

    #[test]
    fn orders_show_lines_and_money_in_the_users_language() {
        let templates = Templates::load().expect("templates load");
        let facts = &every_fact()[1];
        let de = templates.render(facts, "Ada", "de-AT").expect("renders");
        assert_eq!(de.subject, "Ihre Bestellung o-1 ist bestätigt");
        let lines = "- 2 x Coffee: EUR 29.00\n- Rabatt (SUMMER-10): EUR -2.90\n- Versand, Standard: EUR 4.90\n\nGesamt: EUR 31.00\nDarin enthalten: VAT 20%: EUR 5.17\n\n";
        assert!(de.text.contains(lines), "{}", de.text);
        let en = templates.render(facts, "Ada", "fr").expect("renders");
        assert_eq!(en.subject, "Your order o-1 is confirmed");
        assert!(en.html.contains("<td>Coffee</td><td>EUR 29.00</td>"), "{}", en.html);
        assert!(en.html.contains("<td>Discount (SUMMER-10)</td><td>EUR -2.90</td>"), "{}", en.html);
        assert!(en.html.contains("<td>Shipping, Standard</td><td>EUR 4.90</td>"), "{}", en.html);
        assert!(en.html.contains("<td>Includes VAT 20%</td><td>EUR 5.17</td>"), "{}", en.html);
        assert!(en.text.contains("Total: EUR 31.00\nIncludes VAT 20%: EUR 5.17\n\n"), "{}", en.text);
        assert!(en.text.contains("payment of EUR 31.00.\nYour invoice is number INV-2026-000042.\n"), "{}", en.text);
        assert!(en.html.contains("Your invoice is number <strong>INV-2026-000042</strong>."), "{}", en.html);
        // Without a code, no discount line; without shipping rates, no shipping line.
        let Facts::OrderConfirmed { order_id, items, .. } = facts.clone() else { panic!("an order") };
        let plain = Facts::OrderConfirmed {
            order_id: order_id.clone(),
            total: eur(2900),
            items: items.clone(),
            discount: None,
            shipping: None,
            taxes: Vec::new(),
            invoice_number: String::new(),
        };
        let plain = templates.render(&plain, "Ada", "en").expect("renders");
        // Without a tax rate, no tax line.
        assert!(
            plain.text.contains("EUR 29.00\n\nTotal: EUR 29.00\n\n")
                && !plain.text.contains("Discount")
                && !plain.text.contains("Shipping")
                && !plain.text.contains("Includes")
                && !plain.html.contains("Includes")
                && !plain.text.contains("invoice"),
            "{}",
            plain.text
        );
        // Free shipping says so.
        let free = Facts::OrderConfirmed {
            order_id,
            total: eur(2900),
            items,
            discount: None,
            shipping: Some(("Pick-up".into(), eur(0))),
            taxes: vec![("MwSt.".into(), 1750, eur(432))],
            invoice_number: "INV-2026-000043".into(),
        };
        for (locale, line) in [
            ("en", "- Shipping, Pick-up: free\n\nTotal: EUR 29.00\nIncludes MwSt. 17.5%: EUR 4.32\n"),
            ("de", "- Versand, Pick-up: kostenlos\n\nGesamt: EUR 29.00\nDarin enthalten: MwSt. 17.5%: EUR 4.32\n"),
            ("de", "Ihre Rechnung hat die Nummer INV-2026-000043.\n"),
        ] {
            let email = templates.render(&free, "Ada", locale).expect("renders");
            assert!(email.text.contains(line), "{}", email.text);
        }
    }

    #[test]
    fn tokens_link_to_the_storefront_when_there_is_one() {
        let reset = Facts::PasswordReset { token: "abc-_9".into() };
        let bare = Templates::load().expect("templates load").render(&reset, "Ada", "en").expect("renders");
        assert!(bare.text.contains("abc-_9") && !bare.text.contains("http"), "{}", bare.text);
        let linked = Templates::load().expect("load").with_storefront(Some("https://shop.example.com/de".into()));
        for (facts, link) in [
            (reset, "https://shop.example.com/de/reset-password?token=abc-_9"),
            (every_fact()[12].clone(), "https://shop.example.com/de/verify-email?token=tok-4"),
            (every_fact()[21].clone(), "https://shop.example.com/de/change-email?token=tok-5"),
            (every_fact()[9].clone(), "https://shop.example.com/de/newsletter/confirm?token=tok-1"),
            (every_fact()[10].clone(), "https://shop.example.com/de/newsletter/unsubscribe?token=tok-2"),
        ] {
            for locale in domain::LOCALES {
                let email = linked.render(&facts, "Ada", locale).expect("renders");
                assert!(email.text.contains(link), "{locale}: {}", email.text);
                assert!(email.html.contains(&format!("href=\"{link}\"")), "{locale}: {}", email.html);
            }
        }
        let welcome = linked.render(&Facts::Welcome, "Ada", "en").expect("renders");
        assert!(!welcome.text.contains("token="), "only mails carrying a token link to one");
    }

    #[test]
    fn newsletters_name_their_unsubscribe_link_for_mail_clients() {
        let newsletter = every_fact()[10].clone();
        let bare = Templates::load().expect("templates load");
        assert_eq!(bare.render(&newsletter, "Ada", "en").expect("renders").list_unsubscribe, None);
        let storefront = bare.with_storefront(Some("https://shop.example.com".into()));
        let page = storefront.render(&newsletter, "Ada", "en").expect("renders").list_unsubscribe;
        let url = "https://shop.example.com/newsletter/unsubscribe?token=tok-2".to_owned();
        assert_eq!(page, Some(ListUnsubscribe { url, one_click: false }), "a page for a person, not a POST");
        let api = storefront.with_public_api(Some("https://api.example.com".into()));
        for locale in domain::LOCALES {
            let one_click = api.render(&newsletter, "Ada", locale).expect("renders").list_unsubscribe;
            let url = "https://api.example.com/v1/newsletter/tokens/tok-2:unsubscribe".to_owned();
            assert_eq!(one_click, Some(ListUnsubscribe { url, one_click: true }), "{locale}");
        }
        let odd = Facts::Newsletter { subject: "S".into(), body: "B".into(), unsubscribe_token: "a/b:c d".into() };
        let escaped = api.render(&odd, "Ada", "en").expect("renders").list_unsubscribe.expect("a link");
        assert_eq!(escaped.url, "https://api.example.com/v1/newsletter/tokens/a%2Fb%3Ac%20d:unsubscribe");
        let confirmation = api.render(&every_fact()[9], "Ada", "en").expect("renders");
        assert_eq!(confirmation.list_unsubscribe, None, "only bulk mail: a confirmation is asked for");
    }

    #[test]
    fn an_email_change_names_both_addresses() {
        let templates = Templates::load().expect("templates load");
        for locale in domain::LOCALES {
            let confirm = templates.render(&every_fact()[21], "Ada", locale).expect("renders");
            for body in [&confirm.text, &confirm.html] {
                assert!(body.contains("ada@example.com") && body.contains("ada@example.org"), "{locale}: {body}");
                assert!(body.contains("tok-5"), "{locale}: {body}");
            }
            let told = templates.render(&every_fact()[22], "Ada", locale).expect("renders");
            assert!(told.text.contains("ada@example.org") && told.html.contains("ada@example.org"), "{locale}");
            assert!(told.text.contains("tok-6") && told.html.contains("tok-6"), "{locale}: the code that undoes it");
        }
        let linked = Templates::load().expect("templates load").with_storefront(Some("https://shop.example".into()));
        let told = linked.render(&every_fact()[22], "Ada", "de").expect("renders");
        assert!(told.text.contains("https://shop.example/revert-email-change?token=tok-6"), "{}", told.text);
        let en = templates.render(&every_fact()[22], "Ada", "en").expect("renders");
        assert_eq!(en.subject, "The email address of your Mercato account was changed");
    }

    #[test]
    fn roles_are_named_in_the_users_language() {
        let templates = Templates::load().expect("templates load");
        let facts = Facts::RolesChanged {
            roles: vec!["customer".into(), "fulfilment".into(), "auditor".into()],
            previous_roles: vec!["customer".into()],
        };
        let de = templates.render(&facts, "Ada", "de").expect("renders");
        assert!(de.text.contains("jetzt: Kunde, Versand, auditor (vorher: Kunde)"), "{}", de.text);
        assert!(de.html.contains("Kunde, Versand, auditor"), "{}", de.html);
        let en = templates.render(&facts, "Ada", "en").expect("renders");
        assert!(en.text.contains("now has: customer, fulfilment, auditor (before: customer)"), "{}", en.text);
    }

    #[test]
    fn html_escapes_values_and_text_keeps_them() {
        let templates = Templates::load().expect("templates load");
        let email = templates.render(&Facts::Welcome, "<script>alert(1)</script>", "en").expect("renders");
        assert!(!email.html.contains("<script>"), "{}", email.html);
        assert!(email.html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{}", email.html);
        assert!(email.text.contains("Hello <script>alert(1)</script>,"), "{}", email.text);
        let email = templates.render(&Facts::Welcome, "Eve\r\nBcc: all@example.com", "en").expect("renders");
        assert_eq!(email.subject, "Welcome to Mercato, Eve Bcc: all@example.com");
    }
}
