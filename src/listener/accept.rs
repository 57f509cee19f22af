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

/// The listener whose connections carry many streams each, so its writes are gathered and
/// its unsent bytes are kept in the server, not the kernel.
const GATHERED_LISTENER: &str = "grpc";

/// Most bytes a gRPC connection leaves unsent in the kernel (`TCP_NOTSENT_LOWAT`): two
/// gathered writes.
///
/// Without a limit the kernel takes up to its whole send buffer (4 MiB by default) ahead of a
/// subscriber that reads slower than events arrive. Queued there, the bytes are out of HTTP/2's
/// reach (other streams and control frames wait behind them) and hold kernel memory per
/// connection; over loopback the reader's own thread then transmits them as it acknowledges,
/// which made the subscribers' one connection task the bottleneck of fan-out (BENCHMARKS.md,
/// issue 15, sixth round).
const UNSENT_LIMIT: u32 = 2 * super::coalesce::HIGH_WATER as u32;

/// Sets up an accepted socket of `listener`: no Nagle delay anywhere, and on the gRPC
/// listener at most [`UNSENT_LIMIT`] bytes unsent in the kernel (the rest waits in HTTP/2's
/// queue until the kernel asks for more).
fn tune(listener: &str, stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if listener == GATHERED_LISTENER
        && let Err(error) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_LIMIT)
    {
        tracing::debug!(%error, "cannot limit the unsent bytes of a gRPC connection");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = listener;
}

/// One connection: the TLS handshake (within the first request's deadline), then HTTP.
async fn run(connection: Connection, stream: TcpStream, tls: Option<&ReloadableTls>) {
    tune(connection.listener, &stream);
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

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    /// The server's end of a fresh loopback connection.
    async fn accepted() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    fn unsent_limit(stream: &TcpStream) -> u32 {
        socket2::SockRef::from(stream).tcp_notsent_lowat().unwrap()
    }

    #[tokio::test]
    async fn a_grpc_connection_leaves_at_most_two_gathered_writes_unsent_in_the_kernel() {
        let (_client, server) = accepted().await;

        tune("grpc", &server);

        assert_eq!(unsent_limit(&server), 128 * 1024);
        assert!(server.nodelay().unwrap());
    }

    #[tokio::test]
    async fn hook_and_admin_connections_keep_the_kernels_default() {
        for listener in ["hook", "admin"] {
            let (_client, server) = accepted().await;
            let default = unsent_limit(&server);

            tune(listener, &server);

            assert_eq!(unsent_limit(&server), default, "{listener}");
            assert_ne!(default, UNSENT_LIMIT, "{listener}");
            assert!(server.nodelay().unwrap(), "{listener}");
        }
    }
}
