//! The gateway serving contracts it was not built with: `tests/protos/mercato/echo/v1/echo.proto`, compiled
//! here with protox against the repository's `proto/` (for the options), served by a stand-in over real gRPC.
//! Every REST route of it comes from its annotations alone, with no gateway code. Also: server streaming as
//! newline-delimited JSON, per-route timeouts as gRPC deadlines, and balancing over two catalog replicas.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::prelude::{BASE64_STANDARD, Engine as _};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use gateway::Gateway;
use gateway::upstream::{RawCodec, Upstreams};
use platform::Settings;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// The echo contracts, compiled the way `api` compiles `proto/`, but at test time.
fn echo_pool() -> DescriptorPool {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut compiler = protox::Compiler::new([format!("{root}/tests/protos"), format!("{root}/../../proto")])
        .expect("include paths exist");
    compiler.include_imports(true).include_source_info(true);
    compiler.open_file("mercato/echo/v1/echo.proto").expect("echo.proto compiles");
    compiler.descriptor_pool()
}

/// The gRPC service a stand-in serves.
trait Contract: Send + Sync + 'static {
    /// Full name of the service.
    const NAME: &'static str;
}

struct Echo;
impl Contract for Echo {
    const NAME: &'static str = "mercato.echo.v1.EchoService";
}

struct Catalog;
impl Contract for Catalog {
    const NAME: &'static str = "mercato.catalog.v1.CatalogService";
}

/// A stand-in for a service of `pool`: decodes each call with the descriptors and answers it in JSON
/// ([`answer`], [`stream`]). `replica` names it in the answers.
struct StandIn<C> {
    pool: DescriptorPool,
    replica: String,
    contract: PhantomData<C>,
}

impl<C> Clone for StandIn<C> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), replica: self.replica.clone(), contract: PhantomData }
    }
}

impl<C: Contract> tonic::server::NamedService for StandIn<C> {
    const NAME: &'static str = C::NAME;
}

impl<C: Contract> tower::Service<http::Request<tonic::body::Body>> for StandIn<C> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let name = request.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let method = self
            .pool
            .get_service_by_name(C::NAME)
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .expect("a method of the contract");
        let replica = self.replica.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            if method.is_server_streaming() {
                let handler = tower::service_fn(move |call: tonic::Request<Bytes>| {
                    let method = method.clone();
                    async move {
                        let request = decode(&method, call.get_ref());
                        Ok::<_, Status>(tonic::Response::new(stream(method, request)?))
                    }
                });
                Ok(grpc.server_streaming(handler, request).await)
            } else {
                let handler = tower::service_fn(move |call: tonic::Request<Bytes>| {
                    let (method, replica) = (method.clone(), replica.clone());
                    async move {
                        let mut request = decode(&method, call.get_ref());
                        // What the gateway sent as the deadline, for the tests to see.
                        let timeout = call.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok());
                        request["grpcTimeout"] = json!(timeout);
                        let answer = answer(&method, &replica, &request).await?;
                        Ok::<_, Status>(tonic::Response::new(encode(&method, answer)))
                    }
                });
                Ok(grpc.unary(handler, request).await)
            }
        })
    }
}

fn decode(method: &MethodDescriptor, bytes: &[u8]) -> Value {
    let message = DynamicMessage::decode(method.input(), bytes).expect("the gateway sent a valid request");
    serde_json::to_value(message).expect("serialises")
}

fn encode(method: &MethodDescriptor, json: Value) -> Bytes {
    let message = DynamicMessage::deserialize(method.output(), json).expect("the answer fits the output message");
    Bytes::from(message.encode_to_vec())
}

