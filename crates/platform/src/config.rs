//! Typed settings from `MERCATO_*` environment variables, and optionally a TOML file (`MERCATO_CONFIG`, see
//! [`file`]), validated at start.
//!
//! Every problem is collected and reported at once, one line per variable, so an operator fixes a bad
//! deployment in one round instead of one restart per typo.

pub mod file;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The services of the platform with their default gRPC ports; the blueprint's table of ports.
pub const SERVICE_PORTS: &[(&str, u16)] = &[
    ("auth", 50051),
    ("users", 50052),
    ("catalog", 50053),
    ("cart", 50054),
    ("orders", 50055),
    ("payments", 50056),
    ("ledger", 50057),
    ("refunds", 50058),
    ("deliveries", 50059),
    ("notifications", 50060),
    ("analytics", 50061),
    ("support", 50062),
];

/// Default gRPC port of a service, if it is one of the platform's.
pub fn default_grpc_port(service: &str) -> Option<u16> {
    SERVICE_PORTS.iter().find(|(name, _)| *name == service).map(|(_, port)| *port)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default when stdout is not a terminal).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Every setting Mercato reads, parsed and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Gateway HTTP listen address (`MERCATO_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Metrics and probes listen address (`MERCATO_METRICS_ADDR`).
    pub metrics_addr: SocketAddr,
    /// gRPC listen address for `mercato serve` (`MERCATO_GRPC_ADDR`); the service's default port when unset.
    pub grpc_addr: Option<SocketAddr>,
    /// Where clients reach each service (`MERCATO_<SERVICE>_URL`), e.g. `http://127.0.0.1:50053`, or several
    /// replicas' URLs joined by commas.
    pub service_urls: HashMap<String, String>,
    /// Directory for SQLite files and blobs (`MERCATO_DATA_DIR`).
    pub data_dir: PathBuf,
    /// PostgreSQL server URL shared by all services (`MERCATO_DATABASE_URL`).
    pub database_url: Option<String>,
    /// Per-service database URLs (`MERCATO_<SERVICE>_DATABASE_URL`), taking precedence over `database_url`.
    pub service_database_urls: HashMap<String, String>,
    /// RabbitMQ URL (`MERCATO_AMQP_URL`); the in-process bus when unset.
    pub amqp_url: Option<String>,
    /// Redis URL (`MERCATO_REDIS_URL`); in-memory when unset.
    pub redis_url: Option<String>,
    /// SMTP URL for outgoing mail (`MERCATO_SMTP_URL`); mail is logged, not sent, when unset.
    pub smtp_url: Option<String>,
    /// The S3 bucket blobs (product images) go to (`MERCATO_S3_BUCKET`); the data directory when unset.
    /// Region and credentials come from the standard `AWS_*` variables (or the machine's role).
    pub s3_bucket: Option<String>,
    /// The endpoint of an S3-compatible store other than AWS (`MERCATO_S3_ENDPOINT`, e.g. MinIO's URL).
    pub s3_endpoint: Option<String>,
    /// The bucket's region (`MERCATO_S3_REGION`); else `AWS_REGION`, else us-east-1.
    pub s3_region: Option<String>,
    /// Access key id and secret for the bucket (`MERCATO_S3_ACCESS_KEY_ID`, `MERCATO_S3_SECRET_ACCESS_KEY`,
    /// both or neither); else the standard AWS credentials (variables, web identity, instance role).
    pub s3_credentials: Option<(String, String)>,
    /// Sender of outgoing mail (`MERCATO_MAIL_FROM`), a mailbox such as `Mercato <no-reply@example.com>`.
    pub mail_from: String,
    /// Where new support tickets, products running low, refused refunds and returns to decide on are announced
    /// (`MERCATO_SUPPORT_EMAIL`), a mailbox such as `Support <support@example.com>`, and where answers to the
    /// other mails go (their `Reply-To`); none when unset.
    pub support_email: Option<String>,
    /// Where customers send returns (`MERCATO_RETURN_ADDRESS`, its lines separated by `;`, e.g. `Mercato Returns;
    /// Lagerstraße 1;10115 Berlin;Germany`): the approval mail shows it. Empty when unset.
    pub return_address: Vec<String>,
    /// The shop's web front (`MERCATO_STOREFRONT_URL`, e.g. `https://shop.example.com`, kept without a trailing
    /// `/`): mails carrying a token link to its pages, `/reset-password`, `/newsletter/confirm` and
    /// `/newsletter/unsubscribe`, each with `?token=`; none when unset (the mails carry the token alone).
    pub storefront_url: Option<String>,
    /// The gateway as mail recipients reach it (`MERCATO_PUBLIC_API_URL`, e.g. `https://api.shop.example.com`,
    /// kept without a trailing `/`): newsletters name its one-click unsubscribe route in their
    /// `List-Unsubscribe` header (RFC 8058); none when unset.
    pub public_api_url: Option<String>,
    /// How long notifications' delivery log keeps a notification that is done with
    /// (`MERCATO_NOTIFICATION_RETENTION_DAYS`, default 90 days); `None` (`0`): for ever, for a shop that must keep
    /// its business letters (order confirmations) for years.
    pub notification_retention: Option<Duration>,
    /// Whether placing an order needs a verified email address (`MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL`,
    /// `true` or `false`, default `false`): the orders service refuses the checkout of a customer whose access
    /// token does not say the address is verified.
    pub checkout_requires_verified_email: bool,
    /// Days after the carrier delivered an order that its customer may ask to return items
    /// (`MERCATO_RETURN_WINDOW_DAYS`, default 30); 0: the shop takes no returns through the API.
    pub return_window_days: u32,
    /// What a return that leaves some of the order's units behind gives back of its shipping
    /// (`MERCATO_RETURN_SHIPPING`, `shared` or `whole-order`, default `shared`).
    pub return_shipping: ReturnShipping,
    /// Whether customers' reviews wait for staff before they show (`MERCATO_REVIEW_MODERATION`, `off` or `pre`,
    /// default `off`).
    pub review_moderation: ReviewModeration,
    /// Origins allowed by CORS (`MERCATO_CORS_ORIGINS`, comma-separated).
    pub cors_origins: Vec<String>,
    /// Client secrets of the services for the client-credentials grant (`MERCATO_<SERVICE>_CLIENT_SECRET`).
    /// Each service reads its own; auth reads all. `mercato up` makes up the missing ones in memory.
    pub service_secrets: HashMap<String, String>,
    /// First administrator's email (`MERCATO_ADMIN_EMAIL`).
    pub admin_email: Option<String>,
    /// First administrator's password (`MERCATO_ADMIN_PASSWORD`).
    pub admin_password: Option<String>,
    /// Log filter in `tracing` syntax (`MERCATO_LOG`), e.g. `info,sqlx=warn`.
    pub log_filter: String,
    /// Log format (`MERCATO_LOG_FORMAT`); JSON unless stdout is a terminal.
    pub log_format: Option<LogFormat>,
    /// The gateway's rate-limit budgets (`MERCATO_RATE_LIMITS`); strict login and register limits by default.
    pub rate_limits: RateLimits,
    /// Proxies whose `X-Forwarded-For` the gateway believes (`MERCATO_TRUSTED_PROXIES`, IPs or CIDRs,
    /// comma-separated); none by default, so the client is the TCP peer.
    pub trusted_proxies: Vec<IpNet>,
    /// TLS termination at the gateway (`MERCATO_GATEWAY_TLS_CERT` and `MERCATO_GATEWAY_TLS_KEY`, both or
    /// neither); plain HTTP when unset.
    pub gateway_tls: Option<TlsFiles>,
    /// TLS between services (`MERCATO_GRPC_TLS_CERT`, `MERCATO_GRPC_TLS_KEY` and `MERCATO_GRPC_TLS_CA`, all three
    /// or none): every gRPC server and client of the process speaks mutual TLS, and the services' URLs are
    /// `https://`; plain gRPC when unset.
    pub grpc_tls: Option<GrpcTlsFiles>,
}

/// The PEM files of a TLS identity: what a TLS listener serves with (and a client of mutual TLS shows). Only the
/// paths are checked here; the files are read and validated when the server or client is made, at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate: PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
}

