//! The rules of notifications, free of I/O: which events are consumed, locales and their fallback, money
//! as people read it, the SMTP URL, webhook endpoints and their signatures, the retry schedule, statuses,
//! and the delivery log's paging.
//!
//! Field names in violations are proto field names (`page_size`, `url`), so clients can point at the
//! offending input.

use std::time::Duration;

use hmac::{Hmac, Mac};
use platform::error::FieldViolation;
use sha2::Sha256;

/// Event type of a new account.
pub const USER_REGISTERED: &str = "user.registered";
/// Event type of a paid order.
pub const ORDER_CONFIRMED: &str = "order.confirmed";
/// Event type of a failed checkout.
pub const ORDER_FAILED: &str = "order.failed";
/// Event type of a declined payment.
pub const PAYMENT_FAILED: &str = "payment.failed";
/// Event type of a refund given back.
pub const REFUND_COMPLETED: &str = "refund.completed";
/// Event type of a refund the payment processor refused (staff must find another way).
pub const REFUND_FAILED: &str = "refund.failed";
/// Event type of a shipment handed to a carrier.
pub const SHIPMENT_SHIPPED: &str = "shipment.shipped";
/// Event type of a shipment delivered.
pub const SHIPMENT_DELIVERED: &str = "shipment.delivered";
/// Event type of a new support ticket.
pub const TICKET_CREATED: &str = "ticket.created";
/// Event type of a product whose available units fell below the catalog's threshold.
pub const INVENTORY_LOW: &str = "inventory.low";
/// Event type of a product a customer waited for that is back in stock.
pub const STOCK_ALERT_TRIGGERED: &str = "stock_alert.triggered";
/// Event type of a support agent's answer.
pub const TICKET_REPLIED: &str = "ticket.replied";
/// Event type of an address asking for the newsletter (to be confirmed).
pub const NEWSLETTER_SUBSCRIPTION_REQUESTED: &str = "newsletter.subscription_requested";
/// Event type of a newsletter for one subscriber.
pub const NEWSLETTER_ISSUED: &str = "newsletter.issued";
/// Event type of a password reset asked for (its token goes to the account's address).
pub const PASSWORD_RESET_REQUESTED: &str = "user.password_reset_requested";
/// Event type of an address to verify (its token goes to that address).
pub const EMAIL_VERIFICATION_REQUESTED: &str = "user.email_verification_requested";
/// Event type of a move to another address asked for (its token goes to the new address).
pub const EMAIL_CHANGE_REQUESTED: &str = "user.email_change_requested";
/// Event type of an account moved to another address (the directory follows).
pub const EMAIL_CHANGED: &str = "user.email_changed";
/// Event type of an email change made, for the address the account had (told, with the token that undoes it).
pub const EMAIL_CHANGE_CONFIRMED: &str = "user.email_change_confirmed";
/// Event type of a password changed (its owner is told).
pub const PASSWORD_CHANGED: &str = "user.password_changed";
/// Event type of a deleted account (its traces here are erased; the address is told).
pub const USER_DELETED: &str = "user.deleted";
/// Event type of an account whose roles staff changed (its owner is told).
pub const USER_ROLES_CHANGED: &str = "user.roles_changed";
/// Event type of an account staff disabled (its owner is told).
pub const USER_DISABLED: &str = "user.disabled";
/// Event type of an account staff enabled again (its owner is told).
pub const USER_ENABLED: &str = "user.enabled";
/// Event type of a return a customer asked for (the shop's inbox is told: staff decide).
pub const RETURN_REQUESTED: &str = "return.requested";
/// Event type of a return staff approved (the customer sends the items back).
pub const RETURN_APPROVED: &str = "return.approved";
/// Event type of a return staff rejected (the customer is told why).
pub const RETURN_REJECTED: &str = "return.rejected";
/// Event type of a return whose items arrived (the customer is told what is refunded).
pub const RETURN_RECEIVED: &str = "return.received";
/// Event type of a customer's review that waits for staff to publish it (the shop's inbox is told).
pub const REVIEW_SUBMITTED: &str = "review.submitted";
/// Event type this service publishes when a notification was delivered.
pub const NOTIFICATION_SENT: &str = "notification.sent";
/// Event type this service publishes when every attempt of a notification failed.
pub const NOTIFICATION_FAILED: &str = "notification.failed";

