//! The ways out: email over SMTP (lettre; or the log when no SMTP server is configured) and webhooks over
//! HTTP (reqwest). Each attempt reports whether it was delivered, or why not and whether retrying can help.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::domain::{self, ListUnsubscribe, SmtpConfig, SmtpSecurity};
use crate::error::Error;

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// That a mail was sent by a program, not a person (RFC 3834).
const AUTO_SUBMITTED: HeaderName = HeaderName::new_from_ascii_str("Auto-Submitted");
/// Where a mail client's "unsubscribe" goes (RFC 2369).
const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
/// That a POST there unsubscribes at once (RFC 8058).
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");
/// Which list a bulk mail belongs to (RFC 2919), for mail clients' filters and providers' sender reputation.
const LIST_ID: HeaderName = HeaderName::new_from_ascii_str("List-Id");

/// One email to send: a text and an HTML alternative, to one address.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingEmail<'a> {
    /// The notification's id: the mail's `Message-ID` is made of it, so every attempt at one notification
    /// sends the same id (a retry after an answer that was lost is recognised as the same mail).
    pub id: &'a str,
    /// The recipient's address.
    pub to: &'a str,
    /// One line.
    pub subject: &'a str,
    /// The plain-text body.
    pub text: &'a str,
    /// The HTML body.
    pub html: &'a str,
    /// Whether it is the newsletter (bulk mail): it names its list (`List-Id`).
    pub newsletter: bool,
    /// The `List-Unsubscribe` headers of bulk mail.
    pub list_unsubscribe: Option<&'a ListUnsubscribe>,
    /// Where answers go (`Reply-To`), when not to the sender.
    pub reply_to: Option<&'a str>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// What happened, for the delivery log (admins only).
    pub message: String,
    /// Retrying cannot help (a malformed address, a 5xx SMTP answer).
    pub permanent: bool,
}

impl SendError {
    fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: false }
    }

    fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: true }
    }
}

/// How an email left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// An SMTP server accepted it.
    Sent,
    /// Written to the log: no SMTP server is configured.
    Logged,
}

/// Where emails go.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP server.
    Smtp {
        /// The connection settings (boxed: they are large, and the log variant is empty).
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        /// The sender.
        from: Mailbox,
    },
    /// Nowhere: the service's log (`MERCATO_SMTP_URL` unset).
    Log,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Smtp { from, .. } => f.debug_struct("Mailer::Smtp").field("from", &from.to_string()).finish(),
            Mailer::Log => f.write_str("Mailer::Log"),
        }
    }
}

impl Mailer {
    /// A mailer for `MERCATO_SMTP_URL` (`None`: the log) sending as `MERCATO_MAIL_FROM`; errors name the
    /// variable.
    pub fn from_settings(smtp_url: Option<&str>, mail_from: &str) -> Result<Self, Error> {
        let Some(raw) = smtp_url else { return Ok(Mailer::Log) };
        let config = domain::parse_smtp_url(raw)
            .map_err(|problem| Error::Setting { variable: "MERCATO_SMTP_URL".to_owned(), problem })?;
        let from = mail_from.parse::<Mailbox>().map_err(|e| Error::Setting {
            variable: "MERCATO_MAIL_FROM".to_owned(),
            problem: format!("{mail_from:?} is not a mailbox ({e}); expected e.g. Mercato <no-reply@example.com>"),
        })?;
        Self::smtp(&config, from)
    }

