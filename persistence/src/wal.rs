//! The engine's own write-ahead log. Every RocksDB write batch is written
//! here first (and fdatasync'd, for a commit), then applied to RocksDB's
//! memtables with RocksDB's own log off; a restart replays what RocksDB's
//! table files do not hold yet.
//!
//! # Why not RocksDB's log
//! RocksDB appends to its log file, so each fdatasync also has the file
//! system commit the file's new size through its journal. This log is cut
//! into segments, and a segment is written over from its start once
//! RocksDB's table files hold all its records: the blocks are the file's
//! already, so in steady state an fdatasync writes data blocks and nothing
//! else. That is what a durable door gains from a ring (session 21), and
//! the engine measured it too: see "What remains" in docs/PERFORMANCE.md.
//! RocksDB recycles its log files only in the recovery modes that drop
//! acknowledged writes after damage, and truncates each one when it closes
//! it, so it cannot have this.
//!
//! # Where to start reading
//! [`Wal::open`] finds the records past RocksDB's last flush and hands them
//! back, in order, for replay; [`Wal::append`] is the commit thread's write.
//! The [`Store`](crate::Store) puts each batch's ordinal in the batch itself
//! (`meta/wal-ordinal`), so the table files say how far they reach: that is
//! the `flushed` ordinal both take.
//!
//! # Format
//! The directory `wal/` of a data directory holds segment files named
//! `<number>.wal`. A segment is a run of records:
//!
//! `[crc32: u32 LE][payload length: u32 LE][ordinal: u64 LE][payload][zeros to a multiple of 8 bytes]`
//!
//! The CRC covers the length, the ordinal and the payload. Ordinals number
//! the records from 1 over the whole log and are never reused; one
//! segment's records have consecutive ordinals from its first. A segment
//! written over keeps older bytes past its newest record: records there
//! have lower ordinals than its first (they were flushed before it was
//! reused), or fail their CRC because a newer record cut them.
//!
//! # What opening accepts
//! - Records at or below the flushed ordinal are skipped: the table files
//!   hold them.
//! - Past it, ordinals must follow on without a gap, segment after
//!   segment. A gap refuses to open: records that were acknowledged would
//!   be missing.
//! - The log ends at the first record that is missing, fails its CRC or is
//!   out of sequence. That is a torn last write, which was never
//!   acknowledged (its fdatasync had not returned), only if no intact
//!   record with a higher ordinal lies anywhere past the records kept;
//!   if one does, the records between are damaged, and opening refuses.
//!   As with RocksDB's own log, damage to the very last record cannot be
//!   told from a torn write.

use crate::error::StoreError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A record's header: CRC, payload length, ordinal.
pub const HEADER_BYTES: usize = 16;

/// Records start at multiples of this, so that the search for intact
/// records past the log's end ([`scan`]) need only look there.
const ALIGN_BYTES: usize = 8;

/// A segment's size before the log moves on to the next: the memtable
/// size, so that about one segment's records are flushed at a time. A
/// record larger than this has a segment of its own.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// The name of the log's directory inside a data directory.
pub const DIR_NAME: &str = "wal";

/// The log, positioned where the next record goes.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// Index in `segments` of the one being written.
    current: usize,
    /// Where the next record goes in the current segment.
    offset_bytes: u64,
    next_ordinal: u64,
    /// One record's bytes, framed: reused so that a write is one `pwrite`
    /// without an allocation.
    buffer: Vec<u8>,
    /// A write or its sync failed part way, or the caller could not apply a
    /// written record: what the file holds past the last good record is not
    /// known, so nothing more is written until a restart recovers.
    failed: bool,
}

struct Segment {
    number: u64,
    file: File,
    /// The ordinals of the records it holds now, first and last (`None`:
    /// none that count, so it may be written over).
    held: Option<(u64, u64)>,
}

/// What [`Wal::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Records handed back for replay (past the flushed ordinal).
    pub records: u64,
    /// The ordinal of the newest record kept (the flushed one if none).
    pub last_ordinal: u64,
}

fn io(what: &str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {err}", path.display()))
}

/// Fsyncs a directory, so that a file created or renamed in it stays.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync directory", dir, e))
}

fn aligned(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[4..HEADER_BYTES]);
    hasher.update(payload);
    hasher.finalize()
}

/// The intact record at `at`, if one is: its ordinal, its payload and
/// where the next record would start.
fn record_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(at..at.checked_add(HEADER_BYTES)?)?;
    let (ordinal, len) = header_fields(header);
    if ordinal == 0 {
        return None; // zeros: never written
    }
    let start = at + HEADER_BYTES;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    let crc = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    (checksum(header, payload) == crc).then(|| (ordinal, payload, aligned(start + len)))
}