/// The PEM files of TLS between services. Each process serves and calls with its own certificate, and on both
/// ends of a call trusts only certificates the CA signed (mutual TLS: a caller without one is not even heard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTlsFiles {
    /// This process's certificate and key (`MERCATO_GRPC_TLS_CERT`, `MERCATO_GRPC_TLS_KEY`): its servers' and,
    /// as a client, its own. The certificate names every host name or IP the process is called by.
    pub identity: TlsFiles,
    /// The certificates of the CA that signs the services' certificates (`MERCATO_GRPC_TLS_CA`).
    pub ca: PathBuf,
}

/// A request budget: a steady rate of `count` requests per `period`, and up to `burst` requests at once after
/// a quiet spell. The gateway enforces it with GCRA, so it behaves like a token bucket of `burst` tokens
/// refilled at `count / period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per `period` at the steady rate (at least 1).
    pub count: u32,
    /// The period `count` is measured over.
    pub period: Duration,
    /// Requests allowed back to back (at least 1).
    pub burst: u32,
}

impl Quota {
    /// `count` requests per `period` with a burst of `burst`.
    pub const fn new(count: u32, period: Duration, burst: u32) -> Self {
        Self { count, period, burst }
    }

    /// The time one request costs at the steady rate (`period / count`), at least a microsecond.
    pub fn emission_interval(&self) -> Duration {
        (self.period / self.count.max(1)).max(Duration::from_micros(1))
    }
}

impl FromStr for Quota {
    type Err = String;

    /// `<count>/<period>[:<burst>]`, the period a unit (`s`, `min`, `h`) optionally preceded by a number:
    /// `20/s:40`, `5/min`, `100/10s:20`. Without a burst, the burst is `count`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let expected = "expected <count>/<s|min|h>[:<burst>], e.g. 5/min:5";
        let (rate, burst) = match raw.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (raw, None),
        };
        let (count, period) = rate.split_once('/').ok_or_else(|| expected.to_owned())?;
        let count: u32 =
            count.trim().parse().map_err(|_| format!("count {:?} is not a number; {expected}", count.trim()))?;
        let period = period.trim();
        let digits = period.len() - period.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (multiple, unit) = period.split_at(digits);
        let multiple: u32 = if multiple.is_empty() { 1 } else { multiple.parse().map_err(|_| expected.to_owned())? };
        let unit_secs = match unit {
            "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" | "hour" => 3600,
            _ => return Err(format!("period {period:?} has no unit s, min or h; {expected}")),
        };
        let burst = match burst {
            Some(b) => b.trim().parse().map_err(|_| format!("burst {:?} is not a number; {expected}", b.trim()))?,
            None => count,
        };
        if count == 0 || burst == 0 || multiple == 0 {
            return Err(format!("count, period and burst must be at least 1; {expected}"));
        }
        Ok(Self { count, period: Duration::from_secs(u64::from(multiple) * unit_secs), burst })
    }
}

/// The gateway's rate-limit budgets, per identity (API key, user or client IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Whether the gateway limits at all (`MERCATO_RATE_LIMITS=off` turns limits off).
    pub enabled: bool,
    /// The budget every route without its own shares, per identity.
    pub default: Quota,
    /// Routes with a budget of their own, by route key `"<METHOD> <template>"` (e.g. `POST /v1/auth/login`).
    pub routes: BTreeMap<String, Quota>,
}

/// The budget of routes without their own: 20 requests a second, bursts of 40.
pub const DEFAULT_QUOTA: Quota = Quota::new(20, Duration::from_secs(1), 40);

/// Budgets that apply even when `MERCATO_RATE_LIMITS` does not mention them: logins, registrations, password
/// changes and email changes are slow (password hashing) and the target of password guessing; the contact form,
/// newsletter subscriptions and password resets are open to anyone and make tickets and mails, so a client may not
/// flood them; an order's preview answers whether a discount code exists, so it is no place to guess codes (a
/// storefront previews a cart a few times a minute).
pub const DEFAULT_ROUTE_QUOTAS: &[(&str, Quota)] = &[
    ("POST /v1/auth/login", Quota::new(5, Duration::from_secs(60), 5)),
    ("POST /v1/auth/register", Quota::new(10, Duration::from_secs(60), 10)),
    ("POST /v1/auth/password:change", Quota::new(5, Duration::from_secs(60), 5)),
    ("POST /v1/auth/password-resets", Quota::new(5, Duration::from_secs(60), 5)),
    ("POST /v1/auth/email-changes", Quota::new(5, Duration::from_secs(60), 5)),
    ("POST /v1/contact", Quota::new(5, Duration::from_secs(60), 5)),
    ("POST /v1/newsletter/subscriptions", Quota::new(5, Duration::from_secs(60), 5)),
    ("POST /v1/orders:preview", Quota::new(60, Duration::from_secs(60), 20)),
];

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            default: DEFAULT_QUOTA,
            routes: DEFAULT_ROUTE_QUOTAS.iter().map(|(route, quota)| ((*route).to_owned(), *quota)).collect(),
        }
    }
}

impl RateLimits {
    /// The budget of a route key, or the default.
    pub fn quota(&self, route: &str) -> Quota {
        self.routes.get(route).copied().unwrap_or(self.default)
    }
}

impl FromStr for RateLimits {
    type Err = String;

    /// `off`, or comma-separated `<key>=<quota>` entries where the key is `default` or a route key
    /// (`POST /v1/auth/login`); entries override the defaults, which stay for routes not mentioned.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut limits = Self::default();
        if raw.trim() == "off" {
            limits.enabled = false;
            return Ok(limits);
        }
        let mut problems = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            // Templates may hold `=` (`{name=shelves/*}`), quotas never do.
            let Some((key, quota)) = entry.rsplit_once('=') else {
                problems.push(format!("{entry:?}: expected <route>=<quota>, e.g. POST /v1/auth/login=5/min:5"));
                continue;
            };
            let key = key.split_whitespace().collect::<Vec<_>>().join(" ");
            let quota = match quota.parse::<Quota>() {
                Ok(q) => q,
                Err(problem) => {
                    problems.push(format!("{entry:?}: {problem}"));
                    continue;
                }
            };
            if key == "default" {
                limits.default = quota;
                continue;
            }
            match key.split_once(' ') {
                Some((method, path))
                    if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) && path.starts_with('/') =>
                {
                    limits.routes.insert(key, quota);
                }
                _ => problems.push(format!(
                    "{entry:?}: {key:?} is not a route; expected default or \"<METHOD> <template>\", e.g. POST /v1/auth/login"
                )),
            }
        }
        if problems.is_empty() { Ok(limits) } else { Err(problems.join("; ")) }
    }
}

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `fd00::/8`); a bare address is a network of
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// `10.0.0.1`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let expected = || format!("{raw:?} is not an IP address or CIDR, e.g. 10.0.0.0/8");
        let (addr, prefix) = match raw.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (raw, None),
        };
        let addr = addr.parse::<IpAddr>().map_err(|_| expected())?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(expected)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One invalid setting: the variable and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The environment variable, e.g. `MERCATO_HTTP_ADDR`.
    pub variable: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

/// Every invalid setting found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<SettingError>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "invalid setting {}: {}", e.variable, e.problem)?;
        }
        Ok(())
    }
}

