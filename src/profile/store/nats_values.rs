//! Released profile values on JetStream: the KV bucket `<stream>_VALUES` beside the NATS
//! journal's stream, one key per event, so every replica serves the same values.
//!
//! - Keys: `v.<cursor>` (decimal); value: the event's encoded profile fields. Each key is
//!   written create-only: the first replica to release an event wins, and a replica that loses
//!   the race reads the stored entry and publishes that one ([`ValuesStore::release_agreed`]).
//! - `released_through` and the snapshots live in the `<stream>_PROFILES` bucket
//!   ([`NatsSnapshots`]), which never expires; `released_through` only moves forward, and all
//!   replicas share it: everything up to it has its values stored, whichever replica stored them.
//! - Pruning: the bucket's `max_age` is the journal stream's, so an event's values expire with
//!   the event (a value is written after its event, so it never expires first). A changed
//!   retention updates the bucket's `max_age` at the next start.
//! - Order of a release: values, then snapshots, then `released_through`, each awaited; a
//!   crash in between leaves values stored for cursors past `released_through`, which the next
//!   start uses instead of resolving the events again.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::join_all;

use super::nats::{NatsSnapshots, RELEASED_KEY, create_bucket_stream, open_bucket};
use super::{SnapshotStore, StoreError, StoredValues, ValuesStore};
use crate::journal::nats::kv_bucket_stream;
use crate::profile::snapshot::Snapshot;

/// Most lookups a read keeps in flight at once.
const READ_WINDOW: usize = 256;

/// Values in a KV bucket, with the snapshots and `released_through` in [`NatsSnapshots`]. See
/// the module docs.
#[derive(Clone)]
pub struct NatsValues {
    kv: kv::Store,
    bucket: String,
    snapshots: NatsSnapshots,
}

impl std::fmt::Debug for NatsValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsValues")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The bucket name for the journal stream `stream`.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_VALUES")
}

/// The KV key of the values of the event at `cursor`.
fn cursor_key(cursor: u64) -> String {
    format!("v.{cursor}")
}