/// The unary methods: echo what was sent.
async fn answer(method: &MethodDescriptor, replica: &str, request: &Value) -> Result<Value, Status> {
    Ok(match method.name() {
        "GetShelf" => json!({
            "name": request["name"], "theme": request["theme"], "tags": request["tags"], "servedBy": replica,
        }),
        "CreateShelf" => {
            let mut shelf = request["shelf"].clone();
            shelf["servedBy"] = json!(replica);
            shelf
        }
        "ArchiveShelf" => json!({"name": request["name"], "theme": request["reason"], "archived": true}),
        "DeleteShelf" => json!({"name": request["name"]}),
        // proto3 JSON carries bytes as base64: "label of shelves/s1\n".
        "GetShelfLabel" => {
            let label = format!("label of {}\n", request["name"].as_str().unwrap_or_default());
            // With the headers a file asks for, as the HttpBody's extension.
            let headers = json!({
                "@type": "type.googleapis.com/mercato.options.v1.HttpBodyHeaders",
                "cacheControl": "public, max-age=60",
                "etag": "\"v1\"",
                "contentDisposition": "attachment; filename=\"label.txt\"",
            });
            json!({"contentType": "text/plain; charset=utf-8", "data": BASE64_STANDARD.encode(label), "extensions": [headers]})
        }
        "Wait" => {
            let delay = request["delayMs"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            json!({"name": "shelves/waited", "theme": request["grpcTimeout"]})
        }
        "GetProduct" => json!({"product": {"id": request["id"], "name": replica}}),
        other => return Err(Status::unimplemented(format!("{other} is not in this test"))),
    })
}

type ShelfStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// ListShelves: `count` shelves, one every `intervalMs`, failing after `failAfter` when set.
fn stream(method: MethodDescriptor, request: Value) -> Result<ShelfStream, Status> {
    let number = |key: &str| request[key].as_i64().unwrap_or(0);
    let (count, interval, fail_after) = (number("count"), number("intervalMs"), number("failAfter"));
    if count < 0 {
        return Err(Status::invalid_argument("count must not be negative"));
    }
    let interval = Duration::from_millis(u64::try_from(interval).unwrap_or(0));
    let shelves = futures::stream::unfold(0, move |i| {
        let method = method.clone();
        async move {
            if i >= count {
                return None;
            }
            tokio::time::sleep(interval).await;
            if fail_after > 0 && i == fail_after {
                return Some((Err(Status::failed_precondition("the shelves ran out")), count));
            }
            Some((Ok(encode(&method, json!({"name": format!("shelves/{i}")}))), i + 1))
        }
    });
    Ok(Box::pin(shelves))
}

/// Serves a stand-in on a free port; its URL.
async fn serve_stand_in<C: Contract>(pool: DescriptorPool, replica: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = StandIn::<C> { pool, replica: replica.to_owned(), contract: PhantomData };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

/// Settings with no rate limits and every service (auth included) where nothing listens, plus `extra`.
fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = platform::config::SERVICE_PORTS
        .iter()
        .map(|(service, _)| (format!("MERCATO_{}_URL", service.to_uppercase()), "http://127.0.0.1:1".to_owned()))
        .collect();
    vars.insert("MERCATO_RATE_LIMITS".to_owned(), "off".to_owned());
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::from_vars(vars).expect("settings")
}

/// Serves `gateway` on a free port until the token is dropped; its base URL.
async fn serve_gateway(gateway: Gateway, settings: Settings) -> (String, tokio_util::sync::DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move { gateway::serve_gateway(listener, gateway, &settings, stop).await });
    (format!("http://{addr}"), shutdown.drop_guard())
}

/// A gateway for the echo contracts in front of one echo stand-in.
async fn echo_gateway() -> (String, tokio_util::sync::DropGuard) {
    echo_gateway_with(&[]).await
}