/// The event types the service consumes, with the full name of the payload message of each (the catalog in
/// `proto/mercato/events/v1/envelope.proto`). Webhook endpoints may subscribe to exactly these.
pub const CONSUMED: &[(&str, &str)] = &[
    (USER_REGISTERED, "mercato.auth.v1.UserRegistered"),
    (ORDER_CONFIRMED, "mercato.orders.v1.OrderConfirmed"),
    (ORDER_FAILED, "mercato.orders.v1.OrderFailed"),
    (PAYMENT_FAILED, "mercato.payments.v1.PaymentFailed"),
    (REFUND_COMPLETED, "mercato.refunds.v1.RefundCompleted"),
    (REFUND_FAILED, "mercato.refunds.v1.RefundFailed"),
    (SHIPMENT_SHIPPED, "mercato.deliveries.v1.ShipmentShipped"),
    (SHIPMENT_DELIVERED, "mercato.deliveries.v1.ShipmentDelivered"),
    (TICKET_CREATED, "mercato.support.v1.TicketCreated"),
    (INVENTORY_LOW, "mercato.catalog.v1.InventoryLow"),
    (STOCK_ALERT_TRIGGERED, "mercato.catalog.v1.StockAlertTriggered"),
    (TICKET_REPLIED, "mercato.support.v1.TicketReplied"),
    (NEWSLETTER_SUBSCRIPTION_REQUESTED, "mercato.support.v1.NewsletterSubscriptionRequested"),
    (NEWSLETTER_ISSUED, "mercato.support.v1.NewsletterIssued"),
    (PASSWORD_RESET_REQUESTED, "mercato.auth.v1.PasswordResetRequested"),
    (EMAIL_VERIFICATION_REQUESTED, "mercato.auth.v1.EmailVerificationRequested"),
    (EMAIL_CHANGE_REQUESTED, "mercato.auth.v1.EmailChangeRequested"),
    (EMAIL_CHANGED, "mercato.auth.v1.EmailChanged"),
    (EMAIL_CHANGE_CONFIRMED, "mercato.auth.v1.EmailChangeConfirmed"),
    (PASSWORD_CHANGED, "mercato.auth.v1.PasswordChanged"),
    (USER_DELETED, "mercato.auth.v1.UserDeleted"),
    (USER_ROLES_CHANGED, "mercato.auth.v1.UserRolesChanged"),
    (USER_DISABLED, "mercato.auth.v1.UserDisabled"),
    (USER_ENABLED, "mercato.auth.v1.UserEnabled"),
    (RETURN_REQUESTED, "mercato.orders.v1.ReturnRequested"),
    (RETURN_APPROVED, "mercato.orders.v1.ReturnApproved"),
    (RETURN_REJECTED, "mercato.orders.v1.ReturnRejected"),
    (RETURN_RECEIVED, "mercato.orders.v1.ReturnReceived"),
    (REVIEW_SUBMITTED, "mercato.catalog.v1.ReviewSubmitted"),
    // Webhooks only (see WEBHOOKS_ONLY).
    ("order.placed", "mercato.orders.v1.OrderPlaced"),
    ("order.cancelled", "mercato.orders.v1.OrderCancelled"),
    ("return.refunded", "mercato.orders.v1.ReturnRefunded"),
    ("return.cancelled", "mercato.orders.v1.ReturnCancelled"),
    ("payment.captured", "mercato.payments.v1.PaymentCaptured"),
    ("payment.refunded", "mercato.payments.v1.PaymentRefunded"),
    ("product.created", "mercato.catalog.v1.ProductCreated"),
    ("product.updated", "mercato.catalog.v1.ProductUpdated"),
    ("inventory.adjusted", "mercato.catalog.v1.InventoryAdjusted"),
    ("shipment.created", "mercato.deliveries.v1.ShipmentCreated"),
    ("shipment.cancelled", "mercato.deliveries.v1.ShipmentCancelled"),
    ("ticket.resolved", "mercato.support.v1.TicketResolved"),
    ("ledger.transaction.recorded", "mercato.ledger.v1.TransactionRecorded"),
    ("user.email_verified", "mercato.auth.v1.EmailVerified"),
];

