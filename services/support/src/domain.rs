//! The rules of support tickets, free of I/O: the states and who moves them, what a ticket and a message
//! must hold, and the bounds of a listing.

pub mod attachments;
pub mod faq;
pub mod newsletter;

use api::mercato::support::v1::{AuthorRole, TicketStatus};
use platform::error::{FieldViolation, Violations};

pub use platform::error::check_id as validate_id;
pub use platform::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size};

/// Longest subject, in characters.
pub const MAX_SUBJECT: usize = 200;
/// Longest message, in characters.
pub const MAX_BODY: usize = 5000;
/// Longest name on the contact form, in characters.
pub const MAX_NAME: usize = 100;
/// Longest email address (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// Most messages one ticket holds.
pub const MAX_MESSAGES: i64 = 200;

/// The state of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the shop.
    Open,
    /// Answered; waiting for the customer.
    Pending,
    /// Settled.
    Resolved,
}

impl Status {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "OPEN",
            Status::Pending => "PENDING",
            Status::Resolved => "RESOLVED",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(name: &str) -> Option<Status> {
        [Status::Open, Status::Pending, Status::Resolved].into_iter().find(|s| s.as_str() == name)
    }

    /// The wire enum.
    pub fn to_wire(self) -> TicketStatus {
        match self {
            Status::Open => TicketStatus::Open,
            Status::Pending => TicketStatus::Pending,
            Status::Resolved => TicketStatus::Resolved,
        }
    }

    /// The state a wire value names; `None` for UNSPECIFIED and unknown numbers.
    pub fn from_wire(value: i32) -> Option<Status> {
        match TicketStatus::try_from(value).ok()? {
            TicketStatus::Unspecified => None,
            TicketStatus::Open => Some(Status::Open),
            TicketStatus::Pending => Some(Status::Pending),
            TicketStatus::Resolved => Some(Status::Resolved),
        }
    }
}

/// Who writes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    /// The ticket's customer.
    Customer,
    /// A support agent.
    Agent,
}

impl Author {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Author::Customer => "CUSTOMER",
            Author::Agent => "AGENT",
        }
    }

    /// The author a stored name stands for.
    pub fn parse(name: &str) -> Option<Author> {
        [Author::Customer, Author::Agent].into_iter().find(|a| a.as_str() == name)
    }

    /// The wire enum.
    pub fn to_wire(self) -> AuthorRole {
        match self {
            Author::Customer => AuthorRole::Customer,
            Author::Agent => AuthorRole::Agent,
        }
    }
}

/// The state a ticket moves to when `author` writes in it: the customer's message puts it before the shop
/// again, an agent's hands it to the customer.
pub fn after_message(author: Author) -> Status {
    match author {
        Author::Customer => Status::Open,
        Author::Agent => Status::Pending,
    }
}

/// A one-line text, trimmed: 1 to `max` characters without control characters (a subject, a question).
pub fn one_line(text: &str, max: usize) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        Err("is required".to_owned())
    } else if text.chars().count() > max {
        Err(format!("is longer than {max} characters"))
    } else if text.chars().any(char::is_control) {
        Err("must be one line without control characters".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// A text of several lines, trimmed: 1 to `max` characters; line breaks and tabs are fine, other control
/// characters are not (a message, an answer).
pub fn lines(text: &str, max: usize) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        Err("is required".to_owned())
    } else if text.chars().count() > max {
        Err(format!("is longer than {max} characters"))
    } else if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// A subject: [`one_line`], at most [`MAX_SUBJECT`] characters.
pub fn subject(text: &str) -> Result<String, String> {
    one_line(text, MAX_SUBJECT)
}

/// A message: [`lines`], at most [`MAX_BODY`] characters.
pub fn body(text: &str) -> Result<String, String> {
    lines(text, MAX_BODY)
}

/// An email address to answer at, trimmed: one `@` between a local part and a dotted domain, no spaces, at
/// most [`MAX_EMAIL`] characters. (Whether it receives mail only sending can tell.)
pub fn email(address: &str) -> Result<String, String> {
    let address = address.trim();
    let well_formed = address.len() <= MAX_EMAIL
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !address.chars().any(|c| c.is_whitespace() || c.is_control());
    if address.is_empty() {
        Err("is required".to_owned())
    } else if well_formed {
        Ok(address.to_owned())
    } else {
        Err("must be an email address".to_owned())
    }
}

/// A new ticket's fields, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    /// What it is about.
    pub subject: String,
    /// The first message.
    pub message: String,
    /// The order it is about; may be empty.
    pub order_id: String,
    /// The contact form's sender's email; empty for a customer's ticket.
    pub email: String,
    /// The contact form's sender's name; empty for a customer's ticket.
    pub name: String,
}