/// Names and meanings of the settings, for `--help` texts and docs.
pub const SETTINGS_HELP: &str = "\
Settings (environment variables; MERCATO_CONFIG may name a TOML file of them, keyed by name without MERCATO_
in lower case, e.g. smtp_url = \"smtp://mail:25\" or [catalog] url = \"...\"; a variable wins over the file):
  MERCATO_HTTP_ADDR              gateway HTTP address            [default: 127.0.0.1:8080]
  MERCATO_METRICS_ADDR           /metrics, /healthz, /readyz     [default: 127.0.0.1:9090]
  MERCATO_GRPC_ADDR              gRPC address for `serve`        [default: 127.0.0.1:<service port>]
  MERCATO_<SERVICE>_URL          where clients reach a service   [default: http://127.0.0.1:<service port>]
                                 or a comma-separated list of replicas that clients balance over
                                 (https://, and the default too, with MERCATO_GRPC_TLS_*)
  MERCATO_DATA_DIR               SQLite files and blobs          [default: ./mercato-data]
  MERCATO_DATABASE_URL           PostgreSQL server URL; each service uses database mercato_<service>
  MERCATO_<SERVICE>_DATABASE_URL database URL of one service (overrides MERCATO_DATABASE_URL)
  MERCATO_AMQP_URL               RabbitMQ URL                    [default: in-process bus]
  MERCATO_REDIS_URL              Redis URL                       [default: in-memory]
  MERCATO_SMTP_URL               SMTP URL for outgoing mail      [default: mail is logged]
  MERCATO_S3_BUCKET              S3 bucket for blobs (product images; AWS_* variables give region and
                                 credentials)                    [default: <MERCATO_DATA_DIR>/blobs]
  MERCATO_S3_ENDPOINT            URL of an S3-compatible store (MinIO, Ceph, ...) [default: AWS]
  MERCATO_S3_REGION              the bucket's region             [default: AWS_REGION, else us-east-1]
  MERCATO_S3_ACCESS_KEY_ID       S3 access key id and secret (both or neither)
  MERCATO_S3_SECRET_ACCESS_KEY                                   [default: the AWS credentials chain]
  MERCATO_MAIL_FROM              sender of outgoing mail         [default: Mercato <no-reply@mercato.localhost>]
  MERCATO_SUPPORT_EMAIL          the shop's mailbox: new tickets, low stock, refused refunds, returns asked for;
                                 Reply-To of other mail
                                 [default: none]
  MERCATO_STOREFRONT_URL         the shop's web front, linked from mails carrying a token [default: none]
  MERCATO_PUBLIC_API_URL         the gateway as mail recipients reach it, for one-click unsubscribes
                                 [default: none]
  MERCATO_NOTIFICATION_RETENTION_DAYS
                                 days the delivery log keeps a sent notification, 0 for ever [default: 90]
  MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL
                                 true: placing an order needs a verified email address [default: false]
  MERCATO_RETURN_WINDOW_DAYS     days after delivery a customer may ask to return items, 0 for none
                                 [default: 30]
  MERCATO_RETURN_SHIPPING        shared: every return gives back its share of the shipping paid;
                                 whole-order: only the return that completes the order's return does
                                 [default: shared]
  MERCATO_CORS_ORIGINS           comma-separated allowed origins [default: none]
  MERCATO_RATE_LIMITS            gateway budgets per API key, user or client IP, comma-separated
                                 <route>=<count>/<s|min|h>[:<burst>], or off
                                 [default: default=20/s:40,POST /v1/auth/login=5/min:5,POST /v1/auth/register=10/min:10,
                                  POST /v1/auth/password:change=5/min:5,POST /v1/auth/password-resets=5/min:5,
                                  POST /v1/auth/email-changes=5/min:5,POST /v1/contact=5/min:5,
                                  POST /v1/newsletter/subscriptions=5/min:5,POST /v1/orders:preview=60/min:20]
  MERCATO_TRUSTED_PROXIES        IPs/CIDRs whose X-Forwarded-For is believed [default: none]
  MERCATO_GATEWAY_TLS_CERT       gateway TLS certificate chain (PEM file) [default: plain HTTP]
  MERCATO_GATEWAY_TLS_KEY        its private key (PEM file); set both or neither
  MERCATO_GRPC_TLS_CERT          this process's certificate for TLS between services (PEM file) [default: plain gRPC]
  MERCATO_GRPC_TLS_KEY           its private key (PEM file)
  MERCATO_GRPC_TLS_CA            the CA that signs the services' certificates (PEM file); set all three or none
  MERCATO_<SERVICE>_CLIENT_SECRET a service's secret for service tokens (32+ characters) [`up`: generated]
  MERCATO_ADMIN_EMAIL            first administrator, created at start if absent
  MERCATO_ADMIN_PASSWORD         its password (8 to 128 characters)
  MERCATO_LOG                    log filter                      [default: info]
  MERCATO_LOG_FORMAT             json or pretty                  [default: json, pretty on a terminal]
Ports: auth 50051, users 50052, catalog 50053, cart 50054, orders 50055, payments 50056, ledger 50057,
refunds 50058, deliveries 50059, notifications 50060, analytics 50061, support 50062.";

/// The variables a reading looks at, remembering each name it looked up: a settings file's key that no reading
/// looks up is no setting (a typo, most likely).
struct Vars {
    values: HashMap<String, String>,
    read: RefCell<HashSet<String>>,
}

impl Vars {
    /// The non-empty `MERCATO_*` variables of `pairs`; of two pairs with one name, the later wins.
    fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let values = pairs.into_iter().filter(|(k, v)| k.starts_with("MERCATO_") && !v.is_empty()).collect();
        Self { values, read: RefCell::new(HashSet::new()) }
    }

    fn get(&self, name: &str) -> Option<&String> {
        self.read.borrow_mut().insert(name.to_owned());
        self.values.get(name)
    }

    fn was_read(&self, name: &str) -> bool {
        self.read.borrow().contains(name)
    }
}

impl Settings {
    /// Reads the settings from the process environment, over those of the settings file `MERCATO_CONFIG` names
    /// (see [`Settings::from_vars_and_file`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars_and_file(std::env::vars())
    }

    /// Reads the settings from the given variables, over those of the TOML file `MERCATO_CONFIG` names among
    /// them, if it names one ([`file`]): a variable wins over the file's key for it. The file must be readable
    /// TOML, and every key in it a setting.
    pub fn from_vars_and_file(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let path = vars.iter().find(|(k, _)| k == file::VARIABLE).map(|(_, path)| path.trim().to_owned());
        let Some(path) = path.filter(|path| !path.is_empty()) else { return Self::from_vars(vars) };
        let problem = |problem: String| SettingError { variable: file::VARIABLE.to_owned(), problem };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(vec![problem(format!("cannot read {path}: {e}"))]))?;
        let given = file::settings(&text).map_err(|e| ConfigError(vec![problem(format!("{path}: {e}"))]))?;
        let from_file = given.iter().map(|s| (s.variable.clone(), s.value.clone()));
        let vars = Vars::new(from_file.chain(vars));
        let parsed = Self::parse(&vars);
        let unknown: Vec<SettingError> = given
            .iter()
            .filter(|s| !vars.was_read(&s.variable))
            .map(|s| problem(format!("{path}: `{}` is not a setting (there is no {})", s.key, s.variable)))
            .collect();
        match parsed {
            Ok(settings) if unknown.is_empty() => Ok(settings),
            Ok(_) => Err(ConfigError(unknown)),
            Err(ConfigError(mut errors)) => {
                errors.extend(unknown);
                Err(ConfigError(errors))
            }
        }
    }

    /// Reads the settings from the given variables (only `MERCATO_*` ones are looked at).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        Self::parse(&Vars::new(vars))
    }

    fn parse(vars: &Vars) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let mut fail = |variable: &str, problem: String| {
            errors.push(SettingError { variable: variable.to_owned(), problem });
        };

        let mut addr = |name: &str, default: Option<&str>| -> Option<SocketAddr> {
            let raw = vars.get(name).map(String::as_str).or(default)?;
            match raw.parse() {
                Ok(a) => Some(a),
                Err(_) => {
                    fail(
                        name,
                        format!("{raw:?} is not an address; expected host:port with an IP, e.g. 127.0.0.1:8080"),
                    );
                    None
                }
            }
        };
        let http_addr = addr("MERCATO_HTTP_ADDR", Some("127.0.0.1:8080"));
        let metrics_addr = addr("MERCATO_METRICS_ADDR", Some("127.0.0.1:9090"));
        let grpc_addr = addr("MERCATO_GRPC_ADDR", None);

        let grpc_tls_vars = ["MERCATO_GRPC_TLS_CERT", "MERCATO_GRPC_TLS_KEY", "MERCATO_GRPC_TLS_CA"];
        let grpc_tls = match grpc_tls_vars.map(|name| vars.get(name)) {
            [Some(cert), Some(key), Some(ca)] => Some(GrpcTlsFiles {
                identity: TlsFiles { cert: PathBuf::from(cert), key: PathBuf::from(key) },
                ca: PathBuf::from(ca),
            }),
            [None, None, None] => None,
            given => {
                for (name, value) in grpc_tls_vars.iter().zip(given) {
                    if value.is_none() {
                        let problem = "must be set with the other MERCATO_GRPC_TLS_* settings: TLS between services \
                                       needs a certificate, its key and the CA (a PEM file each)";
                        fail(name, problem.to_owned());
                    }
                }
                None
            }
        };
        let scheme = service_scheme(grpc_tls.as_ref());

        let mut service_urls = HashMap::new();
        let mut service_database_urls = HashMap::new();
        let mut service_secrets = HashMap::new();
        for (service, port) in SERVICE_PORTS {
            let upper = service.to_ascii_uppercase();
            let url_var = format!("MERCATO_{upper}_URL");
            let value = vars.get(&url_var).cloned().unwrap_or_else(|| format!("{scheme}://127.0.0.1:{port}"));
            // A comma-separated list names replicas that clients balance over.
            let urls: Vec<&str> = value.split(',').map(str::trim).collect();
            if let Some(bad) = urls.iter().find(|url| !(url.starts_with("http://") || url.starts_with("https://"))) {
                fail(&url_var, format!("{bad:?} is not a URL; expected http://host:port, or several, comma-separated"));
            } else if let Some(bad) = urls.iter().find(|url| !url.starts_with(&format!("{scheme}://"))) {
                let problem = if grpc_tls.is_some() {
                    format!("{bad:?}: services speak TLS (MERCATO_GRPC_TLS_* are set), so expected https://host:port")
                } else {
                    format!("{bad:?}: https:// needs TLS between services (set MERCATO_GRPC_TLS_CERT, _KEY and _CA)")
                };
                fail(&url_var, problem);
            }
            service_urls.insert((*service).to_owned(), urls.join(","));
            let db_var = format!("MERCATO_{upper}_DATABASE_URL");
            if let Some(url) = vars.get(&db_var) {
                if !is_database_url(url) {
                    fail(&db_var, "expected a postgres:// or sqlite: URL".to_owned());
                }
                service_database_urls.insert((*service).to_owned(), url.clone());
            }
            let secret_var = format!("MERCATO_{upper}_CLIENT_SECRET");
            if let Some(secret) = vars.get(&secret_var) {
                if secret.len() < 32 {
                    fail(&secret_var, "must be at least 32 characters (e.g. `openssl rand -hex 32`)".to_owned());
                }
                service_secrets.insert((*service).to_owned(), secret.clone());
            }
        }

        let database_url = vars.get("MERCATO_DATABASE_URL").cloned();
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            fail("MERCATO_DATABASE_URL", "expected a PostgreSQL server URL, e.g. postgres://user@host:5432".to_owned());
        }
        let amqp_url = vars.get("MERCATO_AMQP_URL").cloned();
        if let Some(url) = &amqp_url
            && !(url.starts_with("amqp://") || url.starts_with("amqps://"))
        {
            fail("MERCATO_AMQP_URL", "expected amqp://user:pass@host:port".to_owned());
        }
        let redis_url = vars.get("MERCATO_REDIS_URL").cloned();
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            fail("MERCATO_REDIS_URL", "expected redis://host:port".to_owned());
        }
        let smtp_url = vars.get("MERCATO_SMTP_URL").cloned();
        if let Some(url) = &smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            fail("MERCATO_SMTP_URL", "expected smtp://user:pass@host:port or smtps://...".to_owned());
        }
        let s3_bucket = vars.get("MERCATO_S3_BUCKET").cloned();
        if let Some(bucket) = &s3_bucket
            && !is_bucket_name(bucket)
        {
            fail(
                "MERCATO_S3_BUCKET",
                "expected a bucket name: 3 to 63 lower-case letters, digits, '.' or '-'".to_owned(),
            );
        }
        let s3_endpoint = vars.get("MERCATO_S3_ENDPOINT").cloned();
        if let Some(url) = &s3_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            fail("MERCATO_S3_ENDPOINT", "expected http://host:port or https://host".to_owned());
        }
        if s3_endpoint.is_some() && s3_bucket.is_none() {
            fail("MERCATO_S3_ENDPOINT", "is set but MERCATO_S3_BUCKET is not: which bucket?".to_owned());
        }
        let s3_region = vars.get("MERCATO_S3_REGION").cloned();
        let s3_credentials = match (vars.get("MERCATO_S3_ACCESS_KEY_ID"), vars.get("MERCATO_S3_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            (None, None) => None,
            (Some(_), None) => {
                fail("MERCATO_S3_SECRET_ACCESS_KEY", "is not set but MERCATO_S3_ACCESS_KEY_ID is".to_owned());
                None
            }
            (None, Some(_)) => {
                fail("MERCATO_S3_ACCESS_KEY_ID", "is not set but MERCATO_S3_SECRET_ACCESS_KEY is".to_owned());
                None
            }
        };
        let mail_from = vars.get("MERCATO_MAIL_FROM").cloned().unwrap_or_else(|| DEFAULT_MAIL_FROM.to_owned());
        if !is_mailbox(&mail_from) {
            fail(
                "MERCATO_MAIL_FROM",
                format!(
                    "{mail_from:?} is not a mailbox; expected e.g. Mercato <no-reply@example.com> or no-reply@example.com"
                ),
            );
        }

        let support_email = vars.get("MERCATO_SUPPORT_EMAIL").map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if let Some(inbox) = support_email.as_deref().filter(|inbox| !is_mailbox(inbox)) {
            fail(
                "MERCATO_SUPPORT_EMAIL",
                format!(
                    "{inbox:?} is not a mailbox; expected e.g. Support <support@example.com> or support@example.com"
                ),
            );
        }

        let return_address: Vec<String> = vars
            .get("MERCATO_RETURN_ADDRESS")
            .map(|raw| raw.split(';').map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        if return_address.len() > MAX_RETURN_ADDRESS_LINES
            || return_address
                .iter()
                .any(|line| line.chars().count() > MAX_RETURN_ADDRESS_LINE_CHARS || line.chars().any(char::is_control))
        {
            let problem = format!(
                "must be at most {MAX_RETURN_ADDRESS_LINES} lines separated by ';', each at most \
                 {MAX_RETURN_ADDRESS_LINE_CHARS} characters, e.g. Mercato Returns;Lagerstraße 1;10115 Berlin;Germany"
            );
            fail("MERCATO_RETURN_ADDRESS", problem);
        }

        let mut base_url_of = |variable: &str, example: &str| {
            let raw = vars.get(variable).map(|v| v.trim()).filter(|v| !v.is_empty())?;
            base_url(raw, example).map_err(|problem| fail(variable, format!("{raw:?} {problem}"))).ok()
        };
        let storefront_url = base_url_of("MERCATO_STOREFRONT_URL", "https://shop.example.com");
        let public_api_url = base_url_of("MERCATO_PUBLIC_API_URL", "https://api.shop.example.com");

        let notification_retention = match vars.get("MERCATO_NOTIFICATION_RETENTION_DAYS").map(|v| v.trim()) {
            None => Some(Duration::from_secs(DEFAULT_NOTIFICATION_RETENTION_DAYS * 24 * 3600)),
            Some(raw) => match raw.parse::<u64>() {
                Ok(0) => None,
                Ok(days) if days <= 36_500 => Some(Duration::from_secs(days * 24 * 3600)),
                _ => {
                    let problem = format!("{raw:?} is not a number of days from 0 (for ever) to 36500, e.g. 90");
                    fail("MERCATO_NOTIFICATION_RETENTION_DAYS", problem);
                    None
                }
            },
        };

        let checkout_requires_verified_email =
            match vars.get("MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL").map(|v| v.trim().to_ascii_lowercase()) {
                None => false,
                Some(raw) => match raw.as_str() {
                    "" | "false" | "0" => false,
                    "true" | "1" => true,
                    _ => {
                        fail("MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL", format!("{raw:?} is neither true nor false"));
                        false
                    }
                },
            };

        let return_shipping = match vars.get("MERCATO_RETURN_SHIPPING").map(|v| v.trim()) {
            None | Some("" | "shared") => ReturnShipping::Shared,
            Some("whole-order") => ReturnShipping::WholeOrder,
            Some(raw) => {
                fail("MERCATO_RETURN_SHIPPING", format!("{raw:?} is neither shared nor whole-order"));
                ReturnShipping::Shared
            }
        };

        let review_moderation = match vars.get("MERCATO_REVIEW_MODERATION").map(|v| v.trim()) {
            None | Some("" | "off") => ReviewModeration::Off,
            Some("pre") => ReviewModeration::Pre,
            Some(raw) => {
                fail("MERCATO_REVIEW_MODERATION", format!("{raw:?} is neither off nor pre"));
                ReviewModeration::Off
            }
        };

        let return_window_days = match vars.get("MERCATO_RETURN_WINDOW_DAYS").map(|v| v.trim()) {
            None | Some("") => DEFAULT_RETURN_WINDOW_DAYS,
            Some(raw) => match raw.parse::<u32>() {
                Ok(days) if days <= 3650 => days,
                _ => {
                    let problem = format!("{raw:?} is not a number of days from 0 (no returns) to 3650, e.g. 30");
                    fail("MERCATO_RETURN_WINDOW_DAYS", problem);
                    DEFAULT_RETURN_WINDOW_DAYS
                }
            },
        };

        let cors_origins: Vec<String> = vars
            .get("MERCATO_CORS_ORIGINS")
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        for origin in &cors_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                fail(
                    "MERCATO_CORS_ORIGINS",
                    format!("{origin:?} is not an origin; expected e.g. https://shop.example.com"),
                );
            }
        }

        let rate_limits = match vars.get("MERCATO_RATE_LIMITS") {
            None => RateLimits::default(),
            Some(raw) => raw.parse().unwrap_or_else(|problem| {
                fail("MERCATO_RATE_LIMITS", problem);
                RateLimits::default()
            }),
        };
        let mut trusted_proxies = Vec::new();
        for entry in vars.get("MERCATO_TRUSTED_PROXIES").into_iter().flat_map(|v| v.split(',')).map(str::trim) {
            match entry.parse::<IpNet>() {
                Ok(net) => trusted_proxies.push(net),
                Err(_) if entry.is_empty() => {}
                Err(problem) => fail("MERCATO_TRUSTED_PROXIES", problem),
            }
        }

        let gateway_tls = match (vars.get("MERCATO_GATEWAY_TLS_CERT"), vars.get("MERCATO_GATEWAY_TLS_KEY")) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: PathBuf::from(cert), key: PathBuf::from(key) }),
            (Some(_), None) => {
                fail(
                    "MERCATO_GATEWAY_TLS_KEY",
                    "must be set when MERCATO_GATEWAY_TLS_CERT is (a PEM private key file)".to_owned(),
                );
                None
            }
            (None, Some(_)) => {
                fail(
                    "MERCATO_GATEWAY_TLS_CERT",
                    "must be set when MERCATO_GATEWAY_TLS_KEY is (a PEM certificate chain file)".to_owned(),
                );
                None
            }
            (None, None) => None,
        };

        let admin_email = vars.get("MERCATO_ADMIN_EMAIL").cloned();
        let admin_password = vars.get("MERCATO_ADMIN_PASSWORD").cloned();
        match (&admin_email, &admin_password) {
            (Some(_), None) => fail("MERCATO_ADMIN_PASSWORD", "must be set when MERCATO_ADMIN_EMAIL is".to_owned()),
            (None, Some(_)) => fail("MERCATO_ADMIN_EMAIL", "must be set when MERCATO_ADMIN_PASSWORD is".to_owned()),
            _ => {}
        }

        let log_format = match vars.get("MERCATO_LOG_FORMAT").map(String::as_str) {
            None => None,
            Some("json") => Some(LogFormat::Json),
            Some("pretty") => Some(LogFormat::Pretty),
            Some(other) => {
                fail("MERCATO_LOG_FORMAT", format!("{other:?} is not a format; expected json or pretty"));
                None
            }
        };

        let data_dir = vars.get("MERCATO_DATA_DIR").map_or_else(|| PathBuf::from("./mercato-data"), PathBuf::from);
        let log_filter = vars.get("MERCATO_LOG").cloned().unwrap_or_else(|| "info".to_owned());

        match (http_addr, metrics_addr) {
            (Some(http_addr), Some(metrics_addr)) if errors.is_empty() => Ok(Settings {
                http_addr,
                metrics_addr,
                grpc_addr,
                service_urls,
                data_dir,
                database_url,
                service_database_urls,
                amqp_url,
                redis_url,
                smtp_url,
                s3_bucket,
                s3_endpoint,
                s3_region,
                s3_credentials,
                mail_from,
                support_email,
                storefront_url,
                public_api_url,
                notification_retention,
                checkout_requires_verified_email,
                return_window_days,
                return_shipping,
                review_moderation,
                return_address,
                cors_origins,
                service_secrets,
                admin_email,
                admin_password,
                log_filter,
                log_format,
                rate_limits,
                trusted_proxies,
                gateway_tls,
                grpc_tls,
            }),
            _ => Err(ConfigError(errors)),
        }
    }

    /// The scheme of the services' URLs: `https` with TLS between services (`MERCATO_GRPC_TLS_*`), else `http`.
    pub fn service_scheme(&self) -> &'static str {
        service_scheme(self.grpc_tls.as_ref())
    }

    /// Where clients reach `service`: the first of its URLs (the one `up` listens on).
    pub fn service_url(&self, service: &str) -> String {
        self.service_url_list(service).swap_remove(0)
    }

    /// Every URL of `service` (never empty): its replicas, which a channel balances over.
    pub fn service_url_list(&self, service: &str) -> Vec<String> {
        match self.service_urls.get(service) {
            Some(list) => list.split(',').map(str::to_owned).collect(),
            None => {
                let (scheme, port) = (self.service_scheme(), default_grpc_port(service).unwrap_or(50050));
                vec![format!("{scheme}://127.0.0.1:{port}")]
            }
        }
    }
}

