//! A chunk: consecutive events of one group commit stored as one row of the embedded journal's
//! `event_chunks` table, keyed by the first one's cursor.
//!
//! Why: redb keeps a row in a leaf page, and an event of about 2 KB took a 4 KiB page of its
//! own, allocated, checksummed and written one by one. A chunk fills a 128 KiB page with some
//! sixty events: half the bytes written per event and one allocation per chunk instead of per
//! event (BENCHMARKS.md, issue 15). Cursors inside a chunk follow each other (a group assigns
//! them without gaps), so a row stores them implicitly.
//!
//! Layout, little endian: `commit time µs i64 | count u32 | count × (uuid length u32 |
//! record length u32 | uuid | record)`, where a record is the committed `Event` encoding,
//! cursor included.

use std::ops::Range;

use bytes::Bytes;

use super::Cursor;

/// A chunk stops taking events once it holds this many bytes, so a row fits one 128 KiB page
/// with its leaf header. An event larger than this gets a chunk of its own.
pub const MAX_CHUNK_BYTES: usize = 126 << 10;

const HEADER: usize = 8 + 4;
const ENTRY_HEADER: usize = 4 + 4;

/// Builds the rows of one group's events, in cursor order.
#[derive(Debug)]
pub struct ChunkBuilder {
    micros: i64,
    first: Cursor,
    count: u32,
    bytes: Vec<u8>,
}

impl ChunkBuilder {
    /// An empty chunk for events committed at `micros`.
    pub fn new(micros: i64) -> Self {
        let mut bytes = Vec::new();
        start(&mut bytes, micros);
        Self {
            micros,
            first: 0,
            count: 0,
            bytes,
        }
    }

    /// Whether the event at `cursor`, committed at `micros`, of `size` bytes (uuid and record)
    /// may join this chunk: it is empty, or the event is the next cursor of the same commit and
    /// fits.
    pub fn accepts(&self, cursor: Cursor, micros: i64, size: usize) -> bool {
        self.count == 0
            || (micros == self.micros
                && cursor == self.first + u64::from(self.count)
                && fits(self.bytes.len(), size))
    }

    /// Adds the event at `cursor`, committed at `micros`; it must be [`ChunkBuilder::accepts`]ed.
    pub fn push(&mut self, cursor: Cursor, micros: i64, uuid: &str, record: &[u8]) {
        debug_assert!(self.accepts(cursor, micros, 0));
        if self.count == 0 {
            self.first = cursor;
            self.micros = micros;
            self.bytes[..8].copy_from_slice(&micros.to_le_bytes());
        }
        self.count += 1;
        self.bytes[8..12].copy_from_slice(&self.count.to_le_bytes());
        self.bytes
            .extend_from_slice(&entry_header(uuid.len(), record.len()));
        self.bytes.extend_from_slice(uuid.as_bytes());
        self.bytes.extend_from_slice(record);
    }

    /// The finished row (first cursor, bytes), or `None` when empty; the builder starts over.
    pub fn take(&mut self) -> Option<(Cursor, Vec<u8>)> {
        if self.count == 0 {
            return None;
        }
        let mut bytes = Vec::with_capacity(self.bytes.len());
        start(&mut bytes, self.micros);
        let row = std::mem::replace(&mut self.bytes, bytes);
        self.count = 0;
        Some((self.first, row))
    }
}

/// An entry's header: the lengths of its uuid and record. A uuid is at most MAX_UUID_BYTES
/// (checked at mapping) and a record at most what the gRPC limit allows, and redb refuses a
/// row of 3 GiB or more: both fit 32 bits.
fn entry_header(uuid_len: usize, record_len: usize) -> [u8; ENTRY_HEADER] {
    let mut header = [0; ENTRY_HEADER];
    header[..4].copy_from_slice(&(uuid_len.min(u32::MAX as usize) as u32).to_le_bytes());
    header[4..].copy_from_slice(&(record_len.min(u32::MAX as usize) as u32).to_le_bytes());
    header
}

/// Whether an event of `size` bytes (uuid and record) fits a non-empty chunk of `len` bytes.
fn fits(len: usize, size: usize) -> bool {
    len + ENTRY_HEADER + size <= MAX_CHUNK_BYTES
}

/// How many of the next events, of `sizes` bytes each (uuid and record), the next row takes
/// (as [`ChunkBuilder`] would), and that row's length. `(0, 0)` when there are none.
pub fn next_row(sizes: impl Iterator<Item = usize>) -> (usize, usize) {
    let (mut count, mut len) = (0, HEADER);
    for size in sizes {
        if count > 0 && !fits(len, size) {
            break;
        }
        count += 1;
        len += ENTRY_HEADER + size;
    }
    if count == 0 { (0, 0) } else { (count, len) }
}

