//! The aggregate index, written off the commit path: which log sequences
//! hold each aggregate's versions.
//!
//! # Why
//! The index used to take one entry per event, keyed (aggregate, version),
//! in the commit thread's write batch: the one key per earn that landed at
//! a random place, inserted on the thread every answer waits for and
//! merged again by every flush (notes item 33 in
//! `loadtests/PERFORMANCE-notes.md`). Now [`Store::write`](crate::Store::write)
//! only *notes* each durable event's (aggregate, version, sequence) in
//! memory, and an indexer thread writes what was noted in *rounds*: one
//! entry per aggregate per round (more for a long run), covering every
//! version of it the round holds.
//!
//! # Entries
//! Key: the aggregate id and the *newest* version the entry covers. Value:
//! the sequences of its consecutive versions, oldest first, 8 bytes each
//! (big-endian), at most [`ENTRY_VERSIONS_MAX`]. An entry of one sequence
//! is exactly what data formats up to 4 wrote for every event, so those
//! directories read unchanged. A reader seeking (aggregate, v) lands on
//! the first entry whose newest version is at least v, which is the one
//! that holds v.
//!
//! # Durability and restart
//! Nothing here is acknowledged to anyone: the log is the truth and the
//! index is derived from it. A round writes its entries, then
//! `meta/index-cursor` (every event up to that sequence is indexed) with
//! its last entries, in write batches without sync (the next commit's
//! fsync carries them). A crash can lose the newest rounds, or tear one
//! between its batches; either way the cursor in the store is not past
//! what its entries hold, and [`index_log_after`] indexes the log past it
//! again while the store opens, before anything is served. So entries may
//! overlap (a torn round's, and the same versions again from the restart):
//! readers take the union of an aggregate's entries, and the log's
//! records are the same whichever entry points at them.
//!
//! # Readers
//! Until a round's write is done, its events are still in memory
//! ([`Index::sequences`]): a reader copies what memory has for its
//! aggregate first, then reads the store, so an entry moving from one to
//! the other during the read is seen at least once (and duplicates are
//! merged). Events are noted only after their write returned, and an
//! actor is dropped only once nothing of it is in flight, so an
//! enrollment read back from the store has every event noted or indexed.

use crate::envelope::{self, Kind};
use crate::error::StoreError;
use crate::keys::{self, Cf};
use crate::records::LogRecord;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Most versions one entry covers: a retry looking among an enrollment's
/// last 16 answers reads one entry of at most this many sequences (2 KiB),
/// not a hot aggregate's whole round.
pub const ENTRY_VERSIONS_MAX: usize = 256;

/// Entries per write batch of a round. The commit thread's writes queue
/// behind each batch in RocksDB's single writer, so a round is written in
/// slices that each take well under a millisecond, not in one batch of
/// a hundred thousand entries that would hold every answer for tenths of
/// a second.
const ROUND_BATCH_ENTRIES: usize = 1024;

/// Events noted since the last round before the next one starts, unless
/// the store's options set it ([`crate::StoreOptions::index_every_events`]).
/// Larger rounds cover more versions per entry (fewer entries), at the
/// cost of memory and of what a restart after a crash indexes again:
/// usually one to two rounds' worth, at most [`NOTED_ROUNDS_MAX`] + 1
/// when the indexer falls behind. An event noted costs 16 bytes in its
/// aggregate's list; an aggregate new to the round costs a map slot and
/// that list's first allocation, about 130 bytes together, and as much
/// again while its round is written.
pub const INDEX_EVERY_EVENTS: usize = 1 << 19;

/// Longest an event stays noted before a round writes it, however few
/// events follow, unless the store's options set it
/// ([`crate::StoreOptions::index_within`]). Without it a quiet engine
/// would hold its last events in memory for good (a passivated
/// enrollment's among them), and a crash after a quiet day would index
/// them again at the next start. A round of a few events costs a write
/// batch of a few entries.
pub const INDEX_WITHIN: Duration = Duration::from_secs(5);

