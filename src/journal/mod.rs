//! The journal: the durable, deduplicating, ordered store of committed events.
//!
//! One trait, two implementations: an embedded [`redb`] store (the default) and NATS
//! JetStream (scale-out). Nothing above the trait knows which one runs. Every committed event
//! gets a gap-free, strictly increasing [`Cursor`]; an event whose LogEvent `uuid` is already
//! stored is dropped, never stored twice. Implementations hand each committed event, in cursor
//! order, to the [`CommitSink`] they are opened with (the hub, in the service), which is how
//! live subscribers see it. The journal never learns who consumes its commits.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::proto;

pub use facts::{EventFacts, Facts, Principal, RecordError, TargetFacts};
pub(crate) use facts::{Identity, TargetText, Text};

mod applying;
pub mod chunk;
pub mod embedded;
mod facts;
pub mod file;
mod idle;
pub mod nats;
pub mod verify;
pub mod wal;

/// A position in the journal; the `cursor` field of the record. Starts at 1.
pub type Cursor = u64;

/// Field number of `Event.cursor` in `events.proto`.
const CURSOR_FIELD_KEY: u8 = 1 << 3; // field 1, wire type varint
/// The cursor field's most bytes: its key and a varint of up to 10 bytes.
pub(crate) const CURSOR_FIELD_MAX_BYTES: usize = 11;

/// An event that is mapped and encoded, waiting to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What the service reads of the record (cursor 0: the journal assigns it).
    pub facts: EventFacts,
    /// The record encoded once, without its cursor.
    pub encoded: Bytes,
}

impl NewEvent {
    /// Encodes `event` (whose cursor must still be 0) for appending: for records built by
    /// hand, in tests and tools; the mapping hands over its encoding ([`NewEvent::within`]).
    pub fn new(event: proto::Event) -> Self {
        debug_assert_eq!(event.cursor, 0, "the journal assigns cursors");
        // Room for the cursor field, so committing appends it without copying the record.
        let len = prost::Message::encoded_len(&event);
        let mut buf = Vec::with_capacity(len + CURSOR_FIELD_MAX_BYTES);
        prost::Message::encode_raw(&event, &mut buf);
        // prost's own encoding of an `Event` always reads.
        let facts = EventFacts::read(&buf);
        debug_assert!(facts.is_ok(), "{facts:?}");
        Self {
            facts: facts.unwrap_or_default(),
            encoded: Bytes::from(buf),
        }
    }

    /// What the service reads of the record.
    pub fn facts(&self) -> Facts<'_> {
        self.facts.of(&self.encoded)
    }

    /// The dedupe key: the LogEvent `uuid`.
    pub fn uuid(&self) -> &str {
        self.facts().uuid()
    }

    /// Takes a mapped record (an `Event` encoded without its cursor, and its facts) for
    /// appending, or says (as a quarantine reason) why it is not stored: its record, cursor
    /// included, would be larger than `max_bytes`, more than a default gRPC client accepts in
    /// one message.
    pub fn within(encoded: Vec<u8>, facts: EventFacts, max_bytes: usize) -> Result<Self, String> {
        debug_assert_eq!(facts.cursor, 0, "the journal assigns cursors");
        // The committed record adds the cursor field: a key byte and up to 10 varint bytes.
        let size = encoded.len() + CURSOR_FIELD_MAX_BYTES;
        if size > max_bytes {
            return Err(format!(
                "event: its record would be {size} bytes, larger than the {max_bytes} bytes \
                 allowed (OKTA_STREAM_MAX_EVENT_BYTES), so no gRPC client could receive it"
            ));
        }
        Ok(Self {
            facts,
            encoded: Bytes::from(encoded),
        })
    }

    /// Turns this into a committed event at `cursor` without re-encoding the record: protobuf
    /// merges concatenated messages, so the cursor field is appended to the encoded bytes.
    pub fn commit(self, cursor: Cursor) -> Committed {
        let mut facts = self.facts;
        facts.cursor = cursor;
        // In place when this holds the only handle on the bytes (and the encoder left room):
        // no copy of the record.
        let mut buf = match self.encoded.try_into_mut() {
            Ok(buf) => buf,
            Err(shared) => bytes::BytesMut::from(&shared[..]),
        };
        buf.reserve(CURSOR_FIELD_MAX_BYTES);
        buf.extend_from_slice(&[CURSOR_FIELD_KEY]);
        prost::encoding::encode_varint(cursor, &mut buf);
        Committed {
            facts,
            encoded: buf.freeze(),
        }
    }
}