/// Writes the row of `events` (uuid, record), committed at `micros`, into `out`: straight into
/// the space redb reserved for it, with no row built in a buffer first. `out` must be exactly
/// as long as [`next_row`] said for these events; `false` (and `out` partly written) if not.
#[must_use]
pub fn write_row<'e>(
    out: &mut [u8],
    micros: i64,
    events: impl Iterator<Item = (&'e [u8], &'e [u8])>,
) -> bool {
    let Some((header, mut rest)) = out.split_at_mut_checked(HEADER) else {
        return false;
    };
    header[..8].copy_from_slice(&micros.to_le_bytes());
    let mut count = 0u32;
    for (uuid, record) in events {
        let Some((entry, after)) =
            rest.split_at_mut_checked(ENTRY_HEADER + uuid.len() + record.len())
        else {
            return false;
        };
        entry[..ENTRY_HEADER].copy_from_slice(&entry_header(uuid.len(), record.len()));
        let (uuid_bytes, record_bytes) = entry[ENTRY_HEADER..].split_at_mut(uuid.len());
        uuid_bytes.copy_from_slice(uuid);
        record_bytes.copy_from_slice(record);
        rest = after;
        count += 1;
    }
    header[8..12].copy_from_slice(&count.to_le_bytes());
    rest.is_empty()
}

/// Writes an empty chunk's header.
fn start(bytes: &mut Vec<u8>, micros: i64) {
    bytes.extend_from_slice(&micros.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
}

/// One event of a decoded chunk: where its uuid and record are in the row.
#[derive(Debug, Clone)]
pub struct Entry {
    pub uuid: Range<usize>,
    pub record: Range<usize>,
}

/// A chunk row, checked and split into its events (without copying them).
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The first event's cursor (the row's key).
    pub first: Cursor,
    /// When the group that wrote it committed (µs since the epoch).
    pub micros: i64,
    bytes: Bytes,
    entries: Vec<Entry>,
}

impl Chunk {
    /// Splits the row at `first`; a row that does not parse says why.
    pub fn decode(first: Cursor, bytes: Bytes) -> Result<Chunk, &'static str> {
        let header = bytes
            .get(..HEADER)
            .ok_or("the chunk's header is truncated")?;
        let micros = i64::from_le_bytes(header[..8].try_into().map_err(|_| "truncated")?);
        let count = u32::from_le_bytes(header[8..12].try_into().map_err(|_| "truncated")?);
        let mut entries = Vec::with_capacity(count as usize);
        let mut at = HEADER;
        for _ in 0..count {
            let lengths = bytes
                .get(at..at + ENTRY_HEADER)
                .ok_or("an entry's header is truncated")?;
            let uuid_len =
                u32::from_le_bytes(lengths[..4].try_into().map_err(|_| "truncated")?) as usize;
            let record_len =
                u32::from_le_bytes(lengths[4..8].try_into().map_err(|_| "truncated")?) as usize;
            let uuid = at + ENTRY_HEADER..(at + ENTRY_HEADER).saturating_add(uuid_len);
            let record = uuid.end..uuid.end.saturating_add(record_len);
            if record.end > bytes.len() {
                return Err("an entry is truncated");
            }
            at = record.end;
            entries.push(Entry { uuid, record });
        }
        if at != bytes.len() {
            return Err("trailing bytes after the last entry");
        }
        if count == 0 {
            return Err("an empty chunk");
        }
        Ok(Chunk {
            first,
            micros,
            bytes,
            entries,
        })
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: an empty chunk does not decode.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last event's cursor.
    pub fn last(&self) -> Cursor {
        self.first + self.entries.len() as u64 - 1
    }

    /// Whether it holds `cursor`.
    pub fn holds(&self, cursor: Cursor) -> bool {
        (self.first..=self.last()).contains(&cursor)
    }

    /// The uuid of the event at `index` (invalid UTF-8 reads as empty: the record check fails).
    pub fn uuid(&self, index: usize) -> &str {
        self.entries
            .get(index)
            .and_then(|e| std::str::from_utf8(&self.bytes[e.uuid.clone()]).ok())
            .unwrap_or_default()
    }

    /// The record of the event at `index`, sharing the row's bytes.
    pub fn record(&self, index: usize) -> Bytes {
        self.entries
            .get(index)
            .map(|e| self.bytes.slice(e.record.clone()))
            .unwrap_or_default()
    }

