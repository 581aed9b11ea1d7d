//! One call on an HTTP/2 connection: the request's stream opened and written from the calling task, the response
//! headers awaited, and the response body read from its stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::FutureExt;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use http_body::{Body as _, Frame};
use tonic::Status;

use super::RESPONSE_TIMEOUT;

/// Opens a stream for `request` on `sender` (to `scheme://authority`), writes its body, and waits for the
/// response headers.
pub(super) async fn send(
    scheme: &Scheme,
    authority: &Authority,
    mut sender: SendRequest<Bytes>,
    request: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, Status> {
    let (mut head, body) = request.into_parts();
    // HTTP/2 requests carry the scheme and authority as pseudo-headers; callers give only the path.
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme.clone());
    uri.authority = Some(authority.clone());
    uri.path_and_query = head.uri.path_and_query().cloned();
    head.uri = http::Uri::from_parts(uri).map_err(|e| Status::internal(format!("request path: {e}")))?;
    let end_of_stream = body.is_end_stream();
    let (response, stream) =
        sender.send_request(http::Request::from_parts(head, ()), end_of_stream).map_err(call_failed)?;
    if !end_of_stream {
        // A unary or server-streaming call's body is one message, ready now: written here, without a task.
        // A body still streaming goes on in a task of its own.
        let mut writing = Box::pin(write_body(body, stream));
        if (&mut writing).now_or_never().is_none() {
            tokio::spawn(writing);
        }
    }
    let response = match tokio::time::timeout(RESPONSE_TIMEOUT, response).await {
        Ok(response) => response.map_err(call_failed)?,
        Err(_) => return Err(Status::deadline_exceeded(format!("{authority} sent no response in time"))),
    };
    Ok(response.map(|recv| tonic::body::Body::new(ResponseBody { recv, data_done: false })))
}

/// Copies a request body's frames to its stream, ending the stream after the last one.
async fn write_body(mut body: tonic::body::Body, mut stream: h2::SendStream<Bytes>) {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
        };
        let sent = match frame.into_data() {
            // Unreserved data is buffered until the stream's window lets it out; a gRPC request body is a
            // message or a few, bounded by the message size limit.
            Ok(data) => stream.send_data(data, false),
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    let _ = stream.send_trailers(trailers);
                    return;
                }
                Err(_) => Ok(()),
            },
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
}

/// An h2 call's failure as the status a gRPC client reports: a lost connection is UNAVAILABLE (worth retrying),
/// a stream reset as tonic maps its reason.
fn call_failed(error: h2::Error) -> Status {
    if error.is_io() {
        return Status::unavailable(format!("connection lost: {error}"));
    }
    Status::from_error(Box::new(error))
}

/// A response body read from its HTTP/2 stream: the data frames, then the trailers (where gRPC puts the status).
struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: let the sender send that much more.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
