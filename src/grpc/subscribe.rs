//! Subscribe over plain HTTP/2 gRPC, served without tonic's encoder.
//!
//! tonic copies every message of a stream into a buffer of that stream (8 KiB held per
//! stream even when idle) before handing it to HTTP/2. With thousands of subscribers that copy
//! was the largest cost of fan-out. Here each message leaves as the shared, already framed
//! bytes of the event (see `hub::Delivery`): the response body yields them as they are, the
//! messages ready at once as one chunk without joining their bytes (`listener::Chunk`), and
//! ends with the `grpc-status` trailers. The request goes through the same token check, filter,
//! limits and stream logic as the tonic service ([`EventStreamService::open_subscriber`]).
//!
//! Only `application/grpc` over HTTP/2 takes this path; gRPC-Web (the console) and anything
//! else go on to tonic unchanged. The service offers no compression, so neither does this.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::Stream;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version, header};
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::{Code, Status};

use super::auth::TokenCheck;
use super::service::{EventStreamService, Outgoing};
use crate::listener::{Chunk, Chunked};
use crate::proto::{EventFilter, GRPC_PREFIX_LEN};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The method this path serves.
const PATH: &str = "/okta.events.v1.EventStream/Subscribe";

/// Largest request accepted, as tonic's default decoding limit.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Adds the Subscribe fast path in front of the gRPC router.
#[derive(Debug, Clone)]
pub struct Layer {
    service: EventStreamService,
    tokens: TokenCheck,
}

impl Layer {
    /// Serves Subscribe with `service`, to clients that `tokens` accepts.
    pub fn new(service: EventStreamService, tokens: TokenCheck) -> Self {
        Self { service, tokens }
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = FastSubscribe<S>;

    fn layer(&self, inner: S) -> FastSubscribe<S> {
        FastSubscribe {
            inner,
            service: self.service.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

/// The service [`Layer`] makes: plain gRPC Subscribe here, everything else to `inner`.
#[derive(Debug, Clone)]
pub struct FastSubscribe<S> {
    inner: S,
    service: EventStreamService,
    tokens: TokenCheck,
}

/// The response future of [`FastSubscribe`].
type ResponseFuture<E> =
    Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for FastSubscribe<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !is_plain_grpc_subscribe(&request) {
            let future = self.inner.call(request);
            return Box::pin(async move { Ok(future.await?.map(tonic::body::Body::new)) });
        }
        let service = self.service.clone();
        let tokens = self.tokens.clone();
        Box::pin(async move {
            Ok(match subscribe(&service, &tokens, request).await {
                Ok(response) => response,
                Err(status) => status.into_http(),
            })
        })
    }
}

/// A Subscribe call of a native gRPC client (not gRPC-Web, which tonic translates).
fn is_plain_grpc_subscribe<B>(request: &Request<B>) -> bool {
    request.method() == Method::POST
        && request.version() == Version::HTTP_2
        && request.uri().path() == PATH
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/grpc" || v == "application/grpc+proto")
}

/// Checks the token, decodes the filter and opens the stream.
async fn subscribe<B>(
    service: &EventStreamService,
    tokens: &TokenCheck,
    request: Request<B>,
) -> Result<Response<tonic::body::Body>, Status>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    tokens.scope(authorization)?;
    if let Some(encoding) = request.headers().get("grpc-encoding")
        && encoding != "identity"
    {
        return Err(Status::unimplemented(format!(
            "grpc-encoding {:?} is not supported: send the request uncompressed",
            String::from_utf8_lossy(encoding.as_bytes())
        )));
    }
    let filter = read_filter(request.into_body()).await?;
    let subscriber = service.open_subscriber(&filter).await?;
    let messages = futures::stream::unfold(subscriber, |mut subscriber| async move {
        let message = subscriber.next_message().await?;
        Some((message.map(Outgoing::into_frame), subscriber))
    });
    let (chunked, fallback) = Chunked::new(SubscribeBody {
        messages: Box::pin(messages),
        held: None,
        end: None,
        ended: false,
    });
    let mut response = Response::new(tonic::body::Body::new(fallback));
    response.extensions_mut().insert(chunked);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

/// The request body: exactly one uncompressed, length-prefixed `EventFilter`.
async fn read_filter<B>(body: B) -> Result<EventFilter, Status>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut body = http_body_util::Limited::new(body, MAX_REQUEST_BYTES + GRPC_PREFIX_LEN)
        .collect()
        .await
        .map_err(|error| {
            // The body deadline's own answer replaces this one (see the listener).
            Status::new(
                Code::InvalidArgument,
                format!("cannot read the request: {error}"),
            )
        })?
        .aggregate();
    if body.remaining() < GRPC_PREFIX_LEN {
        return Err(Status::internal("Missing request message."));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::unimplemented(
            "the request message is compressed; this server accepts uncompressed messages only",
        ));
    }
    if len > MAX_REQUEST_BYTES {
        return Err(Status::resource_exhausted(format!(
            "request message of {len} bytes is larger than the {MAX_REQUEST_BYTES} bytes allowed"
        )));
    }
    if body.remaining() != len {
        return Err(Status::invalid_argument(format!(
            "the request must be one message of {len} bytes; the body holds {} bytes after its prefix",
            body.remaining()
        )));
    }
    <EventFilter as prost::Message>::decode(body)
        .map_err(|error| Status::internal(format!("failed to decode EventFilter: {error}")))
}