/// With TLS between services every service URL is https://; without, http://.
fn service_scheme(grpc_tls: Option<&GrpcTlsFiles>) -> &'static str {
    if grpc_tls.is_some() { "https" } else { "http" }
}

/// The sender of outgoing mail when `MERCATO_MAIL_FROM` is unset.
pub const DEFAULT_MAIL_FROM: &str = "Mercato <no-reply@mercato.localhost>";

/// How many days notifications' delivery log keeps a notification that is done with, unless
/// `MERCATO_NOTIFICATION_RETENTION_DAYS` says otherwise.
pub const DEFAULT_NOTIFICATION_RETENTION_DAYS: u64 = 90;

/// How many days after delivery a customer may ask to return items, when `MERCATO_RETURN_WINDOW_DAYS` does not
/// say.
pub const DEFAULT_RETURN_WINDOW_DAYS: u32 = 30;

/// What a return gives back of the shipping an order paid (`MERCATO_RETURN_SHIPPING`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReturnShipping {
    /// Every return gives back its share of the shipping, in proportion to the value of its items (as of the
    /// discount): a return of half the order gives back half the shipping.
    #[default]
    Shared,
    /// The shipping is given back only by the return that brings back the order's last units (the whole order
    /// returned, in one return or several); a return of part of it shares the discount but not the shipping. EU
    /// law asks a shop to refund the delivery cost when a customer withdraws from the whole contract.
    WholeOrder,
}