fn header_fields(header: &[u8]) -> (u64, usize) {
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let ordinal = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    (ordinal, len)
}

/// What one segment's bytes hold.
#[derive(Debug, PartialEq, Eq)]
struct Scan {
    /// Its records with consecutive ordinals from the start, first and last.
    held: Option<(u64, u64)>,
    /// Where they end: the next record would go here.
    end_bytes: usize,
    /// The highest ordinal above `flushed` of an intact record past
    /// `end_bytes`: there should be none.
    stray: Option<u64>,
}

/// Reads one segment's records from its start, then looks past them for
/// any intact record newer than `flushed`.
fn scan(bytes: &[u8], flushed: u64) -> Scan {
    let mut at = 0;
    let mut held: Option<(u64, u64)> = None;
    while let Some((ordinal, _, next)) = record_at(bytes, at) {
        match held {
            None => held = Some((ordinal, ordinal)),
            Some((first, last)) if ordinal == last + 1 => held = Some((first, ordinal)),
            Some(_) => break, // an older record, from before the segment was reused
        }
        at = next;
    }
    let end_bytes = at;
    let mut stray = None;
    let mut probe = end_bytes;
    while probe + HEADER_BYTES <= bytes.len() {
        let (ordinal, len) = header_fields(&bytes[probe..probe + HEADER_BYTES]);
        // Most places fail here, without a CRC: flushed records (older
        // segments' and this one's before reuse), zeros and payload bytes.
        // No real ordinal is 2^32 records past the last flush.
        let plausible = ordinal > flushed
            && ordinal - flushed < 1 << 32
            && len <= bytes.len() - probe - HEADER_BYTES;
        if plausible {
            if let Some((ordinal, _, _)) = record_at(bytes, probe) {
                stray = stray.max(Some(ordinal));
            }
        }
        probe += ALIGN_BYTES;
    }
    Scan {
        held,
        end_bytes,
        stray,
    }
}