/// The messages of one Subscribe stream (each already a gRPC message), then the trailers.
type Messages = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// Most bytes of messages joined into one chunk. h2 cuts a chunk into DATA frames of the
/// client's largest frame size (16 KiB by default), but hyper hands it to h2 (its locks, the
/// send queue, the connection task's wake) once: 64 KiB took 11–15% less server CPU per
/// delivery than chunks of one frame (16 KiB) in the fan-out A/B.
const JOIN_BYTES: usize = 64 * 1024;

/// Most messages joined into one chunk (small messages: heartbeats, small events).
const JOIN_MESSAGES: usize = 64;

/// A Subscribe response body: the messages ready at once as one chunk (the shared bytes as
/// they are; see `crate::listener::Chunk`), then the trailers.
///
/// Only messages already waiting are joined: a chunk never waits for more.
struct SubscribeBody {
    messages: Messages,
    /// A message taken that did not fit the last chunk: the first of the next.
    held: Option<Bytes>,
    /// How the stream ends, once the messages taken before it are sent.
    end: Option<Status>,
    ended: bool,
}

impl http_body::Body for SubscribeBody {
    type Data = Chunk;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunk>, Infallible>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let mut parts: Vec<Bytes> = this.held.take().into_iter().collect();
        let mut len: usize = parts.iter().map(Bytes::len).sum();
        while this.end.is_none() && len < JOIN_BYTES && parts.len() < JOIN_MESSAGES {
            match this.messages.as_mut().poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(message))) => {
                    if !parts.is_empty() && len + message.len() > JOIN_BYTES {
                        this.held = Some(message);
                        break;
                    }
                    len += message.len();
                    parts.push(message);
                }
                Poll::Ready(Some(Err(status))) => this.end = Some(status),
                Poll::Ready(None) => this.end = Some(Status::ok("")),
            }
        }
        if !parts.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(Chunk::join(parts)))));
        }
        let Some(status) = this.end.take() else {
            return Poll::Pending;
        };
        this.ended = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// `grpc-status` and `grpc-message` of `status`, as trailers.
fn trailers(status: &Status) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    if status.add_header(&mut headers).is_err() {
        // Only a message that cannot be a header value fails; the code alone still says it.
        headers.insert(Status::GRPC_STATUS, HeaderValue::from(status.code() as i32));
    }
    headers
}
