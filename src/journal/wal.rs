//! The embedded journal's write-ahead file (`journal.wal`): what makes a group commit durable
//! with one sequential `fdatasync` instead of redb's two fsyncs of pages at random offsets.
//!
//! Why: a durable redb commit with quick-repair flushes twice (two-phase commit) and rewrites
//! its allocator state every time; one delivery of one event paid that. Here each group's rows
//! are written as one checksummed record into a preallocated file (so the sync flushes no
//! metadata) and the redb transaction commits without its own fsync. A checkpoint (a durable
//! redb commit) makes those commits durable in the file. At open, records newer than the file's
//! last durable commit are applied again.
//!
//! The file is two halves, used in turn. A checkpoint's writes and syncs run behind the
//! writer ([`crate::journal::file::SyncBehind`]): the records it covers stay in their half
//! while the next records go into the other one ([`Wal::switch`]), so until they land both
//! halves hold what a crash would need. A half is written again only once the checkpoint after
//! its records is known durable.
//!
//! Records are written with `O_DIRECT` where the filesystem allows it, in whole blocks (the
//! live bytes before the record in its first block are written again with it, the rest of its
//! last block is zeros): the bytes go from the record's buffer to the device with no copy into
//! the page cache, and with `O_DSYNC` the write returns once they are durable (a write with
//! force-unit-access where the device has it, else the write and a cache flush), with no
//! separate `fdatasync` call. On this project's machine that is about a fifth less time per
//! append than a buffered write and `fdatasync`, and 10-15 µs less than `O_DIRECT` followed by
//! `fdatasync` (BENCHMARKS.md, issue 15; `python3 benches/sync_modes.py`). Elsewhere (tmpfs, filesystems without direct I/O) records are
//! written through the page cache as before; the file's layout is the same either way.
//!
//! Record: `magic u32 | payload length u32 | crc32 u32 (of sequence and payload) |
//! sequence u64 | payload`, little endian. In each half, the sequences of its records ascend
//! by one from the half's start; replay of a half stops at the first record that does not
//! continue the chain (a stale one from before the half was last started over, a torn write
//! or the zeroed rest of the half). Replay takes the records of both halves newer than the
//! journal file's last durable commit, in sequence order, and they must follow each other.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use thiserror::Error;

/// File name of the write-ahead file inside the data dir.
pub const FILE_NAME: &str = "journal.wal";

/// Largest size a new file is preallocated to (zeros written once, so a sync flushes no
/// metadata). Bigger means fewer checkpoints: one per half of this many bytes of records.
/// Records are applied one durable commit each after a crash, so this also bounds that work.
pub const MAX_CAPACITY: u64 = 8 << 20;

/// Most records in one half (between two checkpoints), however small: bounds the pages a
/// checkpoint writes and the commits a replay applies. When checkpoints were written in line,
/// 1,600 records (4 MiB) between them put stalls of 10-20 ms into the 99th percentile at
/// 2,000 one-event deliveries a second, and about 400 kept it at 5 ms (`cargo bench --bench
/// load -- ingest`, BENCHMARKS.md, issue 15).
pub const MAX_RECORDS: u64 = 384;

/// A record may take at most this share of a half. A larger group (a poller page of 1,000
/// events is 2.5 MB) is its own checkpoint instead: logging it would write most of a file's
/// worth again for one commit, and the next one would be a checkpoint anyway.
pub const LARGEST_SHARE: u64 = 4;

/// Smallest size: a file takes an eighth of the free space, at most [`MAX_CAPACITY`] but at
/// least this much, and a smaller one grows to it at open. A file of an older version (one
/// run of records from offset 0, up to 4 MiB) is read whole: the first half's chain is read on
/// past the middle.
pub const MIN_CAPACITY: u64 = 1 << 20;

const MAGIC: u32 = 0x4c57_4b4f; // "OKWL"
const HEADER: usize = 4 + 4 + 4 + 8;

/// Direct writes cover whole blocks of this size at offsets that are multiples of it (the
/// largest logical block size of common devices and the page size).
const BLOCK: u64 = 4096;

/// What can go wrong with the write-ahead file.
#[derive(Debug, Error)]
pub enum WalError {
    /// Reading, writing or syncing the file failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The records of the two halves do not follow each other: one between them is missing.
    #[error(
        "record {sequence} of {path} is missing: the records of its two halves do not follow each other"
    )]
    Gap { sequence: u64, path: PathBuf },
    /// A record with a valid checksum did not decode: written by another version or damaged.
    #[error("record {sequence} of {path} does not decode: {reason}")]
    Malformed {
        sequence: u64,
        path: PathBuf,
        reason: &'static str,
    },
}

