//! Where the last known profile of each user is kept: one trait, two implementations, in the
//! journal's backend (a redb table for the embedded journal, a JetStream KV bucket for NATS).
//!
//! A put never replaces a newer snapshot with an older one (compared by
//! [`Snapshot::as_of`]), so concurrent writers (an update event's fetch and a sweep, or two
//! replicas) converge on the newest reading. The store also keeps the sweep's watermark: the
//! newest `lastUpdated` a completed sweep has seen, where the next incremental sweep starts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::snapshot::Snapshot;

pub mod nats;
pub mod nats_values;
pub mod redb;

/// Why the snapshot store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be read or written; retrying later may work.
    #[error("profile snapshot store: {0}")]
    Storage(String),
    /// A stored entry does not decode.
    #[error("profile snapshot of user {user:?} is corrupt: {reason}")]
    Corrupt {
        /// The Okta user id.
        user: String,
        /// What is wrong.
        reason: String,
    },
    /// Other writers kept changing the entry; the put gave up.
    #[error("profile snapshot of user {0:?} kept changing under concurrent writers")]
    Conflict(String),
    /// The user id is empty or too long to be a key.
    #[error("not an Okta user id: {0:?}")]
    BadUser(String),
}

/// The last known profile of each user. See the module docs.
#[async_trait]
pub trait SnapshotStore: std::fmt::Debug + Send + Sync + 'static {
    /// The snapshot of `user` (an Okta user id), if one is stored.
    async fn get(&self, user: &str) -> Result<Option<Snapshot>, StoreError>;

    /// Stores `snapshot` for `user` unless a newer one is stored; returns whether it did. An
    /// entry that does not decode is replaced (a fresh reading heals it).
    async fn put(&self, user: &str, snapshot: &Snapshot) -> Result<bool, StoreError>;

    /// [`SnapshotStore::put`] for many users (a sweep page); returns how many were written.
    async fn put_many(&self, entries: &[(String, Snapshot)]) -> Result<usize, StoreError> {
        let mut written = 0;
        for (user, snapshot) in entries {
            written += usize::from(self.put(user, snapshot).await?);
        }
        Ok(written)
    }

    /// The sweep's watermark, if a sweep has completed.
    async fn watermark(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Moves the sweep's watermark (never backwards).
    async fn set_watermark(&self, at: DateTime<Utc>) -> Result<(), StoreError>;
}

/// Checks an Okta user id used as a key: non-empty, at most 256 bytes.
fn check_user(user: &str) -> Result<(), StoreError> {
    if user.is_empty() || user.len() > 256 {
        return Err(StoreError::BadUser(user.chars().take(64).collect()));
    }
    Ok(())
}

fn corrupt(user: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        user: user.to_owned(),
        reason: error.to_string(),
    }
}

/// One event's profile fields (30–33 of `okta.events.v1.Event`), encoded, keyed by its cursor.
pub type StoredValues = (u64, bytes::Bytes);

/// Where each released event's profile values live, written once with the snapshots its
/// resolution produced and the `released_through` cursor, so a reader joins them to the stored
/// record and a restart knows where releasing stopped.
#[async_trait]
pub trait ValuesStore: std::fmt::Debug + Send + Sync + 'static {
    /// The newest cursor released to readers (0 before the first release).
    async fn released_through(&self) -> Result<u64, StoreError>;

    /// The stored values of the events with cursors in `from..=to`, in cursor order.
    async fn values(&self, from: u64, to: u64) -> Result<Vec<StoredValues>, StoreError>;

    /// Stores `values` (an entry already stored is kept: first writer wins), `snapshots` (never
    /// replacing a newer one) and moves `released_through` to `through` (never backwards).
    async fn release(
        &self,
        values: Vec<StoredValues>,
        snapshots: Vec<(String, Snapshot)>,
        through: u64,
    ) -> Result<(), StoreError>;

    /// The stored values of exactly the events at `cursors` (ascending), in cursor order. A
    /// reader knows which events can have values (update events), so a store whose range
    /// reads are costly (one lookup per cursor) reads only those.
    async fn values_at(&self, cursors: &[u64]) -> Result<Vec<StoredValues>, StoreError> {
        let (Some(&low), Some(&high)) = (cursors.iter().min(), cursors.iter().max()) else {
            return Ok(Vec::new());
        };
        let mut stored = self.values(low, high).await?;
        stored.retain(|(cursor, _)| cursors.binary_search(cursor).is_ok());
        Ok(stored)
    }

    /// [`ValuesStore::release`], answering the values now stored at those cursors. Where
    /// another writer (another replica resolving the same event) stored an entry first, the
    /// answer holds that entry, so every replica serves the same values. The default suits a
    /// store with one writer, where the stored values are the ones given.
    async fn release_agreed(
        &self,
        values: Vec<StoredValues>,
        snapshots: Vec<(String, Snapshot)>,
        through: u64,
    ) -> Result<Vec<StoredValues>, StoreError> {
        self.release(values.clone(), snapshots, through).await?;
        Ok(values)
    }
}