/// Rounds' worth of events that may be noted while a round is being
/// written before [`Index::note`] holds its caller back: with the round
/// being written (at most as many), the bound on the events held in
/// memory, and so on what a restart after a crash indexes again.
pub const NOTED_ROUNDS_MAX: usize = 2;

/// An aggregate's noted (version, sequence) pairs, oldest first.
type Runs = HashMap<Uuid, Vec<(u64, u64)>>;

/// What is noted and not yet indexed in the store.
struct Pending {
    /// Noted since the current round took its share.
    noted: Runs,
    noted_events: usize,
    /// When the oldest event in `noted` was noted: a round is due
    /// [`Index::within`] after it.
    noted_since: Option<Instant>,
    /// The sequence of the newest noted event: the cursor a round taking
    /// `noted` writes.
    noted_through: u64,
    /// The round being written, still read from here until it is done.
    writing: Option<Arc<Runs>>,
    /// The events in `writing`.
    writing_events: usize,
    /// Aggregates in the last round taken: room made up front for the
    /// one after a full round, so that `note` does not regrow the map on
    /// the commit thread.
    last_round_aggregates: usize,
    /// Why a round's write failed; the store takes no more writes.
    failed: Option<String>,
    /// The store is closing: the indexer writes what is left and ends.
    stopping: bool,
}

/// Counters of the indexer, since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Rounds written (those while opening included).
    pub rounds: u64,
    /// Events they indexed.
    pub events: u64,
    /// Entries they wrote: `events / entries` is how many versions an
    /// entry covers on average.
    pub entries: u64,
    /// Events noted and not yet indexed in the store, now.
    pub pending_events: u64,
}

/// The noted events and the indexer's state, shared by every clone of a
/// store and its indexer thread.
pub(crate) struct Index {
    state: Mutex<Pending>,
    /// Signalled when a round is due or the store closes (the indexer
    /// waits for it), and when a round ends (writers held back wait).
    changed: Condvar,
    /// Held for a whole round: one round at a time, whoever runs it.
    round: Mutex<()>,
    every_events: usize,
    /// A round is due this long after the oldest noted event, if
    /// `every_events` did not make it due first.
    within: Duration,
    stats: Mutex<IndexStats>,
}