/// Consumed event types nobody is mailed of: they are here for the webhook endpoints subscribed to them (a
/// fulfilment partner hears of `shipment.created`, a marketplace of `product.updated`), and an event of these
/// types with no endpoint subscribed leaves nothing behind but its inbox row. Not this service's own
/// `notification.*` (a webhook delivery would announce itself, without end) nor `cart.item_added` (every click
/// of every shopper).
pub const WEBHOOKS_ONLY: &[&str] = &[
    "order.placed",
    "order.cancelled",
    "return.refunded",
    "return.cancelled",
    "payment.captured",
    "payment.refunded",
    "product.created",
    "product.updated",
    "inventory.adjusted",
    "shipment.created",
    "shipment.cancelled",
    "ticket.resolved",
    "ledger.transaction.recorded",
    "user.email_verified",
];

/// Consumed event types that carry a secret meant for one mailbox (a password-reset, email-verification or
/// email-change token, the token undoing an email change, a subscription's confirmation or unsubscribe token): they are mailed to it and never sent
/// to webhooks, whose endpoints would otherwise hold every customer's reset tokens.
pub const MAIL_ONLY: &[&str] = &[
    PASSWORD_RESET_REQUESTED,
    EMAIL_VERIFICATION_REQUESTED,
    EMAIL_CHANGE_REQUESTED,
    EMAIL_CHANGE_CONFIRMED,
    NEWSLETTER_SUBSCRIPTION_REQUESTED,
    NEWSLETTER_ISSUED,
];

/// Consumed event types mailed to the shop's own inbox (`MERCATO_SUPPORT_EMAIL`): new tickets, products running
/// low, refused refunds, returns to decide and reviews waiting to be published. Those mails need no Reply-To
/// pointing back at the inbox.
pub const TO_THE_SHOP: &[&str] = &[TICKET_CREATED, INVENTORY_LOW, REFUND_FAILED, RETURN_REQUESTED, REVIEW_SUBMITTED];

/// Whether events of `event_type` may go to webhooks (see [`MAIL_ONLY`]).
pub fn webhooks_may_receive(event_type: &str) -> bool {
    !MAIL_ONLY.contains(&event_type)
}

/// The payload message of a consumed event type.
pub fn payload_message(event_type: &str) -> Option<&'static str> {
    CONSUMED.iter().find(|(t, _)| *t == event_type).map(|(_, message)| *message)
}

// ---------------------------------------------------------------------------------------------------------
// Locales.

/// Locales with templates; the first is the fallback of last resort.
pub const LOCALES: &[&str] = &["en", "de"];

/// The shipped locale to write in for a BCP 47 tag: the tag itself, else its language ("de-AT" → "de"),
/// else English. Case and `_` separators are forgiven.
pub fn resolve_locale(tag: &str) -> &'static str {
    let tag = tag.trim().to_ascii_lowercase().replace('_', "-");
    let language = tag.split('-').next().unwrap_or_default();
    LOCALES
        .iter()
        .copied()
        .find(|l| *l == tag)
        .or_else(|| LOCALES.iter().copied().find(|l| *l == language))
        .unwrap_or(LOCALES[0])
}

// ---------------------------------------------------------------------------------------------------------
// Money.

/// An amount: minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Money {
    /// Upper-case currency code, e.g. `EUR`.
    pub currency: String,
    /// Amount in minor units (cents for EUR, yen for JPY).
    pub amount_minor: i64,
}

/// `EUR 19.99`, `JPY 500`: the code, then the amount with the currency's digits ([`platform::money::format`]).
pub fn format_money(money: &Money) -> String {
    platform::money::format(&money.currency, money.amount_minor)
}

pub use platform::money::format_rate;

// ---------------------------------------------------------------------------------------------------------
// SMTP.

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No TLS (`smtp://`): for a relay on the same host or network.
    Plain,
    /// STARTTLS after connecting (`smtp://...?tls=starttls`), required.
    StartTls,
    /// TLS from the first byte (`smtps://`).
    ImplicitTls,
}