/// A committed event: its encoding, shared by every reader, and the facts read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// What filters, dedupe and the profile stage read (`cursor` set), decoded once.
    pub facts: EventFacts,
    /// The record encoded as an `okta.events.v1.Event`, cursor included.
    pub encoded: Bytes,
}

impl Committed {
    /// Reads a stored encoding (cursor included).
    pub fn decode(encoded: Bytes) -> Result<Self, JournalError> {
        let facts = EventFacts::read(&encoded)
            .map_err(|source| Corruption::Unreadable { cursor: 0, source })?;
        Ok(Self { facts, encoded })
    }

    /// Rebuilds a committed event from a stored body (the encoding without its cursor, as
    /// [`NewEvent::encoded`]) and the cursor it was stored at.
    pub fn from_stored(payload: Bytes, cursor: Cursor) -> Result<Self, JournalError> {
        let facts = EventFacts::read(&payload)
            .map_err(|source| Corruption::Unreadable { cursor, source })?;
        if facts.cursor != 0 {
            return Err(Corruption::ForeignCursor { cursor }.into());
        }
        Ok(NewEvent {
            facts,
            encoded: payload,
        }
        .commit(cursor))
    }

    /// This event's position in the journal.
    pub fn cursor(&self) -> Cursor {
        self.facts.cursor
    }

    /// What the service reads of the record.
    pub fn facts(&self) -> Facts<'_> {
        self.facts.of(&self.encoded)
    }

    /// The dedupe key: the LogEvent `uuid`.
    pub fn uuid(&self) -> &str {
        self.facts().uuid()
    }

    /// The whole record, decoded: for the calls that answer with one (`GetEvent`,
    /// `ListEvents`). A record the journal wrote always decodes.
    pub fn record(&self) -> Result<proto::Event, JournalError> {
        <proto::Event as prost::Message>::decode(&self.encoded[..]).map_err(|source| {
            Corruption::Undecodable {
                cursor: self.cursor(),
                source,
            }
            .into()
        })
    }
}

/// A committed event shared between the journal, the hub and every subscriber.
pub type SharedEvent = Arc<Committed>;

/// An event that could not be mapped, kept with the reason instead of being dropped.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quarantined {
    /// Why the event was not accepted, naming the field.
    pub reason: String,
    /// The raw LogEvent JSON as received.
    pub raw: String,
    /// Where it came from (hook delivery `eventId` and `source`, or the polled org).
    pub origin: String,
    /// When it was received, RFC 3339.
    pub received: String,
    /// Length of the LogEvent JSON as received; larger than `raw.len()` when `raw` was cut
    /// to [`MAX_QUARANTINE_RAW_BYTES`]. 0 in entries stored before it was recorded.
    #[serde(default)]
    pub raw_bytes: u64,
}

/// Default of `OKTA_STREAM_MAX_EVENT_BYTES`: the largest record stored (3 MiB), below the 4 MiB
/// a default gRPC client accepts in one message.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 3 * 1024 * 1024;

/// Most bytes of a quarantined LogEvent kept (the start of it), so every entry fits in a
/// ListQuarantined answer that any gRPC client accepts.
pub const MAX_QUARANTINE_RAW_BYTES: usize = 256 * 1024;

impl Quarantined {
    /// An entry for `raw`, which was not stored because of `reason`; `raw` beyond
    /// [`MAX_QUARANTINE_RAW_BYTES`] is cut (at a character boundary) and its length kept.
    pub fn new(reason: String, raw: &str, origin: String, received: String) -> Self {
        let mut end = raw.len().min(MAX_QUARANTINE_RAW_BYTES);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            reason,
            raw: raw[..end].to_owned(),
            origin,
            received,
            raw_bytes: raw.len() as u64,
        }
    }

    /// Whether `raw` holds only the start of the LogEvent.
    pub fn is_truncated(&self) -> bool {
        self.raw_bytes > self.raw.len() as u64
    }

    /// Approximate size of this entry in a ListQuarantined answer.
    pub fn size(&self) -> usize {
        self.reason.len() + self.raw.len() + self.origin.len() + self.received.len() + 32
    }
}

