//! The embedded journal: one `redb` file in the data dir, written by one group-committing writer.
//!
//! Why one writer: redb allows one write transaction at a time and each durable commit costs an
//! fsync. A dedicated OS thread takes *every* request waiting in its queue, commits them all in
//! one durable transaction and then answers each one, so concurrent hook deliveries share an
//! fsync instead of queueing for one each. Retention pruning goes through the same writer, so
//! there is never a second writer. While requests follow each other closely, the writer spins
//! briefly for the next one instead of sleeping (`journal/idle.rs`).
//!
//! # Layout of `journal.redb`
//! | table        | key                         | value                                        |
//! |--------------|-----------------------------|----------------------------------------------|
//! | `event_chunks` | first cursor of the chunk | consecutive events of one commit ([`crate::journal::chunk`]): uuid and encoded `Event` with its cursor each |
//! | `uuids`      | LogEvent uuid               | cursor (lives exactly as long as the record) |
//! | `commits`    | commit time µs (monotonic)  | first cursor of that commit                  |
//! | `state`      | key                         | bytes ([`crate::journal::Batch::state`])     |
//! | `quarantine` | id (ascending)              | (commit time µs, JSON of [`Quarantined`])    |
//! | `meta`       | name                        | head cursor, retained bytes, format version, ... |
//!
//! Other stores may keep tables of their own in the file (the profile values and snapshots of
//! `crate::profile::store::redb`), written in their own transactions. A table keyed by cursor
//! that is attached with [`RedbJournal::attach_cursor_table`] lives exactly as long as the
//! events: retention removes its rows in the transaction that removes the events.
//!
//! # Loud, never silent
//! - At open, a file that exists but is empty, truncated or not a journal is refused
//!   ([`JournalError::Damaged`]) instead of being initialised over; a data dir whose journal
//!   vanished since the last run (the marker file [`MARKER_FILE_NAME`] says it had one) is
//!   refused ([`JournalError::Vanished`]) unless the caller accepts starting empty.
//! - `meta.format_version` says how the file is laid out ([`FORMAT_VERSION`]; files without
//!   the row are version 1); an older version is migrated at open, a newer one refused
//!   ([`JournalError::TooNew`]).
//! - A committed event that cannot be read back is [`JournalError::Unreadable`] at its cursor,
//!   and from then on [`Journal::check`] fails, so readiness says the journal is damaged.
//! - After a failed commit redb refuses every later transaction until the file is opened
//!   again; the writer then reopens it (keeping readers off meanwhile), so a full disk or
//!   another I/O error that clears heals without a restart.
//!
//! The head lives in `meta` so it never goes down, also when retention removed every event.
//! Commit times are made strictly increasing (a clock step back reuses the last time + 1 µs), so
//! cursor order and time order agree and both retention by age and
//! [`Journal::cursor_before_time`] are one index lookup.
//!
//! A group commit is durable once its rows are synced to the write-ahead file beside the
//! journal ([`crate::journal::wal`], one sequential `fdatasync`). Its appends are answered
//! then, and its redb transaction commits after, without an fsync of its own
//! (`Durability::None`): visible to readers only after the sync, and reads wait for that
//! commit (`journal/applying.rs`), so an append that returned is found by every read after
//! it. A checkpoint (redb's durable commit with quick-repair: every earlier commit becomes
//! durable in the file) comes before the group that finds its half of the write-ahead file
//! full, and on its own once the half is half full and no request has come for a few
//! milliseconds (`journal/idle.rs`). Its page writes and syncs run behind the writer
//! ([`crate::journal::file::SyncBehind`]) while the next groups are logged in the other half,
//! so a checkpoint holds appends only for redb's own work on the commit. A group too large to
//! log commits `Durability::Immediate` itself, synced before it is answered; prunes do the same.
//! Opening applies the records newer than the file's last durable commit again
//! (`meta.wal_sequence` says which), so a crash (`kill -9`, power loss) loses nothing
//! acknowledged, and the allocator state a checkpoint saves spares a check of the whole file.
//! A group too large to log saves none (the state grows with the file, and a flood of such
//! groups paid for it in every commit), so the next quiet moment checkpoints to save it: only
//! a crash during such a flood costs the next open that check (logged while it runs).
//!
//! The file is opened through [`crate::journal::file::JournalFile`]: event pages a durable
//! commit wrote leave the kernel's page cache once synced (redb keeps its own cache of them).
//!
//! Once retention removed an event, its uuid is forgotten with it: the same uuid appended again
//! becomes a new record with a new cursor.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::applying::Applying;
use super::chunk::{self, Chunk, ChunkBuilder};
use super::file::{JournalFile, SyncBehind};
use super::idle::{Pace, next_request, request_within_quiet};
use super::wal::{EventRow, GroupRecord, Wal};
use super::{
    Appended, Batch, Bounds, CommitSink, Committed, Corruption, Cursor, Journal, JournalError,
    Pruned, QuarantineId, QuarantinePage, Quarantined, Retention, SharedEvent, SharedSink,
    StorageSource, lock,
};

/// File name of the journal inside the data dir.
pub const FILE_NAME: &str = "journal.redb";

/// A file beside the journal saying "this data dir has a journal": it outlives the journal
/// file, so a journal that vanished is noticed instead of silently replaced by an empty one.
pub const MARKER_FILE_NAME: &str = "journal.marker";

/// The layout of `journal.redb` this binary writes (`meta.format_version`). Version 1 is the
/// layout of okta-stream 0.1.0, whose files carry no version row. Raise it with every change
/// of a table or value layout, and migrate older files in `migrate`.
/// Version 2 adds the write-ahead file (`journal.wal`) and `meta.wal_sequence`: an older binary
/// would ignore records not yet checkpointed, so it must refuse the file.
/// Version 3 stores events in chunks (`event_chunks`) instead of a row each (`events`).
pub const FORMAT_VERSION: u64 = 3;

/// How long a reopen waits for in-flight reads to let go of the old database.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// How many requests may wait for the writer before `append` waits for room (backpressure).
const QUEUE_CAPACITY: usize = 1024;

/// A group stops taking queued appends once its events reach this size, so one commit (and
/// the latency of everyone in it) stays bounded under a flood; the rest form the next group.
const MAX_GROUP_BYTES: usize = 16 << 20;

/// At most this many events are removed per prune transaction, so a large prune never holds
/// the writer (and thus appenders) for long; [`RedbJournal::prune_now`] repeats until done.
const PRUNE_CHUNK: usize = 20_000;

pub(crate) const EVENT_CHUNKS: TableDefinition<Cursor, &[u8]> =
    TableDefinition::new("event_chunks");
/// Versions 1 and 2 kept a row per event here; opening such a file moves them into chunks.
const EVENTS_V2: TableDefinition<Cursor, (&str, i64, &[u8])> = TableDefinition::new("events");
pub(crate) const UUIDS: TableDefinition<&str, Cursor> = TableDefinition::new("uuids");
const COMMITS: TableDefinition<i64, Cursor> = TableDefinition::new("commits");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const QUARANTINE: TableDefinition<u64, (i64, &[u8])> = TableDefinition::new("quarantine");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_HEAD: &str = "head";
const META_BYTES: &str = "retained_bytes";
const META_LAST_COMMIT_MICROS: &str = "last_commit_micros";
const META_NEXT_QUARANTINE: &str = "next_quarantine_id";
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// Sequence of the newest write-ahead record whose group is in this file.
const META_WAL_SEQUENCE: &str = "wal_sequence";

/// redb's page cache. redb's default (1 GiB) fills under sustained ingest and keeps the heap
/// growing for minutes; committed events are served from the hub's live buffer and replays
/// read sequentially, so a small cache costs nothing measurable and keeps the service at a
/// few hundred MiB (BENCHMARKS.md, issue 15).
const CACHE_BYTES: usize = 64 << 20;

/// The embedded, durable journal. See the module docs.
///
/// Open it with [`RedbJournal::open`], handing it the [`CommitSink`] its commits go to (told
/// the recovered head at open), and [`RedbJournal::close`] it on shutdown. Dropping the last handle without closing also stops the writer after it committed
/// what was queued. An append whose caller stops waiting (the future is dropped) after it was
/// queued may still commit; its events are then stored and published like any other.
pub struct RedbJournal {
    path: PathBuf,
    /// The open database, shared with the writer (which swaps it when it reopens the file);
    /// cloned (briefly locked, never across an await) by each read.
    db: Arc<Mutex<Slot>>,
    /// The first cursor a read found damaged (0: none); once set, [`Journal::check`] fails.
    damaged: Arc<AtomicU64>,
    /// The answered group still committing, which reads wait for (shared with the writer).
    applying: Arc<Applying>,
    requests: mpsc::Sender<Request>,
    commits: Arc<AtomicU64>,
    retention_task: Mutex<Option<JoinHandle<()>>>,
    /// Tables keyed by cursor whose rows retention removes with the events (shared with the
    /// writer).
    cursor_tables: CursorTables,
}

