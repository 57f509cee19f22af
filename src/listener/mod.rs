//! The three listeners (hook, admin, gRPC) share one accept loop that bounds what a client can
//! hold: a cap on open connections, a deadline for the first request (headers, HTTP/2 preface,
//! TLS handshake), a deadline for each request body, an idle timeout, HTTP/2 stream limits and
//! keep-alive pings; optional TLS (mutual, reloadable) for gRPC. Each serves an axum router.
//!
//! Slow and idle clients are closed and counted in `/metrics`; refused connections are logged
//! at most once per interval, with how many were refused since.

mod accept;
mod chunk;
mod coalesce;
mod connection;
mod limits;
mod metrics;
mod tls;

pub use accept::{Listener, serve};
pub use chunk::{Chunk, ChunkBody, Chunked, Joined};
pub use limits::Limits;
pub use metrics::ListenerMetrics;
pub use tls::{ReloadableTls, TlsError, TlsFile, TlsFiles};
