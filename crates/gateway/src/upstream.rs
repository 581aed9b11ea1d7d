//! Calling a service's gRPC method with an already-encoded request: a pass-through codec and the channels
//! to each upstream service.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes};
use platform::grpc::Channel;
use tonic::codec::Streaming;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Status};

/// A codec that moves protobuf bytes unchanged: the gateway encodes and decodes with dynamic messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// Encoder half of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

/// Decoder half of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Channels to the services, by name (`auth`, `catalog`, ...).
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    channels: HashMap<String, Channel>,
}

impl Upstreams {
    /// Lazily connected channels to each named service at the URLs the settings give, balanced over the
    /// replicas when there are several.
    pub fn connect(names: &[String], settings: &platform::Settings) -> Result<Self, platform::grpc::ChannelError> {
        let mut channels = HashMap::new();
        for name in names {
            channels.insert(name.clone(), platform::grpc::service_channel(settings, name)?);
        }
        Ok(Self { channels })
    }

    /// Channels given by the caller, by service name (tests, embedders with their own contracts).
    pub fn from_channels(channels: impl IntoIterator<Item = (String, Channel)>) -> Self {
        Self { channels: channels.into_iter().collect() }
    }

    /// The channel to a service.
    pub fn get(&self, name: &str) -> Option<Channel> {
        self.channels.get(name).cloned()
    }

    /// Every service and its channel.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Channel)> {
        self.channels.iter()
    }

    /// Calls a unary method with an encoded request; returns the encoded response.
    ///
    /// Framed here rather than by tonic's client, which gives every call an 8 KiB encode buffer and an 8 KiB
    /// decode buffer and a streaming decoder for what is one message each way (bench/gateway.md); the gRPC
    /// status is still read by tonic ([`Status::from_header_map`]).
    pub async fn unary(&self, service: &str, path: &str, request: Request<Bytes>) -> Result<Bytes, Status> {
        let channel = self.get(service).ok_or_else(|| Status::unavailable(format!("no route to {service}")))?;
        let path = http::uri::PathAndQuery::try_from(path).map_err(|_| Status::internal("bad method path"))?;
        let mut traced = platform::grpc::TracedChannel::new(channel);
        tower::ServiceExt::ready(&mut traced).await?;
        let response = tower::Service::call(&mut traced, unary_request(path, request)).await?;
        read_unary_response(response).await
    }

    /// Calls a server-streaming method with an encoded request; returns the stream of encoded responses.
    pub async fn server_streaming(
        &self,
        service: &str,
        path: &str,
        request: Request<Bytes>,
    ) -> Result<Streaming<Bytes>, Status> {
        let (mut grpc, path) = self.ready_client(service, path).await?;
        Ok(grpc.server_streaming(request, path, RawCodec).await?.into_inner())
    }

    async fn ready_client(
        &self,
        service: &str,
        path: &str,
    ) -> Result<(tonic::client::Grpc<platform::grpc::TracedChannel>, http::uri::PathAndQuery), Status> {
        let channel = self.get(service).ok_or_else(|| Status::unavailable(format!("no route to {service}")))?;
        let path = http::uri::PathAndQuery::try_from(path).map_err(|_| Status::internal("bad method path"))?;
        // The client span of the call, whose trace context goes to the service in the metadata.
        let mut grpc = tonic::client::Grpc::new(platform::grpc::TracedChannel::new(channel));
        grpc.ready().await.map_err(|_| Status::unavailable(format!("{service} is unavailable")))?;
        Ok((grpc, path))
    }
}

/// The largest response message a unary call accepts, as tonic's default.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The HTTP/2 request of a unary call: `POST <path>` with gRPC's headers, the caller's metadata (deadline
/// included) as headers, and the message in one uncompressed length-prefixed frame.
fn unary_request(path: http::uri::PathAndQuery, request: Request<Bytes>) -> http::Request<tonic::body::Body> {
    let (metadata, _, message) = request.into_parts();
    let mut framed = bytes::BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    // A request message is at most the gateway's body limit, far below 4 GiB.
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put(message);
    let body = tonic::body::Body::new(http_body_util::Full::new(framed.freeze()));
    let mut http_request = http::Request::new(body);
    *http_request.method_mut() = http::Method::POST;
    *http_request.uri_mut() = http::Uri::from(path);
    *http_request.headers_mut() = metadata.into_headers();
    let headers = http_request.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    http_request
}

