//! Response data handed to HTTP/2 at once while staying in its own shared buffers.
//!
//! hyper sends each data chunk of a response body as (at least) one DATA frame, and h2 spends
//! about as much on a frame as the kernel spends copying a 3.4 KB event into the socket: a slab
//! entry and the stream's send queue, four locks of the connection's stream state, a wake of
//! the connection task, the frame's encoding. A Subscribe stream with several events ready
//! hands them over as one [`Chunk`]: one hand-over to h2 and as few frames as the client's frame
//! size allows, whose payload h2 writes as the events' own shared bytes (`chunks_vectored`), so
//! the only copy before the kernel's is still the gathered write's (`super::coalesce`).
//!
//! Bodies in the router yield `Bytes`, so a handler with a chunked body puts it in its
//! response's extensions as [`Chunked`], and the listener sends that instead of the response's
//! own body. That body, [`Joined`], is the fallback for a server that does not look (none in
//! the app; it keeps the router usable on its own): it yields the same data as `Bytes`.

use std::convert::Infallible;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// The data of one body frame: one buffer, or several sent back to back.
#[derive(Debug)]
pub struct Chunk(Parts);

#[derive(Debug)]
enum Parts {
    One(Bytes),
    /// `parts[next..]` is what is left, each non-empty; `remaining` their total length.
    Many {
        parts: Vec<Bytes>,
        next: usize,
        remaining: usize,
    },
}

impl Chunk {
    /// The parts in order, as one chunk (empty parts are left out).
    pub fn join(parts: Vec<Bytes>) -> Self {
        let mut parts = parts;
        parts.retain(|part| !part.is_empty());
        if parts.len() <= 1 {
            return Self(Parts::One(parts.pop().unwrap_or_default()));
        }
        let remaining = parts.iter().map(Bytes::len).sum();
        Self(Parts::Many {
            parts,
            next: 0,
            remaining,
        })
    }

    /// What is left of the chunk as one `Bytes`: copied only when it has several parts.
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Parts::One(bytes) => bytes,
            Parts::Many {
                parts,
                next,
                remaining,
            } => {
                let mut joined = BytesMut::with_capacity(remaining);
                for part in &parts[next..] {
                    joined.extend_from_slice(part);
                }
                joined.freeze()
            }
        }
    }
}

impl From<Bytes> for Chunk {
    fn from(bytes: Bytes) -> Self {
        Self(Parts::One(bytes))
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        match &self.0 {
            Parts::One(bytes) => bytes.len(),
            Parts::Many { remaining, .. } => *remaining,
        }
    }

    fn chunk(&self) -> &[u8] {
        match &self.0 {
            Parts::One(bytes) => bytes,
            Parts::Many { parts, next, .. } => parts.get(*next).map_or(&[], |part| part),
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        match &self.0 {
            Parts::One(bytes) => bytes.chunks_vectored(dst),
            Parts::Many { parts, next, .. } => {
                let left = parts.get(*next..).unwrap_or_default();
                let mut n = 0;
                for (slot, part) in dst.iter_mut().zip(left) {
                    *slot = IoSlice::new(part);
                    n += 1;
                }
                n
            }
        }
    }

    fn advance(&mut self, cnt: usize) {
        match &mut self.0 {
            Parts::One(bytes) => bytes.advance(cnt),
            Parts::Many {
                parts,
                next,
                remaining,
            } => {
                assert!(
                    cnt <= *remaining,
                    "cannot advance past the end of a chunk: {cnt} > {remaining}"
                );
                *remaining -= cnt;
                let mut cnt = cnt;
                while cnt > 0 {
                    let part = &mut parts[*next];
                    let n = cnt.min(part.len());
                    part.advance(n);
                    cnt -= n;
                    if part.is_empty() {
                        // Sent: let go of the shared buffer now rather than with the chunk.
                        *part = Bytes::new();
                        *next += 1;
                    }
                }
            }
        }
    }
}

/// A response body whose data are [`Chunk`]s.
pub type ChunkBody = Pin<Box<dyn Body<Data = Chunk, Error = Infallible> + Send>>;

/// A response extension: the body the listener sends instead of the response's own (see the
/// module doc). Taken once.
#[derive(Clone)]
pub struct Chunked(Arc<Mutex<Option<ChunkBody>>>);

impl Chunked {
    /// `body` as a response extension, and the fallback body to give the response itself.
    pub fn new(
        body: impl Body<Data = Chunk, Error = Infallible> + Send + 'static,
    ) -> (Self, Joined) {
        let chunked = Self(Arc::new(Mutex::new(Some(Box::pin(body)))));
        let fallback = Joined {
            slot: chunked.clone(),
            body: None,
        };
        (chunked, fallback)
    }