/// Checks a customer's new ticket; violations name the request's fields.
pub fn customer_ticket(subject_text: &str, message: &str, order_id: &str) -> Result<NewTicket, Vec<FieldViolation>> {
    let mut violations = Violations::new();
    let subject = subject(subject_text).map_err(|why| violations.add("subject", why)).unwrap_or_default();
    let message = body(message).map_err(|why| violations.add("message", why)).unwrap_or_default();
    let order_id = order_id.trim();
    if order_id.len() > 64 || order_id.chars().any(char::is_control) {
        violations.add("order_id", "is not an id");
    }
    violations.finish()?;
    Ok(NewTicket { subject, message, order_id: order_id.to_owned(), email: String::new(), name: String::new() })
}

/// Checks a contact form; violations name the request's fields.
pub fn contact_form(
    name_text: &str,
    email_text: &str,
    subject_text: &str,
    message: &str,
) -> Result<NewTicket, Vec<FieldViolation>> {
    let mut violations = Violations::new();
    let name = name_text.trim();
    if name.is_empty() {
        violations.add("name", "is required");
    } else if name.chars().count() > MAX_NAME {
        violations.add("name", format!("is longer than {MAX_NAME} characters"));
    } else if name.chars().any(char::is_control) {
        violations.add("name", "must not contain control characters");
    }
    let email = email(email_text).map_err(|why| violations.add("email", why)).unwrap_or_default();
    let subject = subject(subject_text).map_err(|why| violations.add("subject", why)).unwrap_or_default();
    let message = body(message).map_err(|why| violations.add("message", why)).unwrap_or_default();
    violations.finish()?;
    Ok(NewTicket { subject, message, order_id: String::new(), email, name: name.to_owned() })
}

/// Where a page of a newest-first listing starts: after the row (a ticket by its update time, a newsletter by
/// its send time) at `time` with id `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last listed row's time.
    pub time: i64,
    /// The last listed row's id.
    pub id: String,
}

/// The page token that continues after `cursor`.
pub fn page_token(cursor: &Cursor) -> String {
    format!("{}.{}", cursor.time, cursor.id)
}

/// The cursor a page token stands for; `None` for the first page.
pub fn parse_page_token(token: &str) -> Result<Option<Cursor>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || FieldViolation::new("page_token", "is not a token this service issued");
    let (time, id) = token.split_once('.').ok_or_else(bad)?;
    let time = time.parse::<i64>().map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad());
    }
    Ok(Some(Cursor { time, id: id.to_owned() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: Vec<FieldViolation>) -> Vec<String> {
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn names_and_wire_values_round_trip() {
        for status in [Status::Open, Status::Pending, Status::Resolved] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(Status::from_wire(status.to_wire() as i32), Some(status));
        }
        for author in [Author::Customer, Author::Agent] {
            assert_eq!(Author::parse(author.as_str()), Some(author));
        }
        assert_eq!(Status::from_wire(0), None);
    }

    #[test]
    fn who_writes_decides_whose_turn_it_is() {
        assert_eq!(after_message(Author::Customer), Status::Open);
        assert_eq!(after_message(Author::Agent), Status::Pending);
    }

    #[test]
    fn tickets_need_a_subject_and_a_message() {
        let ok = customer_ticket(" Where is my parcel? ", "Ordered last week.\nStill nothing.", "o-1").expect("valid");
        assert_eq!(
            (ok.subject.as_str(), ok.message.as_str()),
            ("Where is my parcel?", "Ordered last week.\nStill nothing.")
        );
        assert_eq!(fields(customer_ticket("", " ", "").expect_err("empty")), ["subject", "message"]);
        assert_eq!(fields(customer_ticket("a\nb", &"x".repeat(5001), "").expect_err("bad")), ["subject", "message"]);
    }

    #[test]
    fn the_contact_form_needs_an_address_to_answer_at() {
        let ok = contact_form(" Grace ", " grace@example.com ", "Hello", "Do you ship to Norway?").expect("valid");
        assert_eq!((ok.name.as_str(), ok.email.as_str()), ("Grace", "grace@example.com"));
        for bad in ["grace", "grace@", "@example.com", "grace@example", "gr ace@example.com", "a@b@c.com", "g@.com"] {
            assert_eq!(fields(contact_form("G", bad, "s", "m").expect_err(bad)), ["email"], "{bad}");
        }
        assert_eq!(fields(contact_form("", "", "", "").expect_err("empty")), ["name", "email", "subject", "message"]);
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_anything_else() {
        let cursor = Cursor { time: 1_700_000_000_000_000, id: "0190-abc".into() };
        assert_eq!(parse_page_token(&page_token(&cursor)), Ok(Some(cursor)));
        assert_eq!(parse_page_token(""), Ok(None));
        for bad in ["abc", "1.", "x.abc", "1.' OR 1=1"] {
            assert!(parse_page_token(bad).is_err(), "{bad}");
        }
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(500), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }
}
