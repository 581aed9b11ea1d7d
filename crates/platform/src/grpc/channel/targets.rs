//! The addresses a channel was given. An IP address is one replica; a host name is one replica per address it
//! resolves to, looked up again from time to time, so that replicas coming and going behind one name (a
//! Kubernetes headless service lists its ready pods that way) share the calls.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::uri::{Authority, Scheme};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::Status;

use super::ChannelError;
use super::replica::Replica;

/// Looks a host name up: the socket addresses for `(host, port)`.
pub(super) type Resolve = Arc<dyn Fn(String, u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system's resolver (DNS, `/etc/hosts`).
pub(super) fn system_resolver() -> Resolve {
    Arc::new(|host, port| Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) }))
}

/// The replicas currently behind one address.
pub(super) type Replicas = Arc<[Arc<Replica>]>;

/// One address of a service, `http://host:port` or `https://host:port`.
pub(super) struct Target {
    /// `http` or `https`, sent as every request's `:scheme`.
    pub(super) scheme: Scheme,
    /// `host:port`, sent as every request's `:authority`.
    pub(super) authority: Authority,
    /// How its replicas are called over TLS (`https://`); `None` for plain HTTP/2.
    pub(super) tls: Option<TlsTarget>,
    host: String,
    port: u16,
    replicas: Mutex<Replicas>,
    /// When the host name was last looked up (milliseconds since the channel's epoch; [`NEVER`] before the first
    /// lookup); `None` for an IP address, whose one replica never changes.
    looked_up_ms: Option<AtomicU64>,
    /// One lookup at a time.
    looking_up: tokio::sync::Mutex<()>,
    /// Why the last lookup failed, when it left no address to call: what calls are told until the next lookup.
    failure: Mutex<String>,
}

const NEVER: u64 = u64::MAX;

/// TLS towards one address: the client configuration, and the name its replicas' certificates must carry (the
/// URL's host, whichever address it resolved to).
pub(super) struct TlsTarget {
    pub(super) connector: TlsConnector,
    pub(super) server_name: ServerName<'static>,
}

/// How soon a name that resolved to nothing is looked up again (at most; `refresh` when shorter). Until then calls
/// fail at once with the lookup's error, instead of each waiting in turn for a lookup of its own (slow when the
/// resolver times out) while the service is missing.
const RETRY_FAILED_LOOKUP: Duration = Duration::from_secs(1);