/// The error of `action` on the file at `path`, for `map_err`.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_owned();
    move |source| WalError::Io {
        action,
        path,
        source,
    }
}

/// One event row of a group, as the `events` table stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub cursor: u64,
    pub uuid: String,
    pub micros: i64,
    /// The committed record's bytes, shared with it (never copied to be logged).
    pub encoded: Bytes,
}

/// Everything one group commit wrote, enough to write it again into redb.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupRecord {
    /// Head, retained bytes, last commit time µs, next quarantine id after the group.
    pub head: u64,
    pub bytes: u64,
    pub last_commit_micros: i64,
    pub next_quarantine: u64,
    /// The `commits` row (commit time µs, first cursor), if the group stored events.
    pub commit: Option<(i64, u64)>,
    pub events: Vec<EventRow>,
    /// Quarantine rows: (id, commit time µs, JSON).
    pub quarantine: Vec<(u64, i64, Vec<u8>)>,
    /// State rows: (key, value).
    pub state: Vec<(String, Vec<u8>)>,
}

impl GroupRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        out.extend_from_slice(&self.head.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.last_commit_micros.to_le_bytes());
        out.extend_from_slice(&self.next_quarantine.to_le_bytes());
        match self.commit {
            Some((micros, first)) => {
                out.push(1);
                out.extend_from_slice(&micros.to_le_bytes());
                out.extend_from_slice(&first.to_le_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.events.len() as u32).to_le_bytes());
        for e in &self.events {
            out.extend_from_slice(&e.cursor.to_le_bytes());
            out.extend_from_slice(&e.micros.to_le_bytes());
            put_bytes(out, e.uuid.as_bytes());
            put_bytes(out, &e.encoded);
        }
        out.extend_from_slice(&(self.quarantine.len() as u32).to_le_bytes());
        for (id, micros, json) in &self.quarantine {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&micros.to_le_bytes());
            put_bytes(out, json);
        }
        out.extend_from_slice(&(self.state.len() as u32).to_le_bytes());
        for (key, value) in &self.state {
            put_bytes(out, key.as_bytes());
            put_bytes(out, value);
        }
    }

    /// The length of [`GroupRecord::encode`]'s output, known before encoding: a record too
    /// large to log is never encoded.
    fn encoded_len(&self) -> usize {
        let commit = if self.commit.is_some() {
            Self::COMMIT_LEN
        } else {
            0
        };
        let events: usize = self
            .events
            .iter()
            .map(|e| Self::event_len(e.uuid.len(), e.encoded.len()))
            .sum();
        let quarantine: usize = self
            .quarantine
            .iter()
            .map(|q| Self::quarantine_len(q.2.len()))
            .sum();
        let state: usize = self
            .state
            .iter()
            .map(|(k, v)| Self::state_len(k.len(), v.len()))
            .sum();
        Self::FIXED_LEN + commit + events + quarantine + state
    }

    /// Encoded bytes of a record before its rows: the four counters, the commit flag and the
    /// three row counts.
    pub const FIXED_LEN: usize = 4 * 8 + 1 + 3 * 4;
    /// Encoded bytes of the `commits` row, when the record has one.
    pub const COMMIT_LEN: usize = 8 + 8;

    /// Encoded bytes of an event row with a uuid and a record of these lengths.
    pub const fn event_len(uuid: usize, encoded: usize) -> usize {
        8 + 8 + 4 + uuid + 4 + encoded
    }

    /// Encoded bytes of a quarantine row whose JSON has this length.
    pub const fn quarantine_len(json: usize) -> usize {
        8 + 8 + 4 + json
    }

    /// Encoded bytes of a state row with a key and a value of these lengths.
    pub const fn state_len(key: usize, value: usize) -> usize {
        4 + key + 4 + value
    }

    fn decode(mut input: &[u8]) -> Result<GroupRecord, &'static str> {
        fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
            if input.len() < n {
                return Err("truncated");
            }
            let (head, rest) = input.split_at(n);
            *input = rest;
            Ok(head)
        }
        fn u64_(input: &mut &[u8]) -> Result<u64, &'static str> {
            let b = take(input, 8)?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| "truncated")?))
        }
        fn u32_(input: &mut &[u8]) -> Result<u32, &'static str> {
            let b = take(input, 4)?;
            Ok(u32::from_le_bytes(b.try_into().map_err(|_| "truncated")?))
        }
        fn bytes_(input: &mut &[u8]) -> Result<Vec<u8>, &'static str> {
            let n = u32_(input)? as usize;
            Ok(take(input, n)?.to_vec())
        }
        fn string_(input: &mut &[u8]) -> Result<String, &'static str> {
            String::from_utf8(bytes_(input)?).map_err(|_| "a key is not UTF-8")
        }
        let input = &mut input;
        let mut record = GroupRecord {
            head: u64_(input)?,
            bytes: u64_(input)?,
            last_commit_micros: u64_(input)? as i64,
            next_quarantine: u64_(input)?,
            ..GroupRecord::default()
        };
        record.commit = match take(input, 1)?[0] {
            0 => None,
            1 => Some((u64_(input)? as i64, u64_(input)?)),
            _ => return Err("bad commit flag"),
        };
        for _ in 0..u32_(input)? {
            let cursor = u64_(input)?;
            let micros = u64_(input)? as i64;
            record.events.push(EventRow {
                cursor,
                micros,
                uuid: string_(input)?,
                encoded: Bytes::from(bytes_(input)?),
            });
        }
        for _ in 0..u32_(input)? {
            let id = u64_(input)?;
            let micros = u64_(input)? as i64;
            record.quarantine.push((id, micros, bytes_(input)?));
        }
        for _ in 0..u32_(input)? {
            let key = string_(input)?;
            record.state.push((key, bytes_(input)?));
        }
        if !input.is_empty() {
            return Err("trailing bytes");
        }
        Ok(record)
    }
}

