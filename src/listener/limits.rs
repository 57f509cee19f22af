//! What one listener allows a client: plain values, built by the app from the configuration.

use std::time::Duration;

/// The bounds one listener puts on its connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection must complete its TLS handshake (if any) and the headers of its first
    /// request (HTTP/1.1) or its first stream (HTTP/2) within this long of being accepted, and
    /// every later HTTP/1.1 request head within this long of its first byte.
    pub header_read_timeout: Duration,
    /// A request body must be received whole within this long of its headers (408 otherwise).
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (gracefully).
    pub idle_timeout: Duration,
    /// Most connections open at once; a new one beyond is closed at once and counted.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive: ping after this long without frames, close when a ping is not
    /// answered within the second value. `None`: no pings.
    pub http2_keepalive: Option<(Duration, Duration)>,
}
