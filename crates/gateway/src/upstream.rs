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
            channels.insert(name.clone(), platform::grpc::balanced_channel(&settings.service_url_list(name))?);
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
    pub async fn unary(&self, service: &str, path: &str, request: Request<Bytes>) -> Result<Bytes, Status> {
        let (mut grpc, path) = self.ready_client(service, path).await?;
        Ok(grpc.unary(request, path, RawCodec).await?.into_inner())
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