/// Most lines of `MERCATO_RETURN_ADDRESS`.
const MAX_RETURN_ADDRESS_LINES: usize = 8;
/// Longest line of `MERCATO_RETURN_ADDRESS`, in characters.
const MAX_RETURN_ADDRESS_LINE_CHARS: usize = 100;

/// Whether customers' reviews wait for staff before they show (`MERCATO_REVIEW_MODERATION`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReviewModeration {
    /// A review is published as it is written (or changed): it shows with its product and counts in its rating
    /// at once; staff delete what breaks the shop's rules afterwards.
    #[default]
    Off,
    /// A review written or changed waits, seen only by its author and staff and counted in no rating, until staff
    /// publish it (or delete it).
    Pre,
}

/// An S3 bucket name as AWS allows it: 3 to 63 lower-case letters, digits, dots and hyphens, starting and
/// ending with a letter or digit.
fn is_bucket_name(name: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last())
}

/// `local@domain` or `Display Name <local@domain>`: one `@` between non-empty parts without spaces or
/// angle brackets (the mail library checks the finer rules when it sends).
fn is_mailbox(raw: &str) -> bool {
    let raw = raw.trim();
    let address = match raw.strip_suffix('>').and_then(|r| r.rsplit_once('<')) {
        Some((name, address)) => {
            if name.contains(['<', '>', '\r', '\n']) {
                return false;
            }
            address
        }
        None => raw,
    };
    let valid_part = |p: &str| !p.is_empty() && !p.contains(|c: char| c.is_whitespace() || "<>@,;\"".contains(c));
    matches!(address.split_once('@'), Some((local, domain)) if valid_part(local) && valid_part(domain) && !domain.starts_with('.') && !domain.ends_with('.'))
}

