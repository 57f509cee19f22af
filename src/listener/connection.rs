//! One connection: served by hyper (HTTP/1.1 or HTTP/2, detected) with the listener's
//! deadlines enforced around it. The service is wrapped so the connection knows when a request
//! is in flight (a streaming response counts until its body ends): that tells a connection
//! that never made a request, or has been idle too long, from one that is busy.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::chunk::{Chunk, ChunkBody, Chunked};
use super::limits::Limits;
use super::metrics::{CloseReason, ListenerMetrics};
use crate::error::{ApiError, Code};

/// What one connection serves and how it is bounded.
pub(super) struct Connection {
    pub listener: &'static str,
    pub router: axum::Router,
    pub limits: Arc<Limits>,
    pub http: Arc<auto::Builder<TokioExecutor>>,
    pub metrics: Arc<ListenerMetrics>,
    pub shutdown: CancellationToken,
    /// When it was accepted: the first request's deadline counts from here.
    pub accepted: Instant,
}

impl Connection {
    /// The deadline of the TLS handshake and the first request.
    pub(super) fn first_request_deadline(&self) -> Instant {
        self.accepted + self.limits.header_read_timeout
    }

    /// Serves `io` until the client closes it, a deadline closes it, or shutdown (graceful:
    /// requests in flight finish; gRPC streams are ended by their service).
    pub(super) async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let service = Tracked {
            router: self.router.clone(),
            activity: activity.clone(),
            body_read_timeout: self.limits.body_read_timeout,
            listener: self.listener,
            metrics: self.metrics.clone(),
        };
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing: Option<Instant> = None;
        loop {
            let (deadline, reason) = match closing {
                Some(by) => (Some(by), None),
                None => activity.next_deadline(&self),
            };
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = conn.as_mut() => {
                    // hyper's own header read timeout (a later HTTP/1.1 request head) ends
                    // the connection with a timeout error.
                    let timed_out = ended.as_ref().err().and_then(|e| e.downcast_ref::<hyper::Error>()).is_some_and(hyper::Error::is_timeout);
                    if timed_out {
                        self.metrics.close(self.listener, CloseReason::HeaderTimeout);
                    }
                    return;
                }
                () = sleep => {
                    if closing.is_some() {
                        // A graceful close that does not finish in time is cut short.
                        return;
                    }
                    match reason {
                        Some(CloseReason::HeaderTimeout) => {
                            self.metrics.close(self.listener, CloseReason::HeaderTimeout);
                            return;
                        }
                        Some(reason) => {
                            self.metrics.close(self.listener, reason);
                            conn.as_mut().graceful_shutdown();
                            closing = Some(Instant::now() + self.limits.header_read_timeout);
                        }
                        None => {}
                    }
                }
                () = activity.changed.notified(), if closing.is_none() => {}
                () = self.shutdown.cancelled(), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    // Streams are ended by their service; the app bounds the whole drain.
                    closing = Some(Instant::now() + Duration::from_secs(3600));
                }
            }
        }
    }
}

/// Whether a request is in flight, and since when the connection has been idle.
struct Activity {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    idle_since: Mutex<Instant>,
    /// Signalled when a request starts or the last one in flight ends.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// When the connection must be closed next, and why; `None` while requests are in flight.
    fn next_deadline(&self, connection: &Connection) -> (Option<Instant>, Option<CloseReason>) {
        if self.requests.load(Ordering::Relaxed) == 0 {
            return (
                Some(connection.first_request_deadline()),
                Some(CloseReason::HeaderTimeout),
            );
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return (None, None);
        }
        let idle_since = self
            .idle_since
            .lock()
            .map(|since| *since)
            .unwrap_or_else(|_| Instant::now());
        (
            Some(idle_since + connection.limits.idle_timeout),
            Some(CloseReason::IdleTimeout),
        )
    }
}

/// A request in flight; dropped when its response body ends (or the request is abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Ok(mut since) = self.0.idle_since.lock() {
                *since = Instant::now();
            }
            self.0.changed.notify_one();
        }
    }
}

/// The router, with each request's body under the body deadline and its response tracked.
#[derive(Clone)]
struct Tracked {
    router: axum::Router,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
    listener: &'static str,
    metrics: Arc<ListenerMetrics>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let expired = Arc::new(AtomicBool::new(false));
        let limit = self.body_read_timeout;
        let request = request.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(limit)),
                limit,
                expired: expired.clone(),
            })
        });
        let router = self.router.clone();
        let metrics = self.metrics.clone();
        let listener = self.listener;
        Box::pin(async move {
            let Ok(mut response) = router.oneshot(request).await;
            if expired.load(Ordering::Relaxed) {
                metrics.close(listener, CloseReason::BodyTimeout);
                let message = format!(
                    "the request body was not received within {} s",
                    limit.as_secs_f64()
                );
                let mut response = ApiError::new(Code::RequestTimeout, message).into_response();
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                return Ok(response.map(|body| TrackedBody {
                    inner: Inner::Router(body),
                    _in_flight: None,
                }));
            }
            // A body with chunks to give replaces the response's own (see `chunk`).
            let chunked = response
                .extensions_mut()
                .remove::<Chunked>()
                .and_then(|chunked| chunked.take());
            Ok(response.map(|body| TrackedBody {
                inner: match chunked {
                    Some(chunked) => Inner::Chunked(chunked),
                    None => Inner::Router(body),
                },
                _in_flight: Some(in_flight),
            }))
        })
    }
}

/// The request body did not arrive within the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub(super) struct BodyTimeout(Duration);

/// A request body that fails once its deadline passes before it ends.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.expired.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(BodyTimeout(this.limit).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until it ends: the router's,
/// or the chunked body its response carried.
pub(super) struct TrackedBody {
    inner: Inner,
    _in_flight: Option<InFlight>,
}

enum Inner {
    Router(Body),
    Chunked(ChunkBody),
}

impl http_body::Body for TrackedBody {
    type Data = Chunk;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Chunk>, axum::Error>>> {
        match &mut self.inner {
            Inner::Router(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map(|frame| frame.map_data(Chunk::from)))),
            Inner::Chunked(body) => body
                .as_mut()
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Router(body) => body.is_end_stream(),
            Inner::Chunked(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Router(body) => body.size_hint(),
            Inner::Chunked(body) => body.size_hint(),
        }
    }
}