/// Tables keyed by cursor that retention prunes with the events
/// ([`RedbJournal::attach_cursor_table`]).
type CursorTables = Arc<Mutex<Vec<CursorTable>>>;

/// A table whose rows belong to the event at their cursor (such as its profile values).
pub type CursorTable = TableDefinition<'static, Cursor, &'static [u8]>;

impl fmt::Debug for RedbJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbJournal")
            .field("path", &self.path)
            .field("commits", &self.commits.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the writer thread is asked to do.
enum Request {
    /// Commit a batch (joins the current group).
    Append {
        batch: Batch,
        reply: oneshot::Sender<Result<Appended, JournalError>>,
    },
    /// Prove a durable commit still works (joins the current group, so it costs no extra fsync
    /// under load).
    Check {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    /// Remove up to `limit` events that retention no longer keeps, as of `now_micros`.
    Prune {
        now_micros: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Pruned, JournalError>>,
    },
    /// Commit everything queued, then stop.
    Close { reply: oneshot::Sender<()> },
}

/// The database readers use, and whether the journal was closed.
#[derive(Default)]
struct Slot {
    /// `None` while the writer reopens the file, and once closed.
    db: Option<Arc<Database>>,
    closed: bool,
}

impl RedbJournal {
    /// Opens (or creates) the journal in `dir`, creating `dir` if missing, and starts its writer
    /// thread and, unless `retention` keeps everything, its background retention task.
    ///
    /// Head and oldest cursor are recovered from the file and the recovered head is handed to
    /// `sink` ([`CommitSink::opened`]) before the writer starts, so the caller does not need
    /// to know the head before opening. Must be called within a tokio
    /// runtime. Opening a file that another `RedbJournal` still holds open fails with
    /// [`JournalError::Storage`]; a damaged, vanished or too new journal is refused (see the
    /// module docs).
    pub async fn open(
        dir: &Path,
        retention: Retention,
        sink: impl CommitSink,
    ) -> Result<Arc<Self>, JournalError> {
        Self::open_with(dir, retention, sink, false).await
    }

    /// [`RedbJournal::open`], choosing whether a journal that vanished from a data dir that
    /// had one may be replaced by an empty one (`--accept-empty-journal`).
    pub async fn open_with(
        dir: &Path,
        retention: Retention,
        sink: impl CommitSink,
        accept_empty: bool,
    ) -> Result<Arc<Self>, JournalError> {
        let dir = dir.to_owned();
        let path = dir.join(FILE_NAME);
        let (db, recovered, wal) = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_file(&dir, &path, accept_empty))
                .await
                .map_err(|e| JournalError::storage("open the journal", e))??
        };
        let db = Arc::new(db);
        let slot = Arc::new(Mutex::new(Slot {
            db: Some(db.clone()),
            closed: false,
        }));
        sink.opened(recovered.head);
        let commits = Arc::new(AtomicU64::new(0));
        let applying = Arc::new(Applying::default());
        let cursor_tables = CursorTables::default();
        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            cursor_tables: cursor_tables.clone(),
            db: Some(db),
            wal,
            sync: recovered.sync.clone(),
            slot: slot.clone(),
            applying: applying.clone(),
            path: path.clone(),
            sink: Arc::new(sink),
            retention,
            commits: commits.clone(),
            head: recovered.head,
            bytes: recovered.bytes,
            last_commit_micros: recovered.last_commit_micros,
            next_quarantine: recovered.next_quarantine,
            snapshot_due: false,
        };
        let span = tracing::info_span!("journal.writer", path = %path.display());
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || span.in_scope(|| writer.run(queue)))
            .map_err(|e| JournalError::storage("start the journal writer", e))?;
        tracing::info!(
            path = %path.display(),
            head = recovered.head,
            retained_bytes = recovered.bytes,
            "journal opened"
        );

        let retention_task = (!retention.is_unbounded()).then(|| {
            let span = tracing::info_span!("journal.retention", path = %path.display());
            tokio::spawn(
                retention_loop(requests.downgrade(), retention.check_interval).instrument(span),
            )
        });
        Ok(Arc::new(Self {
            path,
            db: slot,
            damaged: Arc::new(AtomicU64::new(0)),
            applying,
            requests,
            commits,
            retention_task: Mutex::new(retention_task),
            cursor_tables,
        }))
    }

    /// Has retention remove the rows of `table` (created if missing) for cursors it no longer
    /// retains, in the same transaction that removes those events, so data stored beside an
    /// event (its profile values) never outlives it. Rows left behind by an earlier version go
    /// with the next prune that removes events. Attaching a table twice is harmless.
    pub fn attach_cursor_table(&self, table: CursorTable) {
        let mut tables = lock(&self.cursor_tables);
        if !tables.iter().any(|t| t.name() == table.name()) {
            tables.push(table);
        }
    }

    /// The open database, for stores that keep their tables in the journal's file (profile
    /// values and snapshots, written in their own transactions); `None` while closed or while
    /// the writer reopens the file. The handle changes when the file is reopened after a failed
    /// commit, and a reopen waits for every handle to be let go: ask for it on each use and
    /// hold it no longer than one transaction.
    pub fn database(&self) -> Option<Arc<Database>> {
        lock(&self.db).db.clone()
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many durable write transactions the writer committed since open (appends, checks
    /// and prunes). Fewer commits than appends means group commit shared fsyncs.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Applies retention now (as the background task does), through the writer, until nothing
    /// more is due. Returns what was removed.
    pub async fn prune_now(&self) -> Result<Pruned, JournalError> {
        prune_all(&self.requests).await
    }

    /// Stops the journal: the writer commits every request queued before this call, answers
    /// them, then stops and releases the file; the retention task stops. Later appends and reads
    /// fail with [`JournalError::Closed`]. Calling it again does nothing.
    pub async fn close(&self) {
        if let Some(task) = lock(&self.retention_task).take() {
            task.abort();
        }
        let (reply, closed) = oneshot::channel();
        if self.requests.send(Request::Close { reply }).await.is_ok() {
            // An error means the writer already stopped, which is what we wanted.
            let _ = closed.await;
        }
        let mut slot = lock(&self.db);
        slot.closed = true;
        slot.db = None;
        drop(slot);
        tracing::info!(path = %self.path.display(), "journal closed");
    }

    /// The open database, or `Closed`.
    fn db(&self) -> Result<Arc<Database>, JournalError> {
        let slot = lock(&self.db);
        if slot.closed {
            return Err(JournalError::Closed);
        }
        slot.db.clone().ok_or_else(|| {
            JournalError::storage(
                "read the journal",
                "it is being reopened after a storage error",
            )
        })
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, JournalError> + Send + 'static,
    {
        let db = self.db()?;
        let applying = self.applying.clone();
        let result = tokio::task::spawn_blocking(move || {
            // An append that returned is read: its group's commit lands first.
            applying.wait();
            let txn = db.begin_read().map_err(storage)?;
            f(&txn)
        })
        .await
        .map_err(|e| JournalError::storage("run a journal read", e))?;
        if let Err(JournalError::Unreadable { cursor, reason }) = &result {
            tracing::error!(
                cursor,
                %reason,
                path = %self.path.display(),
                "a committed event cannot be read: the journal is damaged; run `okta-stream journal check`"
            );
            // Keep the first one: that is where the damage starts for readers.
            let _ = self
                .damaged
                .compare_exchange(0, *cursor, Ordering::Relaxed, Ordering::Relaxed);
        }
        result
    }

    /// Sends a request to the writer and waits for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Request,
    ) -> Result<T, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(request(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }
}

impl Drop for RedbJournal {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.retention_task).take() {
            task.abort();
        }
    }
}

#[async_trait]
impl Journal for RedbJournal {
    async fn close(&self) {
        RedbJournal::close(self).await
    }

    async fn stored_bytes(&self) -> Result<Option<u64>, JournalError> {
        self.read(|txn| {
            let meta_table = txn.open_table(META).map_err(storage)?;
            meta(&meta_table, META_BYTES).map(Some)
        })
        .await
    }

    async fn append(&self, batch: Batch) -> Result<Appended, JournalError> {
        self.ask(|reply| Request::Append { batch, reply }).await
    }

    async fn read_after(
        &self,
        after: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.read(move |txn| {
            let chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
            read_forward(&chunks, first, limit)
        })
        .await
    }