/// Where and how mail is sent, from `MERCATO_SMTP_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// The protection of the connection.
    pub security: SmtpSecurity,
    /// Host name or IP address.
    pub host: String,
    /// TCP port: as given, else 25 (`smtp://`), 587 (STARTTLS) or 465 (`smtps://`).
    pub port: u16,
    /// User name and password, when the URL carries them.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpConfig {
    // The password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("security", &self.security)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// Parses `smtp://[user:pass@]host[:port][?tls=starttls]` or `smtps://[user:pass@]host[:port]`. The error
/// says what is wrong, without the password.
pub fn parse_smtp_url(raw: &str) -> Result<SmtpConfig, String> {
    let expected = "expected smtp://user:pass@host:port, smtps://... for implicit TLS, or ?tls=starttls";
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("not a URL ({e}); {expected}"))?;
    let mut security = match url.scheme() {
        "smtp" => SmtpSecurity::Plain,
        "smtps" => SmtpSecurity::ImplicitTls,
        other => return Err(format!("scheme {other:?} is not smtp or smtps; {expected}")),
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(format!("no host; {expected}")),
    };
    if !matches!(url.path(), "" | "/") {
        return Err(format!("unexpected path {:?}; {expected}", url.path()));
    }
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("tls", "starttls") if security == SmtpSecurity::Plain => security = SmtpSecurity::StartTls,
            ("tls", "starttls") => return Err("tls=starttls goes with smtp://, smtps:// is TLS already".to_owned()),
            ("tls", other) => return Err(format!("tls={other:?} is not supported; the only option is tls=starttls")),
            (other, _) => return Err(format!("unknown parameter {other:?}; the only one is tls=starttls")),
        }
    }
    let decode =
        |s: &str| percent_decode(s).ok_or_else(|| "user or password is not valid percent-encoded UTF-8".to_owned());
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) => return Err(format!("a password without a user; {expected}")),
        (user, password) => Some((decode(user)?, decode(password.unwrap_or_default())?)),
    };
    let port = url.port().unwrap_or(match security {
        SmtpSecurity::Plain => 25,
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::ImplicitTls => 465,
    });
    Ok(SmtpConfig { security, host, port, credentials })
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------------------------
// Webhooks.

/// Longest endpoint URL accepted.
pub const MAX_URL_CHARS: usize = 2000;
/// The header carrying a delivery's signature.
pub const SIGNATURE_HEADER: &str = "Mercato-Signature";

/// Checks an endpoint's URL: required, http or https with a host, at most [`MAX_URL_CHARS`], no userinfo
/// (credentials in URLs end up in logs).
pub fn validate_webhook_url(raw: &str) -> Result<(), FieldViolation> {
    let bad = |why: &str| Err(FieldViolation::new("url", why));
    if raw.is_empty() {
        return bad("is required");
    }
    if raw.chars().count() > MAX_URL_CHARS {
        return bad(&format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let Ok(url) = url::Url::parse(raw) else { return bad("must be an http or https URL") };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return bad("must be an http or https URL");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry a user or password");
    }
    Ok(())
}

/// Whether `ip` is an address on the public internet: webhooks go only there unless private networks are
/// allowed, so that an endpoint URL cannot make the service reach inside the cluster, the cloud's metadata
/// service or the machine itself (server-side request forgery).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

/// Checks the event types an endpoint asks for: at least one, each one the service consumes, no repeats.
pub fn validate_event_types(types: &[String]) -> Vec<FieldViolation> {
    if types.is_empty() {
        return vec![FieldViolation::new("event_types", "must name at least one event type")];
    }
    let known = CONSUMED.iter().map(|(t, _)| *t).filter(|t| webhooks_may_receive(t)).collect::<Vec<_>>().join(", ");
    let mut violations = Vec::new();
    for (i, t) in types.iter().enumerate() {
        if payload_message(t).is_some() && !webhooks_may_receive(t) {
            let why = format!("{t:?} carries a secret for one mailbox and is only mailed");
            violations.push(FieldViolation::new(format!("event_types[{i}]"), why));
        } else if payload_message(t).is_none() {
            violations.push(FieldViolation::new(format!("event_types[{i}]"), format!("{t:?} is not one of {known}")));
        } else if types[..i].contains(t) {
            violations.push(FieldViolation::new(format!("event_types[{i}]"), format!("{t:?} is named twice")));
        }
    }
    violations
}

/// A new signing secret: `whsec_` and 32 random bytes.
pub fn new_webhook_secret() -> String {
    format!("whsec_{}", platform::auth::generate_secret())
}

/// The `Mercato-Signature` value of `body` sent at `unix_seconds`: `t=<seconds>,v1=<hex HMAC-SHA256(secret,
/// "<seconds>.<body>")>`. The timestamp is signed too, so a receiver can refuse old (replayed) deliveries.
pub fn signature(secret: &str, unix_seconds: i64, body: &str) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(format!("{unix_seconds}.").as_bytes());
    mac.update(body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

// ---------------------------------------------------------------------------------------------------------
// Retries.

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The wait after the `attempts`-th failed attempt: `base`, then doubling (`base * 2^(attempts-1)`), at
/// most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
    base.checked_mul(factor).unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF)
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again this long from now.
    RetryIn(Duration),
    /// Give up: the notification is FAILED.
    GiveUp,
}