    /// The body, unless it was taken already.
    pub(super) fn take(&self) -> Option<ChunkBody> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The fallback body of a [`Chunked`] response: its chunks as `Bytes` (those of several parts
/// copied into one). Empty when the listener took the body.
pub struct Joined {
    slot: Chunked,
    body: Option<ChunkBody>,
}

impl Body for Joined {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.body.is_none() {
            this.body = this.slot.take();
        }
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        body.as_mut()
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map(|frame| frame.map_data(Chunk::into_bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_some_and(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(SizeHint::default, |body| body.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn chunk_of(parts: &[&'static [u8]]) -> Chunk {
        Chunk::join(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    /// Advancing across part boundaries yields the parts' bytes in order, and the vectored
    /// view always starts where the chunk does.
    #[test]
    fn a_chunk_reads_as_its_parts_back_to_back() {
        let mut chunk = chunk_of(&[b"abc", b"", b"de", b"fghij"]);
        assert_eq!(chunk.remaining(), 10);
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(chunk.chunks_vectored(&mut slices), 3);
        assert_eq!(&*slices[1], b"de");
        chunk.advance(2);
        assert_eq!(chunk.chunk(), b"c");
        chunk.advance(2);
        assert_eq!(chunk.chunk(), b"e");
        let mut slices = [IoSlice::new(&[]); 1];
        assert_eq!(chunk.chunks_vectored(&mut slices), 1);
        assert_eq!(&*slices[0], b"e");
        assert_eq!(chunk.copy_to_bytes(6), Bytes::from_static(b"efghij"));
        assert_eq!(chunk.remaining(), 0);
        assert_eq!(chunk.chunk(), b"");
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(chunk.chunks_vectored(&mut slices), 0);

        let partly = {
            let mut c = chunk_of(&[b"xy", b"z"]);
            c.advance(1);
            c
        };
        assert_eq!(partly.into_bytes(), Bytes::from_static(b"yz"));
        assert_eq!(
            chunk_of(&[b"only"]).into_bytes(),
            Bytes::from_static(b"only")
        );
        assert_eq!(chunk_of(&[]).remaining(), 0);
    }

    /// The fallback body sends the chunked body's data and trailers, unless it was taken.
    #[tokio::test]
    async fn the_fallback_yields_the_same_data_unless_taken() {
        let frames = || {
            http_body_util::StreamBody::new(futures::stream::iter([
                Ok(Frame::data(chunk_of(&[b"one ", b"two "]))),
                Ok(Frame::data(chunk_of(&[b"three"]))),
                Ok(Frame::trailers(http::HeaderMap::new())),
            ]))
        };
        let (_chunked, fallback) = Chunked::new(frames());
        let collected = fallback.collect().await.unwrap_or_else(|e| match e {});
        assert!(collected.trailers().is_some());
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"one two three"));

        let (chunked, fallback) = Chunked::new(frames());
        let mut body = chunked.take().expect("not taken yet");
        assert!(chunked.take().is_none(), "taken once");
        let first = body
            .frame()
            .await
            .and_then(|f| f.ok())
            .and_then(|f| f.into_data().ok());
        assert_eq!(
            first.map(Chunk::into_bytes),
            Some(Bytes::from_static(b"one two "))
        );
        let collected = fallback.collect().await.unwrap_or_else(|e| match e {});
        assert!(collected.to_bytes().is_empty());
    }
}