impl Index {
    /// An index whose store holds every event up to `indexed_through`,
    /// after `opening` (the rounds written while the store opened).
    pub(crate) fn new(
        indexed_through: u64,
        every_events: usize,
        within: Duration,
        opening: IndexStats,
    ) -> Index {
        Index {
            state: Mutex::new(Pending {
                noted: Runs::new(),
                noted_events: 0,
                noted_since: None,
                noted_through: indexed_through,
                writing: None,
                writing_events: 0,
                last_round_aggregates: 0,
                failed: None,
                stopping: false,
            }),
            changed: Condvar::new(),
            round: Mutex::new(()),
            every_events: every_events.max(1),
            within,
            stats: Mutex::new(opening),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding it left plain data behind; carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes durable events, each (aggregate, version, sequence), in
    /// sequence order. Holds the caller back while more than
    /// [`NOTED_ROUNDS_MAX`] rounds' worth wait for a round being written.
    /// Fails once a round could not be written: the store then takes no
    /// more writes (its caller stops, as for a failed write of its own).
    pub(crate) fn note(&self, events: &[(Uuid, u64, u64)]) -> Result<(), StoreError> {
        let mut pending = self.lock();
        if let Some(cause) = &pending.failed {
            return Err(failed(cause));
        }
        let Some(&(_, _, last)) = events.last() else {
            return Ok(());
        };
        for &(aggregate, version, seq) in events {
            pending
                .noted
                .entry(aggregate)
                .or_default()
                .push((version, seq));
        }
        pending.noted_events += events.len();
        pending.noted_through = last;
        if pending.noted_since.is_none() {
            // The indexer waits without a deadline while nothing is
            // noted: it learns the new one's.
            pending.noted_since = Some(Instant::now());
            self.changed.notify_all();
        } else if pending.noted_events >= self.every_events {
            self.changed.notify_all();
        }
        while pending.noted_events >= self.every_events * NOTED_ROUNDS_MAX
            && pending.writing.is_some()
            && pending.failed.is_none()
        {
            pending = self
                .changed
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }

    /// The noted, not yet indexed (version, sequence) pairs of an
    /// aggregate with versions in `from..=to`, oldest first (possibly
    /// with gaps where the store has them).
    pub(crate) fn sequences(&self, aggregate: Uuid, from: u64, to: u64) -> Vec<(u64, u64)> {
        let pending = self.lock();
        let mut out = Vec::new();
        for runs in pending
            .writing
            .as_deref()
            .into_iter()
            .chain([&pending.noted])
        {
            if let Some(run) = runs.get(&aggregate) {
                let start = run.partition_point(|(version, _)| *version < from);
                out.extend(
                    run[start..]
                        .iter()
                        .take_while(|(version, _)| *version <= to),
                );
            }
        }
        out
    }

    /// The newest noted version of an aggregate, if it has one in memory.
    pub(crate) fn newest_version(&self, aggregate: Uuid) -> Option<u64> {
        let pending = self.lock();
        [pending.writing.as_deref(), Some(&pending.noted)]
            .into_iter()
            .flatten()
            .filter_map(|runs| runs.get(&aggregate)?.last().map(|(version, _)| *version))
            .max()
    }

    /// Fails once a round could not be written (see [`Index::note`]).
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match &self.lock().failed {
            Some(cause) => Err(failed(cause)),
            None => Ok(()),
        }
    }

    pub(crate) fn stats(&self) -> IndexStats {
        let pending_events = {
            let pending = self.lock();
            pending.noted_events + pending.writing_events
        };
        IndexStats {
            pending_events: pending_events as u64,
            ..*self.stats.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// Writes what is noted as one round. `Ok(false)` if nothing was.
    pub(crate) fn round(&self, db: &DB) -> Result<bool, StoreError> {
        let _one_at_a_time = self.round.lock().unwrap_or_else(|e| e.into_inner());
        // Allocated before the lock is taken: `note` waits for none of it.
        // Only after a full round, when another is likely to follow: a
        // round the clock or a flush made due is a quiet spell's, and an
        // empty map made for a busy one's aggregates would hold tens of
        // bytes per aggregate in memory until the next round.
        let capacity = {
            let pending = self.lock();
            if pending.noted_events >= self.every_events {
                pending.last_round_aggregates
            } else {
                0
            }
        };
        let next = Runs::with_capacity(capacity);
        let (runs, events, through) = {
            let mut pending = self.lock();
            if let Some(cause) = &pending.failed {
                return Err(failed(cause));
            }
            if pending.noted_events == 0 {
                return Ok(false);
            }
            let runs = Arc::new(std::mem::replace(&mut pending.noted, next));
            let events = std::mem::take(&mut pending.noted_events);
            pending.noted_since = None;
            pending.writing = Some(runs.clone());
            pending.writing_events = events;
            pending.last_round_aggregates = runs.len();
            (runs, events, pending.noted_through)
        };
        // A panic in the write leaves the round in `writing`, where readers
        // still find it, and stops the store as a failed write would.
        let guard = FailOnPanic(self);
        let written = write_round(db, &runs, through);
        drop(guard);
        drop(runs);
        let mut pending = self.lock();
        match &written {
            Ok(entries) => {
                pending.writing = None;
                pending.writing_events = 0;
                let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                stats.rounds += 1;
                stats.events += events as u64;
                stats.entries += *entries as u64;
            }
            Err(err) => {
                // Kept in `writing`: readers still find those events.
                tracing::error!(cause = %err, "writing the aggregate index failed; the store takes no more writes");
                pending.failed = Some(err.to_string());
            }
        }
        self.changed.notify_all();
        drop(pending);
        written.map(|_| true)
    }

    /// The indexer thread's loop: a round whenever one is due (enough
    /// events noted, or the oldest of them noted [`Index::within`] ago),
    /// and a last one when the store closes, so a clean close leaves
    /// nothing to index again at the next open.
    fn run(&self, db: &DB) {
        loop {
            let stopping = {
                let mut pending = self.lock();
                loop {
                    if pending.stopping
                        || pending.failed.is_some()
                        || pending.noted_events >= self.every_events
                    {
                        break;
                    }
                    pending = match pending.noted_since {
                        None => self
                            .changed
                            .wait(pending)
                            .unwrap_or_else(|e| e.into_inner()),
                        Some(since) => {
                            let waited = since.elapsed();
                            if waited >= self.within {
                                break;
                            }
                            self.changed
                                .wait_timeout(pending, self.within - waited)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                    };
                }
                if pending.failed.is_some() {
                    return;
                }
                pending.stopping
            };
            if self.round(db).is_err() || stopping {
                return;
            }
        }
    }
}

/// Marks the index failed if dropped by a panic in a round's write (see
/// [`Index::round`]): otherwise the round would stay in `writing` for
/// good, no round would follow, and `note` would in the end hold the
/// commit thread for ever instead of stopping the engine.
struct FailOnPanic<'a>(&'a Index);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut pending = self.0.lock();
            pending.failed = Some("the indexer panicked while writing a round".into());
            self.0.changed.notify_all();
        }
    }
}

fn failed(cause: &str) -> StoreError {
    StoreError::Io(format!(
        "the aggregate index could not be written, so the store takes no more writes: {cause}"
    ))
}

/// The indexer thread of a store: started when the store opens, told to
/// stop (after a last round) and joined when the last clone of the store
/// is dropped.
pub(crate) struct Indexer {
    index: Arc<Index>,
    thread: Option<JoinHandle<()>>,
}

impl Indexer {
    pub(crate) fn start(index: Arc<Index>, db: Arc<DB>) -> Result<Indexer, StoreError> {
        let thread = std::thread::Builder::new()
            .name("loyalty-index".into())
            .spawn({
                let index = index.clone();
                move || index.run(&db)
            })
            .map_err(|e| StoreError::Io(format!("cannot start the indexer thread: {e}")))?;
        Ok(Indexer {
            index,
            thread: Some(thread),
        })
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.index.lock().stopping = true;
        self.index.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes a round's entries, sorted, in slices of [`ROUND_BATCH_ENTRIES`],
/// with the cursor `through` in the last slice. Returns how many entries.
fn write_round(db: &DB, runs: &Runs, through: u64) -> Result<usize, StoreError> {
    let mut entries: Vec<([u8; keys::AGGREGATE_VERSION_BYTES], Vec<u8>)> = Vec::new();
    for (aggregate, run) in runs {
        // A run of consecutive versions per entry (an aggregate's versions
        // always follow one another; a break starts a new entry anyway).
        let mut start = 0;
        while start < run.len() {
            let mut end = start + 1;
            while end < run.len()
                && end - start < ENTRY_VERSIONS_MAX
                && run[end].0 == run[end - 1].0 + 1
            {
                end += 1;
            }
            let newest = run[end - 1].0;
            let value = run[start..end]
                .iter()
                .flat_map(|(_, seq)| keys::sequence(*seq))
                .collect();
            entries.push((keys::aggregate_version(aggregate.as_bytes(), newest), value));
            start = end;
        }
    }
    // Sorted, so each insert continues where the last one ended.
    entries.sort_unstable_by_key(|entry| entry.0);
    let index = cf(db, Cf::Aggregate)?;
    let meta = cf(db, Cf::Meta)?;
    let cursor = envelope::encode(Kind::Meta, &through)?;
    let count = entries.len();
    let mut slices = entries.chunks(ROUND_BATCH_ENTRIES).peekable();
    if slices.peek().is_none() {
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, keys::meta::INDEX_CURSOR, &cursor);
        db.write_opt(batch, &unsynced())?;
    }
    while let Some(slice) = slices.next() {
        let mut batch = WriteBatch::default();
        for (key, value) in slice {
            batch.put_cf(index, key, value);
        }
        if slices.peek().is_none() {
            batch.put_cf(meta, keys::meta::INDEX_CURSOR, &cursor);
        }
        db.write_opt(batch, &unsynced())?;
    }
    Ok(count)
}

fn unsynced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(false);
    options
}

fn cf(db: &DB, cf: Cf) -> Result<&rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(cf.name())
        .ok_or_else(|| StoreError::Io(format!("column family {} is not open", cf.name())))
}

