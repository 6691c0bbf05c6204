//! [`Store`]: the one handle on a data directory.

use crate::envelope::{self, Kind};
use crate::error::StoreError;
use crate::index::{self, Index, IndexStats, Indexer};
use crate::key_digests::{KeyDigests, KEY_DIGESTS_MAX};
use crate::keys::{self, Cf};
use crate::records::{
    answer, IdempotencyRecord, LogRecord, SnapshotRecord, SnapshotRecordRef, SnapshotRecordV1,
    SnapshotRecordV2,
};
use crate::recovery::{self, RecoveryReport};
use crate::retention::{duration_ms, IdempotencyRetention, RecordLayout, RetentionFilterFactory};
use loyalty_engine::enrollment::{Enrollment, EnrollmentEvent};
use loyalty_engine::{DomainEvent, EnrollmentId, Timestamp};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBRecoveryMode, Direction,
    IteratorMode, MemtableFactory, Options, ReadOptions, SliceTransform, WriteBatch, WriteOptions,
    DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How much of the log start-up reads back and checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyOnOpen {
    /// Every record: decode and checksum the whole log.
    Full,
    /// Only the newest this-many records (and the log's shape).
    Tail(u64),
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub verify: VerifyOnOpen,
    /// RocksDB block cache shared by all column families.
    pub block_cache_bytes: usize,
    /// Hash buckets of the aggregate index's and the idempotency records'
    /// memtables. Tests set 1, so that every id shares one bucket.
    pub memtable_buckets: usize,
    /// How long idempotency records are kept before compactions drop them
    /// ([`retention`](crate::retention)), judged by the wall clock; `None`
    /// (the default here) keeps them for ever. `loyalty serve` sets it
    /// from its configuration; a library user or a test that writes
    /// records with made-up times leaves it off.
    pub idempotency_retention: Option<IdempotencyRetention>,
    /// Events noted between two rounds of the aggregate index's writer
    /// ([`index`](crate::index)). Tests set a few, so that rounds, and
    /// kills between them, happen within a short run.
    pub index_every_events: usize,
    /// Longest an event waits in memory for the aggregate index's writer
    /// when fewer than `index_every_events` follow it
    /// ([`index::INDEX_WITHIN`]).
    pub index_within: std::time::Duration,
}

impl StoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreOptions {
            path: path.into(),
            verify: VerifyOnOpen::Full,
            block_cache_bytes: 256 << 20,
            memtable_buckets: MEMTABLE_BUCKETS,
            idempotency_retention: None,
            index_every_events: index::INDEX_EVERY_EVENTS,
            index_within: index::INDEX_WITHIN,
        }
    }
}

/// An event ready for the log: encoded by the actor that decided it, so
/// the single commit thread only assigns sequence numbers and writes.
#[derive(Clone, Debug)]
pub struct EncodedEvent {
    pub aggregate_id: Uuid,
    pub version: u64,
    /// `envelope(LogRecord)`.
    pub value: Vec<u8>,
    /// The idempotency record of the transaction this event records, as
    /// [`records::answer::encode`](crate::records::answer::encode) makes it:
    /// written to `answers` under the event's sequence.
    pub answer: Option<Vec<u8>>,
}

/// A keyed write beside the events (snapshot, idempotency, catalog row).
#[derive(Clone, Debug)]
pub struct Put {
    pub cf: Cf,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// An enrollment read back from its snapshot and the events after it.
#[derive(Clone, Debug)]
pub struct LoadedEnrollment {
    pub state: Enrollment,
    /// The snapshot's version (0 for none).
    pub snapshot_version: u64,
    /// The snapshot's key digests, if it had them and no event came after
    /// it; otherwise [`Store::key_digests`] reads them.
    pub keys: Option<KeyDigests>,
}

/// Everything one command makes durable, atomically.
#[derive(Clone, Debug, Default)]
pub struct CommitGroup {
    pub events: Vec<EncodedEvent>,
    pub puts: Vec<Put>,
}

/// The framing of one record in a RocksDB write batch, at most: a tag
/// byte, then the column family's id, the key's length and the value's
/// length, each a varint of up to 5 bytes.
const BATCH_RECORD_FRAMING_MAX_BYTES: usize = 16;

/// A write batch's header: its sequence number and record count.
const BATCH_HEADER_BYTES: usize = 12;

impl CommitGroup {
    /// The most bytes this group takes in a write batch: each event's log
    /// record and answer, each put, all with their framing.
    pub fn batch_bytes(&self) -> usize {
        let events: usize = self
            .events
            .iter()
            .map(|event| {
                let log = keys::SEQUENCE_BYTES + event.value.len();
                let answer = event.answer.as_ref().map_or(0, |answer| {
                    keys::SEQUENCE_BYTES + answer.len() + BATCH_RECORD_FRAMING_MAX_BYTES
                });
                log + answer + BATCH_RECORD_FRAMING_MAX_BYTES
            })
            .sum();
        let puts: usize = self
            .puts
            .iter()
            .map(|put| put.key.len() + put.value.len() + BATCH_RECORD_FRAMING_MAX_BYTES)
            .sum();
        events + puts
    }
}

/// Several commit groups gathered into one write and one fsync.
pub struct Batch {
    inner: WriteBatch,
    /// Events in the batch, for metrics.
    pub events: usize,
    /// The room made for it up front ([`Store::batch_for`]), 0 if none.
    reserved_bytes: usize,
    /// Each event's (aggregate, version, sequence), in sequence order: noted
    /// for the aggregate index once the batch is written.
    index: Vec<(Uuid, u64, u64)>,
}

impl Batch {
    /// The batch's size as RocksDB will write it.
    pub fn bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }

    /// The room [`Store::batch_for`] made for it.
    pub fn reserved_bytes(&self) -> usize {
        self.reserved_bytes
    }
}

/// A RocksDB data directory. Cheap to clone; every clone shares one DB.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    path: PathBuf,
    /// Idempotency records compactions have dropped since open, past
    /// their retention.
    expired: Arc<AtomicU64>,
    /// How long idempotency records are kept (`None`: for ever).
    retention: Option<IdempotencyRetention>,
    /// The aggregate index's events noted and not yet written.
    index: Arc<Index>,
    /// Its writer thread, stopped when the last clone is dropped.
    _indexer: Arc<Indexer>,
}

/// Buckets of the hash memtables (aggregate index, idempotency): one
/// pointer each (2 MiB per memtable), about as many as the enrollments
/// active between two flushes of a busy engine.
pub const MEMTABLE_BUCKETS: usize = 1 << 18;

/// The data directory format this build writes.
///
/// 5 since the aggregate index is written off the commit path
/// ([`index`](crate::index)): one entry may cover many versions, and
/// `meta/index-cursor` says how much of the log it holds; a build from
/// before would take such an entry for damage, and miss the events past
/// the cursor. 4 since idempotency records are kept by the sequence of their event in
/// `answers` ([`crate::records::answer`]): a build from before would not
/// look there, and take a retry for a new transaction. 3 since snapshots
/// carry key digests that age with the records' retention (envelope format
/// [`SNAPSHOT_FORMAT`](crate::envelope::SNAPSHOT_FORMAT)); 2 since
/// idempotency records put `recorded_at` first (envelope format
/// [`IDEMPOTENCY_FORMAT`](crate::envelope::IDEMPOTENCY_FORMAT)). A
/// directory of an older format is upgraded when opened: this build reads
/// every record of it. The number is what stops a build from before a
/// change at start-up ("data directory format 4 is not supported"),
/// instead of letting it serve and then fail on the first record it
/// cannot read.
pub const DATA_FORMAT: u32 = 5;

/// Older data directory formats this build reads, and upgrades on open.
/// Their index has an entry of one version for every event, which is an
/// entry of this format too.
const UPGRADED_FORMATS: [u32; 4] = [1, 2, 3, 4];

/// Versions in the first window a lookup of a key in `answers` reads
/// ([`Store::idempotency_up_to`]); each next window is eight times wider.
const ANSWER_WINDOW_FIRST_VERSIONS: u64 = 16;

/// Checks the directory's data format, and writes this build's (with the
/// index cursor) if it is new or of an older format it upgrades.
fn check_format(db: &DB) -> Result<(), StoreError> {
    let meta = db
        .cf_handle(Cf::Meta.name())
        .expect("every column family is created at open");
    let cursor = match db.get_cf(meta, keys::meta::FORMAT)? {
        // A new directory: nothing is indexed (nor logged) yet.
        None => 0,
        Some(bytes) => {
            let found: u32 = envelope::decode(Kind::Meta, &bytes, || "meta/format".into())?;
            if found == DATA_FORMAT {
                return Ok(());
            }
            if !UPGRADED_FORMATS.contains(&found) {
                return Err(StoreError::Format {
                    found,
                    expected: DATA_FORMAT,
                });
            }
            // Those formats indexed every event in its own write batch.
            store_next_sequence(db)? - 1
        }
    };
    // Synced, and before anything is written in the new format.
    let mut batch = WriteBatch::default();
    batch.put_cf(
        meta,
        keys::meta::FORMAT,
        envelope::encode(Kind::Meta, &DATA_FORMAT)?,
    );
    batch.put_cf(meta, keys::meta::INDEX_CURSOR, index::cursor_value(cursor)?);
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync)?;
    Ok(())
}

/// The sequence after the newest log record: where the next commit starts.
pub(crate) fn store_next_sequence(db: &DB) -> Result<u64, StoreError> {
    let log = db
        .cf_handle(Cf::Log.name())
        .expect("every column family is created at open");
    let mut iter = db.iterator_cf(log, IteratorMode::End);
    match iter.next() {
        None => Ok(1),
        Some(item) => {
            let (key, _) = item?;
            let seq = keys::parse_sequence(&key).ok_or_else(|| StoreError::Corrupt {
                what: "log column family".into(),
                detail: format!("key of {} bytes is not a sequence", key.len()),
            })?;
            Ok(seq + 1)
        }
    }
}

/// Read options for one id's keys in the aggregate index or the
/// idempotency records: RocksDB stops at the id's last key, so neither the
/// hash memtable's bucket (which may hold other ids) nor the table files
/// are read past it. Readers still check the id of every key they use.
fn one_id() -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_prefix_same_as_start(true);
    options
}

