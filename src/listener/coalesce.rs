//! A write buffer under HTTP/2 that turns the frames of many streams into few socket writes.
//!
//! h2 writes every DATA frame larger than 256 bytes with its own `writev` and flushes after it:
//! with a hundred Subscribe streams on one connection each event became a hundred system calls
//! and a hundred loopback/TCP sends. This buffer takes those writes (up to [`HIGH_WATER`]) and
//! puts the first flush after new data off by one turn of the connection's task: it wakes the
//! task, and the flush of its next poll — h2 and hyper flush at the end of every poll — writes
//! everything gathered meanwhile in one call. Nothing waits longer than that turn, and the buffer
//! is written out before it would grow past [`HIGH_WATER`] and before a shutdown.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes gathered before they are written without waiting for a flush.
pub(super) const HIGH_WATER: usize = 64 * 1024;

/// First allocation of the buffer; it grows up to [`HIGH_WATER`] as needed.
const INITIAL_CAPACITY: usize = 4 * 1024;

/// An I/O object whose writes are gathered (see the module doc).
pub(super) struct Coalescing<IO> {
    io: IO,
    buf: Vec<u8>,
    /// How much of `buf` has reached `io`.
    written: usize,
    /// Bytes were gathered since a flush was last put off.
    fresh: bool,
}

impl<IO> Coalescing<IO> {
    pub(super) fn new(io: IO) -> Self {
        Self {
            io,
            buf: Vec::new(),
            written: 0,
            fresh: false,
        }
    }
}

impl<IO: AsyncWrite + Unpin> Coalescing<IO> {
    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes; `false` when they are too many to gather at all (the
    /// buffer is then empty and they go to `io` directly).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.buf.len() + len > HIGH_WATER {
            ready!(self.poll_drain(cx))?;
        }
        if len >= HIGH_WATER {
            return Poll::Ready(Ok(false));
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(INITIAL_CAPACITY.max(len));
        }
        self.fresh = true;
        Poll::Ready(Ok(true))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalescing<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalescing<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.fresh && this.written < this.buf.len() {
            // Put off: the task runs again after the others ready now, which may add frames;
            // that poll's flush finds nothing fresh and writes it all.
            this.fresh = false;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Gathered writes reach the peer on the second flush (the first is put off by one turn),
    /// in order, and a write larger than the buffer goes through whole.
    #[tokio::test]
    async fn writes_are_gathered_and_flushed_in_order() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut writer = Coalescing::new(client);
        writer.write_all(b"one ").await.unwrap();
        writer.write_all(b"two ").await.unwrap();
        writer.flush().await.unwrap();
        let mut got = [0u8; 8];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            server.read_exact(&mut got),
        )
        .await;
        assert!(early.is_err(), "the first flush is put off");
        writer.flush().await.unwrap();
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two ");

        let big = vec![7u8; HIGH_WATER + 10];
        writer.write_all(b"x").await.unwrap();
        writer.write_all(&big).await.unwrap();
        writer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest.len(), 1 + big.len());
        assert_eq!(rest[0], b'x');
        assert!(rest[1..].iter().all(|&b| b == 7));
    }
}