    /// The row holding only the events from `index` on (what retention leaves of it), keyed by
    /// the first of them.
    pub fn keep_from(&self, index: usize) -> (Cursor, Vec<u8>) {
        let mut builder = ChunkBuilder::new(self.micros);
        for i in index..self.len() {
            builder.push(
                self.first + i as u64,
                self.micros,
                self.uuid(i),
                &self.bytes[self.entries[i].record.clone()],
            );
        }
        builder
            .take()
            .unwrap_or((self.first + index as u64, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_gives_back_each_event_at_its_cursor() {
        let mut builder = ChunkBuilder::new(42);
        builder.push(7, 42, "a", b"one");
        builder.push(8, 42, "bb", b"");
        builder.push(9, 42, "ccc", b"three");
        let (first, row) = builder.take().unwrap();
        assert_eq!(first, 7);
        assert!(builder.take().is_none());
        let chunk = Chunk::decode(first, Bytes::from(row)).unwrap();
        assert_eq!((chunk.micros, chunk.len(), chunk.last()), (42, 3, 9));
        assert!(chunk.holds(8) && !chunk.holds(6) && !chunk.holds(10));
        assert_eq!(chunk.uuid(2), "ccc");
        assert_eq!(&chunk.record(0)[..], b"one");
        assert_eq!(&chunk.record(1)[..], b"");

        let (first, rest) = chunk.keep_from(1);
        let rest = Chunk::decode(first, Bytes::from(rest)).unwrap();
        assert_eq!((rest.first, rest.len(), rest.micros), (8, 2, 42));
        assert_eq!(rest.uuid(0), "bb");
        assert_eq!(&rest.record(1)[..], b"three");
    }

    #[test]
    fn a_chunk_takes_the_next_events_of_its_commit_up_to_its_size() {
        let mut builder = ChunkBuilder::new(1);
        assert!(builder.accepts(1, 1, MAX_CHUNK_BYTES * 2));
        builder.push(1, 1, "u", &vec![0; 60_000]);
        assert!(builder.accepts(2, 1, 60_000));
        // Only the next cursor of the same commit joins.
        assert!(!builder.accepts(3, 1, 10) && !builder.accepts(2, 2, 10));
        builder.push(2, 1, "u", &vec![0; 60_000]);
        assert!(!builder.accepts(3, 1, 10_000));
    }

    #[test]
    fn a_row_written_in_place_is_the_row_the_builder_makes() {
        let events: [(&[u8], Vec<u8>); 4] = [
            (b"a", b"one".to_vec()),
            (b"bb", vec![1; 70_000]),
            (b"ccc", vec![2; 70_000]),
            (b"dddd", b"four".to_vec()),
        ];
        let mut rest = &events[..];
        let mut cursor = 10;
        let mut rows = Vec::new();
        while !rest.is_empty() {
            let (count, len) = next_row(rest.iter().map(|(u, r)| u.len() + r.len()));
            let mut row = vec![0xee; len];
            let taken = &rest[..count];
            assert!(write_row(
                &mut row,
                5,
                taken.iter().map(|(u, r)| (*u, &r[..]))
            ));
            let mut builder = ChunkBuilder::new(5);
            for (i, (uuid, record)) in taken.iter().enumerate() {
                let uuid = std::str::from_utf8(uuid).unwrap();
                assert!(builder.accepts(cursor + i as u64, 5, uuid.len() + record.len()));
                builder.push(cursor + i as u64, 5, uuid, record);
            }
            if let Some((u, r)) = rest.get(count) {
                assert!(!builder.accepts(cursor + count as u64, 5, u.len() + r.len()));
            }
            assert_eq!(builder.take(), Some((cursor, row.clone())));
            rows.push(row);
            cursor += count as u64;
            rest = &rest[count..];
        }
        // The two large records do not share a 126 KiB row.
        assert_eq!(rows.len(), 2);
        assert_eq!(next_row(std::iter::empty()), (0, 0));
        let mut short = vec![0; 10];
        assert!(!write_row(
            &mut short,
            5,
            [(&b"a"[..], &b"one"[..])].into_iter()
        ));
    }

    #[test]
    fn a_damaged_row_is_refused_not_misread() {
        let mut builder = ChunkBuilder::new(1);
        builder.push(1, 1, "uuid", b"record");
        let (_, row) = builder.take().unwrap();
        for cut in 0..row.len() {
            assert!(Chunk::decode(1, Bytes::copy_from_slice(&row[..cut])).is_err());
        }
        let mut longer = row.clone();
        longer.push(0);
        assert!(Chunk::decode(1, Bytes::from(longer)).is_err());
        let mut empty = Vec::new();
        start(&mut empty, 1);
        assert!(Chunk::decode(1, Bytes::from(empty)).is_err());
    }
}
