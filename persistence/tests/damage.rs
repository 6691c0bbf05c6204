//! Damage to the data directory: a torn last write is dropped, damage
//! anywhere else refuses start-up with an error that says what is damaged.

use loyalty_engine::catalog::{Business, CatalogEvent};
use loyalty_engine::{BusinessId, DomainEvent, EventId, Timestamp};
use loyalty_persistence::envelope::{self, Kind};
use loyalty_persistence::{CommitGroup, LogRecord, Store, StoreError, StoreOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use uuid::Uuid;

mod common;

const BATCHES: u64 = 40;
const PER_BATCH: u64 = 50;

/// Writes `BATCHES` synced batches of `PER_BATCH` events, and closes the
/// store.
fn write_log(dir: &Path, flush: bool) {
    drop(write_log_open(dir, flush));
}

/// The same, leaving the store open.
fn write_log_open(dir: &Path, flush: bool) -> Store {
    let (store, report) = Store::open(&common::untimed(dir)).unwrap();
    let mut next = report.next_sequence;
    for b in 0..BATCHES {
        let mut group = CommitGroup::default();
        for i in 0..PER_BATCH {
            let id = Uuid::from_u128(u128::from(b * PER_BATCH + i + 1));
            let business = Business {
                business_id: BusinessId(id),
                name: format!("business number {i} of batch {b}"),
                created_at: Timestamp(0),
            };
            let record = LogRecord {
                aggregate_id: id,
                version: 1,
                event_id: EventId(Uuid::now_v7()),
                business_id: BusinessId(id),
                recorded_at: Timestamp(0),
                event: DomainEvent::Catalog(CatalogEvent::BusinessCreated(business)),
            };
            group.events.push(Store::encode_event(&record).unwrap());
        }
        let mut batch = store.batch();
        store.add_group(&mut batch, &group, &mut next);
        store.write(batch, true).unwrap();
    }
    if flush {
        store.flush().unwrap();
    }
    store
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
    write_log(dir.path(), false);
    let wal = files(dir.path(), "log");
    let largest = wal
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    overwrite_middle(largest);
    let err = open_error(dir.path());
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// On the image of a crash: a clean close would write the aggregate
/// index's last round after the last batch.
#[test]
fn a_torn_last_write_is_dropped_and_everything_before_it_kept() {
    let open = tempfile::tempdir().unwrap();
    let store = write_log_open(open.path(), false);
    let dir = common::crash_image(open.path());
    drop(store);
    let wal = files(dir.path(), "log");
    let largest = wal
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    // Cut the last record short, as a crash in the middle of a write would.
    let len = std::fs::metadata(&largest).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&largest)
        .unwrap();
    file.set_len(len - 100).unwrap();
    drop(file);
    let (store, report) = Store::open(&StoreOptions::new(dir.path())).unwrap();
    // Only the last batch (never acknowledged: its sync did not return) may go.
    let kept = report.next_sequence - 1;
    assert_eq!(
        kept,
        (BATCHES - 1) * PER_BATCH,
        "exactly the torn batch is dropped"
    );
    assert_eq!(store.read_log(0, usize::MAX).unwrap().len() as u64, kept);
    // Nothing was indexed in the store before the crash: start-up indexed
    // what the log kept.
    assert_eq!(report.events_indexed, kept);
    for seq in [1, kept] {
        let id = Uuid::from_u128(u128::from(seq));
        let events = store.aggregate_events(id, 1, u64::MAX).unwrap();
        assert_eq!(events.len(), 1, "the index finds event {seq}");
        assert_eq!(events[0].0, seq);
    }
    let dropped = Uuid::from_u128(u128::from(kept + 1));
    assert_eq!(store.aggregate_version(dropped).unwrap(), None);
}

fn set_format(dir: &Path, format: u32) {
    let db = common::raw_db(dir);
    let meta = db.cf_handle("meta").unwrap();
    let value = envelope::encode(Kind::Meta, &format).unwrap();
    db.put_cf(meta, b"format", value).unwrap();
    if format < 5 {
        // Those formats had no index cursor.
        db.delete_cf(meta, b"index-cursor").unwrap();
    }
}

fn format(dir: &Path) -> u32 {
    let db = common::raw_db(dir);
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
                expected: 5
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "data directory format 99 is not supported (this build reads formats up to 5)"
    );
    assert_eq!(
        format(dir.path()),
        99,
        "a refused directory is left as it was"
    );
}

/// A directory of format 1 (idempotency records with `recorded_at` last),
/// 2 (snapshot digests that do not age), 3 (every idempotency record kept
/// by key) or 4 (an index entry per event, in its commit's batch) is read
/// as it is and marked format 5 on open, so that a build from before
/// format 5 refuses it at start-up rather than failing later on a record
/// it cannot read, or missing one it does not look for. Its index is
/// whole: nothing is indexed again.
#[test]
fn a_directory_of_a_previous_format_is_upgraded_on_open() {
    for previous in [1, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), true);
        set_format(dir.path(), previous);
        let (store, report) = Store::open(&StoreOptions::new(dir.path())).unwrap();
        assert_eq!(report.next_sequence, BATCHES * PER_BATCH + 1);
        assert_eq!(report.events_indexed, 0);
        assert_eq!(
            store.read_log(0, usize::MAX).unwrap().len() as u64,
            BATCHES * PER_BATCH
        );
        let last = Uuid::from_u128(u128::from(BATCHES * PER_BATCH));
        assert_eq!(store.aggregate_version(last).unwrap(), Some(1));
        drop(store);
        assert_eq!(format(dir.path()), 5, "from format {previous}");
    }
}

/// A directory of this format without its index cursor cannot say which
/// events its index holds: it is damage, not a fresh start.
#[test]
fn a_directory_without_its_index_cursor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), false);
    {
        let db = common::raw_db(dir.path());
        let meta = db.cf_handle("meta").unwrap();
        db.delete_cf(meta, b"index-cursor").unwrap();
    }
    let err = open_error(dir.path());
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("meta/index-cursor"), "{err}");
}