/// The index cursor the store holds: every event up to it is indexed.
/// `None` if the store has none (a directory of format 4 or older, or a
/// new one, before the format is written).
pub(crate) fn cursor(db: &DB) -> Result<Option<u64>, StoreError> {
    match db.get_cf(cf(db, Cf::Meta)?, keys::meta::INDEX_CURSOR)? {
        None => Ok(None),
        Some(bytes) => {
            envelope::decode(Kind::Meta, &bytes, || "meta/index-cursor".into()).map(Some)
        }
    }
}

/// The cursor's put, for the batch that writes the data format.
pub(crate) fn cursor_value(through: u64) -> Result<Vec<u8>, StoreError> {
    envelope::encode(Kind::Meta, &through)
}

/// Indexes every log record after `cursor`, in rounds of `every_events`
/// (while the store opens, before the indexer thread starts). Returns
/// what its rounds wrote.
pub(crate) fn index_log_after(
    db: &DB,
    cursor: u64,
    every_events: usize,
) -> Result<IndexStats, StoreError> {
    let mut options = ReadOptions::default();
    options.fill_cache(false);
    options.set_readahead_size(4 << 20);
    let start = keys::sequence(cursor.saturating_add(1));
    let mut runs = Runs::new();
    let mut in_round = 0usize;
    let mut stats = IndexStats::default();
    let mut through = cursor;
    for item in db.iterator_cf_opt(
        cf(db, Cf::Log)?,
        options,
        IteratorMode::From(&start, Direction::Forward),
    ) {
        let (key, value) = item?;
        let seq = keys::parse_sequence(&key).ok_or_else(|| StoreError::Corrupt {
            what: "log column family".into(),
            detail: format!("key of {} bytes is not a sequence", key.len()),
        })?;
        let record: LogRecord =
            envelope::decode(Kind::LogRecord, &value, || format!("log record {seq}"))?;
        runs.entry(record.aggregate_id)
            .or_default()
            .push((record.version, seq));
        through = seq;
        in_round += 1;
        if in_round >= every_events.max(1) {
            stats.entries += write_round(db, &runs, through)? as u64;
            stats.events += in_round as u64;
            stats.rounds += 1;
            runs.clear();
            in_round = 0;
        }
    }
    if in_round > 0 {
        stats.entries += write_round(db, &runs, through)? as u64;
        stats.events += in_round as u64;
        stats.rounds += 1;
    }
    Ok(stats)
}

/// The (version, sequence) pairs an entry holds, oldest first; `None` if
/// its value is not a whole number of sequences, at least one and no more
/// than its newest version.
pub(crate) fn entry_sequences(
    newest: u64,
    value: &[u8],
) -> Option<impl Iterator<Item = (u64, u64)> + '_> {
    let count = value.len() / keys::SEQUENCE_BYTES;
    if count == 0 || !value.len().is_multiple_of(keys::SEQUENCE_BYTES) || count as u64 > newest {
        return None;
    }
    let oldest = newest + 1 - count as u64;
    Some(
        value
            .chunks_exact(keys::SEQUENCE_BYTES)
            .zip(oldest..)
            .map(|(seq, version)| (version, keys::parse_sequence(seq).unwrap_or_default())),
    )
}