/// Position of a quarantine entry; ids increase with arrival, with gaps where retention removed
/// entries.
pub type QuarantineId = u64;

/// Which quarantine entries to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantinePage {
    /// Start after this id (exclusive, in the listing order); `None`: from the oldest (or the
    /// newest with `newest_first`).
    pub after: Option<QuarantineId>,
    /// Newest first (descending ids) instead of oldest first.
    pub newest_first: bool,
    /// Most entries to return.
    pub limit: usize,
}

/// Small state written atomically with a batch (the poller's next URL).
#[derive(Debug, Clone, PartialEq)]
pub struct StateWrite {
    /// State key, e.g. `poller.next_url`.
    pub key: String,
    /// New value.
    pub value: Vec<u8>,
}

/// What one append carries: committed whole or not at all.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Events in the order they should get cursors.
    pub events: Vec<NewEvent>,
    /// Events that could not be mapped.
    pub quarantine: Vec<Quarantined>,
    /// State to store in the same transaction.
    pub state: Option<StateWrite>,
}

/// The result of an append.
#[derive(Debug, Clone, Default)]
pub struct Appended {
    /// The newly stored events, in cursor order.
    pub committed: Vec<SharedEvent>,
    /// How many events of the batch were already stored (or repeated within it) and dropped.
    pub duplicates: usize,
}

/// The range of cursors the journal still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// The oldest retained cursor; `None` when the journal holds no event.
    pub oldest: Option<Cursor>,
    /// The newest cursor ever assigned (0 before the first event). Never goes down, also when
    /// retention removed every event.
    pub head: Cursor,
}

/// The error a storage engine reported (redb, NATS, the OS), kept as the source. Shared, so
/// that one failed group commit can answer every append that was in it.
pub type StorageSource = Arc<dyn std::error::Error + Send + Sync>;

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store could not be read or written; retrying later may work.
    #[error("journal storage error: cannot {action}: {source}")]
    Storage {
        /// What the journal was doing, e.g. `open /data/journal.redb`.
        action: String,
        /// What the storage engine said.
        #[source]
        source: StorageSource,
    },
    /// The journal is shut down or its writer is gone.
    #[error("journal is closed")]
    Closed,
    /// Stored data does not decode or breaks the journal's own invariants.
    #[error("journal data is corrupt: {0}")]
    Corrupt(#[from] Corruption),
    /// A compare-and-set on state lost to another writer.
    #[error(
        "journal state conflict: state key {key:?} was changed by another writer since this replica read it"
    )]
    Conflict {
        /// The state key whose write lost.
        key: String,
    },
    /// A committed event cannot be read back: the stored data at `cursor` is damaged. Not
    /// retried: reading it again gives the same answer.
    #[error("the event at cursor {cursor} cannot be read: {reason}")]
    Unreadable {
        /// The first cursor that could not be read.
        cursor: Cursor,
        /// What the store or the decoder said.
        reason: String,
    },
    /// At start: the journal file exists but is empty, truncated or not a journal.
    #[error(
        "{} is not a usable journal ({reason}); restore it from a backup, or move it away to \
         start with an empty journal",
        path.display()
    )]
    Damaged {
        /// The journal file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// At start: the data dir had a journal (its marker file says so) but the file is gone.
    #[error(
        "{} is missing, but {} says this data dir had a journal; restore the journal from a \
         backup, or start with --accept-empty-journal (OKTA_STREAM_ACCEPT_EMPTY_JOURNAL=true) to \
         begin with an empty one",
        path.display(),
        marker.display()
    )]
    Vanished {
        /// The missing journal file.
        path: std::path::PathBuf,
        /// The marker file that says it existed.
        marker: std::path::PathBuf,
    },
    /// At start: the journal was written by a newer okta-stream in a format this one cannot
    /// read.
    #[error(
        "{} has journal format version {found}, newer than this okta-stream supports \
         (up to {supported}); run a newer okta-stream",
        path.display()
    )]
    TooNew {
        /// The journal file.
        path: std::path::PathBuf,
        /// The format version stored in the file.
        found: u64,
        /// The newest format version this binary reads.
        supported: u64,
    },
}