    async fn read_before(
        &self,
        before: Cursor,
        limit: usize,
    ) -> Result<Vec<SharedEvent>, JournalError> {
        self.read(move |txn| {
            let chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
            read_backward(&chunks, before, limit)
        })
        .await
    }

    async fn get(&self, uuid: &str) -> Result<Option<SharedEvent>, JournalError> {
        let uuid = uuid.to_owned();
        self.read(move |txn| {
            let uuids = txn.open_table(UUIDS).map_err(storage)?;
            let Some(cursor) = uuids.get(uuid.as_str()).map_err(storage)? else {
                return Ok(None);
            };
            let chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
            let cursor = cursor.value();
            match chunk_holding(&chunks, cursor)? {
                Some(chunk) => {
                    let index = (cursor - chunk.first) as usize;
                    decode_at(cursor, chunk.uuid(index), chunk.record(index)).map(Some)
                }
                None => Err(Corruption::DanglingIndex { cursor }.into()),
            }
        })
        .await
    }

    async fn cursor_before_time(&self, since_micros: i64) -> Result<Cursor, JournalError> {
        self.read(move |txn| {
            let commits = txn.open_table(COMMITS).map_err(storage)?;
            let first_at_or_after = commits.range(since_micros..).map_err(storage)?.next();
            match first_at_or_after {
                Some(row) => Ok(row.map_err(storage)?.1.value().saturating_sub(1)),
                // Nothing committed since then: everything retained is older.
                None => meta(&txn.open_table(META).map_err(storage)?, META_HEAD),
            }
        })
        .await
    }

    async fn bounds(&self) -> Result<Bounds, JournalError> {
        self.read(|txn| {
            let head = meta(&txn.open_table(META).map_err(storage)?, META_HEAD)?;
            let chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
            let oldest = chunks.first().map_err(storage)?.map(|(k, _)| k.value());
            Ok(Bounds { oldest, head })
        })
        .await
    }

    async fn state(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let key = key.to_owned();
        self.read(move |txn| {
            let state = txn.open_table(STATE).map_err(storage)?;
            Ok(state
                .get(key.as_str())
                .map_err(storage)?
                .map(|value| value.value().to_vec()))
        })
        .await
    }

    async fn quarantine_page(
        &self,
        page: QuarantinePage,
    ) -> Result<Vec<(QuarantineId, Quarantined)>, JournalError> {
        self.read(move |txn| {
            let quarantine = txn.open_table(QUARANTINE).map_err(storage)?;
            let rows = match (page.newest_first, page.after) {
                (false, None) => quarantine.range::<u64>(..),
                (false, Some(after)) => quarantine.range(after.saturating_add(1)..),
                (true, None) => quarantine.range::<u64>(..),
                (true, Some(before)) => quarantine.range(..before),
            }
            .map_err(storage)?;
            let decode = |row: Result<_, redb::StorageError>| {
                let (id, value): (redb::AccessGuard<u64>, redb::AccessGuard<(i64, &[u8])>) =
                    row.map_err(storage)?;
                let entry = serde_json::from_slice(value.value().1).map_err(|source| {
                    JournalError::from(Corruption::Quarantine {
                        id: id.value(),
                        source,
                    })
                })?;
                Ok((id.value(), entry))
            };
            if page.newest_first {
                rows.rev().take(page.limit).map(decode).collect()
            } else {
                rows.take(page.limit).map(decode).collect()
            }
        })
        .await
    }

    async fn check(&self) -> Result<(), JournalError> {
        let damaged = self.damaged.load(Ordering::Relaxed);
        if damaged != 0 {
            return Err(JournalError::Unreadable {
                cursor: damaged,
                reason: "a read found it damaged; run `okta-stream journal check`".to_owned(),
            });
        }
        self.ask(|reply| Request::Check { reply }).await
    }
}

/// What `open` recovers from the file.
struct Recovered {
    head: Cursor,
    bytes: u64,
    last_commit_micros: i64,
    next_quarantine: u64,
    /// The opened file's handle on checkpoints that run behind the writer.
    sync: SyncBehind,
}

/// Creates the dir and file if missing (refusing a damaged or vanished journal), creates every
/// table, checks and migrates the format, reads the writer's counters, and writes the marker.
fn open_file(
    dir: &Path,
    path: &Path,
    accept_empty: bool,
) -> Result<(Database, Recovered, Wal), JournalError> {
    crate::data_dir::create(dir)
        .map_err(|e| JournalError::storage(format!("create {}", dir.display()), e))?;
    let marker = dir.join(MARKER_FILE_NAME);
    match std::fs::metadata(path) {
        Ok(file) if file.len() == 0 => {
            return Err(JournalError::Damaged {
                path: path.to_owned(),
                reason: "the file is empty".to_owned(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if marker.exists() {
                if !accept_empty {
                    return Err(JournalError::Vanished {
                        path: path.to_owned(),
                        marker,
                    });
                }
                tracing::warn!(
                    path = %path.display(),
                    "the journal is missing; starting with an empty one as --accept-empty-journal allows"
                );
            }
        }
        Err(e) => {
            return Err(JournalError::storage(format!("read {}", path.display()), e));
        }
    }
    let (db, recovered, wal) = open_database(path)?;
    // The audit trail is private, like the data dir.
    crate::data_dir::restrict_file(path)
        .map_err(|e| JournalError::storage(format!("restrict {}", path.display()), e))?;
    let wal_path = wal_dir(path).join(super::wal::FILE_NAME);
    crate::data_dir::restrict_file(&wal_path)
        .map_err(|e| JournalError::storage(format!("restrict {}", wal_path.display()), e))?;
    if !marker.exists() {
        std::fs::write(
            &marker,
            format!(
                "This data dir holds an okta-stream journal ({FILE_NAME}). If {FILE_NAME} is \
                 missing, restore it from a backup, or start with --accept-empty-journal.\n"
            ),
        )
        .map_err(|e| JournalError::storage(format!("write {}", marker.display()), e))?;
        crate::data_dir::restrict_file(&marker)
            .map_err(|e| JournalError::storage(format!("restrict {}", marker.display()), e))?;
    }
    Ok((db, recovered, wal))
}

/// Opens `path` (creating it if missing), creates every table, checks and migrates the format
/// version, and reads the writer's counters. Used at start and when the writer reopens.
fn open_database(path: &Path) -> Result<(Database, Recovered, Wal), JournalError> {
    let existed = path.exists();
    let wal_path = wal_dir(path).join(super::wal::FILE_NAME);
    if !existed && wal_path.exists() {
        // Records of a journal that is gone (started empty on purpose) are not this one's.
        std::fs::remove_file(&wal_path)
            .map_err(|e| JournalError::storage(format!("remove {}", wal_path.display()), e))?;
    }
    let damaged = |reason: String| JournalError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| JournalError::storage(format!("open {}", path.display()), e))?;
    let cannot_open = |e: redb::DatabaseError| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => JournalError::storage(
            format!("open {}", path.display()),
            "another process (or journal) has it open",
        ),
        // A short read is a truncated file and invalid data (redb: "magic number mismatch")
        // a foreign one; other I/O errors (permissions, a full disk) say nothing about the
        // file, and moving it away would be the wrong advice.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if !existed
                || !matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) =>
        {
            JournalError::storage(format!("open {}", path.display()), io)
        }
        other if existed => damaged(format!("redb cannot open it: {other}")),
        other => JournalError::storage(format!("open {}", path.display()), other),
    };
    let file = JournalFile::new(file).map_err(cannot_open)?;
    let sync = file.sync_behind();
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_repair_callback(log_repair(path))
        .create_with_backend(file)
        .map_err(cannot_open)?;
    let txn = begin_durable(&db)?;
    if existed {
        let tables: Vec<String> = txn
            .list_tables()
            .map_err(storage)?
            .map(|t| t.name().to_owned())
            .collect();
        let has = |name: &str| tables.iter().any(|t| t == name);
        if !has("meta") || !(has(EVENT_CHUNKS.name()) || has(EVENTS_V2.name())) {
            return Err(damaged(
                "a redb file without the journal's tables".to_owned(),
            ));
        }
    }
    {
        // Opening a table in a write transaction creates it, so readers never miss one.
        txn.open_table(EVENT_CHUNKS).map_err(storage)?;
        txn.open_table(UUIDS).map_err(storage)?;
        txn.open_table(COMMITS).map_err(storage)?;
        txn.open_table(STATE).map_err(storage)?;
        txn.open_table(QUARANTINE).map_err(storage)?;
        txn.open_table(META).map_err(storage)?;
        upgrade_in(&txn, path)?;
    }
    txn.commit().map_err(storage)?;
    let wal = apply_wal(&db, path)?;
    let recovered = {
        let txn = db.begin_read().map_err(storage)?;
        let chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
        let quarantine = txn.open_table(QUARANTINE).map_err(storage)?;
        let meta_table = txn.open_table(META).map_err(storage)?;
        // A chunk that does not decode still says where it starts; reads report its damage.
        let last_event = chunks.last().map_err(storage)?.map(|(key, value)| {
            chunk_at(key.value(), value.value()).map_or(key.value(), |chunk| chunk.last())
        });
        let last_quarantine = quarantine.last().map_err(storage)?.map(|(k, _)| k.value());
        Recovered {
            head: meta(&meta_table, META_HEAD)?.max(last_event.unwrap_or(0)),
            bytes: meta(&meta_table, META_BYTES)?,
            last_commit_micros: i64::try_from(meta(&meta_table, META_LAST_COMMIT_MICROS)?)
                .unwrap_or(i64::MAX),
            next_quarantine: meta(&meta_table, META_NEXT_QUARANTINE)?
                .max(last_quarantine.map_or(0, |id| id + 1)),
            sync,
        }
    };
    Ok((db, recovered, wal))
}

