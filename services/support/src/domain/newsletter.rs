//! The rules of the newsletter: double opt-in (an address is mailed only after it confirmed), how long a
//! confirmation token lasts, how often an address waiting for it is mailed again, and what a newsletter holds.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform::error::{FieldViolation, Violations};
use rand::RngCore;

/// A confirmation token is good this long after it was mailed, in microseconds (a week).
pub const CONFIRM_WITHIN_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
/// An address waiting for its confirmation is mailed again at most this often, in microseconds (10 minutes):
/// asking over and over cannot flood a mailbox.
pub const RESEND_AFTER_MICROS: i64 = 10 * 60 * 1_000_000;
/// Longest subject line, in characters.
pub const MAX_SUBJECT: usize = 200;
/// Longest newsletter text, in characters.
pub const MAX_BODY: usize = 20_000;
/// Longest locale tag (BCP 47's practical limit).
pub const MAX_LOCALE: usize = 35;
/// Longest request id.
pub const MAX_REQUEST_ID: usize = 64;

/// The state of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// Asked for; waiting for its address to confirm.
    Pending,
    /// Confirmed: newsletters go to it.
    Confirmed,
    /// Ended by its address.
    Unsubscribed,
}

impl Subscription {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::Pending => "PENDING",
            Subscription::Confirmed => "CONFIRMED",
            Subscription::Unsubscribed => "UNSUBSCRIBED",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        [Subscription::Pending, Subscription::Confirmed, Subscription::Unsubscribed]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// What asking for the newsletter does to an address in `current` state (`None`: never asked), last mailed
/// at `requested` (microseconds), `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSubscribe {
    /// Mail it a new confirmation token and wait (new, unsubscribed, or waiting long enough).
    MailConfirmation,
    /// Nothing: it is subscribed, or was mailed a moment ago.
    Nothing,
}

/// See [`OnSubscribe`].
pub fn on_subscribe(current: Option<(Subscription, i64)>, now: i64) -> OnSubscribe {
    match current {
        Some((Subscription::Confirmed, _)) => OnSubscribe::Nothing,
        Some((Subscription::Pending, requested)) if now - requested < RESEND_AFTER_MICROS => OnSubscribe::Nothing,
        _ => OnSubscribe::MailConfirmation,
    }
}

/// Whether a token mailed at `requested` still confirms at `now`.
pub fn token_fresh(requested: i64, now: i64) -> bool {
    now - requested <= CONFIRM_WITHIN_MICROS
}

/// A new secret token: 32 random bytes, URL-safe base64 (43 characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks a token from a request: present and shaped like one [`new_token`] makes.
pub fn check_token(token: &str) -> Result<(), FieldViolation> {
    if token.is_empty() {
        Err(FieldViolation::new("token", "is required"))
    } else if token.len() != 43 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Err(FieldViolation::new("token", "is not a token this service mailed"))
    } else {
        Ok(())
    }
}

/// What a mail client sends with a one-click unsubscribe (RFC 8058): the form `List-Unsubscribe=One-Click`.
pub const ONE_CLICK: &str = "One-Click";

/// Checks an unsubscribe request: its token, and the one-click marker when one is sent (anything but
/// [`ONE_CLICK`] is a client that means something else, refused rather than guessed at).
pub fn check_unsubscribe(token: &str, list_unsubscribe: &str) -> Result<(), Vec<FieldViolation>> {
    let mut violations = Violations::new();
    if let Err(bad) = check_token(token) {
        violations.add(bad.field, bad.description);
    }
    violations.check(
        !list_unsubscribe.is_empty() && list_unsubscribe != ONE_CLICK,
        "list_unsubscribe",
        "must be One-Click when set (RFC 8058)",
    );
    violations.finish()
}

/// An address as stored and compared: trimmed, checked, lower-cased (so one mailbox is one subscription).
pub fn subscriber_email(address: &str) -> Result<String, FieldViolation> {
    super::email(address).map(|e| e.to_lowercase()).map_err(|why| FieldViolation::new("email", why))
}

/// The page token that continues a listing of subscribers after `email` (opaque: the address in URL-safe base64).
pub fn subscriber_page_token(email: &str) -> String {
    URL_SAFE_NO_PAD.encode(email)
}

/// The address a subscribers' page token continues after; `None` for the first page.
pub fn parse_subscriber_page_token(token: &str) -> Result<Option<String>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || FieldViolation::new("page_token", "is not a token this service issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let email = String::from_utf8(bytes).map_err(|_| bad())?;
    if email.is_empty() || email.len() > 320 {
        return Err(bad());
    }
    Ok(Some(email))
}

