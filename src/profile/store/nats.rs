//! Profile snapshots in a JetStream KV bucket, `<stream>_PROFILES`, beside the NATS journal's
//! stream, so every replica reads and writes the same snapshots.
//!
//! Keys: `u.<user id>` (Okta ids are letters and digits; any other id is stored as
//! `b.<base64url>`), `meta.sweep_watermark`, `meta.released_through` (see
//! [`super::nats_values`]) and `meta.redaction_key`. Values: [`Snapshot::encode`]. The bucket
//! keeps one revision per key and nothing in it expires. Puts are compare-and-set on the
//! revision read, so of two replicas writing one user the newer reading wins, whatever the
//! order of the writes.
//!
//! The redaction key lives here, not in a replica's data dir: every replica must hash a
//! redacted value with the same key, or equal values would differ between replicas and the
//! stored hashes would stop matching after a fail-over. The first replica creates it
//! (create-only), every other one reads it. Whoever can read this bucket can read the key.

use async_nats::jetstream::{self, kv, stream};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{SnapshotStore, StoreError, check_user, corrupt};
use crate::journal::nats::kv_bucket_stream;
use crate::profile::rules::{KEY_LEN, RedactionKey};
use crate::profile::snapshot::Snapshot;

/// Key of the sweep watermark (Unix milliseconds, decimal).
const WATERMARK_KEY: &str = "meta.sweep_watermark";

/// Key of the newest cursor released to readers (decimal).
pub(super) const RELEASED_KEY: &str = "meta.released_through";

/// Key of the redaction key (32 raw bytes).
const REDACTION_KEY: &str = "meta.redaction_key";

/// Compare-and-set attempts before a put reports [`StoreError::Conflict`]. Every lost attempt
/// means another writer won, so this bounds how many writers of one user may race.
const CAS_ATTEMPTS: u32 = 32;

/// A short random pause after a lost compare-and-set, growing with the attempt, so racing
/// writers spread out instead of colliding again at once.
async fn back_off(attempt: u32) {
    let millis = rand::random_range(0..=u64::from(attempt.min(10)) * 2);
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}

/// Snapshots in a KV bucket. See the module docs.
#[derive(Clone)]
pub struct NatsSnapshots {
    kv: kv::Store,
    bucket: String,
}

impl std::fmt::Debug for NatsSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSnapshots")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The bucket name for the journal stream `stream`.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_PROFILES")
}

/// Creates the stream `wanted` of the bucket `bucket`; another replica creating it meanwhile
/// is success too.
pub(super) async fn create_bucket_stream(
    js: &jetstream::Context,
    wanted: &stream::Config,
    bucket: &str,
) -> Result<(), StoreError> {
    if let Err(create) = js.create_stream(wanted.clone()).await {
        js.get_stream(&wanted.name).await.map_err(|_| {
            StoreError::Storage(format!("cannot create the bucket {bucket}: {create}"))
        })?;
    }
    Ok(())
}

/// The KV view of the bucket `bucket`, whose stream exists.
pub(super) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<kv::Store, StoreError> {
    js.get_key_value(bucket)
        .await
        .map_err(|e| StoreError::Storage(format!("cannot open the bucket {bucket}: {e}")))
}

impl NatsSnapshots {
    /// Opens (creating if missing) the bucket of the journal stream `stream`, replicated
    /// `replicas` times. The bucket's stream is created directly rather than with
    /// `create_key_value`, whose account-info query does not parse on nats-server 2.9.
    pub async fn open(
        js: &jetstream::Context,
        stream: &str,
        replicas: usize,
    ) -> Result<Self, StoreError> {
        let bucket = bucket_name(stream);
        let wanted = kv_bucket_stream(
            &bucket,
            "okta-stream profile snapshots (last known profile per user)",
            replicas,
        );
        if js.get_stream(&wanted.name).await.is_err() {
            create_bucket_stream(js, &wanted, &bucket).await?;
        }
        let kv = open_bucket(js, &bucket).await?;
        Ok(Self { kv, bucket })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The redaction key every replica shares: the stored one, or (first start of the
    /// deployment) 256 random bits written create-only, so of replicas starting at once the
    /// first write wins and all use it. Never logged; an error never holds its bytes.
    pub async fn redaction_key(&self) -> Result<RedactionKey, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            if let Some((stored, _)) = live(self.entry(REDACTION_KEY).await?) {
                let bytes: [u8; KEY_LEN] = stored.as_ref().try_into().map_err(|_| {
                    StoreError::Storage(format!(
                        "the redaction key in {} holds {} bytes, not {KEY_LEN}",
                        self.bucket,
                        stored.len()
                    ))
                })?;
                return Ok(RedactionKey::from_bytes(bytes));
            }
            let fresh: [u8; KEY_LEN] = rand::random();
            if self
                .write_if(REDACTION_KEY, Bytes::copy_from_slice(&fresh), None)
                .await?
            {
                return Ok(RedactionKey::from_bytes(fresh));
            }
        }
        Err(StoreError::Conflict(REDACTION_KEY.to_owned()))
    }