/// Logs redb's check of the whole file, which an open does when the last durable commit
/// saved no snapshot of its page allocator and the file was not closed: a start that takes
/// long (about 2 s per GB on this project's VM, BENCHMARKS.md, issue 15) says why.
fn log_repair(path: &Path) -> impl Fn(&mut redb::RepairSession) + 'static {
    let path = path.display().to_string();
    move |session| {
        let percent = (session.progress() * 100.0).round() as u32;
        if percent == 0 {
            tracing::warn!(
                path,
                "the journal was not closed cleanly after a commit that saved no allocator state; checking the whole file before opening it, which takes a while for a large journal"
            );
        } else {
            tracing::info!(path, percent, "checking the journal file");
        }
    }
}

/// The directory of the journal file `path` (where its write-ahead file lives).
fn wal_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Opens the write-ahead file beside `path` and writes the records newer than the file's
/// `meta.wal_sequence` into the file again, one durable transaction (with quick-repair) per
/// record, so the file ends up laid out as if every group had committed durably; returns the
/// write-ahead file restarted. Bounded by the file's size: a few thousand commits at most.
pub(crate) fn apply_wal(db: &Database, path: &Path) -> Result<Wal, JournalError> {
    let durable = {
        let txn = db.begin_read().map_err(storage)?;
        meta(&txn.open_table(META).map_err(storage)?, META_WAL_SEQUENCE)?
    };
    let (mut wal, records) =
        Wal::open(wal_dir(path), durable).map_err(|e| JournalError::Damaged {
            path: wal_dir(path).join(super::wal::FILE_NAME),
            reason: e.to_string(),
        })?;
    // Records that do not continue this file's last one belong to another copy of it (a
    // journal.redb restored from a backup beside a newer journal.wal): never guess.
    if let Some((first, _)) = records.first()
        && *first != durable + 1
    {
        return Err(JournalError::Damaged {
            path: wal_dir(path).join(super::wal::FILE_NAME),
            reason: format!(
                "its records start at {first} but the journal file's last one is {durable}; if                  journal.redb was restored from a backup without it, move journal.wal away"
            ),
        });
    }
    let count = records.len();
    for (sequence, record) in records {
        let txn = begin_durable(db)?;
        {
            let mut chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
            let mut uuids = txn.open_table(UUIDS).map_err(storage)?;
            let mut commits = txn.open_table(COMMITS).map_err(storage)?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(storage)?;
            let mut state = txn.open_table(STATE).map_err(storage)?;
            let mut meta_table = txn.open_table(META).map_err(storage)?;
            let mut builder = None;
            for e in &record.events {
                chunk_event(
                    &mut chunks,
                    &mut builder,
                    (e.cursor, e.micros),
                    &e.uuid,
                    &e.encoded,
                )?;
                uuids.insert(e.uuid.as_str(), e.cursor).map_err(storage)?;
            }
            if let Some(builder) = &mut builder {
                insert_chunk(&mut chunks, builder)?;
            }
            if let Some((micros, first)) = record.commit {
                commits.insert(micros, first).map_err(storage)?;
            }
            for (id, micros, json) in &record.quarantine {
                quarantine
                    .insert(*id, (*micros, json.as_slice()))
                    .map_err(storage)?;
            }
            for (key, value) in &record.state {
                state
                    .insert(key.as_str(), value.as_slice())
                    .map_err(storage)?;
            }
            write_counters(&mut meta_table, &record)?;
            meta_table
                .insert(META_WAL_SEQUENCE, sequence)
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
    }
    if count > 0 {
        tracing::info!(records = count, path = %path.display(), "applied the write-ahead file's records newer than the journal file");
    }
    // Every record is durable in the file now.
    wal.restart();
    Ok(wal)
}

/// Writes a group's counters (head, bytes, last commit time, next quarantine id) to `meta`.
fn write_counters(
    meta_table: &mut redb::Table<&'static str, u64>,
    record: &GroupRecord,
) -> Result<(), JournalError> {
    meta_table.insert(META_HEAD, record.head).map_err(storage)?;
    meta_table
        .insert(META_BYTES, record.bytes)
        .map_err(storage)?;
    meta_table
        .insert(
            META_LAST_COMMIT_MICROS,
            record.last_commit_micros.max(0) as u64,
        )
        .map_err(storage)?;
    meta_table
        .insert(META_NEXT_QUARANTINE, record.next_quarantine)
        .map_err(storage)?;
    Ok(())
}

/// Brings an older file to [`FORMAT_VERSION`] in one durable transaction, as opening it would
/// (for `journal check`, which reads the file without opening the journal). A newer file is
/// [`JournalError::TooNew`] and left as it is.
pub(crate) fn upgrade(db: &Database, path: &Path) -> Result<(), JournalError> {
    let txn = begin_durable(db)?;
    if upgrade_in(&txn, path)? {
        txn.commit().map_err(storage)
    } else {
        txn.abort().map_err(storage)
    }
}

/// Reads the file's format version (no row: a new file, or one written before versions were
/// stored, version 1), refuses a newer one, and migrates an older one inside `txn`. Says
/// whether it changed anything.
fn upgrade_in(txn: &WriteTransaction, path: &Path) -> Result<bool, JournalError> {
    let mut meta_table = txn.open_table(META).map_err(storage)?;
    let version = meta_table
        .get(META_FORMAT_VERSION)
        .map_err(storage)?
        .map_or(1, |v| v.value());
    refuse_newer(version, path)?;
    if version == FORMAT_VERSION {
        return Ok(false);
    }
    migrate(txn, version, path)?;
    meta_table
        .insert(META_FORMAT_VERSION, FORMAT_VERSION)
        .map_err(storage)?;
    Ok(true)
}

/// A file of a newer format than this binary writes is refused, never read or changed.
pub(crate) fn refuse_newer(version: u64, path: &Path) -> Result<(), JournalError> {
    if version > FORMAT_VERSION {
        return Err(JournalError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Brings a file of format `from` to [`FORMAT_VERSION`], inside the open transaction: an arm
/// per step, so a file of any older version is carried forward one step at a time.
fn migrate(txn: &WriteTransaction, from: u64, path: &Path) -> Result<(), JournalError> {
    match from {
        // 1 → 2 adds the write-ahead file and `meta.wal_sequence` (absent means 0): no rows
        // change. 2 → 3 moves the events into chunks.
        1 | 2 => {
            let moved = move_events_into_chunks(txn)?;
            // A new file reads as version 1 too: nothing to say about it.
            if moved > 0 {
                tracing::info!(events = moved, path = %path.display(), from, to = FORMAT_VERSION, "journal format upgraded");
            }
            Ok(())
        }
        FORMAT_VERSION => Ok(()),
        other => Err(Corruption::UnknownFormat { version: other }.into()),
    }
}

/// Rewrites the one-row-per-event table of versions 1 and 2 as chunks, then drops it.
fn move_events_into_chunks(txn: &WriteTransaction) -> Result<u64, JournalError> {
    let mut moved = 0;
    {
        let old = txn.open_table(EVENTS_V2).map_err(storage)?;
        let rows = old.len().map_err(storage)?;
        if rows > 0 {
            // Once per journal, and as long as reading and writing the journal once takes.
            tracing::info!(
                events = rows,
                "upgrading the journal format: moving its events into chunks"
            );
        }
        let mut chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
        let mut builder = None;
        for row in old.range::<Cursor>(..).map_err(storage)? {
            let (cursor, value) = row.map_err(storage)?;
            let (uuid, micros, encoded) = value.value();
            chunk_event(
                &mut chunks,
                &mut builder,
                (cursor.value(), micros),
                uuid,
                encoded,
            )?;
            moved += 1;
        }
        if let Some(builder) = &mut builder {
            insert_chunk(&mut chunks, builder)?;
        }
    }
    txn.delete_table(EVENTS_V2).map_err(storage)?;
    Ok(moved)
}

/// Adds the event at `cursor`, committed at `micros`, to the chunk being built, first writing
/// that chunk as a row when the event cannot join it (full, another commit, not the next
/// cursor).
fn chunk_event(
    chunks: &mut redb::Table<Cursor, &'static [u8]>,
    builder: &mut Option<ChunkBuilder>,
    (cursor, micros): (Cursor, i64),
    uuid: &str,
    record: &[u8],
) -> Result<(), JournalError> {
    let current = builder.get_or_insert_with(|| ChunkBuilder::new(micros));
    if !current.accepts(cursor, micros, uuid.len() + record.len()) {
        insert_chunk(chunks, current)?;
    }
    current.push(cursor, micros, uuid, record);
    Ok(())
}

/// Writes the events a group stored (consecutive cursors, committed at `micros`) as chunk rows,
/// each straight into the space redb reserves for it.
fn insert_group_chunks(
    chunks: &mut redb::Table<Cursor, &'static [u8]>,
    micros: i64,
    events: &[&Committed],
) -> Result<(), JournalError> {
    let mut rest = events;
    while let Some(first) = rest.first() {
        let (count, len) = chunk::next_row(rest.iter().map(|e| e.uuid().len() + e.encoded.len()));
        let (row, after) = rest.split_at(count.clamp(1, rest.len()));
        let mut slot = chunks
            .insert_reserve(first.cursor(), len)
            .map_err(storage)?;
        let entries = row
            .iter()
            .map(|e| (e.uuid().as_bytes(), e.encoded.as_ref()));
        if !chunk::write_row(slot.as_mut(), micros, entries) {
            return Err(JournalError::storage(
                "write a chunk",
                format!(
                    "the chunk row at cursor {} does not fill the {len} bytes reserved for it",
                    first.cursor()
                ),
            ));
        }
        rest = after;
    }
    Ok(())
}

/// Writes the chunk built so far as a row (nothing when empty).
fn insert_chunk(
    chunks: &mut redb::Table<Cursor, &'static [u8]>,
    builder: &mut ChunkBuilder,
) -> Result<(), JournalError> {
    if let Some((first, row)) = builder.take() {
        chunks.insert(first, row.as_slice()).map_err(storage)?;
    }
    Ok(())
}

/// The single writer; runs on its own OS thread and owns the write side of the file.
struct Writer {
    /// `None` after a failed commit until the file is reopened.
    db: Option<Arc<Database>>,
    /// The write-ahead file that makes each group durable (see the module docs).
    wal: Wal,
    /// The last checkpoint's writes and syncs, running behind: the write-ahead half it covers
    /// is written again only once they landed.
    sync: SyncBehind,
    /// Where readers get the database; emptied while reopening.
    slot: Arc<Mutex<Slot>>,
    /// The answered group still committing, which readers wait for.
    applying: Arc<Applying>,
    path: PathBuf,
    /// Where committed events go, in cursor order.
    sink: SharedSink,
    retention: Retention,
    /// Tables whose rows are pruned with the events at their cursors.
    cursor_tables: CursorTables,
    commits: Arc<AtomicU64>,
    /// The last durable commit saved no snapshot of redb's page allocator (a group too large to
    /// log): a crash now would make the next open check the whole file. The next quiet moment
    /// checkpoints, which saves one.
    snapshot_due: bool,
    /// The newest cursor assigned (committed).
    head: Cursor,
    /// Sum of the retained events' encoded sizes.
    bytes: u64,
    /// Commit time of the newest commit that stored an event; keeps commit times increasing.
    last_commit_micros: i64,
    next_quarantine: u64,
}

/// Counters a successful group commit moves the writer to.
struct Advanced {
    head: Cursor,
    bytes: u64,
    last_commit_micros: i64,
    next_quarantine: u64,
}

/// A group made durable by [`Writer::write`].
struct Written {
    /// What each batch's append returns, in order.
    results: Vec<Appended>,
    advanced: Advanced,
    /// A logged group's transaction, durable by its write-ahead record and still to commit.
    unapplied: Option<WriteTransaction>,
}

impl Writer {
    /// The database to write to, reopening the file first if a failed commit closed it.
    fn database(&mut self) -> Result<Arc<Database>, JournalError> {
        match &self.db {
            Some(db) => Ok(db.clone()),
            None => self.reopen(),
        }
    }

    /// After a failed transaction: redb refuses every later transaction (`PreviousIo`) until
    /// the file is opened again, so drop it and try to reopen at once; if that fails too, the
    /// next request tries again.
    fn recover(&mut self) {
        self.db = None;
        if let Err(error) = self.reopen() {
            tracing::warn!(%error, "cannot reopen the journal yet; will retry on the next request");
        }
    }

    /// Reopens the file: readers are kept off it, in-flight reads are waited for (at most
    /// [`REOPEN_WAIT`]), the old database is dropped, and the file is opened as at start. If
    /// the failed commit did reach the disk after all, its events are handed to the sink now so
    /// it never misses a cursor.
    fn reopen(&mut self) -> Result<Arc<Database>, JournalError> {
        let old = lock(&self.slot).db.take().or_else(|| self.db.take());
        self.db = None;
        if let Some(mut old) = old {
            let deadline = Instant::now() + REOPEN_WAIT;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(shared) => {
                        lock(&self.slot).db = Some(shared);
                        return Err(JournalError::storage(
                            "reopen the journal",
                            "reads still hold it",
                        ));
                    }
                }
            }
        }
        let (db, recovered, wal) = open_database(&self.path)?;
        self.wal = wal;
        self.sync = recovered.sync.clone();
        let db = Arc::new(db);
        if recovered.head > self.head {
            tracing::warn!(
                head = self.head,
                stored_head = recovered.head,
                "the reopened file holds commits not yet published (a failed commit that reached the disk, or an acknowledged one applied from the write-ahead file); publishing their events"
            );
            let txn = db.begin_read().map_err(storage)?;
            let chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
            let published = read_forward(&chunks, self.head + 1, usize::MAX)?;
            self.sink.committed(&published);
        }
        self.head = recovered.head;
        self.bytes = recovered.bytes;
        self.last_commit_micros = recovered.last_commit_micros;
        self.next_quarantine = recovered.next_quarantine;
        lock(&self.slot).db = Some(db.clone());
        self.db = Some(db.clone());
        tracing::info!(path = %self.path.display(), head = self.head, "journal reopened after a storage error");
        Ok(db)
    }

    /// Takes every queued request, commits appends and checks as one group, then prunes; until
    /// the queue is closed and drained (close) or every sender is gone (last handle dropped).
    fn run(self, mut queue: mpsc::Receiver<Request>) {
        let mut writer = self;
        let mut closed: Option<oneshot::Sender<()>> = None;
        let mut pace = Pace::default();
        loop {
            // Taken in a quiet moment, the checkpoint a half-full write-ahead file will soon
            // need delays no append.
            let due = writer.wal.half_full() || writer.snapshot_due;
            // While the last checkpoint's writes still run behind, waiting for them would hold
            // the next append: look again after a quiet time instead, so that a journal that
            // has gone quiet still checkpoints once they landed.
            let behind = due && !writer.sync.idle();
            let next = if behind {
                request_within_quiet(&mut queue, &mut pace)
            } else {
                let checkpoint = due.then_some(|| {
                    if let Err(error) = writer.checkpoint() {
                        tracing::warn!(%error, "journal checkpoint failed; its records stay in the write-ahead file");
                        writer.recover();
                    }
                });
                Some(next_request(&mut queue, &mut pace, checkpoint))
            };
            let first = match next {
                Some(Some(request)) => request,
                Some(None) => break,
                None => continue,
            };
            let mut group = Vec::new();
            let mut prunes = Vec::new();
            let mut group_bytes = 0;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append { ref batch, .. } => {
                        group_bytes += batch.events.iter().map(|e| e.encoded.len()).sum::<usize>();
                        group.push(request);
                    }
                    Request::Check { .. } => group.push(request),
                    Request::Prune {
                        now_micros,
                        limit,
                        reply,
                    } => prunes.push((now_micros, limit, reply)),
                    Request::Close { reply } => {
                        // No new requests from now on; those already queued are still drained.
                        queue.close();
                        closed = Some(reply);
                    }
                }
                // What is left stays queued for the next group.
                if group_bytes < MAX_GROUP_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            if !group.is_empty() {
                writer.commit_group(group);
            }
            for (now_micros, limit, reply) in prunes {
                let pruned = writer.prune(now_micros, limit);
                if pruned.is_err() {
                    writer.recover();
                }
                let _ = reply.send(pruned);
            }
        }
        // Release the file before saying we are closed, so it can be reopened at once.
        drop(writer);
        if let Some(reply) = closed {
            let _ = reply.send(());
        }
    }

    /// Makes every group committed since the last checkpoint durable in the file; its writes
    /// and syncs run behind, and the next records go into the other half of the write-ahead
    /// file. Waits first for the previous checkpoint's, whose half that is. On failure the records
    /// stay in the write-ahead file, to be applied by the next checkpoint or open; the caller
    /// reopens the file as after a failed commit.
    fn checkpoint(&mut self) -> Result<(), JournalError> {
        let started = Instant::now();
        // The database first: a reopen replaces the file, and its handle, waited on next.
        let db = self.database()?;
        self.sync
            .wait()
            .map_err(|e| JournalError::storage("sync the journal at a checkpoint", e))?;
        let txn = begin_durable(&db)?;
        // Only once the transaction is ours: no other store's commit in the file (they take
        // turns with this one) may be handed over in its place.
        self.sync.defer_next();
        let done = txn.commit().map_err(storage);
        self.sync.release();
        done?;
        self.wal.switch();
        self.snapshot_due = false;
        tracing::debug!(
            micros = started.elapsed().as_micros() as u64,
            "journal checkpointed"
        );
        Ok(())
    }

    /// Commits every append and check of `group` in one durable transaction, answers each
    /// request, and publishes the committed events in cursor order.
    ///
    /// Appends are answered as soon as the group is durable, before a logged group's redb
    /// commit and the publication: readers wait for that commit ([`Applying`]), and the hub
    /// for the publication. Checks are answered after the commit, which they vouch for.
    fn commit_group(&mut self, group: Vec<Request>) {
        let mut batches = Vec::with_capacity(group.len());
        let mut appends = Vec::with_capacity(group.len());
        let mut checks = Vec::new();
        for request in group {
            match request {
                Request::Append { batch, reply } => {
                    batches.push(batch);
                    appends.push(reply);
                }
                Request::Check { reply } => checks.push(reply),
                // `run` only groups appends and checks.
                Request::Prune { .. } | Request::Close { .. } => {}
            }
        }
        let requests = appends.len() + checks.len();
        let written = match self.write(batches) {
            Ok(written) => written,
            Err(error) => {
                tracing::error!(%error, requests, "journal commit failed");
                self.recover();
                fail_all(appends, checks, error);
                return;
            }
        };
        let Written {
            results,
            advanced,
            unapplied,
        } = written;
        let published: Vec<SharedEvent> = results
            .iter()
            .flat_map(|a| a.committed.iter().cloned())
            .collect();
        let applying = self.applying.clone();
        let pending = unapplied.is_some().then(|| applying.start());
        let mut results = results.into_iter();
        for reply in appends {
            let _ = reply.send(Ok(results.next().unwrap_or_default()));
        }
        if let Some(txn) = unapplied
            && let Err(error) = txn.commit()
        {
            // The group was answered: its record stays in the write-ahead file, and reopening
            // the file applies it and publishes its events.
            tracing::error!(%error, requests, "journal commit of an acknowledged group failed; reopening the file applies it from the write-ahead file");
            // Before the reopen, which waits for readers to let go of the file.
            drop(pending);
            self.recover();
            fail_all(Vec::new(), checks, storage(error));
            return;
        }
        drop(pending);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.head = advanced.head;
        self.bytes = advanced.bytes;
        self.last_commit_micros = advanced.last_commit_micros;
        self.next_quarantine = advanced.next_quarantine;
        tracing::debug!(
            requests,
            events = published.len(),
            head = self.head,
            "group committed"
        );
        self.sink.committed(&published);
        for reply in checks {
            let _ = reply.send(Ok(()));
        }
    }

    /// One transaction for all `batches` (cursors, dedupe, quarantine, state, counters), made
    /// durable: by its write-ahead record, leaving the transaction to commit, or by committing
    /// it durably when the group is too large to log.
    fn write(&mut self, batches: Vec<Batch>) -> Result<Written, JournalError> {
        let bound = record_bound(&batches);
        // A group too large to log commits durably itself: its record is not built.
        let loggable = self.wal.may_log(bound);
        if self.wal.full_for(bound) {
            // Checkpointed before the group's transaction, so the group is logged in the other
            // half and does not wait for the checkpoint's writes and syncs.
            self.checkpoint()?;
        }
        let db = self.database()?;
        let mut txn = db.begin_write().map_err(storage)?;
        let commit_micros = now_micros().max(self.last_commit_micros.saturating_add(1));
        let mut record = GroupRecord::default();
        let mut head = self.head;
        let mut bytes = self.bytes;
        let mut next_quarantine = self.next_quarantine;
        let mut results = Vec::with_capacity(batches.len());
        let logged = {
            let mut chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
            let mut uuids = txn.open_table(UUIDS).map_err(storage)?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(storage)?;
            let mut state = txn.open_table(STATE).map_err(storage)?;
            for batch in batches {
                let mut appended = Appended::default();
                for event in batch.events {
                    // One descent of the index both claims the uuid and finds a duplicate; it
                    // sees this transaction's own inserts, so a uuid repeated within the batch
                    // or the group is a duplicate too (and keeps its first cursor).
                    let claimed = uuids.insert(event.uuid(), head + 1).map_err(storage)?;
                    if let Some(first) = claimed.map(|cursor| cursor.value()) {
                        uuids.insert(event.uuid(), first).map_err(storage)?;
                        appended.duplicates += 1;
                        continue;
                    }
                    head += 1;
                    let committed = event.commit(head);
                    if loggable {
                        record.events.push(EventRow {
                            cursor: head,
                            uuid: committed.uuid().to_owned(),
                            micros: commit_micros,
                            encoded: committed.encoded.clone(),
                        });
                    }
                    bytes += committed.encoded.len() as u64;
                    appended.committed.push(Arc::new(committed));
                }
                for entry in batch.quarantine {
                    let json = serde_json::to_vec(&entry)
                        .map_err(|e| JournalError::storage("encode a quarantine entry", e))?;
                    quarantine
                        .insert(next_quarantine, (commit_micros, json.as_slice()))
                        .map_err(storage)?;
                    record
                        .quarantine
                        .push((next_quarantine, commit_micros, json));
                    next_quarantine += 1;
                }
                if let Some(write) = batch.state {
                    state
                        .insert(write.key.as_str(), write.value.as_slice())
                        .map_err(storage)?;
                    record.state.push((write.key, write.value));
                }
                results.push(appended);
            }
            let stored: Vec<&Committed> = results
                .iter()
                .flat_map(|a| a.committed.iter().map(|e| &**e))
                .collect();
            insert_group_chunks(&mut chunks, commit_micros, &stored)?;
            let mut meta_table = txn.open_table(META).map_err(storage)?;
            if head > self.head {
                txn.open_table(COMMITS)
                    .map_err(storage)?
                    .insert(commit_micros, self.head + 1)
                    .map_err(storage)?;
                meta_table
                    .insert(META_LAST_COMMIT_MICROS, commit_micros.max(0) as u64)
                    .map_err(storage)?;
                meta_table.insert(META_HEAD, head).map_err(storage)?;
                meta_table.insert(META_BYTES, bytes).map_err(storage)?;
            }
            if next_quarantine > self.next_quarantine {
                meta_table
                    .insert(META_NEXT_QUARANTINE, next_quarantine)
                    .map_err(storage)?;
            }
            if head > self.head {
                record.commit = Some((commit_micros, self.head + 1));
            }
            record.head = head;
            record.bytes = bytes;
            record.last_commit_micros = if head > self.head {
                commit_micros
            } else {
                self.last_commit_micros
            };
            record.next_quarantine = next_quarantine;
            let logged = loggable && self.wal.stage(&record);
            let sequence = if logged {
                self.wal.next_sequence()
            } else {
                self.wal.next_sequence() - 1
            };
            meta_table
                .insert(META_WAL_SEQUENCE, sequence)
                .map_err(storage)?;
            logged
        };
        let unapplied = if logged {
            // Durable once the record is synced; redb need not sync.
            txn.set_durability(Durability::None).map_err(storage)?;
            txn.set_quick_repair(false);
            // Nothing is visible to readers before it is durable: the record first.
            self.wal
                .append_staged()
                .map_err(|e| JournalError::storage("write the journal's write-ahead file", e))?;
            Some(txn)
        } else {
            // Too large to log (or the half is full after all): this commit is the checkpoint,
            // synced before the group is answered. In two phases, as every durable commit, but
            // without quick-repair's snapshot of redb's page allocator: the snapshot grows with
            // the file, and a flood of large groups paid for it in every commit (12% of the CPU
            // per event at 16 × 50 once the file held 10 GB, BENCHMARKS.md, issue 15). The next
            // quiet moment's checkpoint saves one; until then a crash costs the next open a
            // check of the whole file, and loses nothing.
            txn.set_durability(Durability::Immediate).map_err(storage)?;
            txn.set_two_phase_commit(true);
            txn.set_quick_repair(false);
            txn.commit().map_err(storage)?;
            self.wal.restart();
            self.snapshot_due = true;
            None
        };
        let last_commit_micros = record.last_commit_micros;
        Ok(Written {
            results,
            advanced: Advanced {
                head,
                bytes,
                last_commit_micros,
                next_quarantine,
            },
            unapplied,
        })
    }

    /// Removes, oldest first, up to `limit` events that are older than `max_age` at
    /// `now_micros` or beyond `max_bytes`, with their uuid and commit index rows, and up to
    /// `limit` quarantine entries older than `max_age`.
    fn prune(&mut self, now_micros: i64, limit: usize) -> Result<Pruned, JournalError> {
        if self.retention.is_unbounded() {
            return Ok(Pruned::default());
        }
        let db = self.database()?;
        let txn = begin_durable(&db)?;
        let mut pruned = Pruned::default();
        let mut retained = self.bytes;
        {
            let mut chunks = txn.open_table(EVENT_CHUNKS).map_err(storage)?;
            let mut uuids = txn.open_table(UUIDS).map_err(storage)?;
            let mut commits = txn.open_table(COMMITS).map_err(storage)?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(storage)?;
            let cutoff = self
                .retention
                .max_age
                .map(|age| now_micros.saturating_sub(duration_micros(age)));
            // Every cursor up to `too_old` was committed before the age cutoff.
            let too_old = match cutoff {
                None => 0,
                Some(cutoff) => {
                    let first_young = commits.range(cutoff..).map_err(storage)?.next();
                    match first_young {
                        Some(row) => row.map_err(storage)?.1.value().saturating_sub(1),
                        None => self.head,
                    }
                }
            };
            let max_bytes = self.retention.max_bytes.unwrap_or(u64::MAX);
            // Whole chunks removed, their events' uuids, and what is left of a chunk whose
            // older events go (its first cursor, and the row of the rest).
            let mut doomed_chunks: Vec<Cursor> = Vec::new();
            let mut doomed_uuids: Vec<String> = Vec::new();
            let mut rest: Option<(Cursor, Cursor, Vec<u8>)> = None;
            for row in chunks.range::<Cursor>(..).map_err(storage)? {
                let (key, value) = row.map_err(storage)?;
                let chunk = chunk_at(key.value(), value.value())?;
                let mut kept_from = None;
                for index in 0..chunk.len() {
                    let cursor = chunk.first + index as u64;
                    if doomed_uuids.len() >= limit || (cursor > too_old && retained <= max_bytes) {
                        kept_from = Some(index);
                        break;
                    }
                    let size = chunk.record(index).len() as u64;
                    retained = retained.saturating_sub(size);
                    pruned.bytes += size;
                    doomed_uuids.push(chunk.uuid(index).to_owned());
                }
                match kept_from {
                    None => doomed_chunks.push(chunk.first),
                    Some(0) => break,
                    Some(index) => {
                        let (first, row) = chunk.keep_from(index);
                        rest = Some((chunk.first, first, row));
                        break;
                    }
                }
            }
            // Quarantine entries age like events (ids ascend with commit time), and are kept
            // within `max_bytes` of their own: every id up to `size_cut` is beyond it.
            let mut size_cut = None;
            if let Some(max_bytes) = self.retention.max_bytes {
                let mut kept = 0u64;
                for row in quarantine.range::<u64>(..).map_err(storage)?.rev() {
                    let (id, value) = row.map_err(storage)?;
                    kept += value.value().1.len() as u64;
                    if kept > max_bytes {
                        size_cut = Some(id.value());
                        break;
                    }
                }
            }
            let mut doomed_quarantine: Vec<u64> = Vec::new();
            for row in quarantine.range::<u64>(..).map_err(storage)? {
                let (id, value) = row.map_err(storage)?;
                let aged = cutoff.is_some_and(|cutoff| value.value().0 < cutoff);
                let oversize = size_cut.is_some_and(|cut| id.value() <= cut);
                if doomed_quarantine.len() >= limit || !(aged || oversize) {
                    break;
                }
                doomed_quarantine.push(id.value());
            }
            // Rows beside events written after their event was removed (a late writer) go at
            // the next check even when it removes no event.
            let late_rows = || -> Result<bool, JournalError> {
                let retained_from = match chunks.first().map_err(storage)? {
                    Some((cursor, _)) => cursor.value(),
                    None => self.head.saturating_add(1),
                };
                for table in lock(&self.cursor_tables).iter() {
                    let rows = txn.open_table(*table).map_err(storage)?;
                    let first = rows.first().map_err(storage)?.map(|(c, _)| c.value());
                    if first.is_some_and(|cursor| cursor < retained_from) {
                        return Ok(true);
                    }
                }
                Ok(false)
            };
            if doomed_uuids.is_empty() && doomed_quarantine.is_empty() && !late_rows()? {
                drop((chunks, uuids, commits, quarantine));
                txn.abort().map_err(storage)?;
                return Ok(pruned);
            }
            for id in &doomed_quarantine {
                quarantine.remove(id).map_err(storage)?;
            }
            pruned.quarantined = doomed_quarantine.len() as u64;
            for first in &doomed_chunks {
                chunks.remove(first).map_err(storage)?;
            }
            if let Some((old_first, first, row)) = &rest {
                chunks.remove(old_first).map_err(storage)?;
                chunks.insert(first, row.as_slice()).map_err(storage)?;
            }
            for uuid in &doomed_uuids {
                uuids.remove(uuid.as_str()).map_err(storage)?;
            }
            pruned.events = doomed_uuids.len() as u64;
            // Commit rows of fully removed commits go; the oldest retained event's commit stays.
            let oldest = match chunks.first().map_err(storage)? {
                Some((key, value)) => {
                    let chunk = chunk_at(key.value(), value.value())?;
                    Some((chunk.first, chunk.micros))
                }
                None => None,
            };
            match oldest {
                Some((_, oldest_commit)) => {
                    commits
                        .retain_in(..oldest_commit, |_, _| false)
                        .map_err(storage)?;
                }
                None => commits.retain(|_, _| false).map_err(storage)?,
            }
            // Rows beside the events go with them: every cursor below the oldest retained one
            // (none is above the head: they are written after their event committed).
            let retained_from = oldest.map_or(self.head.saturating_add(1), |(cursor, _)| cursor);
            for table in lock(&self.cursor_tables).iter() {
                txn.open_table(*table)
                    .map_err(storage)?
                    .retain_in(..retained_from, |_, _| false)
                    .map_err(storage)?;
            }
            txn.open_table(META)
                .map_err(storage)?
                .insert(META_BYTES, retained)
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        // A durable commit: every earlier group is in the file.
        self.wal.restart();
        self.bytes = retained;
        self.commits.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            events = pruned.events,
            bytes = pruned.bytes,
            quarantined = pruned.quarantined,
            retained_bytes = self.bytes,
            "retention pruned events"
        );
        Ok(pruned)
    }
}

/// Answers every append and check of a failed group with the same error (errors are not
/// `Clone`; the storage source is shared).
fn fail_all(
    appends: Vec<oneshot::Sender<Result<Appended, JournalError>>>,
    checks: Vec<oneshot::Sender<Result<(), JournalError>>>,
    error: JournalError,
) {
    let (action, source): (String, StorageSource) = match error {
        JournalError::Storage { action, source } => (action, source),
        other => ("commit".to_owned(), Arc::new(other)),
    };
    let error = || JournalError::Storage {
        action: action.clone(),
        source: source.clone(),
    };
    for reply in appends {
        let _ = reply.send(Err(error()));
    }
    for reply in checks {
        let _ = reply.send(Err(error()));
    }
}

/// Applies retention every `interval` until the journal is closed or dropped.
///
/// Failure policy: a failed pass is logged and retried at the next tick; retention is never a
/// reason to stop ingesting.
async fn retention_loop(requests: mpsc::WeakSender<Request>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Holds the writer open only for the length of one pass.
        let Some(requests) = requests.upgrade() else {
            return;
        };
        match prune_all(&requests).await {
            Ok(_) => {}
            Err(JournalError::Closed) => return,
            Err(error) => tracing::warn!(%error, "retention pass failed; will retry"),
        }
    }
}

