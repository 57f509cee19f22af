//! Offline verification of an embedded journal (`okta-stream journal check`): redb's own
//! integrity check, then every record read and decoded in cursor order, so an operator learns
//! whether a journal is sound, and if not, the first cursor that is not, before starting on it.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableHandle as _};

use super::embedded::{
    EVENT_CHUNKS, META, META_FORMAT_VERSION, UUIDS, chunk_at, decode_at, refuse_newer,
};
use super::{Cursor, JournalError};

/// What a sound journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The journal file.
    pub path: PathBuf,
    /// How many events it holds; each was read and decoded.
    pub events: u64,
    /// The oldest retained cursor, if any event is retained.
    pub oldest: Option<Cursor>,
    /// The newest retained cursor, if any event is retained.
    pub newest: Option<Cursor>,
    /// The stored format version (1 for files written before versions were stored).
    pub format_version: u64,
}

/// Verifies the journal file at `path` without starting anything. Opening the file lets redb
/// repair what an unclean shutdown left; its integrity check failing beyond that, a record
/// that does not read or decode, a gap in the cursors or a uuid index row that does not point
/// back are errors ([`JournalError::Damaged`], or [`JournalError::Unreadable`] naming the
/// first bad cursor). Blocking: call it off the async runtime.
pub fn verify(path: &Path) -> Result<Report, JournalError> {
    let damaged = |reason: String| JournalError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::metadata(path)
        .map_err(|e| JournalError::storage(format!("read {}", path.display()), e))?;
    if file.len() == 0 {
        return Err(damaged("the file is empty".to_owned()));
    }
    let mut db = Database::open(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => JournalError::storage(
            format!("open {}", path.display()),
            "it is open in another process; stop okta-stream first",
        ),
        other => damaged(format!("redb cannot open it: {other}")),
    })?;
    // An older format is upgraded first, and groups acknowledged since the file's last
    // durable commit (in the write-ahead file) written into it, as opening the journal would.
    // A file that is not a journal is left alone: the read below says what it is.
    let is_journal = db
        .begin_read()
        .ok()
        .and_then(|txn| {
            txn.list_tables()
                .ok()
                .map(|mut t| t.any(|t| t.name() == "meta"))
        })
        .unwrap_or(false);
    if is_journal {
        crate::journal::embedded::upgrade(&db, path)?;
    }
    let wal = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(crate::journal::wal::FILE_NAME);
    if wal.exists() {
        crate::journal::embedded::apply_wal(&db, path)?;
    }
    // On damage, still read every record: the first bad cursor is what the operator needs.
    let integrity = match db.check_integrity() {
        Ok(true) => None,
        Ok(false) => Some(
            "redb's integrity check found damage and repaired the file's structure; records may \
             still be lost"
                .to_owned(),
        ),
        Err(e) => Some(format!("redb's integrity check failed: {e}")),
    };
    let report = read_every_record(&db, path).map_err(|error| match (error, &integrity) {
        (JournalError::Unreadable { cursor, reason }, Some(integrity)) => {
            JournalError::Unreadable {
                cursor,
                reason: format!("{reason} ({integrity})"),
            }
        }
        (error, _) => error,
    })?;
    match integrity {
        Some(reason) => Err(damaged(reason)),
        None => Ok(report),
    }
}

/// Reads and decodes every record in cursor order, checking the cursors are gap-free and the
/// uuid index points back at each.
fn read_every_record(db: &Database, path: &Path) -> Result<Report, JournalError> {
    let damaged = |reason: String| JournalError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let txn = db
        .begin_read()
        .map_err(|e| damaged(format!("cannot read it: {e}")))?;
    let not_a_journal = |e: redb::TableError| damaged(format!("not a journal: {e}"));
    let meta = txn.open_table(META).map_err(not_a_journal)?;
    let chunks = txn.open_table(EVENT_CHUNKS).map_err(not_a_journal)?;
    let uuids = txn.open_table(UUIDS).map_err(not_a_journal)?;
    let format_version = meta
        .get(META_FORMAT_VERSION)
        .map_err(|e| damaged(format!("cannot read the format version: {e}")))?
        .map_or(1, |v| v.value());
    refuse_newer(format_version, path)?;
    let mut report = Report {
        path: path.to_owned(),
        events: 0,
        oldest: None,
        newest: None,
        format_version,
    };
    let unreadable = |cursor: Cursor, reason: String| JournalError::Unreadable { cursor, reason };
    let rows = chunks
        .range::<Cursor>(..)
        .map_err(|e| unreadable(1, e.to_string()))?;
    for row in rows {
        let expected = report.newest.map_or(1, |c| c + 1);
        let (first, value) = row.map_err(|e| unreadable(expected, e.to_string()))?;
        let first = first.value();
        if report.newest.is_some() && first != expected {
            return Err(unreadable(
                expected,
                format!("missing (next stored is {first})"),
            ));
        }
        let chunk = chunk_at(first, value.value())?;
        for index in 0..chunk.len() {
            let cursor = first + index as u64;
            let uuid = chunk.uuid(index);
            // Serving reads decode only an event's facts; the check decodes the whole record.
            decode_at(cursor, uuid, chunk.record(index))?.record()?;
            let indexed = uuids
                .get(uuid)
                .map_err(|e| unreadable(cursor, format!("its uuid index row: {e}")))?
                .map(|c| c.value());
            if indexed != Some(cursor) {
                return Err(unreadable(
                    cursor,
                    format!("the uuid index points at {indexed:?} instead"),
                ));
            }
            report.oldest.get_or_insert(cursor);
            report.newest = Some(cursor);
            report.events += 1;
        }
    }
    Ok(report)
}