    /// The number stored at the meta `key`, if any.
    pub(super) async fn meta(&self, key: &str) -> Result<Option<i64>, StoreError> {
        match live(self.entry(key).await?) {
            None => Ok(None),
            Some((value, _)) => std::str::from_utf8(&value)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .map(Some)
                .ok_or_else(|| StoreError::Storage(format!("{key} is not a number"))),
        }
    }

    /// Raises the number at the meta `key` to `to` (never lowers it), compare-and-set.
    pub(super) async fn raise(&self, key: &str, to: i64) -> Result<(), StoreError> {
        let value = Bytes::from(to.to_string());
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt).await;
            let entry = live(self.entry(key).await?);
            if let Some(current) = entry
                .as_ref()
                .and_then(|(value, _)| std::str::from_utf8(value).ok())
                .and_then(|t| t.parse::<i64>().ok())
            {
                if current >= to {
                    return Ok(());
                }
            }
            let revision = entry.map(|(_, revision)| revision);
            if self.write_if(key, value.clone(), revision).await? {
                return Ok(());
            }
        }
        Err(StoreError::Conflict(key.to_owned()))
    }

    /// The newest entry of `key`, a deletion marker included.
    async fn entry(&self, key: &str) -> Result<Option<kv::Entry>, StoreError> {
        self.kv
            .entry(key)
            .await
            .map_err(|e| StoreError::Storage(format!("read {key}: {e}")))
    }

    /// Writes `value` at `key` if it is still at `revision` (`None`: absent); false when
    /// another writer got there first.
    async fn write_if(
        &self,
        key: &str,
        value: Bytes,
        revision: Option<u64>,
    ) -> Result<bool, StoreError> {
        match revision {
            None => match self.kv.create(key, value).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(StoreError::Storage(format!("create {key}: {e}"))),
            },
            Some(revision) => match self.kv.update(key, value, revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(StoreError::Storage(format!("update {key}: {e}"))),
            },
        }
    }
}

/// The KV key of a user id.
fn user_key(user: &str) -> String {
    if user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!("u.{user}")
    } else {
        format!(
            "b.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user)
        )
    }
}

/// The value and revision of a live entry; `None` for an absent or deleted key (which
/// `create` writes, handling a tombstone itself).
fn live(entry: Option<kv::Entry>) -> Option<(Bytes, u64)> {
    entry
        .filter(|e| e.operation == kv::Operation::Put)
        .map(|e| (e.value, e.revision))
}

#[async_trait]
impl SnapshotStore for NatsSnapshots {
    async fn get(&self, user: &str) -> Result<Option<Snapshot>, StoreError> {
        check_user(user)?;
        match live(self.entry(&user_key(user)).await?) {
            Some((value, _)) => Snapshot::decode(&value)
                .map(Some)
                .map_err(|e| corrupt(user, e)),
            None => Ok(None),
        }
    }

    async fn put(&self, user: &str, snapshot: &Snapshot) -> Result<bool, StoreError> {
        check_user(user)?;
        let key = user_key(user);
        let value = Bytes::from(snapshot.encode());
        for attempt in 0..CAS_ATTEMPTS {
            back_off(attempt).await;
            let entry = live(self.entry(&key).await?);
            if let Some((stored, _)) = &entry {
                match Snapshot::decode(stored) {
                    Ok(stored) if stored.as_of > snapshot.as_of => return Ok(false),
                    Ok(_) => {}
                    // A fresh reading heals an entry that does not decode.
                    Err(e) => {
                        tracing::warn!(user, error = %e, "replacing a corrupt profile snapshot")
                    }
                }
            }
            if self
                .write_if(&key, value.clone(), entry.map(|(_, revision)| revision))
                .await?
            {
                return Ok(true);
            }
        }
        Err(StoreError::Conflict(user.to_owned()))
    }

    async fn put_many(&self, entries: &[(String, Snapshot)]) -> Result<usize, StoreError> {
        let results =
            futures::future::join_all(entries.iter().map(|(user, s)| self.put(user, s))).await;
        let mut written = 0;
        for result in results {
            written += usize::from(result?);
        }
        Ok(written)
    }

    async fn watermark(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.meta(WATERMARK_KEY).await? {
            None => Ok(None),
            Some(ms) => DateTime::from_timestamp_millis(ms)
                .map(Some)
                .ok_or_else(|| StoreError::Storage("the sweep watermark is not a time".to_owned())),
        }
    }

    async fn set_watermark(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.raise(WATERMARK_KEY, at.timestamp_millis()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_are_valid_kv_keys_and_distinct() {
        assert_eq!(user_key("00u1abcDEF"), "u.00u1abcDEF");
        assert_eq!(user_key("a.b"), format!("b.{}", "YS5i"));
        assert_ne!(user_key("YS5i"), user_key("a.b"));
        assert_eq!(bucket_name("OKTA_EVENTS"), "OKTA_EVENTS_PROFILES");
    }
}
