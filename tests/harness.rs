//! The end-to-end harness: the whole platform in this process, every listener on port 0, fresh storage per
//! test (a temporary SQLite directory, or fresh PostgreSQL databases when `MERCATO_TEST_DATABASE_URL` is
//! set), driven over HTTP like a client would.

use platform::testkit::TempDir;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The administrator every test platform starts with.
pub const ADMIN_EMAIL: &str = "admin@mercato.test";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// Which storage a test platform uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// SQLite files in a temporary directory.
    Sqlite,
    /// Fresh databases on `MERCATO_TEST_DATABASE_URL`.
    Postgres,
}

/// A running platform and an HTTP client for it.
#[derive(Debug)]
pub struct TestPlatform {
    /// `http://127.0.0.1:<port>` of the gateway.
    pub base: String,
    /// `http://127.0.0.1:<port>` of the metrics endpoint.
    pub metrics: String,
    /// Each service's gRPC address.
    pub services: Vec<(&'static str, std::net::SocketAddr)>,
    /// The client.
    pub http: reqwest::Client,
    /// The settings the services run with (their URLs point at the bound addresses).
    pub settings: platform::Settings,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<()>>,
    /// This platform's exchanges and queues, when on RabbitMQ (deleted with it).
    broker: Option<Topology>,
    _dir: TempDir,
}

/// A response: status, headers, body, and the body as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as JSON.
    pub json: Value,
    /// Body as sent.
    pub bytes: Vec<u8>,
}

impl TestPlatform {
    /// Starts a platform on `storage`, or returns `None` when that storage is not available here (PostgreSQL
    /// without `MERCATO_TEST_DATABASE_URL`; under `CI=true` that is a failure instead).
    #[allow(clippy::expect_used, clippy::panic)]
    pub async fn start(storage: Storage) -> Option<Self> {
        // Tests log in and register more often than a person would; the limits have tests of their own.
        Self::start_with(storage, &[("MERCATO_RATE_LIMITS", "off")]).await
    }

    /// [`start`](Self::start) with extra settings.
    pub async fn start_with(storage: Storage, extra: &[(&str, &str)]) -> Option<Self> {
        Self::start_inner(storage, extra, None).await
    }

    /// [`start`](Self::start) with events on the RabbitMQ at `MERCATO_TEST_AMQP_URL`, under exchanges and queues
    /// of its own that [`stop`](Self::stop) deletes; `None` when no broker is configured (under `CI=true` that
    /// is a failure instead).
    pub async fn start_on_rabbitmq(storage: Storage) -> Option<Self> {
        let topology = rabbitmq()?;
        let extra = [("MERCATO_RATE_LIMITS", "off"), ("MERCATO_AMQP_URL", topology.url())];
        let mut platform = Self::start_inner(storage, &extra, Some(topology.prefix().to_owned())).await?;
        platform.broker = Some(topology);
        Some(platform)
    }

