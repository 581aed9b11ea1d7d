//! `GET /docs`: a page for browsing `/openapi.json` whose every asset the gateway serves itself, under a
//! Content-Security-Policy that allows no other origin.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use platform::Settings;

/// Serves a gateway on a free port until the guard drops; its base URL.
async fn serve(settings: Settings) -> (String, tokio_util::sync::DropGuard) {
    let (addr, shutdown, _server) = support::serve_gateway(settings).await;
    (format!("http://{addr}"), shutdown.drop_guard())
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// The values of every `src="..."` and `href="..."` in `html`.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (start, _) in html.match_indices(attribute) {
            let rest = &html[start + attribute.len()..];
            found.push(rest[..rest.find('"').expect("closing quote")].to_owned());
        }
    }
    found
}

#[tokio::test]
async fn the_docs_page_loads_only_same_origin_assets_and_browses_openapi_json() {
    let (base, _stop) = serve(support::settings(&[])).await;
    let client = reqwest::Client::new();

    let page = client.get(format!("{base}/docs")).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let policy = header(&page, "content-security-policy");
    for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"] {
        assert!(policy.split(';').any(|d| d.trim() == directive), "{directive} missing from {policy}");
    }
    assert!(!policy.contains("http") && !policy.contains("unsafe"), "the policy allows more than the origin: {policy}");
    let html = page.text().await.expect("body");
    assert!(!html.contains("<script>") && !html.contains("style="), "inline code the policy would block");

    let references = references(&html);
    let mut scripts = String::new();
    let mut served = 0;
    for reference in &references {
        if reference.starts_with("data:") {
            continue;
        }
        assert!(reference.starts_with('/') && !reference.starts_with("//"), "{reference} is not same-origin");
        let asset = client.get(format!("{base}{reference}")).send().await.expect("sent");
        assert_eq!(asset.status(), 200, "{reference}");
        let expected = if reference.ends_with(".js") { "text/javascript" } else { "text/css" };
        assert!(
            header(&asset, "content-type").starts_with(expected),
            "{reference}: {}",
            header(&asset, "content-type")
        );
        assert_eq!(header(&asset, "x-content-type-options"), "nosniff");
        let body = asset.text().await.expect("body");
        assert!(body.len() > 100, "{reference} is empty");
        if reference.ends_with(".js") {
            scripts.push_str(&body);
        }
        served += 1;
    }
    assert_eq!(served, 3, "the stylesheet, Swagger UI and its start script: {references:?}");
    assert!(scripts.contains("SwaggerUIBundle({"), "Swagger UI is started");
    assert!(scripts.contains(r#"url: "/openapi.json""#), "the page browses the gateway's own document");

    // The page is listed with the gateway's own endpoints, like the document itself.
    let document: serde_json::Value =
        client.get(format!("{base}/openapi.json")).send().await.expect("sent").json().await.expect("json");
    let operation = &document["paths"]["/docs"]["get"];
    assert_eq!(operation["operationId"], "Gateway_Docs");
    assert!(operation["responses"]["200"]["content"]["text/html"].is_object(), "{operation}");
}

#[tokio::test]
async fn the_assets_are_compressed_on_the_wire() {
    let (base, _stop) = serve(support::settings(&[])).await;
    let response = reqwest::Client::new()
        .get(format!("{base}/docs/swagger-ui-bundle.js"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-encoding"), "gzip");
    let sent = response.bytes().await.expect("body").len();
    assert!(sent < 700_000, "{sent} bytes sent for a 1.7 MB script");
}

#[tokio::test]
async fn the_page_and_its_assets_share_one_rate_limit_budget() {
    // `GET /docs` is a route key operators may budget; the page and what it loads are charged to it.
    let (base, _stop) = serve(support::settings(&[("MERCATO_RATE_LIMITS", "GET /docs=2/min:2")])).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/docs")).send().await.expect("sent").status(), 200);
    assert_eq!(client.get(format!("{base}/docs/init.js")).send().await.expect("sent").status(), 200);
    let refused = client.get(format!("{base}/docs/swagger-ui.css")).send().await.expect("sent");
    assert_eq!(refused.status(), 429);
    assert!(!header(&refused, "retry-after").is_empty());
    // Other routes keep their own budget.
    assert_eq!(client.get(format!("{base}/openapi.json")).send().await.expect("sent").status(), 200);
}
