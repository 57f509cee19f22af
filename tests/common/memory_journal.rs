//! An in-memory [`Journal`] for tests that need journal semantics without a store on disk:
//! dedupe by LogEvent uuid (against stored events and within a batch), gap-free cursors from 1,
//! the batch's state written in the same critical section as its events, and every commit
//! published to the hub in cursor order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use okta_stream::hub::Hub;
use okta_stream::journal::{
    Appended, Batch, Bounds, Cursor, Journal, JournalError, Quarantined, SharedEvent,
};

/// One append as seen by the journal: its events' uuids and its state write (key, value).
pub type BatchRecord = (Vec<String>, Option<(String, Vec<u8>)>);

#[derive(Default)]
struct Inner {
    /// Committed events, index = cursor − 1, with their commit time (µs since the epoch).
    events: Vec<(SharedEvent, i64)>,
    by_uuid: HashMap<String, Cursor>,
    state: HashMap<String, Vec<u8>>,
    quarantine: Vec<Quarantined>,
    appends: u64,
    /// Per append: the uuids it carried and the state value it wrote.
    batches: Vec<BatchRecord>,
}

/// The in-memory journal. Cheap to share through `Arc`.
pub struct MemoryJournal {
    inner: Mutex<Inner>,
    hub: Hub,
}

impl std::fmt::Debug for MemoryJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryJournal").finish_non_exhaustive()
    }
}

impl MemoryJournal {
    /// An empty journal publishing to a fresh hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            hub: Hub::new(1024, 0),
        })
    }

    /// The hub commits are published to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Every committed event's uuid, in cursor order.
    pub fn uuids(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        inner
            .events
            .iter()
            .map(|(e, _)| e.event.uuid.clone())
            .collect()
    }

    /// Every committed event's cursor, in order.
    pub fn cursors(&self) -> Vec<Cursor> {
        let inner = self.inner.lock().unwrap();
        inner.events.iter().map(|(e, _)| e.cursor()).collect()
    }

    /// Per committed append: the uuids of its events (duplicates included) and its state write.
    pub fn batches(&self) -> Vec<BatchRecord> {
        self.inner.lock().unwrap().batches.clone()
    }

    /// How many appends were committed.
    pub fn appends(&self) -> u64 {
        self.inner.lock().unwrap().appends
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn close(&self) {}

    async fn append(&self, batch: Batch) -> Result<Appended, JournalError> {
        let mut inner = self.inner.lock().unwrap();
        let mut committed = Vec::new();
        let mut duplicates = 0;
        let now = now_micros();
        let uuids = batch.events.iter().map(|e| e.uuid().to_owned()).collect();
        let state = batch
            .state
            .as_ref()
            .map(|s| (s.key.clone(), s.value.clone()));
        inner.batches.push((uuids, state));
        for event in batch.events {
            if inner.by_uuid.contains_key(event.uuid()) {
                duplicates += 1;
                continue;
            }
            let cursor = inner.events.len() as Cursor + 1;
            inner.by_uuid.insert(event.uuid().to_owned(), cursor);
            let shared: SharedEvent = Arc::new(event.commit(cursor));
            inner.events.push((shared.clone(), now));
            committed.push(shared);
        }
        inner.quarantine.extend(batch.quarantine);
        if let Some(state) = batch.state {
            inner.state.insert(state.key, state.value);
        }
        inner.appends += 1;
        // Published under the lock so concurrent appends reach the hub in cursor order.
        self.hub.publish(&committed);
        Ok(Appended {
            committed,
            duplicates,
        })
    }

    async fn read_after(
        &self,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        let inner = self.inner.lock().unwrap();
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(inner.events.len());
        Ok(inner.events[start..]
            .iter()
            .take(limit)
            .map(|(e, _)| e.clone())
            .collect())
    }

    async fn read_before(
        &self,
        before: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        let inner = self.inner.lock().unwrap();
        let end = usize::try_from(before.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(inner.events.len());
        Ok(inner.events[..end]
            .iter()
            .rev()
            .take(limit)
            .map(|(e, _)| e.clone())
            .collect())
    }

    async fn get(&self, uuid: &str) -> Result<Option<SharedEvent>, JournalError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .by_uuid
            .get(uuid)
            .and_then(|c| inner.events.get(usize::try_from(*c).ok()? - 1))
            .map(|(e, _)| e.clone()))
    }

    async fn cursor_before_time(&self, since_micros: i64) -> Result<Cursor, JournalError> {
        let inner = self.inner.lock().unwrap();
        let first = inner
            .events
            .iter()
            .position(|(_, at)| *at >= since_micros)
            .unwrap_or(inner.events.len());
        Ok(first as Cursor)
    }

    async fn bounds(&self) -> Result<Bounds, JournalError> {
        let inner = self.inner.lock().unwrap();
        Ok(Bounds {
            oldest: (!inner.events.is_empty()).then_some(1),
            head: inner.events.len() as Cursor,
        })
    }

    async fn state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        Ok(self.inner.lock().unwrap().state.get(key).cloned())
    }

    async fn quarantined(&self, limit: usize) -> Result<Vec<Quarantined>, JournalError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.quarantine.iter().take(limit).cloned().collect())
    }

    async fn check(&self) -> Result<(), JournalError> {
        Ok(())
    }
}