/// The open write-ahead file, positioned after the live records.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    /// The file's (preallocated) size.
    capacity: u64,
    /// The half records go into: its start and end offsets; records never go past its end.
    half: (u64, u64),
    /// Where the next record goes.
    offset: u64,
    /// Records written since the half last started over (at most [`MAX_RECORDS`]).
    live: u64,
    /// The next record's sequence.
    next_sequence: u64,
    /// The staged record's frame (header and payload), written by [`Wal::append_staged`].
    frame: Vec<u8>,
    /// The direct (`O_DIRECT`) writer, when the filesystem takes direct I/O.
    direct: Option<Direct>,
}

/// Writes records with `O_DIRECT`, a block at a time (see the module docs).
#[derive(Debug)]
struct Direct {
    /// The same file, opened with `O_DIRECT | O_DSYNC`: a write returns once durable.
    file: File,
    /// The bytes of the block holding the write offset that precede it: written again, unchanged,
    /// in front of the next record.
    tail: Vec<u8>,
    /// What `tail` becomes once the record just written is synced ([`Direct::advance`]).
    next_tail: Vec<u8>,
    /// Room for one write, with a block-aligned run inside (see [`aligned`]).
    buffer: Vec<u8>,
}

impl Direct {
    /// Opens `path` for direct writes positioned at `offset`, reading the live bytes of its
    /// block; `None` where the filesystem refuses direct I/O.
    fn open(path: &Path, file: &File, offset: u64) -> Result<Option<Direct>, WalError> {
        let direct = match OpenOptions::new()
            .write(true)
            .custom_flags((rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC).bits() as i32)
            .open(path)
        {
            Ok(direct) => direct,
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "no direct I/O for the write-ahead file; writing through the page cache");
                return Ok(None);
            }
        };
        let mut direct = Direct {
            file: direct,
            tail: Vec::new(),
            next_tail: Vec::new(),
            buffer: Vec::new(),
        };
        direct.reposition(file, offset, path)?;
        Ok(Some(direct))
    }

    /// Reads the live bytes of the block holding `offset` (through `file`, the buffered handle).
    fn reposition(&mut self, file: &File, offset: u64, path: &Path) -> Result<(), WalError> {
        let start = offset - offset % BLOCK;
        self.tail.resize((offset - start) as usize, 0);
        file.read_exact_at(&mut self.tail, start)
            .map_err(io_error("read", path))
    }

    /// Writes `frame` at `offset` in whole blocks. Returns `Ok(false)`, writing nothing, when
    /// the blocks would end past `limit`, the end of the half (the caller writes through the
    /// page cache instead).
    fn write(&mut self, frame: &[u8], offset: u64, limit: u64) -> std::io::Result<bool> {
        let start = offset - offset % BLOCK;
        let prefix = self.tail.len();
        let end = prefix + frame.len();
        let padded = end.div_ceil(BLOCK as usize) * BLOCK as usize;
        if start + padded as u64 > limit {
            return Ok(false);
        }
        let blocks = aligned(&mut self.buffer, padded);
        blocks[..prefix].copy_from_slice(&self.tail);
        blocks[prefix..end].copy_from_slice(frame);
        blocks[end..].fill(0);
        self.file.write_all_at(blocks, start)?;
        let kept = end % BLOCK as usize;
        self.next_tail.clear();
        self.next_tail.extend_from_slice(&blocks[end - kept..end]);
        Ok(true)
    }

    /// The record written by [`Direct::write`] is durable: the next one follows it.
    fn advance(&mut self) {
        std::mem::swap(&mut self.tail, &mut self.next_tail);
    }
}