/// [`echo_gateway`] with more settings.
async fn echo_gateway_with(extra: &[(&str, &str)]) -> (String, tokio_util::sync::DropGuard) {
    let pool = echo_pool();
    let echo = serve_stand_in::<Echo>(pool.clone(), "echo-1").await;
    let upstreams = Upstreams::from_channels([("echo".to_owned(), platform::grpc::channel(&echo).expect("channel"))]);
    let settings = settings(extra);
    let gateway = Gateway::from_pool(&pool, upstreams, &settings).expect("the echo contracts make a gateway");
    serve_gateway(gateway, settings).await
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn a_proto_annotation_is_all_a_new_route_needs() {
    let (base, _stop) = echo_gateway().await;
    let client = reqwest::Client::new();

    // `{name=shelves/*}` binds the whole resource name; query parameters bind the other fields.
    let got = client.get(format!("{base}/v1/shelves/s1?theme=tea&tags=a&tags=b")).send().await.expect("sent");
    let (status, body) = json_of(got).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["name"], &body["theme"], &body["tags"]),
        (&json!("shelves/s1"), &json!("tea"), &json!(["a", "b"]))
    );

    // A body field and the 201 the proto declares.
    let created = client
        .post(format!("{base}/v1/shelves"))
        .json(&json!({"name": "shelves/s2", "theme": "books"}))
        .send()
        .await
        .expect("sent");
    let (status, body) = json_of(created).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((&body["name"], &body["servedBy"]), (&json!("shelves/s2"), &json!("echo-1")));

    // A custom verb with `body: "*"`.
    let archived = client
        .post(format!("{base}/v1/shelves/s3:archive"))
        .json(&json!({"reason": "full"}))
        .send()
        .await
        .expect("sent");
    let (status, body) = json_of(archived).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["name"], &body["theme"], &body["archived"]),
        (&json!("shelves/s3"), &json!("full"), &json!(true))
    );

    // A method that accepts forms takes an HTML form's body, fields by name; JSON-only routes refuse one.
    let form = "application/x-www-form-urlencoded";
    let archive = |body: &'static str| {
        client.post(format!("{base}/v1/shelves/s4:archive")).header("content-type", form).body(body).send()
    };
    let (status, body) = json_of(archive("reason=too+full%21").await.expect("sent")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["name"], &body["theme"]), (&json!("shelves/s4"), &json!("too full!")));
    let (status, body) = json_of(archive("colour=red").await.expect("sent")).await;
    assert_eq!((status, &body["error"]["details"][0]["fieldViolations"][0]["field"]), (400, &json!("colour")));
    let (status, body) = json_of(archive("name=shelves/s9").await.expect("sent")).await;
    assert_eq!((status, &body["error"]["details"][0]["fieldViolations"][0]["field"]), (400, &json!("name")));
    let not_here = client.post(format!("{base}/v1/shelves")).header("content-type", form).body("name=shelves%2Fs5");
    let (status, body) = json_of(not_here.send().await.expect("sent")).await;
    assert_eq!((status, &body["error"]["message"]), (415, &json!("request bodies must be application/json")));

    // The access rule of the proto, checked at the edge.
    let deleted = client.delete(format!("{base}/v1/shelves/s1")).send().await.expect("sent");
    assert_eq!(deleted.headers()["www-authenticate"], "Bearer realm=\"mercato\"", "no token: a plain challenge");
    let (status, body) = json_of(deleted).await;
    assert_eq!((status, &body["error"]["status"]), (401, &json!("UNAUTHENTICATED")));
    let forged = client.delete(format!("{base}/v1/shelves/s1")).bearer_auth("not.a.jwt").send().await.expect("sent");
    let challenge = forged.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    assert_eq!(challenge, "Bearer realm=\"mercato\", error=\"invalid_token\"", "a refused token is named so");
    assert_eq!(json_of(forged).await.0, 401);

    // Unknown query parameters are named, as for the built-in contracts.
    let typo = client.get(format!("{base}/v1/shelves/s1?colour=red")).send().await.expect("sent");
    let (status, body) = json_of(typo).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["details"][0]["fieldViolations"][0]["field"], "colour");

    // A google.api.HttpBody is answered as its bytes, under its own Content-Type.
    let label = client.get(format!("{base}/v1/shelves/s1/label")).send().await.expect("sent");
    assert_eq!(label.status(), 200);
    assert_eq!(label.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(label.headers()["x-content-type-options"], "nosniff");
    assert_eq!(label.headers()["cache-control"], "public, max-age=60");
    assert_eq!(label.headers()["etag"], "\"v1\"");
    assert_eq!(label.headers()["content-disposition"], "attachment; filename=\"label.txt\"");
    assert_eq!(label.bytes().await.expect("body").as_ref(), b"label of shelves/s1\n");
    // A client that has this version already gets 304 without the bytes; another version gets them.
    for (if_none_match, status) in
        [("\"v1\"", 304), ("W/\"v1\"", 304), ("\"v0\", \"v1\"", 304), ("*", 304), ("\"v2\"", 200)]
    {
        let again = client.get(format!("{base}/v1/shelves/s1/label")).header("if-none-match", if_none_match);
        let again = again.send().await.expect("sent");
        assert_eq!(again.status(), status, "{if_none_match}");
        assert_eq!(again.headers()["etag"], "\"v1\"");
        let body = again.bytes().await.expect("body");
        assert_eq!(body.is_empty(), status == 304, "{if_none_match}");
    }

    // And the routes are in the OpenAPI document, the stream as newline-delimited JSON, the HttpBody as bytes
    // of any type.
    let (status, doc) = json_of(client.get(format!("{base}/openapi.json")).send().await.expect("sent")).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    let archive_path = paths.keys().find(|p| p.ends_with(":archive")).expect("the archive route");
    let takes = &doc["paths"][archive_path]["post"]["requestBody"]["content"];
    assert!(takes["application/json"].is_object() && takes[form].is_object(), "{takes}");
    assert!(doc["paths"]["/v1/shelves"]["post"]["requestBody"]["content"][form].is_null());
    let list = &doc["paths"]["/v1/shelves"]["get"]["responses"]["200"]["content"];
    assert!(list["application/x-ndjson"].is_object(), "{list}");
    assert!(list["application/json"].is_null(), "{list}");
    let label_path = paths.keys().find(|p| p.ends_with("/label")).expect("the label route");
    let label = &doc["paths"][label_path]["get"];
    assert_eq!(label["responses"]["200"]["content"]["*/*"]["schema"]["format"], "binary", "{label}");
    assert!(!label["description"].as_str().unwrap_or_default().contains("buf:lint"), "{label}");
}

