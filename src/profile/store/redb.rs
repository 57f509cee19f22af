//! Profile snapshots in a redb database: the table `profile_snapshots` (user id → stored
//! snapshot), `profile_meta` (the sweep watermark, the released cursor) and `profile_values`
//! (cursor → the event's values), in the embedded journal's own file.
//!
//! The database is asked of the journal on each call ([`RedbJournal::database`]) and held
//! only for that call's transaction: after a failed commit the journal reopens its file, and
//! the store then follows the new handle instead of keeping the refused one (which would also
//! keep the journal from reopening). `profile_values` is attached to the journal's retention
//! ([`RedbJournal::attach_cursor_table`]), so an event's values go when the event goes.
//!
//! Each put is one durable write transaction (read, compare `as_of`, write); `put_many` writes
//! a whole sweep page in one. Calls run on the blocking pool.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{SnapshotStore, StoreError, StoredValues, ValuesStore, check_user, corrupt};
use crate::journal::embedded::{CursorTable, RedbJournal};
use crate::profile::snapshot::Snapshot;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("profile_snapshots");
const META: TableDefinition<&str, i64> = TableDefinition::new("profile_meta");
const WATERMARK: &str = "sweep_watermark_ms";
/// Cursor → encoded profile fields of the event at that cursor.
const VALUES: CursorTable = TableDefinition::new("profile_values");
/// The newest cursor released to readers, kept in [`META`] (a cursor fits an i64).
const RELEASED: &str = "released_through";

/// Snapshots in a shared redb database. See the module docs.
#[derive(Clone)]
pub struct RedbSnapshots {
    db: Source,
}

/// Where each call finds the database.
#[derive(Clone)]
enum Source {
    /// The embedded journal's current database (it changes when the journal reopens).
    Journal(Arc<RedbJournal>),
    /// A database nobody reopens.
    Fixed(Arc<Database>),
}

impl Source {
    /// The database for one call, or why there is none right now.
    fn database(&self) -> Result<Arc<Database>, StoreError> {
        match self {
            Source::Fixed(db) => Ok(db.clone()),
            Source::Journal(journal) => journal.database().ok_or_else(|| {
                StoreError::Storage(
                    "the journal is closed or reopening its file after a storage error".to_owned(),
                )
            }),
        }
    }
}

impl std::fmt::Debug for RedbSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbSnapshots").finish_non_exhaustive()
    }
}

impl RedbSnapshots {
    /// Keeps its tables in `journal`'s file, following the journal when it reopens the file,
    /// with `profile_values` pruned by the journal's retention; creates the tables if missing.
    pub async fn in_journal(journal: Arc<RedbJournal>) -> Result<Self, StoreError> {
        journal.attach_cursor_table(VALUES);
        Self::create_tables(Self {
            db: Source::Journal(journal),
        })
        .await
    }

    /// Uses `db`, a database nobody else reopens (tests, tools), creating the tables if
    /// missing. Within the service use [`RedbSnapshots::in_journal`]: this handle is held for
    /// the store's life, which would keep the journal from reopening its file.
    pub async fn open(db: Arc<Database>) -> Result<Self, StoreError> {
        Self::create_tables(Self {
            db: Source::Fixed(db),
        })
        .await
    }

    async fn create_tables(store: Self) -> Result<Self, StoreError> {
        store
            .write(|txn| {
                txn.open_table(SNAPSHOTS).map_err(storage)?;
                txn.open_table(META).map_err(storage)?;
                txn.open_table(VALUES).map_err(storage)?;
                Ok(())
            })
            .await?;
        Ok(store)
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.database()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(storage)?;
            let out = f(&txn)?;
            txn.commit().map_err(storage)?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Storage(format!("snapshot write task failed: {e}")))?
    }
}

fn storage(error: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(error.to_string())
}

/// Writes `snapshot` unless the stored one is newer.
fn put_in(txn: &WriteTransaction, user: &str, snapshot: &Snapshot) -> Result<bool, StoreError> {
    let mut table = txn.open_table(SNAPSHOTS).map_err(storage)?;
    let newer_stored = match table.get(user).map_err(storage)? {
        Some(bytes) => match Snapshot::decode(bytes.value()) {
            Ok(stored) => stored.as_of > snapshot.as_of,
            Err(e) => {
                // A fresh reading heals an entry that does not decode.
                tracing::warn!(user, error = %e, "replacing a corrupt profile snapshot");
                false
            }
        },
        None => false,
    };
    if newer_stored {
        return Ok(false);
    }
    table
        .insert(user, snapshot.encode().as_slice())
        .map_err(storage)?;
    Ok(true)
}