/// After `attempts` attempts (this one included) of at most `max_attempts`, of which the last failed
/// (`permanent`: retrying cannot help, e.g. a malformed address).
pub fn after_failure(base: Duration, attempts: u32, max_attempts: u32, permanent: bool) -> AfterFailure {
    if permanent || attempts >= max_attempts {
        AfterFailure::GiveUp
    } else {
        AfterFailure::RetryIn(backoff(base, attempts))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Statuses and channels, as stored.

/// Where a notification stands (stored as its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for an attempt.
    Pending,
    /// Delivered.
    Sent,
    /// Every attempt failed.
    Failed,
    /// Not sent on purpose, with a reason.
    Skipped,
    /// Written to the log because no SMTP server is configured.
    Logged,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Sent => "SENT",
            Status::Failed => "FAILED",
            Status::Skipped => "SKIPPED",
            Status::Logged => "LOGGED",
        }
    }

    /// From the stored name.
    pub fn parse(stored: &str) -> Option<Self> {
        [Status::Pending, Status::Sent, Status::Failed, Status::Skipped, Status::Logged]
            .into_iter()
            .find(|s| s.as_str() == stored)
    }
}

/// How a notification travels (stored as its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Email to a user.
    Email,
    /// POST to a webhook endpoint.
    Webhook,
}

impl Channel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "EMAIL",
            Channel::Webhook => "WEBHOOK",
        }
    }

    /// From the stored name.
    pub fn parse(stored: &str) -> Option<Self> {
        [Channel::Email, Channel::Webhook].into_iter().find(|c| c.as_str() == stored)
    }
}

// ---------------------------------------------------------------------------------------------------------
// The delivery log's pages.

/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page.
pub const MAX_PAGE_SIZE: i64 = 200;