/// Sends prune requests until a pass removes less than a full chunk.
async fn prune_all(requests: &mpsc::Sender<Request>) -> Result<Pruned, JournalError> {
    let mut total = Pruned::default();
    loop {
        let (reply, answer) = oneshot::channel();
        requests
            .send(Request::Prune {
                now_micros: now_micros(),
                limit: PRUNE_CHUNK,
                reply,
            })
            .await
            .map_err(|_| JournalError::Closed)?;
        let pass = answer.await.map_err(|_| JournalError::Closed)??;
        total.events += pass.events;
        total.bytes += pass.bytes;
        total.quarantined += pass.quarantined;
        if pass.events < PRUNE_CHUNK as u64 && pass.quarantined < PRUNE_CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// At least the size of the write-ahead record `batches` make ([`GroupRecord`]), known before
/// their transaction: room for it in the write-ahead half is made before the transaction
/// begins. Over-estimating only checkpoints a little early; a record that turns out larger
/// than its room commits as its own checkpoint.
fn record_bound(batches: &[Batch]) -> usize {
    let events: usize = batches
        .iter()
        .flat_map(|b| &b.events)
        .map(|e| {
            // The record grows by its cursor field when committed.
            GroupRecord::event_len(
                e.uuid().len(),
                e.encoded.len() + super::CURSOR_FIELD_MAX_BYTES,
            )
        })
        .sum();
    // JSON escapes at most double a string here, but for control characters; the field
    // names and numbers take less than 128 bytes.
    let quarantine: usize = batches
        .iter()
        .flat_map(|b| &b.quarantine)
        .map(|q| {
            let strings = q.reason.len() + q.raw.len() + q.origin.len() + q.received.len();
            GroupRecord::quarantine_len(128 + 2 * strings)
        })
        .sum();
    let state: usize = batches
        .iter()
        .filter_map(|b| b.state.as_ref())
        .map(|w| GroupRecord::state_len(w.key.len(), w.value.len()))
        .sum();
    GroupRecord::FIXED_LEN + GroupRecord::COMMIT_LEN + events + quarantine + state
}

/// A write transaction that is durable (fsynced) when `commit` returns (unless the writer
/// hands the commit over to run behind it, [`SyncBehind::defer_next`]).
fn begin_durable(db: &Database) -> Result<WriteTransaction, JournalError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// Reads a counter from the meta table; absent means 0.
fn meta(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, JournalError> {
    Ok(table.get(key).map_err(storage)?.map_or(0, |v| v.value()))
}

/// Decodes the record stored at `cursor` with `uuid` in its chunk; a record that does not
/// decode or names another cursor or uuid is [`JournalError::Unreadable`] there.
pub(crate) fn decode_at(
    cursor: Cursor,
    uuid: &str,
    record: Bytes,
) -> Result<SharedEvent, JournalError> {
    let unreadable = |reason: String| JournalError::Unreadable { cursor, reason };
    let committed = Committed::decode(record).map_err(|e| unreadable(e.to_string()))?;
    if committed.cursor() != cursor {
        return Err(unreadable(format!(
            "the stored record says cursor {}",
            committed.cursor()
        )));
    }
    if committed.uuid() != uuid {
        return Err(unreadable(
            "the stored record's uuid differs from its row's".into(),
        ));
    }
    Ok(Arc::new(committed))
}

/// Splits the chunk row at `first`; one that does not parse is [`JournalError::Unreadable`]
/// at `first`.
pub(crate) fn chunk_at(first: Cursor, row: &[u8]) -> Result<Chunk, JournalError> {
    Chunk::decode(first, Bytes::copy_from_slice(row)).map_err(|reason| JournalError::Unreadable {
        cursor: first,
        reason: format!("its chunk is damaged: {reason}"),
    })
}

/// The chunk holding `cursor`, if one does.
fn chunk_holding(
    chunks: &impl ReadableTable<Cursor, &'static [u8]>,
    cursor: Cursor,
) -> Result<Option<Chunk>, JournalError> {
    let Some(row) = chunks
        .range(..=cursor)
        .map_err(|e| unreadable(e, cursor))?
        .next_back()
    else {
        return Ok(None);
    };
    let (first, value) = row.map_err(|e| unreadable(e, cursor))?;
    let chunk = chunk_at(first.value(), value.value())?;
    Ok(chunk.holds(cursor).then_some(chunk))
}

/// Up to `limit` events from cursor `first` on, in cursor order. Damage after the first event
/// ends the read early (the next read, starting there, reports it); damage at the start is the
/// error, [`JournalError::Unreadable`] at the first cursor that cannot be read.
pub(crate) fn read_forward(
    chunks: &impl ReadableTable<Cursor, &'static [u8]>,
    first: Cursor,
    limit: usize,
) -> Result<Vec<SharedEvent>, JournalError> {
    // The chunk holding `first` starts at or before it.
    let start = match chunks
        .range(..=first)
        .map_err(|e| unreadable(e, first))?
        .next_back()
    {
        Some(row) => row.map_err(|e| unreadable(e, first))?.0.value(),
        None => first,
    };
    let rows = chunks.range(start..).map_err(|e| unreadable(e, first))?;
    collect_events(rows, first, limit, Direction::Forward)
}

/// Up to `limit` events before cursor `before`, newest first; damage as [`read_forward`].
fn read_backward(
    chunks: &impl ReadableTable<Cursor, &'static [u8]>,
    before: Cursor,
    limit: usize,
) -> Result<Vec<SharedEvent>, JournalError> {
    let newest = before.saturating_sub(1);
    let rows = chunks
        .range(..before)
        .map_err(|e| unreadable(e, newest))?
        .rev();
    collect_events(rows, newest, limit, Direction::Backward)
}

/// Which way [`collect_events`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Backward,
}

/// Decodes the events of chunk `rows` (in `direction`) from cursor `from` on, up to `limit`.
/// Cursors are gap-free after the oldest retained one, so a chunk that cannot be read holds the
/// cursor after the last event that could.
fn collect_events<'t>(
    rows: impl Iterator<
        Item = Result<
            (
                redb::AccessGuard<'t, Cursor>,
                redb::AccessGuard<'t, &'static [u8]>,
            ),
            redb::StorageError,
        >,
    >,
    from: Cursor,
    limit: usize,
    direction: Direction,
) -> Result<Vec<SharedEvent>, JournalError> {
    let forward = direction == Direction::Forward;
    let mut expected = from;
    let mut read = Vec::new();
    for row in rows {
        if read.len() >= limit {
            break;
        }
        let outcome = row
            .map_err(|e| unreadable(e, expected))
            .and_then(|(key, value)| chunk_at(key.value(), value.value()))
            .and_then(|chunk| {
                let indexes = 0..chunk.len();
                let ordered: Box<dyn Iterator<Item = usize>> = if forward {
                    Box::new(indexes)
                } else {
                    Box::new(indexes.rev())
                };
                for index in ordered {
                    let cursor = chunk.first + index as u64;
                    let wanted = if forward {
                        cursor >= from
                    } else {
                        cursor <= from
                    };
                    if !wanted || read.len() >= limit {
                        continue;
                    }
                    read.push(decode_at(cursor, chunk.uuid(index), chunk.record(index))?);
                    expected = if forward {
                        cursor.saturating_add(1)
                    } else {
                        cursor.saturating_sub(1)
                    };
                }
                Ok(())
            });
        match outcome {
            Ok(()) => {}
            // Hand out what precedes the damage; the next read reports it.
            Err(JournalError::Unreadable { .. }) if !read.is_empty() => break,
            Err(error) => return Err(error),
        }
    }
    Ok(read)
}

/// A read error at `cursor`: damage (redb's checksums or structure) is
/// [`JournalError::Unreadable`] there; anything else (I/O) may clear and stays `Storage`.
fn unreadable(error: impl Into<redb::Error>, cursor: Cursor) -> JournalError {
    match error.into() {
        redb::Error::Corrupted(reason) => JournalError::Unreadable { cursor, reason },
        other => JournalError::storage("read the journal file", other),
    }
}

fn storage(error: impl Into<redb::Error>) -> JournalError {
    JournalError::storage("use the journal file", error.into())
}

/// Microseconds since the Unix epoch (0 for a clock before 1970).
fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_micros)
}

fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