    /// A mailer sending through the server `config` describes.
    pub fn smtp(config: &SmtpConfig, from: Mailbox) -> Result<Self, Error> {
        let setting = |e: lettre::transport::smtp::Error| Error::Setting {
            variable: "MERCATO_SMTP_URL".to_owned(),
            problem: format!("cannot set up SMTP to {}: {e}", config.host),
        };
        let builder = match config.security {
            SmtpSecurity::Plain => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host).map_err(setting)?
            }
            SmtpSecurity::ImplicitTls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(setting)?,
        };
        let mut builder = builder.port(config.port).timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Mailer::Smtp { transport: Box::new(builder.build()), from })
    }

    /// Sends one email with a text and an HTML alternative.
    pub async fn send(&self, email: OutgoingEmail<'_>) -> Result<Delivered, SendError> {
        let OutgoingEmail { id, to, subject, text, html, newsletter, list_unsubscribe, reply_to } = email;
        let (transport, from) = match self {
            Mailer::Log => {
                tracing::info!(to, subject, "email not sent (no MERCATO_SMTP_URL): logged instead");
                return Ok(Delivered::Logged);
            }
            Mailer::Smtp { transport, from } => (transport, from),
        };
        let to: Mailbox = to.parse().map_err(|e| SendError::permanent(format!("bad recipient address {to:?}: {e}")))?;
        // RFC 5322 wants a Message-ID (some receivers refuse mail without one), unique by the sender's domain;
        // RFC 3834's Auto-Submitted keeps out-of-office replies away from an address nobody reads.
        let message_id = format!("<{id}@{}>", from.email.domain());
        let mut message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id))
            .raw_header(HeaderValue::new(AUTO_SUBMITTED, "auto-generated".to_owned()));
        // Checked when the setting was read; one that cannot be parsed only loses the pointer, not the mail.
        if let Some(reply_to) = reply_to.and_then(|r| r.parse::<Mailbox>().ok()) {
            message = message.reply_to(reply_to);
        }
        if newsletter {
            // The shop's one list, named under the sender's domain, which the shop controls (RFC 2919).
            message = message.raw_header(HeaderValue::new(LIST_ID, format!("<newsletter.{}>", from.email.domain())));
        }
        if let Some(list) = list_unsubscribe {
            // RFC 2369 wants the URL in angle brackets; RFC 8058's second header says a POST unsubscribes.
            message = message.raw_header(HeaderValue::new(LIST_UNSUBSCRIBE, format!("<{}>", list.url)));
            if list.one_click {
                let one_click = "List-Unsubscribe=One-Click".to_owned();
                message = message.raw_header(HeaderValue::new(LIST_UNSUBSCRIBE_POST, one_click));
            }
        }
        let message = message
            .multipart(MultiPart::alternative_plain_html(text.to_owned(), html.to_owned()))
            .map_err(|e| SendError::permanent(format!("building the message: {e}")))?;
        match transport.send(message).await {
            Ok(_) => Ok(Delivered::Sent),
            Err(e) if e.is_permanent() => Err(SendError::permanent(format!("SMTP server refused: {e}"))),
            Err(e) => Err(SendError::transient(format!("SMTP: {e}"))),
        }
    }
}

/// Posts webhook deliveries.
#[derive(Debug, Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    allow_private_networks: bool,
}

/// Resolves host names to their public addresses only (see [`domain::is_public`]): checked when connecting,
/// so a name that resolves differently later (DNS rebinding) cannot reach a private address either.
struct PublicAddressesOnly;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| domain::is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Webhooks {
    /// A client giving each delivery at most `timeout`; unless `allow_private_networks`, only addresses on the
    /// public internet are called.
    pub fn new(timeout: Duration, allow_private_networks: bool) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect would re-post the signed body somewhere the admin did not register.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("Mercato-Webhooks/1");
        if !allow_private_networks {
            builder = builder.dns_resolver(Arc::new(PublicAddressesOnly));
        }
        Ok(Self { client: builder.build()?, allow_private_networks })
    }

    /// POSTs `body` to `url`, signed with `secret` at `unix_seconds`; delivered on any 2xx answer.
    pub async fn post(&self, url: &str, secret: &str, body: &str, unix_seconds: i64) -> Result<(), SendError> {
        // An address written in the URL is not resolved, so the resolver cannot check it: check it here.
        let literal = url::Url::parse(url).ok().and_then(|u| match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        if let Some(ip) = literal
            && !self.allow_private_networks
            && !domain::is_public(ip)
        {
            return Err(SendError::permanent(format!("POST {url}: {ip} is not a public address")));
        }
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(domain::SIGNATURE_HEADER, domain::signature(secret, unix_seconds, body))
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| SendError::transient(format!("POST {url}: {}", describe(&e))))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SendError::transient(format!("POST {url}: the endpoint answered {status}")))
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "Mercato <no-reply@mercato.localhost>";

    #[test]
    fn mailers_come_from_the_settings() {
        assert!(matches!(Mailer::from_settings(None, FROM), Ok(Mailer::Log)), "no URL: the log");
        for url in ["smtp://127.0.0.1:2525", "smtp://u:p@mail.example.com?tls=starttls", "smtps://u:p@mail.example.com"]
        {
            let mailer = Mailer::from_settings(Some(url), FROM).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(matches!(mailer, Mailer::Smtp { .. }), "{url}");
        }
    }

    #[test]
    fn bad_mail_settings_name_their_variable() {
        let variable = |result: Result<Mailer, Error>| match result {
            Err(Error::Setting { variable, .. }) => variable,
            other => panic!("expected a setting error, got {other:?}"),
        };
        assert_eq!(variable(Mailer::from_settings(Some("smtp://"), FROM)), "MERCATO_SMTP_URL");
        assert_eq!(variable(Mailer::from_settings(Some("smtp://mail.example.com"), "nobody")), "MERCATO_MAIL_FROM");
    }
}