impl NatsValues {
    /// Opens (creating if missing) the values bucket of the journal stream `stream`,
    /// replicated `replicas` times, its entries kept for `max_age` (the stream's retention; an
    /// existing bucket with another `max_age` is updated). `snapshots` keeps the snapshots and
    /// `released_through`. The bucket's stream is created directly, as [`NatsSnapshots::open`]
    /// does, for nats-server 2.9.
    pub async fn open(
        js: &jetstream::Context,
        stream: &str,
        replicas: usize,
        max_age: Duration,
        snapshots: NatsSnapshots,
    ) -> Result<Self, StoreError> {
        let bucket = bucket_name(stream);
        let wanted = stream::Config {
            max_age,
            // The server refuses a duplicate window longer than max_age.
            duplicate_window: max_age.min(Duration::from_secs(120)),
            ..kv_bucket_stream(
                &bucket,
                "okta-stream profile values (per event cursor, kept as long as the events)",
                replicas,
            )
        };
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Storage(format!("cannot {what} the bucket {bucket}: {e}"))
        };
        match js.get_stream(&wanted.name).await {
            Ok(mut existing) => {
                let found = existing
                    .info()
                    .await
                    .map_err(|e| fail("read", &e))?
                    .config
                    .clone();
                if found.max_age != max_age {
                    let updated = stream::Config {
                        max_age,
                        duplicate_window: found.duplicate_window.min(max_age),
                        ..found
                    };
                    js.update_stream(updated)
                        .await
                        .map_err(|e| fail("update max_age of", &e))?;
                    tracing::info!(bucket, ?max_age, "profile values retention updated");
                }
            }
            Err(_) => create_bucket_stream(js, &wanted, &bucket).await?,
        }
        let kv = open_bucket(js, &bucket).await?;
        Ok(Self {
            kv,
            bucket,
            snapshots,
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The stored values at `cursors`, in their order, looked up `READ_WINDOW` at a time.
    async fn lookup(
        &self,
        cursors: impl Iterator<Item = u64>,
    ) -> Result<Vec<StoredValues>, StoreError> {
        let cursors: Vec<u64> = cursors.collect();
        let mut out = Vec::new();
        for window in cursors.chunks(READ_WINDOW) {
            let got = join_all(window.iter().map(|&c| self.kv.entry(cursor_key(c)))).await;
            for (&cursor, entry) in window.iter().zip(got) {
                let entry = entry.map_err(|e| {
                    StoreError::Storage(format!("read {}: {e}", cursor_key(cursor)))
                })?;
                if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) {
                    out.push((cursor, entry.value));
                }
            }
        }
        Ok(out)
    }

    /// Stores `values` create-only and answers what is stored at each cursor afterwards:
    /// ours, or the entry another replica stored first.
    async fn store_first_wins(
        &self,
        values: Vec<StoredValues>,
    ) -> Result<Vec<StoredValues>, StoreError> {
        let mut agreed = Vec::with_capacity(values.len());
        for window in values.chunks(READ_WINDOW) {
            let created = join_all(
                window
                    .iter()
                    .map(|(cursor, bytes)| self.kv.create(cursor_key(*cursor), bytes.clone())),
            )
            .await;
            for ((cursor, bytes), result) in window.iter().zip(created) {
                match result {
                    Ok(_) => agreed.push((*cursor, bytes.clone())),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        // Another replica (or an earlier try of ours whose ack was lost).
                        let stored = self.lookup(std::iter::once(*cursor)).await?;
                        let Some(stored) = stored.into_iter().next() else {
                            return Err(StoreError::Storage(format!(
                                "{} exists but cannot be read",
                                cursor_key(*cursor)
                            )));
                        };
                        agreed.push(stored);
                    }
                    Err(e) => {
                        return Err(StoreError::Storage(format!(
                            "create {}: {e}",
                            cursor_key(*cursor)
                        )));
                    }
                }
            }
        }
        Ok(agreed)
    }
}

/// `values` as (cursor, bytes) pairs, to compare what was stored with what was offered.
fn bytes_of(values: &[StoredValues]) -> Vec<(u64, &Bytes)> {
    values.iter().map(|(c, b)| (*c, b)).collect()
}

#[async_trait]
impl ValuesStore for NatsValues {
    async fn released_through(&self) -> Result<u64, StoreError> {
        Ok(self
            .snapshots
            .meta(RELEASED_KEY)
            .await?
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(0))
    }

    async fn values(&self, from: u64, to: u64) -> Result<Vec<StoredValues>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        self.lookup(from..=to).await
    }

    async fn values_at(&self, cursors: &[u64]) -> Result<Vec<StoredValues>, StoreError> {
        self.lookup(cursors.iter().copied()).await
    }

    async fn release(
        &self,
        values: Vec<StoredValues>,
        snapshots: Vec<(String, Snapshot)>,
        through: u64,
    ) -> Result<(), StoreError> {
        self.release_agreed(values, snapshots, through)
            .await
            .map(|_| ())
    }

    async fn release_agreed(
        &self,
        values: Vec<StoredValues>,
        snapshots: Vec<(String, Snapshot)>,
        through: u64,
    ) -> Result<Vec<StoredValues>, StoreError> {
        let through = i64::try_from(through)
            .map_err(|_| StoreError::Storage(format!("cursor {through} out of range")))?;
        let ours = values.clone();
        let agreed = self.store_first_wins(values).await?;
        if bytes_of(&agreed) != bytes_of(&ours) {
            tracing::debug!(
                through,
                "another replica stored some of these profile values first; serving those"
            );
        }
        self.snapshots.put_many(&snapshots).await?;
        self.snapshots.raise(RELEASED_KEY, through).await?;
        Ok(agreed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_bucket_names() {
        assert_eq!(cursor_key(42), "v.42");
        assert_eq!(bucket_name("OKTA_EVENTS"), "OKTA_EVENTS_VALUES");
    }
}