/// Where a journal hands what it committed: the next stage, given to the journal when it opens.
///
/// The journal knows nothing of its consumer (the hub implements this), as a source in a
/// pipeline is handed its sender and never learns the topology.
pub trait CommitSink: Send + Sync + 'static {
    /// Called once while the journal opens, before any commit is handed over, with the newest
    /// cursor already stored: "live from now" starts after it.
    fn opened(&self, head: Cursor);

    /// Newly committed events, in cursor order, each exactly once per journal instance.
    fn committed(&self, events: &[SharedEvent]);
}

/// A commit sink shared by a journal's writer and background tasks.
pub type SharedSink = Arc<dyn CommitSink>;

impl JournalError {
    /// A [`JournalError::Storage`] for `action` (a phrase after "cannot") failing with `source`.
    pub fn storage(
        action: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Storage {
            action: action.into(),
            source: Arc::from(source.into()),
        }
    }
}

/// What is wrong with stored data, by kind, so callers and tests can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// A stored event does not decode as an `okta.events.v1.Event`.
    #[error("stored event {cursor} does not decode: {source}")]
    Undecodable {
        /// Where it is stored (0 when the reader did not know).
        cursor: Cursor,
        /// The decoder's error.
        source: prost::DecodeError,
    },
    /// A stored event's fields that the service reads are not where or what they should be.
    #[error("stored event {cursor} does not decode: {source}")]
    Unreadable {
        /// Where it is stored (0 when the reader did not know).
        cursor: Cursor,
        /// What was wrong, and where.
        source: RecordError,
    },
    /// A stored event carries a cursor in its body: this journal never writes one there.
    #[error("stored event {cursor} carries a cursor; it was not written by this journal")]
    ForeignCursor {
        /// Where it is stored.
        cursor: Cursor,
    },
    /// The uuid index names a cursor that holds no event.
    #[error("uuid index points at missing cursor {cursor}")]
    DanglingIndex {
        /// The cursor the index names.
        cursor: Cursor,
    },
    /// The event found under a uuid has another uuid.
    #[error("the event at cursor {cursor} is stored under the uuid of another event")]
    MisplacedEvent {
        /// Where it is stored.
        cursor: Cursor,
    },
    /// The journal's format version is older than this binary and no migration knows it.
    #[error("no migration from journal format version {version}")]
    UnknownFormat {
        /// The stored format version.
        version: u64,
    },
    /// A quarantine record does not decode.
    #[error("quarantine entry {id} does not decode: {source}")]
    Quarantine {
        /// The entry's id (embedded) or sequence (NATS).
        id: u64,
        /// The JSON decoder's error.
        source: serde_json::Error,
    },
}