    #[allow(clippy::expect_used, clippy::panic)]
    async fn start_inner(storage: Storage, extra: &[(&str, &str)], amqp_prefix: Option<String>) -> Option<Self> {
        let dir = TempDir::new("e2e").expect("temp dir");
        let mut vars: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        vars.extend([
            ("MERCATO_DATA_DIR".to_owned(), dir.path().display().to_string()),
            ("MERCATO_ADMIN_EMAIL".to_owned(), ADMIN_EMAIL.to_owned()),
            ("MERCATO_ADMIN_PASSWORD".to_owned(), ADMIN_PASSWORD.to_owned()),
        ]);
        if storage == Storage::Postgres {
            let url = match std::env::var("MERCATO_TEST_DATABASE_URL") {
                Ok(url) if !url.is_empty() => url,
                _ if platform::testkit::in_ci() => panic!("CI=true but MERCATO_TEST_DATABASE_URL is not set"),
                _ => return None,
            };
            let run = uuid::Uuid::now_v7().simple().to_string();
            for service in mercato::SERVICES {
                let base = url.trim_end_matches('/');
                vars.push((
                    format!("MERCATO_{}_DATABASE_URL", service.to_uppercase()),
                    format!("{base}/mercato_e2e_{run}_{service}"),
                ));
            }
        }
        let settings = platform::Settings::from_vars(vars).expect("settings");
        let shutdown = CancellationToken::new();
        let options = mercato::UpOptions { demo: false, ephemeral_ports: true, amqp_prefix };
        let running = mercato::up(settings, options, shutdown.clone()).await.expect("platform starts");
        let base = format!("http://{}", running.gateway);
        let services = running.services.clone();
        let metrics = format!("http://{}", running.metrics);
        let settings = running.settings.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = running.wait().await {
                eprintln!("platform stopped with an error: {e:#}");
            }
        });
        let platform = Self {
            base,
            metrics,
            services,
            http: reqwest::Client::new(),
            settings,
            shutdown,
            running: Some(task),
            broker: None,
            _dir: dir,
        };
        platform.wait_ready().await;
        Some(platform)
    }

    #[allow(clippy::panic)]
    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the platform did not become ready");
    }

    /// Sends a request with an optional bearer token and JSON body.
    #[allow(clippy::expect_used)]
    pub async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::reply(request.send().await.expect("request sent")).await
    }

    /// Sends a request with extra headers.
    #[allow(clippy::expect_used)]
    pub async fn send_with(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::reply(request.send().await.expect("request sent")).await
    }

    /// Sends a raw body with a content type.
    #[allow(clippy::expect_used)]
    pub async fn send_raw(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let request =
            self.http.request(method, format!("{}{}", self.base, path)).header("content-type", content_type).body(body);
        Self::reply(request.send().await.expect("request sent")).await
    }

    #[allow(clippy::expect_used)]
    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, json, bytes: bytes.to_vec() }
    }

    /// Logs in and returns the access token.
    #[allow(clippy::panic)]
    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self.send("POST", "/v1/auth/login", None, Some(json!({"email": email, "password": password}))).await;
        assert_eq!(r.status, 200, "login failed: {}", r.json);
        r.json["accessToken"].as_str().map(str::to_owned).unwrap_or_else(|| panic!("no token in {}", r.json))
    }

    /// The administrator's access token.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Registers a customer and returns their access token.
    pub async fn customer_token(&self, email: &str) -> String {
        let r = self
            .send(
                "POST",
                "/v1/auth/register",
                None,
                Some(json!({"email": email, "password": "customer-pass-1", "displayName": "Customer"})),
            )
            .await;
        assert_eq!(r.status, 201, "register failed: {}", r.json);
        self.login(email, "customer-pass-1").await
    }

    /// Polls `GET path` as `token` until `done` holds for its JSON (at most 30 s), and returns that JSON: for
    /// what events bring about a moment later.
    pub async fn get_until(&self, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.get_until_within(path, token, std::time::Duration::from_secs(30), done).await
    }

    /// [`get_until`](Self::get_until), waiting at most `within` (e.g. for consumers reconnecting after an outage).
    #[allow(clippy::panic)]
    pub async fn get_until_within(
        &self,
        path: &str,
        token: &str,
        within: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let last = self.send("GET", path, Some(token), None).await.json;
            if done(&last) {
                return last;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("GET {path} never got there within {within:?}; last answer: {last}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The broker URL and the prefix of this platform's exchanges and queues, when it runs on RabbitMQ.
    pub fn broker(&self) -> Option<(&str, &str)> {
        self.broker.as_ref().map(|topology| (topology.url(), topology.prefix()))
    }

    /// The text of `/metrics`.
    #[allow(clippy::expect_used)]
    pub async fn metrics_text(&self) -> String {
        let r = self.http.get(format!("{}/metrics", self.metrics)).send().await.expect("metrics");
        r.text().await.expect("text")
    }

    /// Stops the platform and waits for it; on RabbitMQ, deletes its exchanges and queues.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.running.take() {
            let _ = task.await;
        }
        if let Some(topology) = self.broker.take() {
            topology.delete().await;
        }
    }
}

/// Exchanges and queues of a test's own on the machine's RabbitMQ, under a prefix no other test uses
/// ([`rabbitmq`]): deleted by [`delete`](Self::delete), or when dropped, so a test that failed leaves none.
#[derive(Debug)]
pub struct Topology {
    url: String,
    prefix: String,
}

impl Topology {
    /// The broker's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix of the exchanges and queues.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes the exchanges and queues now.
    pub async fn delete(mut self) {
        let (url, prefix) = (std::mem::take(&mut self.url), std::mem::take(&mut self.prefix));
        delete_topology(&url, &prefix).await;
    }
}

impl Drop for Topology {
    /// Deletes what [`delete`](Self::delete) did not: a test that failed before it still removes its exchanges
    /// and queues.
    fn drop(&mut self) {
        if self.url.is_empty() {
            return;
        }
        let (url, prefix) = (std::mem::take(&mut self.url), std::mem::take(&mut self.prefix));
        // A thread of its own: this may run inside the test's runtime, which cannot block on itself.
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(delete_topology(&url, &prefix));
            }
        })
        .join();
    }
}

/// Exchanges and queues of a test's own on the RabbitMQ at `MERCATO_TEST_AMQP_URL`; `None` when no broker is
/// configured (under `CI=true` that is a failure instead).
pub fn rabbitmq() -> Option<Topology> {
    let url =
        platform::testkit::test_setting("MERCATO_TEST_AMQP_URL", "RabbitMQ", "e.g. amqp://guest:guest@127.0.0.1:5672")?;
    Some(Topology { url, prefix: format!("mercato-e2e-{}", uuid::Uuid::now_v7().simple()) })
}

/// Deletes the exchanges and the queues (and dead-letter queues) of every service under `prefix`.
async fn delete_topology(url: &str, prefix: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(connection) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await else {
        return;
    };
    for service in mercato::SERVICES {
        for queue in [format!("{prefix}.{service}"), format!("{prefix}.{service}.dead")] {
            // A channel per deletion: an error closes the channel it happened on.
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
            }
        }
    }
    for exchange in [format!("{prefix}.events"), format!("{prefix}.dlx")] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
        }
    }
    let _ = connection.close(200, "done".into()).await;
}
