//! The notifications service in-process on a port-0 listener, fed through an in-process bus, driven over
//! real gRPC with test tokens; and the outside world it talks to (an SMTP server, a webhook receiver).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::common::Money;
use api::mercato::auth::v1::UserRegistered;
use api::mercato::notifications::v1::notification_service_client::NotificationServiceClient;
use api::mercato::notifications::v1::{ListNotificationsRequest, Notification};
use api::mercato::orders::v1::{OrderConfirmed, OrderItem};
use notifications::{DispatchOptions, Mailer};
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
#[allow(unused_imports)]
pub use platform::testkit::violated_fields as bad_fields;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Retries fast, so that tests do not wait for the production schedule.
pub fn fast_retries() -> DispatchOptions {
    DispatchOptions {
        backoff_base: Duration::from_millis(100),
        max_attempts: 6,
        poll_interval: Duration::from_millis(50),
        webhook_timeout: Duration::from_secs(5),
        // The test's receivers listen on 127.0.0.1.
        allow_private_networks: true,
        support_inbox: None,
        storefront_url: None,
        public_api_url: None,
        return_address: Vec::new(),
        retention: None,
    }
}

/// The running service.
pub struct Service {
    pub client: NotificationServiceClient<Channel>,
    pub issuer: Arc<TestIssuer>,
    pub bus: Arc<InProcessBus>,
    /// Payloads of the events the service published, by type, in order.
    pub published: Arc<Mutex<Vec<EventEnvelope>>>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), notifications::Error>>,
}

