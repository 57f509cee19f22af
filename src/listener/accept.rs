//! The accept loop shared by the three listeners: a connection cap, TLS when configured, one
//! task per connection, and a graceful stop that waits for the connections it holds.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::coalesce::Coalescing;
use super::connection::Connection;
use super::limits::Limits;
use super::metrics::{CloseReason, ListenerLabels, ListenerMetrics, LogLimiter};
use super::tls::ReloadableTls;

/// How often a repeated listener warning (refused connections, failed accepts) is logged.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of file descriptors): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A bound socket and how to serve it.
#[derive(Debug)]
pub struct Listener {
    /// `hook`, `admin` or `grpc`: the metric label and log field.
    pub name: &'static str,
    /// The bound socket.
    pub tcp: TcpListener,
    /// What a client may hold.
    pub limits: Limits,
    /// TLS (gRPC only), re-read when its files change.
    pub tls: Option<Arc<ReloadableTls>>,
}

/// Serves `router` on `listener` until `shutdown`, then stops accepting and waits for the open
/// connections to finish (the caller bounds that wait). A failed accept is counted, logged and
/// retried: it never stops the listener.
pub async fn serve(
    listener: Listener,
    router: axum::Router,
    metrics: Arc<ListenerMetrics>,
    shutdown: CancellationToken,
) {
    let Listener {
        name,
        tcp,
        limits,
        tls,
    } = listener;
    let labels = ListenerLabels { listener: name };
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let http = Arc::new(http_builder(&limits));
    let limits = Arc::new(limits);
    let refused_log = LogLimiter::new(WARN_INTERVAL);
    let accept_error_log = LogLimiter::new(WARN_INTERVAL);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = tcp.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                metrics.accept_errors.get_or_create(&labels).inc();
                if let Some(held_back) = accept_error_log.allow() {
                    tracing::warn!(listener = name, %error, held_back, "accept failed");
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.refused.get_or_create(&labels).inc();
            if let Some(held_back) = refused_log.allow() {
                tracing::warn!(
                    listener = name,
                    max_connections = limits.max_connections,
                    held_back,
                    "connection refused: the listener has its maximum of connections open"
                );
            }
            drop(stream);
            continue;
        };
        metrics.accepted.get_or_create(&labels).inc();
        let open = metrics.open.get_or_create(&labels).clone();
        open.inc();
        let connection = Connection {
            listener: name,
            router: router.clone(),
            limits: limits.clone(),
            http: http.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            accepted: Instant::now(),
        };
        let tls = tls.clone();
        connections.spawn(async move {
            run(connection, stream, tls.as_deref()).await;
            open.dec();
            drop(permit);
        });
    }
    drop(tcp);
    while connections.join_next().await.is_some() {}
}

/// The listener whose connections carry many streams each, so its writes are gathered.
const GATHERED_LISTENER: &str = "grpc";

/// One connection: the TLS handshake (within the first request's deadline), then HTTP.
async fn run(connection: Connection, stream: TcpStream, tls: Option<&ReloadableTls>) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        serve_io(connection, stream).await;
        return;
    };
    let deadline = connection.first_request_deadline();
    match tokio::time::timeout_at(deadline, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => serve_io(connection, stream).await,
        Ok(Err(error)) => {
            tracing::debug!(listener = connection.listener, %error, "TLS handshake failed");
            connection
                .metrics
                .close(connection.listener, CloseReason::TlsHandshake);
        }
        Err(_) => connection
            .metrics
            .close(connection.listener, CloseReason::HeaderTimeout),
    }
}

/// Serves `io`, through a [`Coalescing`] write buffer on the gRPC listener: there one
/// connection carries up to a hundred Subscribe streams, whose frames it writes together.
async fn serve_io<I>(connection: Connection, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if connection.listener == GATHERED_LISTENER {
        connection.serve(Coalescing::new(io)).await;
    } else {
        connection.serve(io).await;
    }
}

/// hyper's server for both HTTP versions, with the listener's header timeout and HTTP/2 limits.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut http2 = builder.http2();
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams);
    if let Some((interval, timeout)) = limits.http2_keepalive {
        http2
            .keep_alive_interval(interval)
            .keep_alive_timeout(timeout);
    }
    builder
}