/// The durable, ordered, deduplicating event store. See the module docs.
#[async_trait]
pub trait Journal: std::fmt::Debug + Send + Sync + 'static {
    /// Appends a batch atomically and durably, assigning cursors to the events whose uuid is
    /// not stored yet, and hands them to its [`CommitSink`] in cursor order. Returns once the
    /// batch is durable.
    async fn append(&self, batch: Batch) -> Result<Appended, JournalError>;

    /// Up to `limit` events with cursor greater than `after`, in ascending cursor order.
    async fn read_after(
        &self,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError>;

    /// Up to `limit` events with cursor less than `before`, in descending cursor order.
    async fn read_before(
        &self,
        before: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError>;

    /// The retained event with this LogEvent uuid.
    async fn get(&self, uuid: &str) -> Result<Option<SharedEvent>, JournalError>;

    /// A cursor `c` such that every retained event committed at or after `since_micros`
    /// (microseconds since the Unix epoch) has a cursor greater than `c`. Reading after `c`
    /// replays from that time on.
    async fn cursor_before_time(&self, since_micros: i64) -> Result<Cursor, JournalError>;

    /// The oldest and newest cursors.
    async fn bounds(&self) -> Result<Bounds, JournalError>;

    /// Reads small state written by [`Batch::state`].
    async fn state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError>;

    /// One page of quarantined events with their ids (ascending with arrival), see
    /// [`QuarantinePage`].
    async fn quarantine_page(
        &self,
        page: QuarantinePage,
    ) -> Result<Vec<(QuarantineId, Quarantined)>, JournalError>;

    /// Up to `limit` quarantined events, oldest first.
    async fn quarantined(&self, limit: usize) -> Result<Vec<Quarantined>, JournalError> {
        let page = QuarantinePage {
            after: None,
            newest_first: false,
            limit,
        };
        let entries = self.quarantine_page(page).await?;
        Ok(entries.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Checks that the journal can still commit (for readiness and health).
    async fn check(&self) -> Result<(), JournalError>;

    /// Approximate bytes of the retained events, when the implementation knows it (metrics).
    async fn stored_bytes(&self) -> Result<Option<u64>, JournalError> {
        Ok(None)
    }

    /// Stops the journal after committing what is queued; later calls fail with
    /// [`JournalError::Closed`]. Called once at shutdown.
    async fn close(&self);
}

/// How long the journal keeps events: by age and/or by size; whichever removes more wins.
/// Quarantine entries are kept for the same age and, separately, within the same size.
///
/// Shared by both implementations so configuration does not depend on which one runs. Age is
/// measured from the event's commit time in the journal (not Okta's `published`), so a replayed
/// backfill is kept for the full period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Remove events committed longer ago than this. `None` keeps events regardless of age.
    pub max_age: Option<Duration>,
    /// Remove the oldest events while the retained events' size exceeds this many bytes.
    /// `None` keeps events regardless of size. The size is approximate: the sum of the stored
    /// encoded records, without index and storage overhead.
    pub max_bytes: Option<u64>,
    /// How often the background task checks retention.
    pub check_interval: Duration,
}

impl Retention {
    /// Okta keeps its System Log for 90 days; so do we by default.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 60 * 60);
    /// Default period of the background retention check.
    pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

    /// Keeps everything: no pruning at all.
    pub fn keep_all() -> Self {
        Self {
            max_age: None,
            max_bytes: None,
            check_interval: Self::DEFAULT_CHECK_INTERVAL,
        }
    }

    /// Whether this retention can ever remove an event.
    pub fn is_unbounded(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none()
    }
}

impl Default for Retention {
    /// 90 days, no size limit, checked every minute.
    fn default() -> Self {
        Self {
            max_age: Some(Self::DEFAULT_MAX_AGE),
            max_bytes: None,
            check_interval: Self::DEFAULT_CHECK_INTERVAL,
        }
    }
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Events removed (with their uuid index rows).
    pub events: u64,
    /// Sum of the removed events' stored encoded sizes.
    pub bytes: u64,
    /// Quarantine entries removed (by age like events, and beyond `max_bytes` of entries).
    pub quarantined: u64,
}

/// A journal shared by the app's parts.
pub type SharedJournal = Arc<dyn Journal>;

/// Locks `mutex`, also after a panic elsewhere poisoned it, so the journal keeps answering.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_event() -> NewEvent {
        NewEvent::new(proto::Event {
            uuid: "u-1".to_owned(),
            message: "m".repeat(300),
            ..Default::default()
        })
    }

    #[test]
    fn a_committed_record_decodes_to_the_event_at_its_cursor_whoever_holds_the_bytes() {
        let expected = |cursor| proto::Event {
            cursor,
            uuid: "u-1".to_owned(),
            message: "m".repeat(300),
            ..Default::default()
        };
        // The only handle: the cursor is appended in place.
        let alone = new_event().commit(300);
        assert_eq!(alone.record().unwrap(), expected(300));
        assert_eq!(alone.uuid(), "u-1");
        assert_eq!(alone.facts().cursor(), 300);
        assert_eq!(Committed::decode(alone.encoded.clone()).unwrap(), alone);
        // Shared with another handle: the record is copied, the other's bytes stay as they were.
        let event = new_event();
        let before = event.encoded.clone();
        let shared = event.clone().commit(u64::MAX);
        assert_eq!(shared.facts().cursor(), u64::MAX);
        assert_eq!(shared.record().unwrap(), expected(u64::MAX));
        assert_eq!(event.encoded, before);
    }

    #[test]
    fn a_mapped_record_is_refused_when_too_large() {
        let event = proto::Event {
            uuid: "u-1".to_owned(),
            ..Default::default()
        };
        let encoded = prost::Message::encode_to_vec(&event);
        let facts = EventFacts::read(&encoded).unwrap();
        let admitted = NewEvent::within(encoded.clone(), facts.clone(), 64).unwrap();
        assert_eq!(admitted.uuid(), "u-1");
        let error = NewEvent::within(encoded, facts, 8).unwrap_err();
        assert!(error.contains("OKTA_STREAM_MAX_EVENT_BYTES"), "{error}");
    }
}