impl Service {
    pub async fn start(db: Db, mailer: Mailer, options: DispatchOptions) -> Self {
        let bus = Arc::new(InProcessBus::new());
        let published = Arc::new(Mutex::new(Vec::new()));
        let seen = published.clone();
        bus.subscribe(
            "test-observer",
            &["notification.sent", "notification.failed"],
            Arc::new(move |envelope: Arc<EventEnvelope>| {
                seen.lock().expect("lock").push((*envelope).clone());
                Box::pin(async { Ok(()) })
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(notifications::serve(
            listener,
            db,
            issuer.verifier(),
            bus.clone(),
            mailer,
            options,
            shutdown.clone(),
        ));
        let url = format!("http://{addr}");
        let client = NotificationServiceClient::new(platform::testkit::connect_when_up(&url, "notifications").await);
        // serve subscribes before it listens: once a call answers, the consumer is on the bus.
        let token = issuer.token("probe", &["notifications:read"], &["customer"]);
        let mut probe = 0;
        while client.clone().list_notifications(with_token(ListNotificationsRequest::default(), &token)).await.is_err()
        {
            probe += 1;
            assert!(probe < 100, "notifications never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { client, issuer, bus, published, shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
    }

    /// A customer's token.
    pub fn customer(&self, id: &str) -> String {
        self.issuer.token(id, &["notifications:read", "orders:read"], &["customer"])
    }

    /// An operator's token.
    pub fn admin(&self) -> String {
        self.issuer.token("admin-1", &["notifications:read", "notifications:admin"], &["admin"])
    }

    /// Delivers `envelope` as the bus would; Ok once the consumer committed.
    pub async fn deliver(&self, envelope: &EventEnvelope) {
        self.bus.publish(envelope.clone()).await.expect("the consumer accepts the event");
    }

    pub async fn list(&self, token: &str, request: ListNotificationsRequest) -> Result<Vec<Notification>, Status> {
        Ok(self.client.clone().list_notifications(with_token(request, token)).await?.into_inner().notifications)
    }

    /// Every notification, as an administrator sees them.
    pub async fn all(&self) -> Vec<Notification> {
        let request = ListNotificationsRequest { page_size: 200, ..Default::default() };
        self.list(&self.admin(), request).await.expect("admin lists")
    }

    /// Waits (up to 20 s) until `done` holds for the notifications an administrator sees; returns them.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Notification]) -> bool) -> Vec<Notification> {
        for _ in 0..400 {
            let all = self.all().await;
            if done(&all) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting until {what}: {:#?}", self.all().await);
    }
}

pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

/// An envelope as the relay of `source` builds it.
pub fn envelope(event_type: &str, subject: &str, message: &impl prost::Message) -> EventEnvelope {
    EventEnvelope {
        id: uuid::Uuid::now_v7().to_string(),
        source: "test".into(),
        r#type: event_type.into(),
        subject: subject.into(),
        time: Some(platform::time::timestamp(platform::time::now_micros())),
        data_content_type: platform::events::DATA_CONTENT_TYPE.into(),
        data: message.encode_to_vec(),
        traceparent: String::new(),
    }
}

pub fn eur(amount_minor: i64) -> Money {
    Money { currency: "EUR".into(), amount_minor }
}

pub fn registered(user_id: &str, email: &str, name: &str, locale: &str) -> EventEnvelope {
    let payload = UserRegistered {
        user_id: user_id.into(),
        email: email.into(),
        display_name: name.into(),
        locale: locale.into(),
    };
    envelope("user.registered", user_id, &payload)
}

/// `order.confirmed` of 2 coffees at EUR 14.50 for `customer`, paid with `payment_id`.
pub fn confirmed(order_id: &str, customer: &str, payment_id: &str) -> EventEnvelope {
    let payload = OrderConfirmed {
        order_id: order_id.into(),
        customer_id: customer.into(),
        payment_id: payment_id.into(),
        items: vec![OrderItem {
            product_id: "p-coffee".into(),
            sku: "COF-1".into(),
            name: "Coffee".into(),
            quantity: 2,
            unit_price: Some(eur(1450)),
            line_total: Some(eur(2900)),
            ..OrderItem::default()
        }],
        total: Some(eur(2900)),
        shipping_address: None,
        from_cart: true,
        ..OrderConfirmed::default()
    };
    envelope("order.confirmed", order_id, &payload)
}

// ---------------------------------------------------------------------------------------------------------
// A real SMTP server: aiosmtpd, storing what it receives in a maildir.

/// The python with aiosmtpd (`MERCATO_TEST_AIOSMTPD_PYTHON`); `None` (skip) when unset, except under CI.
pub fn smtp_python() -> Option<String> {
    platform::testkit::test_setting(
        "MERCATO_TEST_AIOSMTPD_PYTHON",
        "SMTP",
        "a python with aiosmtpd, e.g. python3 -m venv /var/tmp/mercato-tools/smtp-venv && \
         /var/tmp/mercato-tools/smtp-venv/bin/pip install aiosmtpd",
    )
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running aiosmtpd, killed on drop.
pub struct SmtpServer {
    child: Child,
    pub maildir: PathBuf,
    python: String,
}

impl SmtpServer {
    /// Starts aiosmtpd on `port` with a Mailbox handler writing to a new maildir in `dir`; waits until it
    /// accepts connections.
    pub async fn start(python: &str, port: u16, dir: &Path) -> Self {
        // Python's Maildir creates its folders only when the directory does not exist yet.
        let maildir = dir.join("maildir");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .spawn()
            .expect("aiosmtpd starts");
        let server = Self { child, maildir, python: python.to_owned() };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not listen on {port}");
    }

    /// Every message received, decoded by Python's email package: To, From, Subject, text and HTML parts, and
    /// the List-Unsubscribe, List-Id, Message-ID, Auto-Submitted and Reply-To headers (null when absent).
    pub fn messages(&self) -> Vec<serde_json::Value> {
        const DECODE: &str = r#"
import json, os, sys
from email import policy
from email.parser import BytesParser
out = []
for sub in ("new", "cur"):
    folder = os.path.join(sys.argv[1], sub)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name), "rb") as f:
            m = BytesParser(policy=policy.default).parse(f)
        text, html = m.get_body(preferencelist=("plain",)), m.get_body(preferencelist=("html",))
        out.append({"to": str(m["To"]), "from": str(m["From"]), "subject": str(m["Subject"]),
                    "text": text.get_content() if text else None, "html": html.get_content() if html else None,
                    "list_unsubscribe": m["List-Unsubscribe"], "list_unsubscribe_post": m["List-Unsubscribe-Post"],
                    "list_id": m["List-Id"],
                    "message_id": m["Message-ID"], "auto_submitted": m["Auto-Submitted"],
                    "reply_to": m["Reply-To"]})
print(json.dumps(out))
"#;
        let output = Command::new(&self.python).args(["-c", DECODE]).arg(&self.maildir).output().expect("python runs");
        assert!(output.status.success(), "decoding the maildir: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout).expect("json")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
