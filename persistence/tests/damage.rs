//! Damage to the data directory: a torn last write is dropped, damage
//! anywhere else refuses start-up with an error that says what is damaged.
//!
//! A clean shutdown flushes every memtable, so the write-ahead log's
//! records are all in table files and opening reads none of them. The
//! tests of the log itself copy the directory while its store is open,
//! which leaves what a crash would ([`crash_image`]).

use loyalty_engine::catalog::{Business, CatalogEvent};
use loyalty_engine::{BusinessId, DomainEvent, EventId, Timestamp};
use loyalty_persistence::envelope::{self, Kind};
use loyalty_persistence::keys::Cf;
use loyalty_persistence::{CommitGroup, LogRecord, Store, StoreError, StoreOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

const BATCHES: u64 = 40;
const PER_BATCH: u64 = 50;

/// Writes `BATCHES` synced batches of `PER_BATCH` events, then closes the
/// store (which flushes).
fn write_log(dir: &Path, flush: bool) {
    let store = write_log_open(&StoreOptions::new(dir));
    if flush {
        store.flush().unwrap();
    }
}

/// Writes `BATCHES` synced batches of `PER_BATCH` events into a store it
/// leaves open.
fn write_log_open(options: &StoreOptions) -> Store {
    let (store, report) = Store::open(options).unwrap();
    let mut next = report.next_sequence;
    for b in 0..BATCHES {
        let mut group = CommitGroup::default();
        for i in 0..PER_BATCH {
            let record = business_record(u128::from(b * PER_BATCH + i + 1));
            group.events.push(Store::encode_event(&record).unwrap());
        }
        let mut batch = store.batch();
        store.add_group(&mut batch, &group, &mut next);
        store.write(batch, true).unwrap();
    }
    store
}

/// The log record of business number `n` being created.
fn business_record(n: u128) -> LogRecord {
    let id = Uuid::from_u128(n);
    let business = Business {
        business_id: BusinessId(id),
        name: format!("business number {n}"),
        created_at: Timestamp(0),
    };
    LogRecord {
        aggregate_id: id,
        version: 1,
        event_id: EventId(Uuid::now_v7()),
        business_id: BusinessId(id),
        recorded_at: Timestamp(0),
        event: DomainEvent::Catalog(CatalogEvent::BusinessCreated(business)),
    }
}

/// Copies the directory of an open store, with nothing being written:
/// what a crash at this moment would leave on disk, since every write has
/// returned (and been synced). Its background flushes must be over.
fn crash_image(store: &Store, target: &Path) {
    store
        .wait_for_background_work(Duration::from_secs(30))
        .unwrap();
    copy_dir(store.path(), target);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The write-ahead log's segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    files(&dir.join("wal"), "wal")
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    out.sort();
    out
}

fn overwrite_middle(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(len / 2)).unwrap();
    file.write_all(&[0xA5; 64]).unwrap();
    file.sync_all().unwrap();
}

fn open_error(dir: &Path) -> StoreError {
    match Store::open(&StoreOptions::new(dir)) {
        Ok(_) => panic!("a damaged data directory opened"),
        Err(err) => err,
    }
}

#[test]
fn an_intact_directory_reopens_with_every_record() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), false);
    let (store, report) = Store::open(&StoreOptions::new(dir.path())).unwrap();
    assert_eq!(report.next_sequence, BATCHES * PER_BATCH + 1);
    assert_eq!(report.records_verified, BATCHES * PER_BATCH);
    assert_eq!(
        store.read_log(0, usize::MAX).unwrap().len() as u64,
        BATCHES * PER_BATCH
    );
}

#[test]
fn a_crash_image_reopens_with_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_log_open(&StoreOptions::new(dir.path().join("data")));
    let image = dir.path().join("image");
    crash_image(&store, &image);
    drop(store);
    let (store, report) = Store::open(&StoreOptions::new(&image)).unwrap();
    assert_eq!(
        report.wal_records_replayed, BATCHES,
        "nothing was flushed, so every batch is replayed"
    );
    assert_eq!(report.next_sequence, BATCHES * PER_BATCH + 1);
    assert_eq!(report.records_verified, BATCHES * PER_BATCH);
    assert_eq!(
        store.read_log(0, usize::MAX).unwrap().len() as u64,
        BATCHES * PER_BATCH
    );
}

/// Small memtables flush every few batches, so the log's segments are
/// written over again and again; a crash image still holds every record,
/// from the table files and the log's records past their last flush.
#[test]
fn flushed_segments_are_reused_and_a_crash_image_still_holds_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path().join("data"));
    options.memtable_bytes = 64 << 10;
    options.wal_segment_bytes = 32 << 10;
    let store = write_log_open(&options);
    let written_bytes = BATCHES * PER_BATCH * 150;
    assert!(
        (store.wal_segments() as u64) < written_bytes / options.wal_segment_bytes / 2,
        "{} segments of {} bytes for about {written_bytes} bytes written",
        store.wal_segments(),
        options.wal_segment_bytes
    );
    // One more batch after the flushes have settled, so that the image
    // has at least one record to replay.
    store
        .wait_for_background_work(Duration::from_secs(30))
        .unwrap();
    let mut group = CommitGroup::default();
    group
        .events
        .push(Store::encode_event(&business_record(u128::MAX)).unwrap());
    let mut batch = store.batch();
    let mut next = BATCHES * PER_BATCH + 1;
    store.add_group(&mut batch, &group, &mut next);
    store.write(batch, true).unwrap();
    let image = dir.path().join("image");
    crash_image(&store, &image);
    drop(store);
    let (store, report) = Store::open(&StoreOptions::new(&image)).unwrap();
    assert!(report.wal_records_replayed >= 1, "{report:?}");
    assert!(
        report.wal_records_replayed < BATCHES,
        "the flushes left only the newest records to replay: {report:?}"
    );
    assert_eq!(report.next_sequence, BATCHES * PER_BATCH + 2);
    assert_eq!(
        store.read_log(0, usize::MAX).unwrap().len() as u64,
        BATCHES * PER_BATCH + 1
    );
}

