//! The journal as readers see it with profile values on: only events up to the released
//! cursor, each joined with its stored values.
//!
//! An update event is committed before its values exist, so readers (replay, GetEvent,
//! ListEvents) must not see it until the stage released it; then they see it with exactly the
//! values stored once for it. The join appends the encoded profile fields to the stored record
//! bytes (protobuf merges concatenated messages, as [`crate::journal::NewEvent::commit`]
//! appends the cursor): no decode and re-encode of the record.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use super::store::{StoreError, ValuesStore};
use super::values::update_cursors;
use crate::journal::{
    Appended, Batch, Bounds, Committed, Cursor, Journal, JournalError, QuarantineId,
    QuarantinePage, Quarantined, SharedEvent, SharedJournal,
};
use crate::proto;

/// The journal capped at the released cursor and joined with profile values. See the module
/// docs.
#[derive(Debug, Clone)]
pub struct ReleasedJournal {
    inner: SharedJournal,
    values: Arc<dyn ValuesStore>,
    released: watch::Receiver<Cursor>,
}

impl ReleasedJournal {
    /// A view of `inner` up to the cursor `released` says, joined with `values`.
    pub fn new(
        inner: SharedJournal,
        values: Arc<dyn ValuesStore>,
        released: watch::Receiver<Cursor>,
    ) -> Self {
        Self {
            inner,
            values,
            released,
        }
    }

    fn through(&self) -> Cursor {
        *self.released.borrow()
    }

    /// Joins each of `events` with its stored values, if it has any.
    async fn join(&self, events: Vec<SharedEvent>) -> Result<Vec<SharedEvent>, JournalError> {
        let cursors = update_cursors(&events);
        if cursors.is_empty() {
            return Ok(events);
        }
        let stored: HashMap<Cursor, Bytes> = self
            .values
            .values_at(&cursors)
            .await
            .map_err(values_error)?
            .into_iter()
            .collect();
        events
            .into_iter()
            .map(|event| match stored.get(&event.cursor()) {
                Some(fields) => with_values(&event, fields).map(Arc::new),
                None => Ok(event),
            })
            .collect()
    }
}

/// `event` with its encoded profile `fields` appended; the fields must decode as the record's.
pub fn with_values(event: &Committed, fields: &Bytes) -> Result<Committed, JournalError> {
    <proto::Event as prost::Message>::decode(fields.clone()).map_err(|e| {
        JournalError::Unreadable {
            cursor: event.cursor(),
            reason: format!("stored profile values do not decode: {e}"),
        }
    })?;
    let mut encoded = Vec::with_capacity(event.encoded.len() + fields.len());
    encoded.extend_from_slice(&event.encoded);
    encoded.extend_from_slice(fields);
    Ok(Committed {
        facts: event.facts.clone(),
        encoded: Bytes::from(encoded),
    })
}

fn values_error(error: StoreError) -> JournalError {
    JournalError::storage("read the profile values", error)
}

#[async_trait]
impl Journal for ReleasedJournal {
    async fn append(&self, batch: Batch) -> Result<Appended, JournalError> {
        self.inner.append(batch).await
    }

    async fn read_after(
        &self,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        let through = self.through();
        if after >= through {
            return Ok(Vec::new());
        }
        let mut events = self.inner.read_after(after, limit).await?;
        events.retain(|e| e.cursor() <= through);
        self.join(events).await
    }

    async fn read_before(
        &self,
        before: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        let before = before.min(self.through().saturating_add(1));
        let events = self.inner.read_before(before, limit).await?;
        self.join(events).await
    }

    async fn get(&self, uuid: &str) -> Result<Option<SharedEvent>, JournalError> {
        let through = self.through();
        match self.inner.get(uuid).await? {
            Some(event) if event.cursor() <= through => {
                Ok(self.join(vec![event]).await?.into_iter().next())
            }
            _ => Ok(None),
        }
    }

    async fn cursor_before_time(&self, since_micros: i64) -> Result<Cursor, JournalError> {
        self.inner.cursor_before_time(since_micros).await
    }

    async fn bounds(&self) -> Result<Bounds, JournalError> {
        let through = self.through();
        let bounds = self.inner.bounds().await?;
        Ok(Bounds {
            oldest: bounds.oldest.filter(|o| *o <= through),
            head: bounds.head.min(through),
        })
    }

    async fn state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.inner.state(key).await
    }

    async fn quarantine_page(
        &self,
        page: QuarantinePage,
    ) -> Result<Vec<(QuarantineId, Quarantined)>, JournalError> {
        self.inner.quarantine_page(page).await
    }

    async fn check(&self) -> Result<(), JournalError> {
        self.inner.check().await
    }

    async fn stored_bytes(&self) -> Result<Option<u64>, JournalError> {
        self.inner.stored_bytes().await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