/// A base URL as kept (no trailing `/`), or why `raw` cannot be one (`example` shows a good one): links append
/// a path and a query to it, so it must be an absolute http(s) URL of a host, without credentials, query or
/// fragment.
fn base_url(raw: &str, example: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|_| format!("is not a URL; expected e.g. {example}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("is not an http(s) URL of a host; expected e.g. {example}"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry credentials, a query or a fragment: links add their own".to_owned());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_database_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_match_the_blueprint() {
        let s = Settings::from_vars(vars(&[])).expect("defaults are valid");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.metrics_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(s.service_url("auth"), "http://127.0.0.1:50051");
        assert_eq!(s.service_url("catalog"), "http://127.0.0.1:50053");
        assert_eq!(s.data_dir, PathBuf::from("./mercato-data"));
        assert!(s.database_url.is_none());
    }

    #[test]
    fn every_bad_setting_is_reported_with_its_variable() {
        let err = Settings::from_vars(vars(&[
            ("MERCATO_HTTP_ADDR", "localhost"),
            ("MERCATO_DATABASE_URL", "mysql://x"),
            ("MERCATO_LOG_FORMAT", "xml"),
            ("MERCATO_ADMIN_EMAIL", "a@b.c"),
        ]))
        .expect_err("invalid");
        let names: Vec<_> = err.0.iter().map(|e| e.variable.as_str()).collect();
        assert_eq!(
            names,
            ["MERCATO_HTTP_ADDR", "MERCATO_DATABASE_URL", "MERCATO_ADMIN_PASSWORD", "MERCATO_LOG_FORMAT"]
        );
        let text = err.to_string();
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("invalid setting MERCATO_HTTP_ADDR: \"localhost\" is not an address"));
    }

    #[test]
    fn service_urls_and_databases_can_be_overridden() {
        let s = Settings::from_vars(vars(&[
            ("MERCATO_CATALOG_URL", "http://catalog:50053"),
            ("MERCATO_AUTH_DATABASE_URL", "postgres://db/auth"),
            ("MERCATO_CORS_ORIGINS", "https://a.example, https://b.example"),
        ]))
        .expect("valid");
        assert_eq!(s.service_url("catalog"), "http://catalog:50053");
        assert_eq!(s.service_database_urls["auth"], "postgres://db/auth");
        assert_eq!(s.cors_origins, ["https://a.example", "https://b.example"]);
    }

    #[test]
    fn a_service_url_may_list_replicas() {
        let s = Settings::from_vars(vars(&[("MERCATO_CATALOG_URL", "http://10.0.0.1:50053, http://10.0.0.2:50053")]))
            .expect("valid");
        assert_eq!(s.service_url_list("catalog"), ["http://10.0.0.1:50053", "http://10.0.0.2:50053"]);
        assert_eq!(s.service_url("catalog"), "http://10.0.0.1:50053");
        assert_eq!(s.service_url_list("auth"), ["http://127.0.0.1:50051"]);
        for bad in ["http://10.0.0.1:50053,", "http://10.0.0.1:50053,10.0.0.2:50053"] {
            let err = Settings::from_vars(vars(&[("MERCATO_CATALOG_URL", bad)])).expect_err(bad);
            assert_eq!(err.0[0].variable, "MERCATO_CATALOG_URL", "{bad}");
        }
    }

    #[test]
    fn mail_from_is_a_mailbox() {
        let s = Settings::from_vars(vars(&[])).expect("defaults");
        assert_eq!(s.mail_from, "Mercato <no-reply@mercato.localhost>");
        for good in ["shop@example.com", "Mein Shop <shop@example.com>", "\"Shop, Inc.\" <a.b+c@mail.example.com>"] {
            let s = Settings::from_vars(vars(&[("MERCATO_MAIL_FROM", good)])).expect(good);
            assert_eq!(s.mail_from, good);
        }
        for bad in ["shop", "Shop <shop>", "@example.com", "shop@", "a b@example.com", "Shop <a@b.c", "a@b@c.d"] {
            let err = Settings::from_vars(vars(&[("MERCATO_MAIL_FROM", bad)])).expect_err(bad);
            assert_eq!(err.0.len(), 1, "{bad}");
            assert_eq!(err.0[0].variable, "MERCATO_MAIL_FROM", "{bad}");
        }
    }

    #[test]
    fn the_support_inbox_is_a_mailbox_or_none() {
        assert_eq!(Settings::from_vars(vars(&[])).expect("defaults").support_email, None);
        let s = Settings::from_vars(vars(&[("MERCATO_SUPPORT_EMAIL", " Support <help@example.com> ")])).expect("ok");
        assert_eq!(s.support_email.as_deref(), Some("Support <help@example.com>"));
        let err = Settings::from_vars(vars(&[("MERCATO_SUPPORT_EMAIL", "help")])).expect_err("not a mailbox");
        assert_eq!(err.0[0].variable, "MERCATO_SUPPORT_EMAIL");
    }

    #[test]
    fn the_storefront_and_public_api_are_http_urls_to_append_links_to() {
        let defaults = Settings::from_vars(vars(&[])).expect("defaults");
        assert_eq!((defaults.storefront_url, defaults.public_api_url), (None, None));
        for (raw, kept) in [
            (" https://shop.example.com/ ", "https://shop.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("https://example.com/shop/", "https://example.com/shop"),
        ] {
            let s = Settings::from_vars(vars(&[("MERCATO_STOREFRONT_URL", raw), ("MERCATO_PUBLIC_API_URL", raw)]))
                .expect("ok");
            assert_eq!(s.storefront_url.as_deref(), Some(kept), "{raw:?}");
            assert_eq!(s.public_api_url.as_deref(), Some(kept), "{raw:?}");
        }
        let err = Settings::from_vars(vars(&[("MERCATO_PUBLIC_API_URL", "api.example.com")])).expect_err("no scheme");
        assert_eq!(err.0[0].variable, "MERCATO_PUBLIC_API_URL");
        assert!(err.0[0].problem.contains("https://api.shop.example.com"), "{}", err.0[0].problem);
        for bad in [
            "shop.example.com",
            "ftp://shop.example.com",
            "https://u:p@shop.example.com",
            "https://x.com/?a=1",
            "https://x.com/#top",
        ] {
            let err = Settings::from_vars(vars(&[("MERCATO_STOREFRONT_URL", bad)])).expect_err(bad);
            assert_eq!(err.0[0].variable, "MERCATO_STOREFRONT_URL", "{bad:?}");
        }
    }

    #[test]
    fn the_delivery_log_keeps_90_days_unless_told_otherwise() {
        let days = |n: u64| Some(Duration::from_secs(n * 24 * 3600));
        assert_eq!(Settings::from_vars(vars(&[])).expect("defaults").notification_retention, days(90));
        let set = |raw: &str| Settings::from_vars(vars(&[("MERCATO_NOTIFICATION_RETENTION_DAYS", raw)]));
        assert_eq!(set("2190").expect("six years").notification_retention, days(2190));
        assert_eq!(set("0").expect("for ever").notification_retention, None);
        for bad in ["-1", "ninety", "40000"] {
            assert_eq!(set(bad).expect_err(bad).0[0].variable, "MERCATO_NOTIFICATION_RETENTION_DAYS");
        }
    }

    #[test]
    fn returns_are_taken_for_30_days_unless_told_otherwise() {
        assert_eq!(Settings::from_vars(vars(&[])).expect("defaults").return_window_days, 30);
        let set = |raw: &str| Settings::from_vars(vars(&[("MERCATO_RETURN_WINDOW_DAYS", raw)]));
        assert_eq!(set("14").expect("two weeks").return_window_days, 14);
        assert_eq!(set("0").expect("none").return_window_days, 0);
        for bad in ["-1", "thirty", "4000"] {
            assert_eq!(set(bad).expect_err(bad).0[0].variable, "MERCATO_RETURN_WINDOW_DAYS");
        }
    }

    #[test]
    fn returns_share_shipping_unless_told_to_keep_it_for_the_whole_order() {
        assert_eq!(Settings::from_vars(vars(&[])).expect("defaults").return_shipping, ReturnShipping::Shared);
        let set = |raw: &str| Settings::from_vars(vars(&[("MERCATO_RETURN_SHIPPING", raw)]));
        assert_eq!(set("whole-order").expect("whole order").return_shipping, ReturnShipping::WholeOrder);
        assert_eq!(set(" shared ").expect("shared").return_shipping, ReturnShipping::Shared);
        assert_eq!(set("never").expect_err("unknown").0[0].variable, "MERCATO_RETURN_SHIPPING");
    }

    #[test]
    fn the_return_address_is_lines_separated_by_semicolons() {
        assert!(Settings::from_vars(vars(&[])).expect("defaults").return_address.is_empty());
        let set = |raw: &str| Settings::from_vars(vars(&[("MERCATO_RETURN_ADDRESS", raw)]));
        let address = set(" Mercato Returns; Lagerstraße 1 ;;10115 Berlin ").expect("address").return_address;
        assert_eq!(address, ["Mercato Returns", "Lagerstraße 1", "10115 Berlin"]);
        assert_eq!(set(&"x;".repeat(9)).expect_err("too many lines").0[0].variable, "MERCATO_RETURN_ADDRESS");
        assert_eq!(set(&"x".repeat(101)).expect_err("too long").0[0].variable, "MERCATO_RETURN_ADDRESS");
    }

    #[test]
    fn reviews_are_published_at_once_unless_the_shop_moderates_them_first() {
        assert_eq!(Settings::from_vars(vars(&[])).expect("defaults").review_moderation, ReviewModeration::Off);
        let set = |raw: &str| Settings::from_vars(vars(&[("MERCATO_REVIEW_MODERATION", raw)]));
        assert_eq!(set(" pre ").expect("pre").review_moderation, ReviewModeration::Pre);
        assert_eq!(set("off").expect("off").review_moderation, ReviewModeration::Off);
        assert_eq!(set("post").expect_err("unknown").0[0].variable, "MERCATO_REVIEW_MODERATION");
    }

    /// A settings file with `text` in a directory of its own (kept while the guard lives), and its path.
    fn settings_file(text: &str) -> (crate::testkit::TempDir, String) {
        let dir = crate::testkit::TempDir::new("settings").expect("temp dir");
        let path = dir.path().join("mercato.toml");
        std::fs::write(&path, text).expect("written");
        (dir, path.display().to_string())
    }

    #[test]
    fn a_settings_file_gives_what_the_environment_does_not() {
        let (_dir, path) = settings_file(
            r#"
            http_addr = "0.0.0.0:8081"
            metrics_addr = "0.0.0.0:9091"
            cors_origins = ["https://shop.example.com", "https://admin.example.com"]
            checkout_requires_verified_email = true
            notification_retention_days = 30

            [catalog]
            url = "http://catalog:50053"
            client_secret = "catalog-secret-of-at-least-32-characters"
            "#,
        );
        let s =
            Settings::from_vars_and_file(vars(&[("MERCATO_CONFIG", &path), ("MERCATO_HTTP_ADDR", "127.0.0.1:8088")]))
                .expect("valid");
        assert_eq!(s.http_addr, "127.0.0.1:8088".parse().expect("addr"), "the environment wins");
        assert_eq!(s.metrics_addr, "0.0.0.0:9091".parse().expect("addr"));
        assert_eq!(s.cors_origins, ["https://shop.example.com", "https://admin.example.com"]);
        assert!(s.checkout_requires_verified_email);
        assert_eq!(s.notification_retention, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(s.service_url("catalog"), "http://catalog:50053");
        assert_eq!(s.service_secrets.get("catalog").map(String::len), Some(40));
        // Without MERCATO_CONFIG no file is read.
        let plain = Settings::from_vars_and_file(vars(&[])).expect("defaults");
        assert_eq!(plain.metrics_addr, "127.0.0.1:9090".parse().expect("addr"));
    }

    #[test]
    fn a_settings_file_with_a_typo_or_a_bad_value_stops_the_start_naming_both() {
        let (_dir, path) = settings_file("smpt_url = \"smtp://mail:25\"\nhttp_addr = \"everywhere\"\n");
        let errors = Settings::from_vars_and_file(vars(&[("MERCATO_CONFIG", &path)])).expect_err("refused").0;
        let named: Vec<&str> = errors.iter().map(|e| e.variable.as_str()).collect();
        assert_eq!(named, ["MERCATO_HTTP_ADDR", "MERCATO_CONFIG"], "{errors:?}");
        assert!(errors[1].problem.contains("`smpt_url` is not a setting"), "{}", errors[1].problem);
        assert!(errors[1].problem.contains(&path), "says which file: {}", errors[1].problem);

        let missing = Settings::from_vars_and_file(vars(&[("MERCATO_CONFIG", "/nonexistent/mercato.toml")]));
        let missing = missing.expect_err("no such file").0;
        assert_eq!(missing[0].variable, "MERCATO_CONFIG");
        assert!(missing[0].problem.starts_with("cannot read /nonexistent/mercato.toml"), "{}", missing[0].problem);
        let (_dir, broken) = settings_file("http_addr = ");
        let broken = Settings::from_vars_and_file(vars(&[("MERCATO_CONFIG", &broken)])).expect_err("not TOML").0;
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert_eq!(broken[0].variable, "MERCATO_CONFIG");
    }

    #[test]
    fn checkout_asks_for_a_verified_address_only_when_told_to() {
        assert!(!Settings::from_vars(vars(&[])).expect("defaults").checkout_requires_verified_email);
        let set = |raw: &str| Settings::from_vars(vars(&[("MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL", raw)]));
        for (raw, required) in
            [("true", true), (" TRUE ", true), ("1", true), ("false", false), ("0", false), ("", false)]
        {
            assert_eq!(set(raw).expect(raw).checkout_requires_verified_email, required, "{raw:?}");
        }
        for bad in ["yes", "on", "2"] {
            assert_eq!(set(bad).expect_err(bad).0[0].variable, "MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL");
        }
    }

    #[test]
    fn blobs_go_to_an_s3_bucket_when_one_is_named() {
        let s = Settings::from_vars(vars(&[])).expect("defaults");
        assert_eq!((s.s3_bucket, s.s3_endpoint), (None, None), "the data directory by default");
        let s = Settings::from_vars(vars(&[
            ("MERCATO_S3_BUCKET", "shop-images.eu-1"),
            ("MERCATO_S3_ENDPOINT", "http://minio:9000"),
        ]))
        .expect("valid");
        assert_eq!(s.s3_bucket.as_deref(), Some("shop-images.eu-1"));
        assert_eq!(s.s3_endpoint.as_deref(), Some("http://minio:9000"));
        for bad in ["Shop", "ab", "-shop", "shop_images", "s3://shop"] {
            let err = Settings::from_vars(vars(&[("MERCATO_S3_BUCKET", bad)])).expect_err(bad);
            assert_eq!(err.0[0].variable, "MERCATO_S3_BUCKET", "{bad}");
        }
        let half = Settings::from_vars(vars(&[("MERCATO_S3_BUCKET", "b1b"), ("MERCATO_S3_ACCESS_KEY_ID", "AKIA")]))
            .expect_err("a key id without its secret");
        assert_eq!(half.0[0].variable, "MERCATO_S3_SECRET_ACCESS_KEY");
        let err = Settings::from_vars(vars(&[("MERCATO_S3_ENDPOINT", "http://minio:9000")])).expect_err("no bucket");
        assert_eq!(err.0[0].variable, "MERCATO_S3_ENDPOINT");
        let err = Settings::from_vars(vars(&[("MERCATO_S3_BUCKET", "b1b"), ("MERCATO_S3_ENDPOINT", "minio:9000")]))
            .expect_err("no scheme");
        assert_eq!(err.0[0].variable, "MERCATO_S3_ENDPOINT");
    }

    #[test]
    fn service_secrets_must_be_long() {
        let short = Settings::from_vars(vars(&[("MERCATO_ORDERS_CLIENT_SECRET", "hunter2")])).expect_err("short");
        assert_eq!(short.0[0].variable, "MERCATO_ORDERS_CLIENT_SECRET");
        let long = "x".repeat(32);
        let s = Settings::from_vars(vars(&[("MERCATO_ORDERS_CLIENT_SECRET", &long)])).expect("valid");
        assert_eq!(s.service_secrets["orders"], long);
    }

    #[test]
    fn rate_limits_default_to_strict_logins() {
        let s = Settings::from_vars(vars(&[])).expect("valid");
        assert!(s.rate_limits.enabled);
        assert_eq!(s.rate_limits.default, Quota::new(20, Duration::from_secs(1), 40));
        assert_eq!(s.rate_limits.quota("POST /v1/auth/login"), Quota::new(5, Duration::from_secs(60), 5));
        assert_eq!(s.rate_limits.quota("POST /v1/auth/register"), Quota::new(10, Duration::from_secs(60), 10));
        let anyones_mail = Quota::new(5, Duration::from_secs(60), 5);
        assert_eq!(s.rate_limits.quota("POST /v1/contact"), anyones_mail);
        assert_eq!(s.rate_limits.quota("POST /v1/newsletter/subscriptions"), anyones_mail);
        assert_eq!(s.rate_limits.quota("POST /v1/auth/password-resets"), anyones_mail);
        assert_eq!(s.rate_limits.quota("POST /v1/auth/password:change"), Quota::new(5, Duration::from_secs(60), 5));
        assert_eq!(s.rate_limits.quota("POST /v1/auth/email-changes"), Quota::new(5, Duration::from_secs(60), 5));
        assert_eq!(s.rate_limits.quota("GET /v1/products"), s.rate_limits.default);
        assert!(s.trusted_proxies.is_empty());
    }

    #[test]
    fn rate_limits_parse_and_override_the_defaults() {
        let s = Settings::from_vars(vars(&[(
            "MERCATO_RATE_LIMITS",
            "default=100/10s:20, GET /v1/products=50/min , POST /v1/auth/login=3/h:2, GET /v1/{name=shelves/*}=1/s",
        )]))
        .expect("valid");
        let limits = s.rate_limits;
        assert_eq!(limits.default, Quota::new(100, Duration::from_secs(10), 20));
        assert_eq!(limits.quota("GET /v1/products"), Quota::new(50, Duration::from_secs(60), 50));
        assert_eq!(limits.quota("POST /v1/auth/login"), Quota::new(3, Duration::from_secs(3600), 2));
        assert_eq!(limits.quota("POST /v1/auth/register"), Quota::new(10, Duration::from_secs(60), 10));
        assert_eq!(limits.quota("GET /v1/{name=shelves/*}"), Quota::new(1, Duration::from_secs(1), 1));
        assert_eq!(limits.default.emission_interval(), Duration::from_millis(100));
        let off = Settings::from_vars(vars(&[("MERCATO_RATE_LIMITS", "off")])).expect("valid");
        assert!(!off.rate_limits.enabled);
    }

    #[test]
    fn bad_rate_limits_name_the_variable_and_the_entry() {
        for (raw, needle) in [
            ("default=20/s:40,POST /v1/auth/login=5/fortnight", "\"POST /v1/auth/login=5/fortnight\""),
            ("default=0/s", "at least 1"),
            ("default=20/s:x", "burst \"x\""),
            ("login=5/min", "\"login\" is not a route"),
            ("POST /v1/auth/login", "expected <route>=<quota>"),
            ("get /v1/products=1/s", "is not a route"),
        ] {
            let err = Settings::from_vars(vars(&[("MERCATO_RATE_LIMITS", raw)])).expect_err(raw);
            let text = err.to_string();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(text.starts_with("invalid setting MERCATO_RATE_LIMITS: "), "{text}");
            assert!(text.contains(needle), "{raw}: {text}");
        }
    }

    #[test]
    fn trusted_proxies_are_ips_or_cidrs() {
        let s = Settings::from_vars(vars(&[("MERCATO_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,fd00::/8")]))
            .expect("valid");
        let [private, single, v6] = s.trusted_proxies[..] else { panic!("three networks") };
        assert!(private.contains("10.1.2.3".parse().expect("ip")));
        assert!(private.contains("::ffff:10.1.2.3".parse().expect("ip")), "IPv4-mapped addresses count");
        assert!(!private.contains("11.0.0.1".parse().expect("ip")));
        assert!(single.contains("192.168.1.7".parse().expect("ip")));
        assert!(!single.contains("192.168.1.8".parse().expect("ip")));
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("10.1.2.3".parse().expect("ip")));
        assert_eq!(private.to_string(), "10.0.0.0/8");
        let all: IpNet = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));

        let err =
            Settings::from_vars(vars(&[("MERCATO_TRUSTED_PROXIES", "10.0.0.0/33,proxy.local")])).expect_err("invalid");
        assert_eq!(err.0.len(), 2);
        assert!(err.0.iter().all(|e| e.variable == "MERCATO_TRUSTED_PROXIES"));
        assert!(err.to_string().contains("\"proxy.local\" is not an IP address"));
    }

    #[test]
    fn tls_between_services_needs_all_three_files_and_https_urls() {
        let plain = Settings::from_vars(vars(&[])).expect("valid");
        assert_eq!((&plain.grpc_tls, plain.service_url("orders").as_str()), (&None, "http://127.0.0.1:50055"));
        let tls = [
            ("MERCATO_GRPC_TLS_CERT", "/etc/mercato/grpc/tls.crt"),
            ("MERCATO_GRPC_TLS_KEY", "/etc/mercato/grpc/tls.key"),
            ("MERCATO_GRPC_TLS_CA", "/etc/mercato/grpc/ca.crt"),
        ];
        let s = Settings::from_vars(vars(&[tls[0], tls[1], tls[2], ("MERCATO_AUTH_URL", "https://auth:50051")]))
            .expect("valid");
        let files = s.grpc_tls.clone().expect("TLS between services");
        assert_eq!((files.identity.cert.to_str(), files.ca.to_str()), (Some(tls[0].1), Some(tls[2].1)));
        assert_eq!(s.service_url("auth"), "https://auth:50051");
        assert_eq!(s.service_url("orders"), "https://127.0.0.1:50055", "defaults speak TLS too");

        let err = Settings::from_vars(vars(&[tls[0], tls[2]])).expect_err("no key");
        assert_eq!(err.0.iter().map(|e| e.variable.as_str()).collect::<Vec<_>>(), ["MERCATO_GRPC_TLS_KEY"]);
        let err = Settings::from_vars(vars(&[tls[0], tls[1], tls[2], ("MERCATO_CART_URL", "http://cart:50054")]))
            .expect_err("plain URL with TLS");
        assert_eq!(err.0[0].variable, "MERCATO_CART_URL");
        assert!(err.0[0].problem.contains("expected https://"), "{err}");
        let err = Settings::from_vars(vars(&[("MERCATO_CART_URL", "https://cart:50054")])).expect_err("https alone");
        assert_eq!(err.0[0].variable, "MERCATO_CART_URL");
        assert!(err.0[0].problem.contains("MERCATO_GRPC_TLS_CERT"), "{err}");
    }

    #[test]
    fn gateway_tls_needs_both_files_or_neither() {
        assert_eq!(Settings::from_vars(vars(&[])).expect("valid").gateway_tls, None);
        let s = Settings::from_vars(vars(&[
            ("MERCATO_GATEWAY_TLS_CERT", "/etc/mercato/tls.crt"),
            ("MERCATO_GATEWAY_TLS_KEY", "/etc/mercato/tls.key"),
        ]))
        .expect("valid");
        assert_eq!(
            s.gateway_tls,
            Some(TlsFiles { cert: PathBuf::from("/etc/mercato/tls.crt"), key: PathBuf::from("/etc/mercato/tls.key") })
        );

        let err =
            Settings::from_vars(vars(&[("MERCATO_GATEWAY_TLS_CERT", "/etc/mercato/tls.crt")])).expect_err("no key");
        assert_eq!(err.to_string().lines().count(), 1);
        assert!(err.to_string().starts_with("invalid setting MERCATO_GATEWAY_TLS_KEY: must be set"), "{err}");
        let err =
            Settings::from_vars(vars(&[("MERCATO_GATEWAY_TLS_KEY", "/etc/mercato/tls.key")])).expect_err("no cert");
        assert_eq!(err.to_string().lines().count(), 1);
        assert!(err.to_string().starts_with("invalid setting MERCATO_GATEWAY_TLS_CERT: must be set"), "{err}");
    }
}