/// A run of `len` bytes of `buffer` starting at a multiple of [`BLOCK`] in memory, as direct
/// I/O requires; `buffer` grows to make room.
fn aligned(buffer: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let room = len + BLOCK as usize;
    if buffer.len() < room {
        *buffer = vec![0; room];
    }
    let skip = buffer.as_ptr().align_offset(BLOCK as usize);
    &mut buffer[skip..skip + len]
}

/// The two halves of a file of `capacity` bytes, as (start, end): the second starts at a
/// block boundary.
fn halves(capacity: u64) -> [(u64, u64); 2] {
    let middle = capacity / 2 / BLOCK * BLOCK;
    [(0, middle), (middle, capacity)]
}

/// The records of one half's chain (see the module docs).
struct Chain {
    /// Those newer than the durable sequence, in order.
    records: Vec<(u64, GroupRecord)>,
    /// The sequence of the chain's last record.
    last: Option<u64>,
    /// The offset after it.
    end: u64,
    /// How many records the chain has.
    count: u64,
}

/// Reads the chain of records from the start of `half` = (start, end) of `file`, keeping those
/// whose sequence is above `durable`.
fn read_chain(
    file: &File,
    path: &Path,
    (start, end): (u64, u64),
    durable: u64,
) -> Result<Chain, WalError> {
    let io = |action| io_error(action, path);
    let mut chain = Chain {
        records: Vec::new(),
        last: None,
        end: start,
        count: 0,
    };
    let mut header = [0u8; HEADER];
    let mut offset = start;
    loop {
        if offset + HEADER as u64 > end {
            break;
        }
        match file.read_exact_at(&mut header, offset) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io("read")(e)),
        }
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap_or([0; 4]));
        let (magic, length, crc) = (word(0), word(4) as u64, word(8));
        let sequence = u64::from_le_bytes(header[12..20].try_into().unwrap_or([0; 8]));
        if magic != MAGIC
            || offset + HEADER as u64 + length > end
            || chain.last.is_some_and(|p| sequence != p + 1)
        {
            break;
        }
        let mut payload = vec![0u8; length as usize];
        file.read_exact_at(&mut payload, offset + HEADER as u64)
            .map_err(io("read"))?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&sequence.to_le_bytes());
        hasher.update(&payload);
        if hasher.finalize() != crc {
            break;
        }
        if sequence > durable {
            let record = GroupRecord::decode(&payload).map_err(|reason| WalError::Malformed {
                sequence,
                path: path.to_owned(),
                reason,
            })?;
            chain.records.push((sequence, record));
        }
        chain.last = Some(sequence);
        chain.count += 1;
        offset += HEADER as u64 + length;
        chain.end = offset;
    }
    Ok(chain)
}

