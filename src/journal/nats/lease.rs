//! The poller lease: at most one replica polls Okta at a time. The same mechanism, on its own
//! key, keeps other once-per-deployment work (the profile sweep) on one replica.
//!
//! A lease is one key in the state KV bucket. Its holder renews it every `ttl / 3` with a
//! compare-and-set on the revision; a contender takes it over with a compare-and-set once the
//! revision has not changed for a whole `ttl`, measured on the contender's own monotonic clock
//! from when it first saw that revision. No wall clocks are compared, so clock skew between
//! machines cannot make two replicas hold it: the holder gives up `ttl` after it *sent* its
//! last successful renewal (minus a margin), and a contender can only see that revision after
//! it was written. A holder that fails to renew in time, or finds the revision changed under
//! it, cancels [`PollerLease::lost`] at once, which stops the poller. The poller's cursor
//! writes are compare-and-set too (see [`super::NatsJournal`]), so even a paused holder that
//! wakes up late cannot advance it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The lease's key in the state bucket.
pub const LEASE_KEY: &str = "poller.lease";

/// Why the lease could not be acquired or released.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The TTL is too short to renew within it.
    #[error("poller lease TTL {0:?} is too short (at least 30 ms)")]
    TtlTooShort(Duration),
    /// The bucket could not be written.
    #[error("poller lease: {0}")]
    Storage(String),
}

/// The lease's value: who holds it, and a nonce telling this acquisition's own writes apart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Holder {
    holder: String,
    nonce: u64,
}

/// A held poller lease (or another task's lease, see [`PollerLease::acquire_key`]), renewed in
/// the background until dropped or released.
#[derive(Debug)]
pub struct PollerLease {
    holder: String,
    key: &'static str,
    kv: kv::Store,
    revision: Arc<AtomicU64>,
    lost: CancellationToken,
    stop: CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl PollerLease {
    /// Waits until `holder` holds the lease in `kv` (polling every `ttl / 4`), then renews it
    /// in a background task. Transient errors while waiting are logged and retried.
    pub async fn acquire(
        kv: kv::Store,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, LeaseError> {
        Self::acquire_key(kv, LEASE_KEY, holder, ttl).await
    }

    /// [`PollerLease::acquire`] on the lease kept at `key` instead of the poller's, for other
    /// work that one replica at a time should do.
    pub async fn acquire_key(
        kv: kv::Store,
        key: &'static str,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, LeaseError> {
        if ttl < Duration::from_millis(30) {
            return Err(LeaseError::TtlTooShort(ttl));
        }
        let holder = holder.into();
        let value = Holder {
            holder: holder.clone(),
            nonce: rand::random(),
        };
        let body = Bytes::from(
            serde_json::to_vec(&value).map_err(|e| LeaseError::Storage(e.to_string()))?,
        );
        let poll = ttl / 4;
        // The revision we are watching age, and when we first saw it.
        let mut watched: Option<(u64, Instant)> = None;
        let (revision, sent) = loop {
            let sent = Instant::now();
            match try_take(&kv, key, &body, &mut watched, ttl).await {
                Ok(Some(revision)) => break (revision, sent),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, key, "cannot read the lease; retrying"),
            }
            tokio::time::sleep(poll).await;
        };
        tracing::info!(holder = %holder, key, revision, "lease acquired");
        let revision = Arc::new(AtomicU64::new(revision));
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let span = tracing::info_span!("lease_renewal", key, holder = %holder);
        let renewer = tokio::spawn(
            renew(
                kv.clone(),
                key,
                body,
                value,
                ttl,
                sent,
                revision.clone(),
                lost.clone(),
                stop.clone(),
            )
            .instrument(span),
        );
        Ok(Self {
            holder,
            key,
            kv,
            revision,
            lost,
            stop,
            renewer: Some(renewer),
        })
    }

    /// Cancelled the moment the lease is lost (or dropped); the poller stops on it.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether this replica still holds the lease.
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// The holder id this lease was acquired with.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Stops renewing and deletes the lease (if still ours) so another replica takes over
    /// at once instead of after the TTL.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
        let held = self.is_held();
        self.lost.cancel();
        if !held {
            return Ok(());
        }
        let revision = self.revision.load(Ordering::Acquire);
        match self
            .kv
            .delete_expect_revision(self.key, Some(revision))
            .await
        {
            Ok(()) => Ok(()),
            // Someone else holds it already: nothing to release.
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(LeaseError::Storage(e.to_string())),
        }
    }
}

impl Drop for PollerLease {
    fn drop(&mut self) {
        self.stop.cancel();
        self.lost.cancel();
    }
}

/// One acquisition attempt: `Some(revision)` once we hold it.
async fn try_take(
    kv: &kv::Store,
    key: &str,
    body: &Bytes,
    watched: &mut Option<(u64, Instant)>,
    ttl: Duration,
) -> Result<Option<u64>, String> {
    let entry = kv.entry(key).await.map_err(|e| e.to_string())?;
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let now = Instant::now();
            match *watched {
                Some((revision, since)) if revision == entry.revision => {
                    if now.duration_since(since) < ttl {
                        return Ok(None);
                    }
                }
                _ => {
                    *watched = Some((entry.revision, now));
                    return Ok(None);
                }
            }
            // Unchanged for a whole TTL: its holder is gone.
            match kv.update(key, body.clone(), entry.revision).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    *watched = None;
                    Ok(None)
                }
                Err(e) => Err(e.to_string()),
            }
        }
        // Never taken, or released.
        _ => match kv.create(key, body.clone()).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// Renews every `ttl / 3` (sooner after a failure); cancels `lost` when the lease is gone
/// or could not be renewed before it would expire for the others.
#[allow(clippy::too_many_arguments)]
async fn renew(
    kv: kv::Store,
    key: &'static str,
    body: Bytes,
    value: Holder,
    ttl: Duration,
    acquired_sent: Instant,
    revision: Arc<AtomicU64>,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let margin = ttl / 10;
    let mut valid_until = acquired_sent + ttl - margin;
    let mut wait = ttl / 3;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(valid_until) => {
                tracing::warn!("lease expired before it could be renewed");
                lost.cancel();
                return;
            }
            () = tokio::time::sleep(wait) => {}
        }
        let sent = Instant::now();
        let current = revision.load(Ordering::Acquire);
        let attempt =
            tokio::time::timeout_at(valid_until, kv.update(key, body.clone(), current)).await;
        match attempt {
            Ok(Ok(new)) => {
                revision.store(new, Ordering::Release);
                valid_until = sent + ttl - margin;
                wait = ttl / 3;
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Our own earlier write may have landed although its ack was lost.
                match kv.entry(key).await {
                    Ok(Some(entry))
                        if entry.operation == kv::Operation::Put
                            && serde_json::from_slice::<Holder>(&entry.value).ok().as_ref()
                                == Some(&value) =>
                    {
                        revision.store(entry.revision, Ordering::Release);
                        wait = Duration::ZERO;
                    }
                    _ => {
                        tracing::warn!("lease was taken by another replica");
                        lost.cancel();
                        return;
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot renew the lease; retrying");
                wait = ttl / 10;
            }
            Err(_) => {
                tracing::warn!("lease renewal did not finish before the lease expired");
                lost.cancel();
                return;
            }
        }
    }
}