#[test]
fn a_damaged_table_file_refuses_start_up_naming_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), true);
    let tables = files(dir.path(), "sst");
    assert!(!tables.is_empty(), "flush wrote table files");
    for table in &tables {
        overwrite_middle(table);
    }
    let err = open_error(dir.path());
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("damaged"), "{message}");
    assert!(
        message.contains("log") || message.contains(".sst"),
        "does not say where: {message}"
    );
}

#[test]
fn a_damaged_write_ahead_log_refuses_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_log_open(&StoreOptions::new(dir.path().join("data")));
    let image = dir.path().join("image");
    crash_image(&store, &image);
    let segments = segments(&image);
    assert_eq!(segments.len(), 1, "{segments:?}");
    overwrite_middle(&segments[0]);
    let err = open_error(&image);
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("damaged"), "{message}");
    assert!(message.contains("write-ahead log segment"), "{message}");
}

#[test]
fn a_torn_last_write_is_dropped_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = write_log_open(&StoreOptions::new(dir.path().join("data")));
    let image = dir.path().join("image");
    crash_image(&store, &image);
    let segment = segments(&image).pop().unwrap();
    // Cut the last record short, as a crash in the middle of a write would.
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 100).unwrap();
    drop(file);
    let (store, report) = Store::open(&StoreOptions::new(&image)).unwrap();
    // Only the last batch (never acknowledged: its sync did not return) may go.
    let kept = report.next_sequence - 1;
    assert_eq!(
        kept,
        (BATCHES - 1) * PER_BATCH,
        "exactly the torn batch is dropped"
    );
    assert_eq!(store.read_log(0, usize::MAX).unwrap().len() as u64, kept);
}

/// The data directory as RocksDB alone sees it (no engine options).
fn raw_db(dir: &Path) -> rocksdb::DB {
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, Cf::ALL.map(Cf::name)).unwrap()
}

fn set_format(dir: &Path, format: u32) {
    let db = raw_db(dir);
    let meta = db.cf_handle("meta").unwrap();
    let value = envelope::encode(Kind::Meta, &format).unwrap();
    db.put_cf(meta, b"format", value).unwrap();
}

fn format(dir: &Path) -> u32 {
    let db = raw_db(dir);
    let meta = db.cf_handle("meta").unwrap();
    let value = db.get_cf(meta, b"format").unwrap().unwrap();
    envelope::decode(Kind::Meta, &value, || "meta/format".into()).unwrap()
}

#[test]
fn a_directory_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), false);
    set_format(dir.path(), 99);
    let err = open_error(dir.path());
    assert!(
        matches!(
            err,
            StoreError::Format {
                found: 99,
                expected: 4
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "data directory format 99 is not supported (this build reads formats up to 4)"
    );
    assert_eq!(
        format(dir.path()),
        99,
        "a refused directory is left as it was"
    );
}

/// A directory of format 1 (idempotency records with `recorded_at` last),
/// 2 (snapshot digests that do not age) or 3 (batches in RocksDB's own
/// log) is read as it is and marked format 4 on open, so that a build from
/// before format 4 refuses it at start-up rather than failing later on a
/// record it cannot read, or missing what only the engine's log holds.
#[test]
fn a_directory_of_a_previous_format_is_upgraded_on_open() {
    for previous in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), true);
        set_format(dir.path(), previous);
        let (store, report) = Store::open(&StoreOptions::new(dir.path())).unwrap();
        assert_eq!(report.next_sequence, BATCHES * PER_BATCH + 1);
        assert_eq!(
            store.read_log(0, usize::MAX).unwrap().len() as u64,
            BATCHES * PER_BATCH
        );
        drop(store);
        assert_eq!(format(dir.path()), 4, "from format {previous}");
    }
}

/// A directory of format 3 kept its newest batches in RocksDB's own log,
/// not yet in table files. Opening it with this build keeps them: RocksDB
/// replays its log whatever the options, before the engine's log (empty
/// here) is read.
#[test]
fn a_format_3_directory_keeps_the_batches_in_rocksdbs_own_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(&options, dir.path(), Cf::ALL.map(Cf::name)).unwrap();
    let meta = db.cf_handle("meta").unwrap();
    let log = db.cf_handle("log").unwrap();
    db.put_cf(
        meta,
        b"format",
        envelope::encode(Kind::Meta, &3u32).unwrap(),
    )
    .unwrap();
    for seq in 1..=20u64 {
        let value = envelope::encode(Kind::LogRecord, &business_record(u128::from(seq))).unwrap();
        let mut sync = rocksdb::WriteOptions::default();
        sync.set_sync(true);
        db.put_cf_opt(log, seq.to_be_bytes(), value, &sync).unwrap();
    }
    drop(db); // nothing flushed: the writes are in RocksDB's log only
    assert!(
        files(dir.path(), "sst").is_empty(),
        "the records must be in RocksDB's log, not in table files"
    );
    let (store, report) = Store::open(&StoreOptions::new(dir.path())).unwrap();
    assert_eq!(report.next_sequence, 21);
    assert_eq!(report.wal_records_replayed, 0);
    assert_eq!(store.read_log(0, usize::MAX).unwrap().len(), 20);
    drop(store);
    assert_eq!(format(dir.path()), 4);
}