impl Wal {
    /// Opens (creating and preallocating if needed) `dir/journal.wal` and returns it with the
    /// records whose sequence is above `durable` (already durable in redb: skipped), in order.
    /// The caller applies them durably and then calls [`Wal::restart`].
    pub fn open(dir: &Path, durable: u64) -> Result<(Wal, Vec<(u64, GroupRecord)>), WalError> {
        let path = dir.join(FILE_NAME);
        let io = |action| io_error(action, &path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open"))?;
        let len = file.metadata().map_err(io("read the size of"))?.len();
        // A file smaller than the size wanted now (one made by an older version, or while the
        // disk was fuller) grows to it; records in it stay where they are.
        let wanted = {
            let free = rustix::fs::fstatvfs(&file)
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                .unwrap_or(0);
            (free / 8).clamp(MIN_CAPACITY, MAX_CAPACITY) & !0xffff
        };
        let capacity = len.max(wanted);
        if len < capacity {
            // Zeros written (not a sparse hole), so later syncs flush data only.
            let zeros = vec![0u8; (capacity - len) as usize];
            file.write_all_at(&zeros, len).map_err(io("preallocate"))?;
            file.sync_all().map_err(io("sync"))?;
            if let Some(parent) = path.parent() {
                if let Ok(dir) = File::open(parent) {
                    dir.sync_all().map_err(io("sync the directory of"))?;
                }
            }
        }
        let [first, second] = halves(capacity);
        // The first half's chain is read on past the middle: a file written before the halves
        // (one run from offset 0) is read whole. Where the first half ends exactly at the
        // middle, it reads on into the second half's records, found twice and kept once.
        let chains = [
            read_chain(&file, &path, (first.0, capacity), durable)?,
            read_chain(&file, &path, second, durable)?,
        ];
        // Records go on in the half holding the newest ones; the other half holds the older
        // ones (if any), kept until the checkpoint after them is durable.
        let which = usize::from(chains[1].last.is_some() && chains[1].last >= chains[0].last);
        let last_sequence = chains[which].last.unwrap_or(0).max(durable);
        let (offset, live) = (chains[which].end, chains[which].count);
        let mut records: Vec<(u64, GroupRecord)> =
            chains.into_iter().flat_map(|chain| chain.records).collect();
        records.sort_by_key(|(sequence, _)| *sequence);
        records.dedup_by_key(|(sequence, _)| *sequence);
        if let Some(gap) = records.windows(2).find(|pair| pair[1].0 != pair[0].0 + 1) {
            return Err(WalError::Gap {
                sequence: gap[0].0 + 1,
                path,
            });
        }
        let half = [first, second][which];
        let direct = if capacity % BLOCK == 0 {
            Direct::open(&path, &file, offset)?
        } else {
            None
        };
        let wal = Wal {
            file,
            path,
            capacity,
            half,
            offset,
            live,
            next_sequence: last_sequence + 1,
            frame: Vec::new(),
            direct,
        };
        Ok((wal, records))
    }

    /// The sequence the next record will carry (store it with the redb commit it describes).
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Encodes `record` as the next record and says whether it may follow the live ones (it fits,
    /// takes at most a [`LARGEST_SHARE`] of the file, and fewer than [`MAX_RECORDS`] are live); if
    /// it may, [`Wal::append_staged`] writes it.
    pub fn stage(&mut self, record: &GroupRecord) -> bool {
        self.frame.clear();
        let len = (HEADER + record.encoded_len()) as u64;
        if !(self.live < MAX_RECORDS && self.fits(len)) {
            return false;
        }
        self.frame.resize(HEADER, 0);
        record.encode(&mut self.frame);
        debug_assert_eq!(self.frame.len() as u64, len, "GroupRecord::encoded_len");
        let sequence = self.next_sequence;
        let length = (self.frame.len() - HEADER) as u32;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&sequence.to_le_bytes());
        hasher.update(&self.frame[HEADER..]);
        self.frame[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        self.frame[4..8].copy_from_slice(&length.to_le_bytes());
        self.frame[8..12].copy_from_slice(&hasher.finalize().to_le_bytes());
        self.frame[12..20].copy_from_slice(&sequence.to_le_bytes());
        true
    }

    /// Writes the staged record and syncs it: durable when this returns `Ok`. On error nothing
    /// advances; the next record overwrites the spot.
    pub fn append_staged(&mut self) -> Result<(), WalError> {
        // A record [`Wal::stage`] refused is not kept.
        let refused = if self.frame.is_empty() {
            Some("no record is staged")
        } else if self.offset + self.frame.len() as u64 > self.half.1 {
            Some("the record does not fit")
        } else {
            None
        };
        if let Some(reason) = refused {
            return Err(WalError::Io {
                action: "append to",
                path: self.path.clone(),
                source: std::io::Error::other(reason),
            });
        }
        let io = |action| io_error(action, &self.path);
        let written = match &mut self.direct {
            Some(direct) => match direct.write(&self.frame, self.offset, self.half.1) {
                Ok(written) => written,
                // The device wants larger blocks than ours: write through the page cache from
                // now on.
                Err(error) if error.kind() == ErrorKind::InvalidInput => {
                    tracing::warn!(path = %self.path.display(), %error, "direct I/O refused; writing the write-ahead file through the page cache");
                    self.direct = None;
                    false
                }
                Err(error) => return Err(io("write")(error)),
            },
            None => false,
        };
        // A direct write is durable when it returns (`O_DSYNC`); a buffered one once synced.
        if !written {
            self.file
                .write_all_at(&self.frame, self.offset)
                .map_err(io("write"))?;
            self.file.sync_data().map_err(io("sync"))?;
        }
        self.offset += self.frame.len() as u64;
        self.live += 1;
        if let Some(direct) = &mut self.direct {
            if written {
                direct.advance();
            } else if let Err(error) = direct.reposition(&self.file, self.offset, &self.path) {
                // The record is durable; only the next direct write would be wrong.
                tracing::warn!(%error, "writing the write-ahead file through the page cache from now on");
                self.direct = None;
            }
        }
        self.next_sequence += 1;
        Ok(())
    }

    /// Whether a record of `len` bytes (with its header) fits after the live records of the
    /// half, and within its share of a half.
    fn fits(&self, len: u64) -> bool {
        len <= self.largest() && self.offset + len <= self.half.1
    }

    /// The largest record (with its header) that is ever logged: a [`LARGEST_SHARE`] of a half.
    fn largest(&self) -> u64 {
        let [first, second] = halves(self.capacity);
        (first.1 - first.0).min(second.1 - second.0) / LARGEST_SHARE
    }

    /// Whether a group whose record takes at most `len` bytes (without its header) may be
    /// logged at all, in an empty half; a larger one is its own checkpoint.
    pub fn may_log(&self, len: usize) -> bool {
        (HEADER + len) as u64 <= self.largest()
    }

    /// Whether a group whose record takes at most `len` bytes (without its header) needs a
    /// checkpoint before it can be logged: the half is full for it, though an empty one would
    /// take it. (A record too large for any half is its own checkpoint instead.)
    pub fn full_for(&self, len: usize) -> bool {
        self.may_log(len) && (self.live >= MAX_RECORDS || !self.fits((HEADER + len) as u64))
    }

    /// Whether the live records fill half of their half or half of [`MAX_RECORDS`]: a
    /// checkpoint taken now, while no append waits, spares a later append the one a full half
    /// forces.
    pub fn half_full(&self) -> bool {
        self.live * 2 >= MAX_RECORDS || (self.offset - self.half.0) * 2 >= self.half.1 - self.half.0
    }

    /// After a checkpoint whose sync is done made every record durable in redb: the next
    /// record goes at the start of the half. Stale records after it never continue its chain,
    /// so replay ignores them.
    pub fn restart(&mut self) {
        self.offset = self.half.0;
        self.live = 0;
        if let Some(direct) = &mut self.direct {
            direct.tail.clear();
        }
    }

    /// After a checkpoint whose sync may still be running: the next record goes at the start
    /// of the other half, and this half's records stay for a replay until that sync lands.
    /// The caller makes sure the other half's records are durable in redb (the checkpoint
    /// before this one landed).
    pub fn switch(&mut self) {
        let [first, second] = halves(self.capacity);
        self.half = if self.half.0 == first.0 {
            second
        } else {
            first
        };
        self.restart();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stages `record`, which the file must accept, and writes it.
    #[track_caller]
    fn append(wal: &mut Wal, record: &GroupRecord) {
        assert!(wal.stage(record), "record {} is refused", record.head);
        wal.append_staged().unwrap();
    }

    fn record(n: u64) -> GroupRecord {
        GroupRecord {
            head: n,
            bytes: 10 * n,
            last_commit_micros: 1_000 + n as i64,
            next_quarantine: 2,
            commit: Some((1_000 + n as i64, n)),
            events: vec![EventRow {
                cursor: n,
                uuid: format!("uuid-{n}"),
                micros: 1_000 + n as i64,
                encoded: Bytes::from(vec![n as u8; 100]),
            }],
            quarantine: vec![(1, 5, b"{}".to_vec())],
            state: vec![("poller".to_owned(), b"state".to_vec())],
        }
    }

    #[test]
    fn records_after_the_durable_sequence_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, replay) = Wal::open(dir.path(), 0).unwrap();
        assert!(replay.is_empty());
        for n in 1..=3 {
            append(&mut wal, &record(n));
        }
        drop(wal);
        let (wal, replay) = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(replay, vec![(2, record(2)), (3, record(3))]);
        assert_eq!(wal.next_sequence(), 4);
    }

    #[test]
    fn after_a_restart_stale_records_are_not_replayed_and_a_torn_one_ends_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        for n in 1..=5 {
            append(&mut wal, &record(n));
        }
        // Checkpoint at 5: the next record overwrites the first.
        wal.restart();
        append(&mut wal, &record(6));
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 5).unwrap();
        assert_eq!(replay, vec![(6, record(6))]);