impl Store {
    /// Opens (or creates) a data directory and checks it before anything is
    /// served. Damage refuses with [`StoreError::Corrupt`] naming where.
    pub fn open(options: &StoreOptions) -> Result<(Store, RecoveryReport), StoreError> {
        let started = std::time::Instant::now();
        let path = options.path.clone();
        std::fs::create_dir_all(&path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let expired = Arc::new(AtomicU64::new(0));
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        // A torn last write was never acknowledged (its sync never returned),
        // so it may be dropped; corruption anywhere else must refuse to open.
        // RocksDB's default (point-in-time) would silently drop everything
        // after a damaged record, acknowledged or not.
        db_options.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        db_options.set_paranoid_checks(true);
        db_options.increase_parallelism(2);
        db_options.set_max_background_jobs(2);
        db_options.set_write_buffer_size(64 << 20);
        db_options.set_max_total_wal_size(1 << 30);
        // One thread (the commit thread) writes nearly everything, so
        // concurrent memtable inserts buy nothing; and the hash memtables of
        // the aggregate index and the idempotency records (below) do not
        // support them.
        db_options.set_allow_concurrent_memtable_write(false);
        let descriptors = Cf::ALL.iter().map(|cf| {
            let mut cf_options = Options::default();
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            cf_options.set_block_based_table_factory(&table);
            cf_options.set_write_buffer_size(64 << 20);
            cf_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if *cf == Cf::Catalog {
                // Most lookups here are for keys that do not exist (a new
                // customer's external id, a new membership): a bloom filter
                // on the memtable answers those without walking its skip
                // list. The idempotency records have none: an enrollment's
                // key digests already spare nearly every lookup of a new
                // key, and the few left find the key's short hashed list
                // at once, so a filter would only add an insert per earn.
                cf_options.set_memtable_prefix_bloom_ratio(0.05);
                cf_options.set_memtable_whole_key_filtering(true);
            }
            if *cf == Cf::Idempotency || *cf == Cf::Aggregate {
                // Every transaction inserts an index entry keyed (enrollment,
                // version) and an idempotency record keyed (enrollment, key):
                // each a random place in one big skip list, a cache miss per
                // level, on the commit thread after the fsync. A hash of
                // skip lists, one per enrollment id, makes each insert a
                // bucket lookup and a short walk (the commit thread's CPU
                // per NATS earn fell by 10-15 % with the idempotency family
                // hashed, and by as much again with the index). Such a
                // memtable is only read forward from a key of the id wanted
                // (no backward seeks, no seeks to either end), and a bucket
                // may hold several ids: every reader of these families
                // stops at the first key of another id.
                cf_options.set_prefix_extractor(SliceTransform::create_fixed_prefix(
                    keys::ID_PREFIX_BYTES,
                ));
                cf_options.set_memtable_factory(MemtableFactory::HashSkipList {
                    bucket_count: options.memtable_buckets.max(1),
                    height: 8,
                    branching_factor: 4,
                });
            }
            if *cf == Cf::Idempotency || *cf == Cf::Answers {
                if let Some(retention) = options.idempotency_retention {
                    cf_options.set_compaction_filter_factory(RetentionFilterFactory {
                        retention,
                        dropped: expired.clone(),
                        layout: if *cf == Cf::Answers {
                            RecordLayout::Answer
                        } else {
                            RecordLayout::Keyed
                        },
                    });
                    cf_options
                        .set_periodic_compaction_seconds(retention.periodic_compaction().as_secs());
                }
            }
            ColumnFamilyDescriptor::new(cf.name(), cf_options)
        });
        let db = DB::open_cf_descriptors(&db_options, &path, descriptors).map_err(|e| {
            let detail = e.into_string();
            if detail.contains("Corruption") {
                StoreError::Corrupt {
                    what: format!("data directory {}", path.display()),
                    detail,
                }
            } else {
                StoreError::Open {
                    path: path.display().to_string(),
                    detail,
                }
            }
        })?;
        let db = Arc::new(db);
        check_format(&db)?;
        let mut report = recovery::recover(&db, options.verify)?;
        // Before anything is served: what a crash left unindexed.
        let cursor = index::cursor(&db)?.ok_or_else(|| StoreError::Corrupt {
            what: "meta/index-cursor".into(),
            detail: format!("missing in a directory of format {DATA_FORMAT}"),
        })?;
        if cursor >= report.next_sequence {
            return Err(StoreError::Corrupt {
                what: "meta/index-cursor".into(),
                detail: format!(
                    "says the index holds the log up to {cursor}, but the log ends at {}",
                    report.next_sequence - 1
                ),
            });
        }
        let opening = index::index_log_after(&db, cursor, options.index_every_events)?;
        report.events_indexed = opening.events;
        let index = Arc::new(Index::new(
            report.next_sequence - 1,
            options.index_every_events,
            options.index_within,
            opening,
        ));
        let indexer = Indexer::start(index.clone(), db.clone())?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        let store = Store {
            db,
            path,
            expired,
            retention: options.idempotency_retention,
            index,
            _indexer: Arc::new(indexer),
        };
        Ok((store, report))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }

    pub fn batch(&self) -> Batch {
        Batch {
            inner: WriteBatch::default(),
            events: 0,
            reserved_bytes: 0,
            index: Vec::new(),
        }
    }

    /// An empty batch with room for these groups, for the commit thread.
    ///
    /// Why: a batch is one buffer. Filled with the commit thread's
    /// thousands of events, it regrew by doubling, copying what it held
    /// each time and, while the C library's malloc served blocks that
    /// large from fresh mappings, faulting in new pages. Both were on the
    /// commit thread, which every answer waits for (notes item 27).
    pub fn batch_for<'a>(&self, groups: impl IntoIterator<Item = &'a CommitGroup>) -> Batch {
        let (mut bytes, mut events) = (BATCH_HEADER_BYTES, 0);
        for group in groups {
            bytes += group.batch_bytes();
            events += group.events.len();
        }
        Batch {
            inner: WriteBatch::with_capacity_bytes(bytes),
            events: 0,
            reserved_bytes: bytes,
            index: Vec::with_capacity(events),
        }
    }