/// Reads a newline-delimited JSON body as it arrives: each line and when it came.
async fn read_lines(mut response: reqwest::Response) -> Vec<(Value, Instant)> {
    let mut lines = Vec::new();
    let mut pending = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("the stream reads") {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            lines.push((serde_json::from_slice(&line).expect("each line is JSON"), Instant::now()));
        }
    }
    assert!(pending.is_empty(), "the last line ends with a newline");
    lines
}

#[tokio::test]
async fn server_streams_arrive_line_by_line_and_end_with_an_error_line_when_they_fail() {
    let (base, _stop) = echo_gateway().await;
    let client = reqwest::Client::new();

    let started = Instant::now();
    // A compressor would hold lines back, so streams are sent as they are even to clients that take gzip.
    let response = client
        .get(format!("{base}/v1/shelves?count=3&intervalMs=400"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert!(!response.headers().contains_key("content-encoding"));
    let lines = read_lines(response).await;
    let names: Vec<&Value> = lines.iter().map(|(line, _)| &line["name"]).collect();
    assert_eq!(names, [&json!("shelves/0"), &json!("shelves/1"), &json!("shelves/2")]);
    // Each line went out when its message came, not all at the end.
    let first = lines[0].1.duration_since(started);
    let last = lines[2].1.duration_since(started);
    assert!(last - first >= Duration::from_millis(600), "first line at {first:?}, last at {last:?}");

    // The status line is long gone when the stream fails: the failure is the last line.
    let response = client.get(format!("{base}/v1/shelves?count=5&failAfter=2")).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let lines = read_lines(response).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let error = &lines[2].0["error"];
    assert_eq!((&error["code"], &error["status"]), (&json!(400), &json!("FAILED_PRECONDITION")));
    assert_eq!(error["message"], "the shelves ran out");

    // A failure before the first message is an ordinary error answer.
    let refused = client.get(format!("{base}/v1/shelves?count=-1")).send().await.expect("sent");
    let (status, body) = json_of(refused).await;
    assert_eq!((status, &body["error"]["status"]), (400, &json!("INVALID_ARGUMENT")));
}

#[tokio::test]
async fn a_route_timeout_is_the_grpc_deadline_and_answers_504() {
    let (base, _stop) = echo_gateway().await;
    let client = reqwest::Client::new();

    // In time: the service was told the deadline (300 ms, from the proto).
    let (status, body) = json_of(client.get(format!("{base}/v1/wait?delayMs=10")).send().await.expect("sent")).await;
    assert_eq!(status, 200, "{body}");
    let sent = body["theme"].as_str().expect("the service saw a grpc-timeout");
    let unit = sent.chars().last().expect("a unit");
    let amount: u64 = sent[..sent.len() - 1].parse().expect("a number");
    let millis = match unit {
        'm' => amount,
        'u' => amount / 1000,
        'n' => amount / 1_000_000,
        other => panic!("unexpected grpc-timeout unit {other} in {sent}"),
    };
    assert!((250..=300).contains(&millis), "grpc-timeout {sent}");

    // Too slow: 504 with the standard error body, after the route's timeout rather than the service's delay.
    let started = Instant::now();
    let (status, body) = json_of(client.get(format!("{base}/v1/wait?delayMs=3000")).send().await.expect("sent")).await;
    let waited = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["status"], "DEADLINE_EXCEEDED");
    assert!(waited >= Duration::from_millis(290) && waited < Duration::from_millis(2000), "{waited:?}");

    // Routes without a timeout of their own get the default (15 s), also sent as the deadline.
    assert_eq!(gateway::routes::DEFAULT_TIMEOUT, Duration::from_secs(15));
}

#[tokio::test]
async fn calls_are_balanced_over_every_replica_a_service_url_lists() {
    let pool = platform::descriptors::pool().expect("contracts").clone();
    let one = serve_stand_in::<Catalog>(pool.clone(), "replica-1").await;
    let two = serve_stand_in::<Catalog>(pool, "replica-2").await;
    let settings = settings(&[("MERCATO_CATALOG_URL", &format!("{one}, {two}"))]);
    let gateway = Gateway::new(&settings).expect("gateway");
    let (base, _stop) = serve_gateway(gateway, settings).await;

    let client = reqwest::Client::new();
    let mut served: HashMap<String, usize> = HashMap::new();
    let answers = futures::stream::iter(0..40)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/v1/products/p-{i}");
            async move { json_of(client.get(url).send().await.expect("sent")).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        *served.entry(body["name"].as_str().expect("a replica name").to_owned()).or_default() += 1;
    }
    assert_eq!(served.len(), 2, "both replicas served some: {served:?}");
    assert!(served.values().all(|n| *n >= 5), "the load is shared: {served:?}");
}

#[tokio::test]
async fn transcoded_answers_are_compressed_for_clients_that_take_it() {
    let (base, _stop) = echo_gateway().await;
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/shelves/s1?theme=a-theme-long-enough-to-be-worth-compressing&tags=a&tags=b");
    for encoding in ["gzip", "br"] {
        let response = client.get(&url).header("accept-encoding", encoding).send().await.expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-encoding"], encoding);
        assert!(response.headers().contains_key("x-request-id"), "observed as every request is");
    }
    let plain = client.get(&url).send().await.expect("sent");
    assert!(!plain.headers().contains_key("content-encoding"));
    let (status, body) = json_of(plain).await;
    assert_eq!((status, &body["name"]), (200, &json!("shelves/s1")), "{body}");
}

#[tokio::test]
async fn configured_origins_get_cors_answers_on_transcoded_routes_and_the_gateways_own() {
    let origin = "https://shop.example";
    let (base, _stop) = echo_gateway_with(&[("MERCATO_CORS_ORIGINS", origin)]).await;
    let client = reqwest::Client::new();

    // A browser's preflight of a transcoded route: no route takes OPTIONS, the CORS layer answers it.
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/shelves/s1"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("sent");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], origin);
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().expect("ascii").to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    for path in ["/v1/shelves/s1", "/healthz"] {
        let response = client.get(format!("{base}{path}")).header("origin", origin).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["access-control-allow-origin"], origin, "{path}");
        let exposed = response.headers()["access-control-expose-headers"].to_str().expect("ascii").to_owned();
        assert!(exposed.contains("x-request-id"), "{path}: {exposed}");
    }
    // Another origin is not let in.
    let other = client.get(format!("{base}/v1/shelves/s1")).header("origin", "https://evil.example").send().await;
    assert!(!other.expect("sent").headers().contains_key("access-control-allow-origin"));
}