#[async_trait]
impl SnapshotStore for RedbSnapshots {
    async fn get(&self, user: &str) -> Result<Option<Snapshot>, StoreError> {
        check_user(user)?;
        let db = self.db.database()?;
        let user = user.to_owned();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(SNAPSHOTS).map_err(storage)?;
            match table.get(user.as_str()).map_err(storage)? {
                Some(bytes) => Snapshot::decode(bytes.value())
                    .map(Some)
                    .map_err(|e| corrupt(&user, e)),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| StoreError::Storage(format!("snapshot read task failed: {e}")))?
    }

    async fn put(&self, user: &str, snapshot: &Snapshot) -> Result<bool, StoreError> {
        check_user(user)?;
        let (user, snapshot) = (user.to_owned(), snapshot.clone());
        self.write(move |txn| put_in(txn, &user, &snapshot)).await
    }

    async fn put_many(&self, entries: &[(String, Snapshot)]) -> Result<usize, StoreError> {
        for (user, _) in entries {
            check_user(user)?;
        }
        let entries = entries.to_vec();
        self.write(move |txn| {
            let mut written = 0;
            for (user, snapshot) in &entries {
                written += usize::from(put_in(txn, user, snapshot)?);
            }
            Ok(written)
        })
        .await
    }

    async fn watermark(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let db = self.db.database()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(META).map_err(storage)?;
            let ms = table.get(WATERMARK).map_err(storage)?.map(|v| v.value());
            Ok(ms.and_then(DateTime::from_timestamp_millis))
        })
        .await
        .map_err(|e| StoreError::Storage(format!("snapshot read task failed: {e}")))?
    }

    async fn set_watermark(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        let ms = at.timestamp_millis();
        self.write(move |txn| {
            let mut table = txn.open_table(META).map_err(storage)?;
            let current = table.get(WATERMARK).map_err(storage)?.map(|v| v.value());
            if current.is_none_or(|c| c < ms) {
                table.insert(WATERMARK, ms).map_err(storage)?;
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl ValuesStore for RedbSnapshots {
    async fn released_through(&self) -> Result<u64, StoreError> {
        let db = self.db.database()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(META).map_err(storage)?;
            let at = table.get(RELEASED).map_err(storage)?.map(|v| v.value());
            Ok(at.and_then(|c| u64::try_from(c).ok()).unwrap_or(0))
        })
        .await
        .map_err(|e| StoreError::Storage(format!("values read task failed: {e}")))?
    }

    async fn values(&self, from: u64, to: u64) -> Result<Vec<StoredValues>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let db = self.db.database()?;
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(VALUES).map_err(storage)?;
            let mut out = Vec::new();
            for row in table.range(from..=to).map_err(storage)? {
                let (cursor, bytes) = row.map_err(storage)?;
                out.push((cursor.value(), bytes::Bytes::copy_from_slice(bytes.value())));
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Storage(format!("values read task failed: {e}")))?
    }

    async fn release(
        &self,
        values: Vec<StoredValues>,
        snapshots: Vec<(String, Snapshot)>,
        through: u64,
    ) -> Result<(), StoreError> {
        for (user, _) in &snapshots {
            check_user(user)?;
        }
        let through = i64::try_from(through)
            .map_err(|_| StoreError::Storage(format!("cursor {through} out of range")))?;
        self.write(move |txn| {
            {
                let mut table = txn.open_table(VALUES).map_err(storage)?;
                for (cursor, bytes) in &values {
                    if table.get(cursor).map_err(storage)?.is_none() {
                        table.insert(cursor, bytes.as_ref()).map_err(storage)?;
                    }
                }
            }
            for (user, snapshot) in &snapshots {
                put_in(txn, user, snapshot)?;
            }
            let mut meta = txn.open_table(META).map_err(storage)?;
            let current = meta.get(RELEASED).map_err(storage)?.map(|v| v.value());
            if current.is_none_or(|c| c < through) {
                meta.insert(RELEASED, through).map_err(storage)?;
            }
            Ok(())
        })
        .await
    }
}