fn segment_number(path: &Path) -> Option<u64> {
    if path.extension()? != "wal" {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.wal"))
}

impl Wal {
    /// Opens the log in `dir` (creating it if missing), hands every record
    /// past `flushed` to `replay` in order, and positions the log after the
    /// last one. Refuses with [`StoreError::Corrupt`] on damage (see the
    /// module's rules).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        flushed: u64,
        mut replay: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(Wal, Replayed), StoreError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
            let path = entry.map_err(|e| io("cannot list", dir, e))?.path();
            if let Some(number) = segment_number(&path) {
                found.push((number, path));
            }
        }
        // First pass: what each segment holds. One segment's bytes at a
        // time, so opening never holds more than one in memory.
        let mut segments = Vec::new();
        let mut scans = Vec::new();
        for (number, path) in found {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io("cannot open", &path, e))?;
            let bytes = std::fs::read(&path).map_err(|e| io("cannot read", &path, e))?;
            let scan = scan(&bytes, flushed);
            segments.push(Segment {
                number,
                file,
                held: scan.held,
            });
            scans.push(scan);
        }
        // Second pass: the records past `flushed`, segment after segment in
        // the order of their ordinals.
        let mut order: Vec<usize> = (0..segments.len())
            .filter(|&i| segments[i].held.is_some_and(|(_, last)| last > flushed))
            .collect();
        order.sort_by_key(|&i| segments[i].held.map(|(first, _)| first));
        let mut expected = flushed + 1;
        let mut replayed = 0;
        let mut tail = None;
        for (position, &i) in order.iter().enumerate() {
            let (first, last) = segments[i].held.expect("only segments that hold records");
            let what = || format!("write-ahead log segment {}", segments[i].number);
            if first > expected {
                return Err(StoreError::Corrupt {
                    what: what(),
                    detail: format!(
                        "record {expected} is missing: the log goes from {} to {first}",
                        expected - 1
                    ),
                });
            }
            if position > 0 && first < expected {
                return Err(StoreError::Corrupt {
                    what: what(),
                    detail: format!("records {first} to {} are there twice", expected - 1),
                });
            }
            let path = segment_path(dir, segments[i].number);
            let bytes = std::fs::read(&path).map_err(|e| io("cannot read", &path, e))?;
            let mut at = 0;
            while at < scans[i].end_bytes {
                let (ordinal, payload, next) =
                    record_at(&bytes, at).expect("the first pass found it intact");
                if ordinal >= expected {
                    replay(ordinal, payload)?;
                    replayed += 1;
                }
                at = next;
            }
            expected = last + 1;
            tail = Some(i);
        }
        let last_ordinal = expected - 1;
        for (segment, scan) in segments.iter().zip(&scans) {
            if let Some(stray) = scan.stray.filter(|&stray| stray > last_ordinal) {
                return Err(StoreError::Corrupt {
                    what: format!("write-ahead log segment {}", segment.number),
                    detail: format!(
                        "intact record {stray} lies past the log's end at record \
                         {last_ordinal}: the records between are damaged"
                    ),
                });
            }
        }
        let mut wal = Wal {
            dir: dir.to_owned(),
            segment_bytes,
            segments,
            current: 0,
            offset_bytes: 0,
            next_ordinal: last_ordinal + 1,
            buffer: Vec::new(),
            failed: false,
        };
        match tail {
            // Go on after the newest record kept (over a torn one, if any).
            Some(i) => {
                wal.current = i;
                wal.offset_bytes = scans[i].end_bytes as u64;
            }
            // Nothing past the flush: every segment may be written over.
            None => {
                for segment in &mut wal.segments {
                    segment.held = None;
                }
                match (0..wal.segments.len()).min_by_key(|&i| wal.segments[i].number) {
                    Some(i) => wal.current = i,
                    None => {
                        wal.create_segment(1)?;
                    }
                }
            }
        }
        Ok((
            wal,
            Replayed {
                records: replayed,
                last_ordinal,
            },
        ))
    }

    /// The ordinal the next [`Wal::append`] writes.
    pub fn next_ordinal(&self) -> u64 {
        self.next_ordinal
    }

    /// Segment files the log has now (tests and operators' figures).
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Stops further writes: the caller could not apply a record this log
    /// holds, so the two disagree until a restart replays it.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// Writes one record (ordinal [`Wal::next_ordinal`]) and, with `sync`,
    /// fdatasyncs it before returning. `flushed` says how far RocksDB's
    /// table files reach; it is asked only when the log moves to another
    /// segment, which it may write over only if all its records are below.
    pub fn append(
        &mut self,
        payload: &[u8],
        sync: bool,
        flushed: impl FnOnce() -> Result<u64, StoreError>,
    ) -> Result<u64, StoreError> {
        if self.failed {
            return Err(StoreError::Io(
                "an earlier write-ahead log write failed; restart to recover".into(),
            ));
        }
        let len = u32::try_from(payload.len())
            .map_err(|_| StoreError::Io(format!("a batch of {} bytes", payload.len())))?;
        let record_bytes = aligned(HEADER_BYTES + payload.len()) as u64;
        if self.offset_bytes > 0 && self.offset_bytes + record_bytes > self.segment_bytes {
            self.next_segment(flushed)?;
        }
        let ordinal = self.next_ordinal;
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0; 4]);
        self.buffer.extend_from_slice(&len.to_le_bytes());
        self.buffer.extend_from_slice(&ordinal.to_le_bytes());
        let crc = checksum(&self.buffer, payload);
        self.buffer[0..4].copy_from_slice(&crc.to_le_bytes());
        self.buffer.extend_from_slice(payload);
        self.buffer.resize(record_bytes as usize, 0);
        let segment = &mut self.segments[self.current];
        let written = segment
            .file
            .write_all_at(&self.buffer, self.offset_bytes)
            .and_then(|()| {
                if sync {
                    segment.file.sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(err) = written {
            self.failed = true;
            return Err(io(
                "cannot write",
                &segment_path(&self.dir, segment.number),
                err,
            ));
        }
        segment.held = Some(match segment.held {
            Some((first, _)) => (first, ordinal),
            None => (ordinal, ordinal),
        });
        self.offset_bytes += record_bytes;
        self.next_ordinal += 1;
        Ok(ordinal)
    }

    /// Moves to a segment whose records are all flushed, or a new one.
    fn next_segment(
        &mut self,
        flushed: impl FnOnce() -> Result<u64, StoreError>,
    ) -> Result<(), StoreError> {
        // Records written without a sync in this segment must be durable
        // before any in the next one can be acknowledged: a sync there
        // covers that file only.
        let current = &self.segments[self.current];
        if let Err(err) = current.file.sync_data() {
            self.failed = true;
            return Err(io(
                "cannot sync",
                &segment_path(&self.dir, current.number),
                err,
            ));
        }
        let flushed = flushed()?;
        let reusable = (0..self.segments.len())
            .filter(|&i| i != self.current)
            .filter(|&i| {
                self.segments[i]
                    .held
                    .is_none_or(|(_, last)| last <= flushed)
            })
            .min_by_key(|&i| self.segments[i].number);
        match reusable {
            Some(i) => {
                self.segments[i].held = None;
                self.current = i;
                self.offset_bytes = 0;
            }
            None => {
                let number = self.segments.iter().map(|s| s.number).max().unwrap_or(0) + 1;
                self.create_segment(number)?;
            }
        }
        Ok(())
    }

    /// Creates segment `number` (synced into the directory) and makes it
    /// the current one, from its start.
    fn create_segment(&mut self, number: u64) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, number);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io("cannot create", &path, e))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            number,
            file,
            held: None,
        });
        self.current = self.segments.len() - 1;
        self.offset_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: u64 = 4096;

    fn payload(ordinal: u64) -> Vec<u8> {
        format!("record {ordinal} ")
            .repeat((ordinal % 7 + 1) as usize)
            .into_bytes()
    }

    /// Records as replayed: ordinal and payload.
    type Records = Vec<(u64, Vec<u8>)>;

    /// Opens `dir`, collecting what it replays.
    fn open(dir: &Path, flushed: u64) -> Result<(Wal, Records), StoreError> {
        let mut seen = Vec::new();
        let (wal, replayed) = Wal::open(dir, SMALL, flushed, |ordinal, bytes| {
            seen.push((ordinal, bytes.to_vec()));
            Ok(())
        })?;
        assert_eq!(replayed.records, seen.len() as u64);
        Ok((wal, seen))
    }

    fn write(wal: &mut Wal, count: u64, flushed: u64) -> Vec<u64> {
        (0..count)
            .map(|_| {
                let ordinal = wal.next_ordinal();
                assert_eq!(
                    wal.append(&payload(ordinal), true, || Ok(flushed)).unwrap(),
                    ordinal
                );
                ordinal
            })
            .collect()
    }

    fn ordinals(seen: &[(u64, Vec<u8>)]) -> Vec<u64> {
        for (ordinal, bytes) in seen {
            assert_eq!(
                bytes,
                &payload(*ordinal),
                "record {ordinal} reads back as written"
            );
        }
        seen.iter().map(|(ordinal, _)| *ordinal).collect()
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn records_past_the_flush_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, seen) = open(dir.path(), 0).unwrap();
        assert!(seen.is_empty());
        let written = write(&mut wal, 400, 0);
        assert!(wal.segments() > 3, "{} segments", wal.segments());
        drop(wal);
        let (_, seen) = open(dir.path(), 0).unwrap();
        assert_eq!(ordinals(&seen), written);
        let (wal, seen) = open(dir.path(), 350).unwrap();
        assert_eq!(ordinals(&seen), (351..=400).collect::<Vec<_>>());
        assert_eq!(wal.next_ordinal(), 401);
    }

    #[test]
    fn flushed_segments_are_written_over_and_their_old_records_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), 0).unwrap();
        // The table files reach to ten records back at each switch, so
        // the log keeps to a few segments however much it writes.
        for _ in 0..2000 {
            let flushed = wal.next_ordinal().saturating_sub(11);
            let ordinal = wal.next_ordinal();
            wal.append(&payload(ordinal), true, || Ok(flushed)).unwrap();
        }
        assert!(wal.segments() <= 3, "{} segments", wal.segments());
        drop(wal);
        // Unflushed since 1990: exactly those come back, though both
        // segments are full of older records past their newest.
        let (mut wal, seen) = open(dir.path(), 1990).unwrap();
        assert_eq!(ordinals(&seen), (1991..=2000).collect::<Vec<_>>());
        // And the log goes on from there.
        let more = write(&mut wal, 5, 1990);
        assert_eq!(more, (2001..=2005).collect::<Vec<_>>());
        drop(wal);
        let (_, seen) = open(dir.path(), 1990).unwrap();
        assert_eq!(ordinals(&seen), (1991..=2005).collect::<Vec<_>>());
    }

    #[test]
    fn a_segment_is_not_written_over_while_it_holds_unflushed_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), 0).unwrap();
        write(&mut wal, 300, 0); // nothing ever flushed
        let segments = wal.segments();
        drop(wal);
        let (_, seen) = open(dir.path(), 0).unwrap();
        assert_eq!(ordinals(&seen), (1..=300).collect::<Vec<_>>());
        assert_eq!(files(dir.path()).len(), segments);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), 0).unwrap();
        write(&mut wal, 10, 0);
        drop(wal);
        let segment = files(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&segment).unwrap().len();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(len - 5).unwrap(); // the write stopped short
        drop(file);
        let (mut wal, seen) = open(dir.path(), 0).unwrap();
        assert_eq!(ordinals(&seen), (1..=9).collect::<Vec<_>>());
        assert_eq!(write(&mut wal, 2, 0), vec![10, 11]);
        drop(wal);
        let (_, seen) = open(dir.path(), 0).unwrap();
        assert_eq!(ordinals(&seen), (1..=11).collect::<Vec<_>>());
    }

    /// Flips one byte inside record `ordinal`'s payload.
    fn damage(dir: &Path, ordinal: u64) {
        for path in files(dir) {
            let mut bytes = std::fs::read(&path).unwrap();
            let mut at = 0;
            while let Some((found, _, next)) = record_at(&bytes, at) {
                if found == ordinal {
                    bytes[at + HEADER_BYTES + 2] ^= 0x40;
                    std::fs::write(&path, &bytes).unwrap();
                    return;
                }
                at = next;
            }
        }
        panic!("no record {ordinal}");
    }

    #[test]
    fn damage_before_the_last_record_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), 0).unwrap();
        write(&mut wal, 10, 0);
        drop(wal);
        damage(dir.path(), 5); // in the newest segment: 6..=10 lie past it
        let err = open(dir.path(), 0).err().expect("a damaged log opened");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("intact record 10"), "{err}");
    }

    #[test]
    fn damage_in_an_older_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), 0).unwrap();
        write(&mut wal, 200, 0);
        drop(wal);
        damage(dir.path(), 3);
        let err = open(dir.path(), 0).err().expect("a damaged log opened");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("record 3 is missing"), "{err}");
        // Damage to records the table files hold does not matter.
        assert_eq!(
            ordinals(&open(dir.path(), 100).unwrap().1),
            (101..=200).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_missing_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), 0).unwrap();
        write(&mut wal, 200, 0);
        drop(wal);
        std::fs::remove_file(&files(dir.path())[1]).unwrap();
        let err = open(dir.path(), 0).err().expect("a log with a hole opened");
        assert!(err.to_string().contains("is missing"), "{err}");
    }

    #[test]
    fn a_record_larger_than_a_segment_has_one_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), 0).unwrap();
        wal.append(b"small", true, || Ok(0)).unwrap();
        let big = vec![7u8; 3 * SMALL as usize];
        wal.append(&big, true, || Ok(0)).unwrap();
        wal.append(b"after", true, || Ok(0)).unwrap();
        drop(wal);
        let (_, seen) = open(dir.path(), 0).unwrap();
        let payloads: Vec<&[u8]> = seen.iter().map(|(_, bytes)| bytes.as_slice()).collect();
        assert_eq!(payloads, vec![&b"small"[..], &big[..], &b"after"[..]]);
    }

    #[test]
    fn a_failed_log_writes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), 0).unwrap();
        write(&mut wal, 1, 0);
        wal.fail();
        assert!(wal.append(b"x", true, || Ok(0)).is_err());
        drop(wal);
        assert_eq!(ordinals(&open(dir.path(), 0).unwrap().1), vec![1]);
    }

    /// One record as [`Wal::append`] frames it.
    fn framed(ordinal: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0; 4];
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&ordinal.to_le_bytes());
        let crc = checksum(&out, payload);
        out[0..4].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(payload);
        out.resize(aligned(out.len()), 0);
        out
    }

    #[test]
    fn scan_stops_at_the_first_record_out_of_sequence_and_finds_strays_above_the_flush() {
        assert_eq!(
            scan(&[0u8; 1024], 0),
            Scan {
                held: None,
                end_bytes: 0,
                stray: None
            }
        );
        // Records 5 and 6; then an older one (a segment written over);
        // zeros; then an intact record 9 with nothing leading to it.
        let mut bytes = [framed(5, b"five"), framed(6, b"six")].concat();
        let end = bytes.len();
        bytes.extend(framed(3, b"three, from before"));
        bytes.extend([0u8; 64]);
        bytes.extend(framed(9, b"nine"));
        assert_eq!(
            scan(&bytes, 4),
            Scan {
                held: Some((5, 6)),
                end_bytes: end,
                stray: Some(9)
            }
        );
        // Record 9 counts as a stray only while above the flush.
        assert_eq!(scan(&bytes, 9).stray, None);
    }
}
