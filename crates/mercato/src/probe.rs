//! A minimal HTTP/1.1 GET for `mercato healthcheck`: enough to read a status line from our own probe
//! endpoint, so container images need neither curl nor a shell.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP status code `url` (plain `http://host:port/path`) answers a GET with.
pub async fn get_status(url: &str, timeout: Duration) -> anyhow::Result<u16> {
    let rest = url.strip_prefix("http://").with_context(|| format!("{url}: only http:// URLs are probed"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let exchange = async {
        let mut stream =
            TcpStream::connect(authority).await.with_context(|| format!("cannot connect to {authority}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        let line = String::from_utf8_lossy(&head[..n]);
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .with_context(|| format!("{url} did not answer HTTP"))
    };
    tokio::time::timeout(timeout, exchange).await.with_context(|| format!("{url} did not answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_status_of_a_real_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let readiness = platform::metrics::Readiness::new();
        let router = platform::metrics::router(readiness.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let url = format!("http://{addr}/readyz");
        assert_eq!(get_status(&url, Duration::from_secs(2)).await.expect("answers"), 503);
        readiness.set(true);
        assert_eq!(get_status(&url, Duration::from_secs(2)).await.expect("answers"), 200);
        assert!(get_status("http://127.0.0.1:1/readyz", Duration::from_secs(2)).await.is_err());
    }
}