impl Target {
    /// The address `url`; `https://` ones are called over TLS configured by `tls`, and refused without it.
    pub(super) fn parse(url: &str, tls: Option<&Arc<ClientConfig>>) -> Result<Self, ChannelError> {
        let invalid = |reason| ChannelError::InvalidUrl { url: url.to_owned(), reason };
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let (scheme, tls, default_port) = match (uri.scheme(), tls) {
            (Some(scheme), _) if *scheme == Scheme::HTTP => (Scheme::HTTP, None, 80),
            (Some(scheme), Some(tls)) if *scheme == Scheme::HTTPS => (Scheme::HTTPS, Some(tls), 443),
            (Some(scheme), None) if *scheme == Scheme::HTTPS => {
                return Err(invalid("https needs TLS between services (MERCATO_GRPC_TLS_CERT, _KEY and _CA)"));
            }
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let given = uri.authority().ok_or_else(|| invalid("no host"))?;
        // `host:port`, with the scheme's default port made explicit.
        let port = given.port_u16().unwrap_or(default_port);
        let authority: Authority = format!("{}:{port}", given.host()).parse().map_err(|_| invalid("bad host"))?;
        let host = given.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let tls = match tls {
            Some(config) => Some(TlsTarget {
                connector: TlsConnector::from(config.clone()),
                server_name: ServerName::try_from(host.clone()).map_err(|_| invalid("bad host for TLS"))?,
            }),
            None => None,
        };
        let (replicas, looked_up_ms): (Replicas, _) = match host.parse::<IpAddr>() {
            Ok(ip) => (Arc::new([Arc::new(Replica::new(SocketAddr::new(ip, port)))]), None),
            Err(_) => (Arc::new([]), Some(AtomicU64::new(NEVER))),
        };
        Ok(Self {
            scheme,
            authority,
            tls,
            host,
            port,
            replicas: Mutex::new(replicas),
            looked_up_ms,
            looking_up: tokio::sync::Mutex::new(()),
            failure: Mutex::new(String::new()),
        })
    }

    /// The replicas as last resolved, without looking anything up.
    #[cfg(test)]
    pub(super) fn replicas_now(&self) -> Replicas {
        self.current()
    }

    /// `replicas` as looked up last, or the failure of that lookup when it left none.
    fn known(&self, replicas: Replicas) -> Result<Replicas, Status> {
        if replicas.is_empty() {
            return Err(Status::unavailable(self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()));
        }
        Ok(replicas)
    }

    fn current(&self) -> Replicas {
        self.replicas.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The replicas now; a host name is looked up first when its last lookup is older than `refresh` (or than
    /// [`RETRY_FAILED_LOOKUP`] when it left no address). While one call looks the name up, the others go on with
    /// the addresses they have, or wait for its answer when there are none.
    pub(super) async fn replicas(
        &self,
        epoch: Instant,
        refresh: Duration,
        resolve: &Resolve,
    ) -> Result<Replicas, Status> {
        let current = self.current();
        let Some(looked_up_ms) = &self.looked_up_ms else { return Ok(current) };
        let due = |last: u64, replicas: &Replicas| {
            let refresh = if replicas.is_empty() { refresh.min(RETRY_FAILED_LOOKUP) } else { refresh };
            last == NEVER || epoch.elapsed().as_millis() as u64 >= last.saturating_add(refresh.as_millis() as u64)
        };
        if !due(looked_up_ms.load(Ordering::Relaxed), &current) {
            return self.known(current);
        }
        let _one_at_a_time = match self.looking_up.try_lock() {
            Ok(guard) => guard,
            Err(_) if !current.is_empty() => return Ok(current),
            Err(_) => self.looking_up.lock().await,
        };
        // Another call may have looked it up while this one waited.
        let current = self.current();
        if !due(looked_up_ms.load(Ordering::Relaxed), &current) {
            return self.known(current);
        }
        let looked_up = resolve(self.host.clone(), self.port).await;
        let now = epoch.elapsed().as_millis() as u64;
        match looked_up {
            Ok(addresses) if !addresses.is_empty() => {
                // Replicas still listed keep their connections.
                let mut replicas: Vec<Arc<Replica>> = Vec::with_capacity(addresses.len());
                for address in addresses {
                    if replicas.iter().any(|r| r.address == address) {
                        continue;
                    }
                    let kept = current.iter().find(|r| r.address == address).cloned();
                    replicas.push(kept.unwrap_or_else(|| Arc::new(Replica::new(address))));
                }
                let replicas: Replicas = replicas.into();
                *self.replicas.lock().unwrap_or_else(PoisonError::into_inner) = replicas.clone();
                looked_up_ms.store(now, Ordering::Relaxed);
                Ok(replicas)
            }
            failed => {
                let why = match failed {
                    Err(e) => e.to_string(),
                    Ok(_) => "no address".to_owned(),
                };
                if current.is_empty() {
                    // Nothing to fall back on: calls fail with this until the name is looked up again.
                    let failure = format!("{}: cannot resolve {}: {why}", self.authority, self.host);
                    *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = failure.clone();
                    looked_up_ms.store(now, Ordering::Relaxed);
                    return Err(Status::unavailable(failure));
                }
                tracing::warn!(host = %self.host, error = %why, "service lookup failed; keeping the last replicas");
                looked_up_ms.store(now, Ordering::Relaxed);
                Ok(current)
            }
        }
    }
}