    /// Adds one commit group to a batch, numbering its events from
    /// `next_sequence` (which it advances). Returns the group's last
    /// sequence, or the one before it for a group with no events.
    pub fn add_group(
        &self,
        batch: &mut Batch,
        group: &CommitGroup,
        next_sequence: &mut u64,
    ) -> u64 {
        self.add_groups(batch, [group], next_sequence)[0]
    }

    /// Adds many commit groups to a batch (what the commit thread does).
    /// Returns each group's last sequence, as [`Store::add_group`] does.
    ///
    /// Same contents as adding them one by one, in another order: the
    /// log's and the answers' keys are already ascending, and the puts'
    /// keys are sorted before they go in. RocksDB inserts a batch into its
    /// memtable skip lists one key after the other, reusing the previous
    /// key's position; random keys (enrollment ids) cost a full search
    /// with a cache miss per level, sorted ones a short walk (in the two
    /// hashed families, within one id's list). Equal keys keep their order
    /// (a stable sort), so the later put still wins. The events' index
    /// entries are not in the batch: [`Store::write`] notes them for the
    /// indexer ([`index`](crate::index)).
    pub fn add_groups<'a>(
        &self,
        batch: &mut Batch,
        groups: impl IntoIterator<Item = &'a CommitGroup>,
        next_sequence: &mut u64,
    ) -> Vec<u64> {
        let log = self.cf(Cf::Log);
        let answers = self.cf(Cf::Answers);
        let mut puts: Vec<&Put> = Vec::new();
        let mut lasts = Vec::new();
        for group in groups {
            for event in &group.events {
                let seq = *next_sequence;
                batch.inner.put_cf(log, keys::sequence(seq), &event.value);
                if let Some(answer) = &event.answer {
                    // In sequence order, as the log's: no search, no merge.
                    batch.inner.put_cf(answers, keys::sequence(seq), answer);
                }
                batch.index.push((event.aggregate_id, event.version, seq));
                *next_sequence += 1;
            }
            puts.extend(&group.puts);
            batch.events += group.events.len();
            lasts.push(*next_sequence - 1);
        }
        puts.sort_by(|a, b| (a.cf as u8, &a.key).cmp(&(b.cf as u8, &b.key)));
        for put in puts {
            batch.inner.put_cf(self.cf(put.cf), &put.key, &put.value);
        }
        lasts
    }

    /// Writes a batch atomically. With `sync`, the write-ahead log is
    /// fsync'd before this returns: the only path by which an answer of
    /// success becomes possible. Then notes its events for the aggregate
    /// index, which may hold the caller back while the indexer catches up
    /// ([`index`](crate::index)); an error after the write means the
    /// indexer failed, and the store takes no more writes.
    ///
    /// One writer at a time: events must be noted in sequence order.
    pub fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        // Not one more batch once the index cannot be written.
        self.index.check()?;
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch.inner, &options)?;
        self.index.note(&batch.index)
    }

    /// Writes every event noted for the aggregate index to the store now,
    /// instead of when its next round is due (tests, and [`Store::flush`]).
    pub fn index_now(&self) -> Result<(), StoreError> {
        self.index.round(&self.db).map(|_| ())
    }

    /// The aggregate index writer's counters (metrics).
    pub fn index_stats(&self) -> IndexStats {
        self.index.stats()
    }

    /// Whether the aggregate index could not be written: the store takes
    /// no more writes, and the engine stops as for a failed write of its
    /// own, without waiting for its next commit to find out.
    pub fn has_failed(&self) -> bool {
        self.index.check().is_err()
    }

    /// The sequence after the newest log record: where the next commit starts.
    pub fn next_sequence(&self) -> Result<u64, StoreError> {
        store_next_sequence(&self.db)
    }

    /// Log records after `after` (exclusive), oldest first, at most `limit`.
    pub fn read_log(&self, after: u64, limit: usize) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        let start = keys::sequence(after.saturating_add(1));
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(Cf::Log),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let seq = keys::parse_sequence(&key).unwrap_or_default();
            let record = envelope::decode(Kind::LogRecord, &value, || format!("log record {seq}"))?;
            out.push((seq, record));
        }
        Ok(out)
    }

    /// The log sequences of an aggregate's versions `from..=to` (fewer if
    /// it has fewer), checked to follow one another: from the events noted
    /// for the index and not yet written (read first, see
    /// [`index`](crate::index)), and from the index's entries, whose
    /// overlaps are merged.
    fn aggregate_sequences(
        &self,
        aggregate_id: Uuid,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut found: BTreeMap<u64, u64> = self
            .index
            .sequences(aggregate_id, from, to)
            .into_iter()
            .collect();
        // The first version not yet found: the entries are read until it
        // passes `to` (or they end).
        let mut next = from;
        let advance = |found: &BTreeMap<u64, u64>, next: &mut u64| {
            while *next <= to && found.contains_key(next) {
                *next += 1;
            }
        };
        advance(&found, &mut next);
        let id = aggregate_id.as_bytes();
        let start = keys::aggregate_version(id, from);
        let mut entries = self
            .db
            .raw_iterator_cf_opt(self.cf(Cf::Aggregate), one_id());
        entries.seek(start);
        while next <= to {
            let (Some(key), Some(value)) = (entries.key(), entries.value()) else {
                break;
            };
            let Some(newest) = keys::parse_aggregate_version(key, id) else {
                break;
            };
            let sequences =
                index::entry_sequences(newest, value).ok_or_else(|| StoreError::Corrupt {
                    what: format!("aggregate index of {aggregate_id} at version {newest}"),
                    detail: format!(
                        "a value of {} bytes is not a list of sequences",
                        value.len()
                    ),
                })?;
            for (version, seq) in sequences {
                if (from..=to).contains(&version) {
                    found.entry(version).or_insert(seq);
                }
            }
            advance(&found, &mut next);
            entries.next();
        }
        entries.status()?;
        if let Some((&version, _)) = found.range(next..).next() {
            return Err(StoreError::Corrupt {
                what: format!("aggregate index of {aggregate_id}"),
                detail: format!("version {next} is missing (found {version})"),
            });
        }
        Ok(found.into_iter().collect())
    }

    /// An aggregate's events with versions in `from..=to`, oldest first.
    /// Versions must be contiguous: a gap is damage, not an empty slot.
    pub fn aggregate_events(
        &self,
        aggregate_id: Uuid,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, LogRecord)>, StoreError> {
        let sequences = self.aggregate_sequences(aggregate_id, from, to)?;
        let log = self.cf(Cf::Log);
        let values = self
            .db
            .multi_get_cf(sequences.iter().map(|(_, seq)| (log, keys::sequence(*seq))));
        let mut out = Vec::with_capacity(sequences.len());
        for ((version, seq), value) in sequences.into_iter().zip(values) {
            let value = value?.ok_or_else(|| StoreError::Corrupt {
                what: format!("log record {seq}"),
                detail: format!("indexed as version {version} of {aggregate_id} but missing"),
            })?;
            let record: LogRecord =
                envelope::decode(Kind::LogRecord, &value, || format!("log record {seq}"))?;
            if record.aggregate_id != aggregate_id || record.version != version {
                return Err(StoreError::Corrupt {
                    what: format!("log record {seq}"),
                    detail: format!(
                        "index says {aggregate_id} v{version}, record says {} v{}",
                        record.aggregate_id, record.version
                    ),
                });
            }
            out.push((seq, record));
        }
        Ok(out)
    }

    /// The newest version an aggregate has in the log, if any.
    ///
    /// Walks the aggregate's index forward: the column family's memtable
    /// is hashed by aggregate id and cannot seek backwards. Only catalog
    /// aggregates and held keys' lookups ask (a program or customer has a
    /// handful of entries, a business one more per API key issued); an
    /// enrollment knows its version from its state.
    pub fn aggregate_version(&self, aggregate_id: Uuid) -> Result<Option<u64>, StoreError> {
        // Memory first, as for `aggregate_sequences`.
        let noted = self.index.newest_version(aggregate_id);
        let id = aggregate_id.as_bytes();
        let mut iter = self
            .db
            .raw_iterator_cf_opt(self.cf(Cf::Aggregate), one_id());
        iter.seek(keys::aggregate_version(id, 0));
        let mut newest = None;
        while let Some(version) = iter
            .key()
            .and_then(|k| keys::parse_aggregate_version(k, id))
        {
            newest = Some(version);
            iter.next();
        }
        iter.status()?;
        Ok(newest.max(noted))
    }

    /// Rebuilds an enrollment from its snapshot and the events after it.
    /// `None` if the enrollment has no history at all.
    pub fn load_enrollment(
        &self,
        id: EnrollmentId,
    ) -> Result<Option<LoadedEnrollment>, StoreError> {
        let snapshot = self.snapshot(id)?;
        let snapshot_version = snapshot.as_ref().map_or(0, |s| s.version);
        let (mut state, mut keys, from) = match snapshot {
            Some(snapshot) => (Some(snapshot.state), snapshot.keys, snapshot.version + 1),
            None => (None, None, 1),
        };
        let tail = self.aggregate_events(id.0, from, u64::MAX)?;
        if !tail.is_empty() {
            // The tail's keys are not in the snapshot's digests.
            keys = None;
        }
        for (seq, record) in tail {
            // Ids of programs, customers and businesses share the index: an
            // aggregate that starts with anything but an enrollment event
            // is simply not an enrollment.
            if record.version == 1
                && !matches!(
                    record.event,
                    DomainEvent::Enrollment(EnrollmentEvent::Enrolled { .. })
                )
            {
                return Ok(None);
            }
            let DomainEvent::Enrollment(event) = &record.event else {
                return Err(StoreError::Corrupt {
                    what: format!("log record {seq}"),
                    detail: format!(
                        "a {} event in enrollment {id}'s history",
                        record.event.event_type()
                    ),
                });
            };
            match state.as_mut() {
                None => {
                    if !matches!(event, EnrollmentEvent::Enrolled { .. }) {
                        return Err(StoreError::Corrupt {
                            what: format!("log record {seq}"),
                            detail: format!(
                                "enrollment {id} does not start with its Enrolled event"
                            ),
                        });
                    }
                    state = Some(Enrollment::from_enrolled(event, record.recorded_at));
                }
                Some(state) => state.apply(event, record.recorded_at),
            }
        }
        Ok(state.map(|state| LoadedEnrollment {
            state,
            snapshot_version,
            keys,
        }))
    }

    /// Digests of an enrollment's idempotency keys, read from their records
    /// at `now` (for an enrollment whose snapshot does not have them, or
    /// whose digests gave up and are due again), in both families that
    /// hold them. Reads at most [`KEY_DIGESTS_MAX`] + 1 records, the whole
    /// index to find those in `answers`, and keeps them out of the block
    /// cache: this is a one-off read, not a working set.
    pub fn key_digests(&self, id: EnrollmentId, now: Timestamp) -> Result<KeyDigests, StoreError> {
        let prefix = id.as_bytes();
        let mut options = one_id();
        options.fill_cache(false);
        if let Some(end) = (u128::from_be_bytes(*prefix)).checked_add(1) {
            options.set_iterate_upper_bound(end.to_be_bytes().to_vec());
        }
        let mut digests = Vec::new();
        // Held from the newest record's time if the clock has since been
        // set back (the store keeps a record by its own time). A record
        // whose time cannot be read counts as read now: reading it by its
        // key reports the damage.
        let mut newest = now;
        for item in self.db.iterator_cf_opt(
            self.cf(Cf::Idempotency),
            options,
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (key, value) = item?;
            let Some(key) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if let Ok(recorded_at) = IdempotencyRecord::recorded_at_of(&value) {
                newest = newest.max(recorded_at);
            }
            if digests.len() == KEY_DIGESTS_MAX {
                return Ok(KeyDigests::read_back(None, newest, self.keep_keys_for()));
            }
            digests.push(KeyDigests::digest_bytes(key));
        }
        let mut too_many = false;
        self.for_each_answer(id, |version, value| {
            if let Ok(recorded_at) = answer::recorded_at_of(value) {
                newest = newest.max(recorded_at);
            }
            if digests.len() == KEY_DIGESTS_MAX {
                too_many = true;
                return Ok(false);
            }
            let key = answer::key_of(value, || format!("answer of {id} v{version}"))?;
            digests.push(KeyDigests::digest_bytes(key));
            Ok(true)
        })?;
        if too_many {
            return Ok(KeyDigests::read_back(None, newest, self.keep_keys_for()));
        }
        digests.sort_unstable();
        digests.dedup();
        Ok(KeyDigests::read_back(
            Some(digests),
            newest,
            self.keep_keys_for(),
        ))
    }

    /// How long idempotency records are kept, so how long key digests need
    /// to hold a key ([`KeyDigests::insert`]); `None`: for ever.
    pub fn keep_keys_for(&self) -> Option<Duration> {
        self.retention.map(IdempotencyRetention::keep_for)
    }

    /// The snapshot of an enrollment, checked on the way out.
    pub fn snapshot(&self, id: EnrollmentId) -> Result<Option<SnapshotRecord>, StoreError> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(Cf::Snapshot), id.as_bytes())?
        else {
            return Ok(None);
        };
        let what = || format!("snapshot of {id}");
        let snapshot: SnapshotRecord = match envelope::format_of(&bytes) {
            Some(envelope::FORMAT) => {
                let old: SnapshotRecordV1 =
                    envelope::decode_as(envelope::FORMAT, Kind::Snapshot, &bytes, what)?;
                SnapshotRecord {
                    version: old.version,
                    state: old.state,
                    keys: None,
                }
            }
            Some(envelope::SNAPSHOT_FORMAT_V2) => {
                let old: SnapshotRecordV2 = envelope::decode_as(
                    envelope::SNAPSHOT_FORMAT_V2,
                    Kind::Snapshot,
                    &bytes,
                    what,
                )?;
                SnapshotRecord {
                    version: old.version,
                    state: old.state,
                    keys: old.keys.map(KeyDigests::from),
                }
            }
            _ => envelope::decode_as(envelope::SNAPSHOT_FORMAT, Kind::Snapshot, &bytes, what)?,
        };
        // Pair assertion with `snapshot_put`: what was checked before it was
        // written is checked again after it is read.
        if snapshot.state.version != snapshot.version || snapshot.state.enrollment_id != id {
            return Err(StoreError::Corrupt {
                what: format!("snapshot of {id}"),
                detail: format!(
                    "holds {} v{} as v{}",
                    snapshot.state.enrollment_id, snapshot.state.version, snapshot.version
                ),
            });
        }
        snapshot.state.check_invariants();
        if snapshot
            .keys
            .as_ref()
            .is_some_and(|keys| !keys.is_well_formed())
        {
            return Err(StoreError::Corrupt {
                what: format!("snapshot of {id}"),
                detail: "its key digests are not sorted and distinct".into(),
            });
        }
        Ok(Some(snapshot))
    }

    /// A snapshot write, to go into the same commit group as the events
    /// that reach its version. `keys` must hold the digest of every key
    /// with a record up to that version that the store still keeps by its
    /// retention, including the ones written in the same group; `None`
    /// when the writer does not know them.
    pub fn snapshot_put(state: &Enrollment, keys: Option<&KeyDigests>) -> Result<Put, StoreError> {
        state.check_invariants();
        let record = SnapshotRecordRef {
            version: state.version,
            state,
            keys,
        };
        Ok(Put {
            cf: Cf::Snapshot,
            key: state.enrollment_id.as_bytes().to_vec(),
            value: envelope::encode_as(envelope::SNAPSHOT_FORMAT, Kind::Snapshot, &record)?,
        })
    }

    /// The idempotency record of `key` for an enrollment, if the store
    /// still has it, looked for among all its versions (see
    /// [`Store::idempotency_up_to`]).
    pub fn idempotency(
        &self,
        enrollment: EnrollmentId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.idempotency_up_to(enrollment, key, None)
    }

    /// The idempotency record of `key` for an enrollment, if the store
    /// still has it: kept by key in `idempotency` (written for an
    /// enrollment past its key digests' bound, or before format 4), or
    /// else among the `answers` of its versions up to `newest_version`
    /// (every version if `None`), newest first.
    ///
    /// Only asked for a key whose digest the enrollment holds: a retry
    /// (usually of a recent transaction, found in the first window) or, in
    /// about one key of 2^32 / n, a new key sharing a digest, which reads
    /// the enrollment's whole index and the answers it points to.
    pub fn idempotency_up_to(
        &self,
        enrollment: EnrollmentId,
        key: &str,
        newest_version: Option<u64>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        if let Some(record) = self.idempotency_by_key(enrollment, key)? {
            return Ok(Some(record));
        }
        let newest = match newest_version {
            Some(version) => version,
            None => match self.aggregate_version(enrollment.0)? {
                Some(version) => version,
                None => return Ok(None),
            },
        };
        let answers = self.cf(Cf::Answers);
        // Windows of versions, newest first, each eight times the last.
        let mut to = newest;
        let mut width = ANSWER_WINDOW_FIRST_VERSIONS;
        while to >= 1 {
            let from = to.saturating_sub(width - 1).max(1);
            let sequences = self.aggregate_sequences(enrollment.0, from, to)?;
            let values = self.db.multi_get_cf(
                sequences
                    .iter()
                    .map(|(_, seq)| (answers, keys::sequence(*seq))),
            );
            for ((version, seq), value) in sequences.iter().zip(values).rev() {
                let Some(value) = value? else { continue };
                let what = || format!("answer of {enrollment} v{version} (log record {seq})");
                if answer::key_of(&value, what)? == key.as_bytes() {
                    return answer::decode(&value, what).map(|(_, record)| Some(record));
                }
            }
            if from == 1 {
                break;
            }
            to = from - 1;
            width = width.saturating_mul(8);
        }
        Ok(None)
    }

    /// The idempotency record of `key` kept by key in `idempotency`, if
    /// any: where an enrollment past its key digests' bound finds its keys
    /// once its records in `answers` are copied there.
    pub fn idempotency_by_key(
        &self,
        enrollment: EnrollmentId,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let db_key = keys::idempotency(enrollment.as_bytes(), key);
        match self.db.get_pinned_cf(self.cf(Cf::Idempotency), &db_key)? {
            None => Ok(None),
            Some(bytes) => IdempotencyRecord::decode(&bytes, || {
                format!("idempotency record {enrollment}/{key}")
            })
            .map(Some),
        }
    }

    /// Every idempotency record of an enrollment in `answers` that its
    /// retention still keeps at `now`, with its key: what an enrollment
    /// that gives up on its key digests copies to `idempotency`, where a
    /// key is found without its digest.
    pub fn answers_of(
        &self,
        enrollment: EnrollmentId,
        now: Timestamp,
    ) -> Result<Vec<(String, IdempotencyRecord)>, StoreError> {
        let kept_from = self
            .keep_keys_for()
            .map(|keep_for| Timestamp(now.0.saturating_sub(duration_ms(keep_for))));
        let mut out = Vec::new();
        self.for_each_answer(enrollment, |version, value| {
            let what = || format!("answer of {enrollment} v{version}");
            let (key, record) = answer::decode(value, what)?;
            if kept_from.is_none_or(|from| record.recorded_at >= from) {
                let key = String::from_utf8(key.to_vec()).map_err(|_| StoreError::Corrupt {
                    what: what(),
                    detail: "its key is not UTF-8".into(),
                })?;
                out.push((key, record));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `each` with the version and value of every answer an
    /// enrollment has, oldest first, until it returns `false`. Reads the
    /// whole index, and keeps what it reads out of the block cache: a
    /// one-off read, not a working set.
    fn for_each_answer(
        &self,
        enrollment: EnrollmentId,
        mut each: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let sequences = self.aggregate_sequences(enrollment.0, 1, u64::MAX)?;
        let answers = self.cf(Cf::Answers);
        let mut options = ReadOptions::default();
        options.fill_cache(false);
        for chunk in sequences.chunks(1024) {
            let values = self.db.multi_get_cf_opt(
                chunk.iter().map(|(_, seq)| (answers, keys::sequence(*seq))),
                &options,
            );
            for ((version, _), value) in chunk.iter().zip(values) {
                if let Some(value) = value? {
                    if !each(*version, &value)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    pub fn idempotency_put(
        enrollment: EnrollmentId,
        key: &str,
        record: &IdempotencyRecord,
    ) -> Result<Put, StoreError> {
        Ok(Put {
            cf: Cf::Idempotency,
            key: keys::idempotency(enrollment.as_bytes(), key),
            value: record.encode()?,
        })
    }

    /// A catalog row.
    pub fn catalog<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_pinned_cf(self.cf(Cf::Catalog), key)? {
            None => Ok(None),
            Some(bytes) => {
                envelope::decode(Kind::Catalog, &bytes, || format!("catalog row {key:02x?}"))
                    .map(Some)
            }
        }
    }

    /// Every catalog row whose key starts with `prefix`.
    pub fn catalog_scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(Cf::Catalog),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push(envelope::decode(Kind::Catalog, &value, || {
                format!("catalog row {key:02x?}")
            })?);
        }
        Ok(out)
    }

    pub fn catalog_put<T: Serialize>(key: Vec<u8>, value: &T) -> Result<Put, StoreError> {
        Ok(Put {
            cf: Cf::Catalog,
            key,
            value: envelope::encode(Kind::Catalog, value)?,
        })
    }

    /// Encodes a log record for a commit group.
    pub fn encode_event(record: &LogRecord) -> Result<EncodedEvent, StoreError> {
        Ok(EncodedEvent {
            aggregate_id: record.aggregate_id,
            version: record.version,
            value: envelope::encode(Kind::LogRecord, record)?,
            answer: None,
        })
    }

    /// How far the event publisher has got: the sequence of the newest
    /// event it has handed to NATS (0: none).
    pub fn publish_cursor(&self) -> Result<u64, StoreError> {
        match self
            .db
            .get_cf(self.cf(Cf::Meta), keys::meta::PUBLISH_CURSOR)?
        {
            None => Ok(0),
            Some(bytes) => envelope::decode(Kind::Meta, &bytes, || "meta/publish-cursor".into()),
        }
    }

    /// Saves the publisher's cursor. Not synced: losing the newest value in
    /// a crash only means some events are published again (at least once).
    pub fn set_publish_cursor(&self, sequence: u64) -> Result<(), StoreError> {
        let value = envelope::encode(Kind::Meta, &sequence)?;
        self.db
            .put_cf(self.cf(Cf::Meta), keys::meta::PUBLISH_CURSOR, value)?;
        Ok(())
    }

    /// Writes a consistent, openable copy of the data directory to `target`
    /// (which must not exist) using a RocksDB checkpoint: table files are
    /// hard-linked where the file system allows, so it is cheap. Every
    /// acknowledged transaction up to this call is in the copy.
    pub fn checkpoint(&self, target: &Path) -> Result<(), StoreError> {
        // So that opening the copy has (almost) nothing to index again.
        self.index_now()?;
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        checkpoint.create_checkpoint(target)?;
        Ok(())
    }

    /// Memory RocksDB holds now, in bytes: the memtables of every column
    /// family (flushed ones an iterator still pins included), the (shared)
    /// block cache, and table readers' memory outside it. Bounded by
    /// configuration, not by the number of enrollments; the memory probe
    /// subtracts it, once settled (see [`Store::flush_and_wait`]), to find
    /// what the actors cost.
    pub fn rocksdb_memory_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for cf in Cf::ALL {
            for property in [
                "rocksdb.size-all-mem-tables",
                "rocksdb.estimate-table-readers-mem",
            ] {
                total += self
                    .db
                    .property_int_value_cf(self.cf(cf), property)?
                    .unwrap_or(0);
            }
        }
        total += self
            .db
            .property_int_value_cf(self.cf(Cf::Log), "rocksdb.block-cache-usage")?
            .unwrap_or(0);
        Ok(total)
    }

    /// Idempotency records dropped past their retention since this store
    /// was opened (by its compactions).
    pub fn idempotency_records_expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Compacts the idempotency records now, dropping every one past its
    /// retention without waiting for RocksDB to choose to (tests).
    pub fn compact_idempotency(&self) {
        let mut options = rocksdb::CompactOptions::default();
        // Rewrite the bottom level too: that is where old records sit.
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for cf in [Cf::Idempotency, Cf::Answers] {
            self.db
                .compact_range_cf_opt(self.cf(cf), None::<&[u8]>, None::<&[u8]>, &options);
        }
    }

    /// Flushes memtables to SST files (tests and backups).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.index_now()?;
        for cf in Cf::ALL {
            self.db.flush_cf(self.cf(cf))?;
        }
        Ok(())
    }

    /// Flushes every memtable, then waits until no flush or compaction is
    /// running or due (measurements: a compaction holds buffers RocksDB's
    /// memory figures do not count). Gives up after `timeout`.
    pub fn flush_and_wait(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        let mut options = rocksdb::WaitForCompactOptions::default();
        options.set_flush(true);
        options.set_timeout(u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX));
        self.db.wait_for_compact(&options)?;
        Ok(())
    }
}