        // A flipped byte in record 6's payload: its checksum fails, nothing is replayed.
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.write_all_at(&[0xff], HEADER as u64 + 3).unwrap();
        let (wal, replay) = Wal::open(dir.path(), 5).unwrap();
        assert!(replay.is_empty());
        assert_eq!(wal.next_sequence(), 6);
    }

    #[test]
    fn after_max_records_small_records_wait_for_a_checkpoint_though_bytes_would_fit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        for n in 1..=MAX_RECORDS {
            append(&mut wal, &record(n));
        }
        assert!(wal.offset + 1000 < wal.half.1, "room for more bytes");
        assert!(wal.full_for(100), "the half is full for a small record");
        assert!(!wal.stage(&record(MAX_RECORDS + 1)), "a checkpoint is due");
        // A checkpoint frees them all.
        wal.restart();
        assert!(wal.stage(&record(MAX_RECORDS + 1)));
    }

    #[test]
    fn the_file_is_half_full_at_half_the_records_or_half_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        assert!(!wal.half_full(), "an empty file");
        for n in 1..MAX_RECORDS / 2 {
            append(&mut wal, &record(n));
            assert!(!wal.half_full(), "{n} small records");
        }
        append(&mut wal, &record(MAX_RECORDS / 2));
        assert!(wal.half_full(), "half of the records");
        wal.restart();
        assert!(!wal.half_full(), "after a checkpoint");

        let big = wal.largest() - HEADER as u64 - 512;
        let mut n = MAX_RECORDS / 2;
        while (wal.offset - wal.half.0) * 2 < wal.half.1 - wal.half.0 {
            assert!(!wal.half_full());
            n += 1;
            append(&mut wal, &sized(n, big as usize));
        }
        assert!(
            wal.half_full(),
            "half of the bytes, in {} records",
            wal.live
        );
    }

    #[test]
    fn a_record_larger_than_its_share_of_the_file_is_left_to_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let share = wal.largest() as usize;
        assert_eq!(wal.largest(), wal.capacity / 2 / LARGEST_SHARE);
        assert!(
            !wal.stage(&sized(1, share)),
            "the frame's header makes it too large"
        );
        assert!(!wal.full_for(share), "no checkpoint makes room for it");
        append(&mut wal, &sized(1, share - 512));
    }

    #[test]
    fn after_a_switch_both_halves_replay_until_the_checkpoint_before_it_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        for n in 1..=3 {
            append(&mut wal, &sized(n, 3000));
        }
        // A checkpoint at 3 whose sync runs behind: 4 and 5 go into the second half.
        wal.switch();
        assert_eq!(wal.offset, wal.capacity / 2);
        for n in 4..=5 {
            append(&mut wal, &sized(n, 3000));
        }
        drop(wal);
        let all: Vec<_> = (1..=5).map(|n| (n, sized(n, 3000))).collect();
        // The checkpoint's sync never landed: everything since the one before it comes back.
        let (_, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay, all);
        // It landed: only what followed it.
        let (mut wal, replay) = Wal::open(dir.path(), 3).unwrap();
        assert_eq!(replay, all[3..]);
        assert_eq!(wal.next_sequence(), 6, "records go on after the newest");
        append(&mut wal, &sized(6, 3000));
        assert_eq!(wal.live, 3, "in the second half");

        // A checkpoint at 6, and back to the first half: 7 overwrites 1, and the stale 2 and
        // 3 after it do not continue its chain.
        wal.switch();
        assert_eq!(wal.offset, 0);
        append(&mut wal, &sized(7, 3000));
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 6).unwrap();
        assert_eq!(replay, vec![(7, sized(7, 3000))]);
        let (wal, replay) = Wal::open(dir.path(), 3).unwrap();
        let expected: Vec<_> = (4..=7).map(|n| (n, sized(n, 3000))).collect();
        assert_eq!(replay, expected);
        assert_eq!((wal.half.0, wal.live, wal.next_sequence()), (0, 1, 8));
    }

    #[test]
    fn a_first_half_filled_to_the_middle_is_read_once_with_the_second() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let middle = wal.capacity / 2;
        // Eight records fill the first half to the byte.
        let payload = (middle / 8) as usize - HEADER - (record(1).encoded_len() - 100);
        let mut expected = Vec::new();
        for n in 1..=8 {
            append(&mut wal, &sized(n, payload));
            expected.push((n, sized(n, payload)));
        }
        assert_eq!(wal.offset, middle);
        assert!(wal.full_for(10));
        // The next record, right after it in the file, is the first of the second half.
        wal.switch();
        append(&mut wal, &sized(9, 10));
        expected.push((9, sized(9, 10)));
        drop(wal);
        let (wal, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay, expected);
        assert_eq!(
            (wal.half.0, wal.live),
            (middle, 1),
            "records go on in the second half"
        );
        assert_eq!(wal.next_sequence(), 10);
    }

    #[test]
    fn records_missing_between_the_halves_are_an_error_not_a_silent_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        for n in 1..=2 {
            append(&mut wal, &record(n));
        }
        wal.switch();
        // Records 3 and 4 were never written: the second half goes on at 5.
        wal.next_sequence = 5;
        append(&mut wal, &record(5));
        drop(wal);
        let error = Wal::open(dir.path(), 0).unwrap_err();
        assert!(
            matches!(error, WalError::Gap { sequence: 3, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("record 3 of"), "{error}");
    }

    #[test]
    fn a_file_written_as_one_run_before_the_halves_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        // An older version used the whole file as one run.
        wal.half = (0, wal.capacity);
        let size = (wal.capacity / 10) as usize;
        let mut expected = Vec::new();
        let mut n = 0;
        while wal.offset < wal.capacity * 3 / 4 {
            n += 1;
            append(&mut wal, &sized(n, size));
            expected.push((n, sized(n, size)));
        }
        drop(wal);
        let (wal, replay) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(replay, expected, "every record, past the middle too");
        assert_eq!(wal.next_sequence(), n + 1);
    }

    /// A record whose payload is `len` bytes of `n`.
    fn sized(n: u64, len: usize) -> GroupRecord {
        let mut record = record(n);
        record.events[0].encoded = Bytes::from(vec![n as u8; len]);
        record
    }

    /// How the scenario below writes: as the filesystem allows, through the page cache only,
    /// or switching to the page cache after the first records (as a refused direct write does).
    #[derive(Clone, Copy, PartialEq)]
    enum Writes {
        AsAllowed,
        Buffered,
        SwitchingToBuffered,
    }

    /// Records of sizes that straddle blocks, a reopen mid-block and a restart,
    /// each followed by the replay that must find exactly the live records.
    fn straddling_records_replay_exactly(writes: Writes) {
        let dir = tempfile::tempdir().unwrap();
        let open = |durable| {
            let (mut wal, replay) = Wal::open(dir.path(), durable).unwrap();
            if writes == Writes::Buffered {
                wal.direct = None;
            }
            (wal, replay)
        };
        let (mut wal, _) = open(0);
        let sizes = [1, 4000, 17, 4096, 9000, 3, 4076, 12_288, 500];
        let mut expected = Vec::new();
        for (i, len) in sizes.iter().enumerate() {
            let n = i as u64 + 1;
            append(&mut wal, &sized(n, *len));
            expected.push((n, sized(n, *len)));
            if i == 2 && writes == Writes::SwitchingToBuffered {
                wal.direct = None;
            }
            if i == 4 {
                // Reopened with the write offset inside a block: the next record keeps the
                // live bytes before it.
                drop(wal);
                let (reopened, replay) = open(0);
                assert_eq!(replay, expected);
                wal = reopened;
            }
        }
        append(&mut wal, &sized(10, 70));
        expected.push((10, sized(10, 70)));
        drop(wal);
        let (mut wal, replay) = open(0);
        assert_eq!(replay, expected);

        // After a checkpoint the chain starts over at offset 0.
        wal.restart();
        append(&mut wal, &sized(11, 6000));
        drop(wal);
        let (_, replay) = open(10);
        assert_eq!(replay, vec![(11, sized(11, 6000))]);
    }

    #[test]
    fn records_of_any_size_straddle_blocks_and_survive_reopening_mid_block() {
        // Where the filesystem takes direct I/O, the write-ahead file uses it.
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 0).unwrap();
        let direct_possible = OpenOptions::new()
            .write(true)
            .custom_flags((rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC).bits() as i32)
            .open(dir.path().join(FILE_NAME))
            .is_ok();
        assert_eq!(wal.direct.is_some(), direct_possible);

        straddling_records_replay_exactly(Writes::AsAllowed);
    }

    #[test]
    fn through_the_page_cache_or_switching_to_it_the_records_are_the_same() {
        straddling_records_replay_exactly(Writes::Buffered);
        straddling_records_replay_exactly(Writes::SwitchingToBuffered);
    }

    #[test]
    fn a_record_that_does_not_fit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        let mut big = record(1);
        big.events[0].encoded = Bytes::from(vec![7; MAX_CAPACITY as usize + 1]);
        assert!(!wal.stage(&big));
        assert!(wal.append_staged().is_err());
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 0).unwrap();
        assert!(replay.is_empty());
    }
}
