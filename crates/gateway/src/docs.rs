//! `GET /docs`: a page for browsing `/openapi.json` (Swagger UI), every asset of it served by the gateway from
//! files embedded at build time. Swagger UI is vendored from the npm package `swagger-ui-dist`
//! (`assets/swagger-ui/`: version, licence, re-fetch script), so the page loads nothing from another origin,
//! which its Content-Security-Policy enforces.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, header};

/// The route key of the page and its assets for rate limits: they share one budget.
pub const DOCS_ROUTE: &str = "GET /docs";

/// Nothing from another origin; no inline script or style; requests (the page's "Try it out") only to the
/// gateway; images may be the stylesheet's `data:` icons; no framing, no `<base>`, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file the gateway serves under `/docs`.
#[derive(Debug)]
pub struct Asset {
    /// Its path, e.g. `/docs/swagger-ui.css`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    bytes: &'static [u8],
}

/// The page first, then what it loads.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/docs",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../assets/docs/index.html"),
    },
    Asset {
        path: "/docs/init.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/docs/init.js"),
    },
    Asset {
        path: "/docs/swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js"),
    },
    Asset {
        path: "/docs/swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/swagger-ui/swagger-ui.css"),
    },
];

/// The asset at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

impl Asset {
    /// The answer: the bytes with their type, the page with its policy. The page is revalidated on every visit
    /// while the assets may be cached for an hour, so an upgraded gateway's page is seen at once and its
    /// assets within the hour.
    pub fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.bytes));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if self.content_type.starts_with("text/html") {
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        } else {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_vendored_files_are_those_fetched_from_npm() {
        let sums = include_str!("../assets/swagger-ui/SHA256SUMS");
        let mut checked = 0;
        for line in sums.lines() {
            let (sum, file) = line.split_once("  ").expect("sha256sum format");
            let asset = asset(&format!("/docs/{file}")).expect("every fetched file is served");
            let digest: String = Sha256::digest(asset.bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(digest, sum, "{file} differs from the npm release: re-run assets/swagger-ui/fetch.sh");
            checked += 1;
        }
        assert_eq!(checked, 2);
    }
}