/// A locale tag, trimmed: letters, digits, `-` and `_`, at most [`MAX_LOCALE`]; empty is the shop's default.
pub fn locale(tag: &str) -> Result<String, FieldViolation> {
    let tag = tag.trim();
    if tag.len() > MAX_LOCALE || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(FieldViolation::new("locale", "must be a language tag such as en or de-AT"));
    }
    Ok(tag.to_owned())
}

/// A newsletter to send, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNewsletter {
    /// The subject line, one line.
    pub subject: String,
    /// The text; line breaks kept.
    pub body: String,
    /// The client's retry key; empty when none was given.
    pub request_id: String,
}

/// Checks a newsletter to send; violations name the request's fields.
pub fn newsletter(subject: &str, body: &str, request_id: &str) -> Result<NewNewsletter, Vec<FieldViolation>> {
    let mut violations = Violations::new();
    let subject = super::one_line(subject, MAX_SUBJECT).map_err(|why| violations.add("subject", why));
    let body = super::lines(body, MAX_BODY).map_err(|why| violations.add("body", why));
    let request_id = request_id.trim();
    if request_id.len() > MAX_REQUEST_ID || request_id.chars().any(char::is_control) {
        violations.add("request_id", format!("must be at most {MAX_REQUEST_ID} characters without control characters"));
    }
    match (subject, body) {
        (Ok(subject), Ok(body)) if violations.is_empty() => {
            Ok(NewNewsletter { subject, body, request_id: request_id.to_owned() })
        }
        _ => Err(violations.into_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60 * 1_000_000;

    #[test]
    fn an_unsubscribe_takes_a_token_and_at_most_the_one_click_marker() {
        let token = new_token();
        assert_eq!(check_unsubscribe(&token, ""), Ok(()));
        assert_eq!(check_unsubscribe(&token, "One-Click"), Ok(()));
        let fields = |r: Result<(), Vec<FieldViolation>>| -> Vec<String> {
            r.expect_err("refused").into_iter().map(|v| v.field).collect()
        };
        assert_eq!(fields(check_unsubscribe(&token, "one-click please")), ["list_unsubscribe"]);
        assert_eq!(fields(check_unsubscribe("", "Yes")), ["token", "list_unsubscribe"]);
    }

    #[test]
    fn an_address_is_mailed_until_it_confirms_but_not_every_moment() {
        let now = 1_000 * MINUTE;
        assert_eq!(on_subscribe(None, now), OnSubscribe::MailConfirmation);
        assert_eq!(on_subscribe(Some((Subscription::Pending, now - MINUTE)), now), OnSubscribe::Nothing);
        assert_eq!(on_subscribe(Some((Subscription::Pending, now - 11 * MINUTE)), now), OnSubscribe::MailConfirmation);
        assert_eq!(on_subscribe(Some((Subscription::Confirmed, now)), now), OnSubscribe::Nothing);
        assert_eq!(on_subscribe(Some((Subscription::Unsubscribed, now)), now), OnSubscribe::MailConfirmation);
    }

    #[test]
    fn tokens_are_random_last_a_week_and_are_checked() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(check_token(&a).is_ok());
        for bad in ["", "short", "' OR 1=1 --", &"a".repeat(44)] {
            assert_eq!(check_token(bad).expect_err(bad).field, "token");
        }
        assert!(token_fresh(0, CONFIRM_WITHIN_MICROS));
        assert!(!token_fresh(0, CONFIRM_WITHIN_MICROS + 1));
    }

    #[test]
    fn addresses_are_one_per_mailbox_and_newsletters_are_checked() {
        assert_eq!(subscriber_email(" Ada@Example.COM "), Ok("ada@example.com".to_owned()));
        assert_eq!(subscriber_email("nope").expect_err("bad").field, "email");
        let token = subscriber_page_token("ada@example.com");
        assert_eq!(parse_subscriber_page_token(&token), Ok(Some("ada@example.com".to_owned())));
        assert_eq!(parse_subscriber_page_token(""), Ok(None));
        for bad in ["ada@example.com", "!!!", &URL_SAFE_NO_PAD.encode([0xff, 0xfe])] {
            assert_eq!(parse_subscriber_page_token(bad).expect_err(bad).field, "page_token");
        }
        assert_eq!(locale(" de-AT "), Ok("de-AT".to_owned()));
        assert!(locale("de AT").is_err());
        let fields = |v: Vec<FieldViolation>| v.into_iter().map(|v| v.field).collect::<Vec<_>>();
        assert_eq!(
            fields(newsletter("a\nb", "", &"r".repeat(65)).expect_err("bad")),
            ["subject", "body", "request_id"]
        );
        assert_eq!(newsletter(" Spring sale ", "10% off.\nAll week.", "").expect("ok").subject, "Spring sale");
    }
}