/// The page size of a request, as every listing takes it (AIP-158): 0 means the default, more than
/// [`MAX_PAGE_SIZE`] means [`MAX_PAGE_SIZE`], negative is refused.
pub fn page_size(requested: i32) -> Result<i64, FieldViolation> {
    platform::paging::page_size_within(requested, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
}

/// Where a page starts: after the notification with this create time and id (newest first).
pub use platform::paging::KeyCursor as Cursor;

/// Whose notifications a ListNotifications shows: an administrator's filter (empty: everyone's), or the
/// caller's own. `Err` when a customer names someone else.
pub fn list_target(caller: &str, is_admin: bool, requested: &str) -> Result<Option<String>, FieldViolation> {
    if is_admin {
        return Ok(Some(requested.to_owned()).filter(|r| !r.is_empty()));
    }
    if requested.is_empty() || requested == caller {
        return Ok(Some(caller.to_owned()));
    }
    Err(FieldViolation::new("user_id", "may only name the caller without the scope notifications:admin"))
}

/// A mail's `List-Unsubscribe` header (RFC 2369), and whether it takes a one-click unsubscribe (RFC 8058).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListUnsubscribe {
    /// The http(s) URL.
    pub url: String,
    /// Whether a POST of the form `List-Unsubscribe=One-Click` to `url` unsubscribes at once (the gateway's
    /// route does; a storefront page is for a person to open), announced with `List-Unsubscribe-Post`.
    pub one_click: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_fall_back_to_the_language_then_english() {
        assert_eq!(resolve_locale("de-AT"), "de");
        assert_eq!(resolve_locale("de"), "de");
        assert_eq!(resolve_locale("DE_ch"), "de");
        assert_eq!(resolve_locale("en-GB"), "en");
        assert_eq!(resolve_locale("fr-FR"), "en");
        assert_eq!(resolve_locale(""), "en");
        assert_eq!(resolve_locale("  "), "en");
    }

    #[test]
    fn smtp_urls_in_every_form() {
        let plain = parse_smtp_url("smtp://mail.internal").expect("plain");
        assert_eq!(
            plain,
            SmtpConfig { security: SmtpSecurity::Plain, host: "mail.internal".into(), port: 25, credentials: None }
        );
        let auth = parse_smtp_url("smtp://user%40shop:p%3Ass@127.0.0.1:2525").expect("with credentials");
        assert_eq!(auth.security, SmtpSecurity::Plain);
        assert_eq!((auth.host.as_str(), auth.port), ("127.0.0.1", 2525));
        assert_eq!(auth.credentials, Some(("user@shop".into(), "p:ss".into())));
        let starttls = parse_smtp_url("smtp://u:p@smtp.example.com?tls=starttls").expect("starttls");
        assert_eq!((starttls.security, starttls.port), (SmtpSecurity::StartTls, 587));
        let starttls = parse_smtp_url("smtp://smtp.example.com:25/?tls=starttls").expect("starttls, own port");
        assert_eq!((starttls.security, starttls.port), (SmtpSecurity::StartTls, 25));
        let implicit = parse_smtp_url("smtps://u:p@smtp.example.com").expect("smtps");
        assert_eq!((implicit.security, implicit.port), (SmtpSecurity::ImplicitTls, 465));
        let user_only = parse_smtp_url("smtps://apikey@smtp.example.com:2465").expect("user only");
        assert_eq!((user_only.credentials, user_only.port), (Some(("apikey".into(), String::new())), 2465));
        let v6 = parse_smtp_url("smtp://[::1]:1025").expect("ipv6");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1025));
        assert!(!format!("{auth:?}").contains("p:ss"), "the password stays out of logs");
    }

    #[test]
    fn bad_smtp_urls_say_why() {
        for (raw, needle) in [
            ("mail.example.com", "not a URL"),
            ("mail.example.com:25", "is not smtp or smtps"),
            ("http://mail.example.com", "scheme \"http\""),
            ("smtp://", "no host"),
            ("smtp://:secret@host", "password without a user"),
            ("smtp://host:99999", "not a URL"),
            ("smtp://host/relay", "unexpected path"),
            ("smtp://host?tls=required", "tls=\"required\""),
            ("smtps://host?tls=starttls", "TLS already"),
            ("smtp://host?timeout=5", "unknown parameter \"timeout\""),
            ("smtp://u:%ff@host", "percent-encoded"),
        ] {
            let err = parse_smtp_url(raw).expect_err(raw);
            assert!(err.contains(needle), "{raw}: {err}");
        }
        let err = parse_smtp_url("smtp://u:%zz-secret@host").expect_err("bad escape");
        assert!(!err.contains("secret"), "the password stays out of errors: {err}");
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_of_time_and_body() {
        // Computed independently: python3 -c 'hmac.new(b"whsec_test", b"1700000000.{\"id\":\"e1\"}", sha256)'.
        let sig = signature("whsec_test", 1_700_000_000, r#"{"id":"e1"}"#);
        assert_eq!(sig, "t=1700000000,v1=6a85cb117c993612a34c72b4cfb5a16baed25a80d26e298ce0e6671320fd07c8");
        assert_ne!(sig, signature("whsec_other", 1_700_000_000, r#"{"id":"e1"}"#), "the secret matters");
        assert_ne!(sig, signature("whsec_test", 1_700_000_001, r#"{"id":"e1"}"#), "the time is signed");
        assert_ne!(sig, signature("whsec_test", 1_700_000_000, r#"{"id":"e2"}"#), "the body is signed");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_gives_up_after_the_last_attempt() {
        let base = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=6).map(|n| backoff(base, n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920]);
        assert_eq!(backoff(base, 7), MAX_BACKOFF);
        assert_eq!(backoff(base, 200), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_millis(10), 3), Duration::from_millis(40));
        assert_eq!(after_failure(base, 1, 6, false), AfterFailure::RetryIn(Duration::from_secs(60)));
        assert_eq!(after_failure(base, 5, 6, false), AfterFailure::RetryIn(Duration::from_secs(960)));
        assert_eq!(after_failure(base, 6, 6, false), AfterFailure::GiveUp);
        assert_eq!(after_failure(base, 1, 6, true), AfterFailure::GiveUp);
    }

    #[test]
    fn webhook_endpoints_are_validated() {
        assert!(validate_webhook_url("https://hooks.example.com/mercato").is_ok());
        assert!(validate_webhook_url("http://127.0.0.1:8080/in").is_ok());
        for bad in ["", "ftp://x.example", "hooks.example.com", "https://user:pw@x.example/", "mailto:a@b.c"] {
            assert_eq!(validate_webhook_url(bad).map_err(|v| v.field), Err("url".to_owned()), "{bad:?}");
        }
        assert!(validate_webhook_url(&format!("https://x.example/{}", "a".repeat(2000))).is_err());
        assert!(validate_event_types(&["order.confirmed".into(), "refund.completed".into()]).is_empty());
        let fields = |v: Vec<FieldViolation>| v.into_iter().map(|v| v.field).collect::<Vec<_>>();
        assert_eq!(fields(validate_event_types(&[])), ["event_types"]);
        assert_eq!(
            fields(validate_event_types(&["order.confirmed".into(), "order.shipped".into(), "order.confirmed".into()])),
            ["event_types[1]", "event_types[2]"]
        );
        let secrets = validate_event_types(&["user.password_changed".into(), "user.password_reset_requested".into()]);
        assert_eq!(fields(secrets.clone()), ["event_types[1]"], "the owner's notice may go out, the token not");
        assert!(secrets[0].description.contains("only mailed"), "{secrets:?}");
        let verification =
            validate_event_types(&["user.email_verified".into(), "user.email_verification_requested".into()]);
        assert_eq!(fields(verification), ["event_types[1]"], "that it was verified may go out, the code not");
        let change = validate_event_types(&[
            "user.email_change_requested".into(),
            "user.email_changed".into(),
            "user.email_change_confirmed".into(),
        ]);
        assert_eq!(
            fields(change),
            ["event_types[0]", "event_types[2]"],
            "that the address changed may go out, codes not"
        );
        let secret = new_webhook_secret();
        assert!(secret.starts_with("whsec_") && secret.len() > 40 && secret != new_webhook_secret());
    }

    #[test]
    fn pages_and_targets() {
        assert_eq!(page_size(0), Ok(50));
        assert_eq!(page_size(200), Ok(200));
        assert_eq!(page_size(201), Ok(200), "more than the largest page is the largest page (AIP-158)");
        assert!(page_size(-1).is_err());
        assert_eq!(list_target("alice", false, ""), Ok(Some("alice".into())));
        assert_eq!(list_target("alice", false, "alice"), Ok(Some("alice".into())));
        assert!(list_target("alice", false, "bob").is_err());
        assert_eq!(list_target("admin", true, ""), Ok(None));
        assert_eq!(list_target("admin", true, "bob"), Ok(Some("bob".into())));
        for s in [Status::Pending, Status::Sent, Status::Failed, Status::Skipped, Status::Logged] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Channel::parse("WEBHOOK"), Some(Channel::Webhook));
        assert_eq!(payload_message("refund.completed"), Some("mercato.refunds.v1.RefundCompleted"));
    }
}