/// The one message of a unary call's response, or its error status: from the headers of a trailers-only
/// response, else from the trailers after the message (an error there wins over the message).
async fn read_unary_response(response: http::Response<tonic::body::Body>) -> Result<Bytes, Status> {
    use http_body_util::BodyExt;
    let (head, mut body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&head.headers) {
        // Trailers-only: an error (or an OK without the message a unary call must return).
        return Err(if status.code() == tonic::Code::Ok { missing_message() } else { status });
    }
    if head.status != http::StatusCode::OK {
        return Err(status_of_http(head.status));
    }
    let mut message = bytes::BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                if message.len() + data.len() > MAX_RESPONSE_BYTES + 5 {
                    return Err(Status::out_of_range(format!(
                        "the response message is larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                message.extend_from_slice(&data);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() == tonic::Code::Ok => {}
        Some(status) => return Err(status),
        None => return Err(Status::internal("the service's response ended without a gRPC status")),
    }
    unframe(message.freeze())
}

/// The message inside one length-prefixed gRPC frame.
fn unframe(mut framed: Bytes) -> Result<Bytes, Status> {
    if framed.is_empty() {
        return Err(missing_message());
    }
    if framed.len() < 5 {
        return Err(Status::internal("the service's response message is cut short"));
    }
    let compressed = framed.get_u8();
    let length = framed.get_u32() as usize;
    if compressed != 0 {
        // The gateway asks for no compression (it sends no grpc-accept-encoding).
        return Err(Status::internal("the service compressed its response, which the gateway did not ask for"));
    }
    match framed.len().cmp(&length) {
        std::cmp::Ordering::Equal => Ok(framed),
        std::cmp::Ordering::Less => Err(Status::internal("the service's response message is cut short")),
        std::cmp::Ordering::Greater => Err(Status::internal("the service sent more than one message to a unary call")),
    }
}

fn missing_message() -> Status {
    Status::internal("the service answered a unary call without a message")
}

/// The status of a response that is not gRPC's 200, as gRPC's HTTP-to-status mapping says.
fn status_of_http(status: http::StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    Status::new(code, format!("the service answered HTTP {status}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Bytes {
        let mut framed = bytes::BytesMut::new();
        framed.put_u8(0);
        framed.put_u32(message.len() as u32);
        framed.put_slice(message);
        framed.freeze()
    }

    #[test]
    fn unframes_one_message() {
        assert_eq!(unframe(framed(b"abc")).unwrap(), Bytes::from_static(b"abc"));
        assert_eq!(unframe(framed(b"")).unwrap(), Bytes::new());
    }

    #[test]
    fn refuses_short_long_and_compressed_frames() {
        let whole = framed(b"abcdef");
        assert_eq!(unframe(whole.slice(..7)).unwrap_err().code(), tonic::Code::Internal);
        assert_eq!(unframe(whole.slice(..3)).unwrap_err().code(), tonic::Code::Internal);
        let mut two = bytes::BytesMut::from(&whole[..]);
        two.extend_from_slice(&framed(b"x"));
        assert!(unframe(two.freeze()).unwrap_err().message().contains("more than one message"));
        let mut compressed = bytes::BytesMut::from(&whole[..]);
        compressed[0] = 1;
        assert!(unframe(compressed.freeze()).unwrap_err().message().contains("compressed"));
        assert_eq!(unframe(Bytes::new()).unwrap_err().code(), tonic::Code::Internal);
    }

    #[test]
    fn maps_http_statuses_as_grpc_says() {
        assert_eq!(status_of_http(http::StatusCode::SERVICE_UNAVAILABLE).code(), tonic::Code::Unavailable);
        assert_eq!(status_of_http(http::StatusCode::NOT_FOUND).code(), tonic::Code::Unimplemented);
        assert_eq!(status_of_http(http::StatusCode::IM_A_TEAPOT).code(), tonic::Code::Unknown);
    }

    /// A response of `framed` data, then trailers with `grpc_status` (none when `None`).
    fn response(data: Bytes, grpc_status: Option<&str>) -> http::Response<tonic::body::Body> {
        use http_body_util::BodyExt;
        let trailers = grpc_status.map(|code| {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", code.parse().unwrap());
            trailers.insert("grpc-message", "nope".parse().unwrap());
            Ok(trailers)
        });
        let body =
            http_body_util::Full::new(data).map_err(|never| match never {}).with_trailers(async move { trailers });
        http::Response::new(tonic::body::Body::new(body))
    }

    #[tokio::test]
    async fn reads_the_message_of_an_ok_response() {
        let message = read_unary_response(response(framed(b"product"), Some("0"))).await.unwrap();
        assert_eq!(message, Bytes::from_static(b"product"));
    }

    #[tokio::test]
    async fn an_error_status_wins_over_a_message_and_a_missing_one_is_an_error() {
        let error = read_unary_response(response(framed(b"product"), Some("5"))).await.unwrap_err();
        assert_eq!((error.code(), error.message()), (tonic::Code::NotFound, "nope"));
        let error = read_unary_response(response(framed(b"product"), None)).await.unwrap_err();
        assert!(error.message().contains("without a gRPC status"), "{error:?}");
    }

    #[tokio::test]
    async fn reads_the_status_of_a_trailers_only_response() {
        let mut only = response(Bytes::new(), None);
        only.headers_mut().insert("grpc-status", "7".parse().unwrap());
        only.headers_mut().insert("grpc-message", "not yours".parse().unwrap());
        let error = read_unary_response(only).await.unwrap_err();
        assert_eq!((error.code(), error.message()), (tonic::Code::PermissionDenied, "not yours"));
        let mut ok_without_message = response(Bytes::new(), None);
        ok_without_message.headers_mut().insert("grpc-status", "0".parse().unwrap());
        assert_eq!(read_unary_response(ok_without_message).await.unwrap_err().code(), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn a_response_that_is_not_http_200_is_mapped() {
        let mut bad = response(Bytes::new(), None);
        *bad.status_mut() = http::StatusCode::BAD_GATEWAY;
        assert_eq!(read_unary_response(bad).await.unwrap_err().code(), tonic::Code::Unavailable);
    }

    #[test]
    fn the_request_carries_grpc_headers_metadata_and_one_frame() {
        let mut request = Request::new(Bytes::from_static(b"hello"));
        request.set_timeout(std::time::Duration::from_millis(1500));
        request.metadata_mut().insert("x-request-id", "r-1".parse().unwrap());
        let http_request = unary_request("/pkg.Service/Method".try_into().unwrap(), request);
        assert_eq!(http_request.method(), http::Method::POST);
        assert_eq!(http_request.uri().path(), "/pkg.Service/Method");
        let headers = http_request.headers();
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["x-request-id"], "r-1");
        assert!(headers.contains_key("grpc-timeout"));
    }
}
