//! Idempotency records past their retention: compactions drop them, keep
//! the rest, keep what they cannot decode, and drop nothing without a
//! retention.

mod common;

use loyalty_engine::time::DAY_MS;
use loyalty_engine::{EnrollmentId, Timestamp};
use loyalty_persistence::envelope::{self, Kind};
use loyalty_persistence::keys::{self, Cf};
use loyalty_persistence::{
    CommitGroup, IdempotencyRecord, IdempotencyRetention, Put, Store, StoreError, StoreOptions,
};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn record(recorded_at: i64) -> IdempotencyRecord {
    common::earn_record(Timestamp(recorded_at))
}

/// An idempotency record in envelope format 1: `IdempotencyRecord`'s own
/// field order, `recorded_at` last.
fn first_format(id: EnrollmentId, key: &str, recorded_at: i64) -> Put {
    Put {
        cf: Cf::Idempotency,
        key: keys::idempotency(id.as_bytes(), key),
        value: envelope::encode_as(envelope::FORMAT, Kind::Idempotency, &record(recorded_at))
            .unwrap(),
    }
}

fn write(store: &Store, puts: Vec<Put>) {
    let mut next = store.next_sequence().unwrap();
    let mut batch = store.batch();
    let group = CommitGroup {
        events: Vec::new(),
        puts,
    };
    store.add_group(&mut batch, &group, &mut next);
    store.write(batch, true).unwrap();
}

/// Records of two enrollments at ages either side of a 7-day retention,
/// and one damaged value; then every table file compacted.
fn aged_records(options: &StoreOptions) -> (Store, EnrollmentId, EnrollmentId) {
    let (store, _) = Store::open(options).unwrap();
    let (a, b) = (
        EnrollmentId(Uuid::from_u128(7)),
        EnrollmentId(Uuid::from_u128(8)),
    );
    let now = now_ms();
    let put = |id, key: &str, age_days: i64| {
        Store::idempotency_put(id, key, &record(now - age_days * DAY_MS)).unwrap()
    };
    write(
        &store,
        vec![
            put(a, "a-40-days", 40),
            put(a, "a-8-days", 8),
            put(a, "a-6-days", 6),
            // Written by a build from before recorded_at came first.
            first_format(a, "a-8-days-format-1", now - 8 * DAY_MS),
            first_format(a, "a-6-days-format-1", now - 6 * DAY_MS),
            put(b, "b-today", 0),
            put(b, "b-8-days", 8),
            Put {
                cf: Cf::Idempotency,
                key: keys::idempotency(b.as_bytes(), "b-damaged"),
                value: b"not an envelope".to_vec(),
            },
        ],
    );
    // In a table file, as compactions only see those.
    store.flush().unwrap();
    store.compact_idempotency();
    (store, a, b)
}

fn kept(store: &Store, id: EnrollmentId, key: &str) -> bool {
    store.idempotency(id, key).unwrap().is_some()
}

#[test]
fn a_compaction_drops_records_past_the_retention_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.idempotency_retention = Some(IdempotencyRetention::days(7).unwrap());
    let (store, a, b) = aged_records(&options);

    assert!(!kept(&store, a, "a-40-days"));
    assert!(!kept(&store, a, "a-8-days"));
    assert!(!kept(&store, b, "b-8-days"));
    assert!(!kept(&store, a, "a-8-days-format-1"));
    assert!(kept(&store, a, "a-6-days"));
    assert!(kept(&store, a, "a-6-days-format-1"));
    assert!(kept(&store, b, "b-today"));
    assert_eq!(store.idempotency_records_expired(), 4);
    // What survives is whole, and the damaged value is still there to be
    // reported, not silently gone.
    assert_eq!(
        store
            .idempotency(a, "a-6-days")
            .unwrap()
            .unwrap()
            .answer
            .outcome
            .points,
        10
    );
    assert!(matches!(
        store.idempotency(b, "b-damaged"),
        Err(StoreError::Corrupt { .. })
    ));
    // An activation's scan of the keys sees only what is left.
    assert_eq!(store.key_digests(a, Timestamp(0)).unwrap().count(), Some(2));
    assert_eq!(store.key_digests(b, Timestamp(0)).unwrap().count(), Some(2));

    // Dropped for good: a reopen (with no retention at all) does not bring
    // them back from an older level or the log.
    drop(store);
    let (store, _) = Store::open(&StoreOptions::new(dir.path())).unwrap();
    assert!(!kept(&store, a, "a-8-days"));
    assert!(kept(&store, a, "a-6-days"));
}

/// Records are written with `recorded_at` first (what the filter reads
/// alone) and read back whole in either format; damage to either is
/// reported, never taken for a time.
#[test]
fn records_of_both_formats_read_back_whole_and_give_their_time() {
    let record = record(1_700_000_000_123);
    let current = record.encode().unwrap();
    assert_eq!(
        envelope::format_of(&current),
        Some(envelope::IDEMPOTENCY_FORMAT)
    );
    let first = envelope::encode_as(envelope::FORMAT, Kind::Idempotency, &record).unwrap();
    for bytes in [&current, &first] {
        assert_eq!(
            IdempotencyRecord::decode(bytes, String::new).unwrap(),
            record
        );
        assert_eq!(
            IdempotencyRecord::recorded_at_of(bytes).unwrap(),
            record.recorded_at
        );
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(
                IdempotencyRecord::recorded_at_of(&damaged).is_err(),
                "byte {i}"
            );
            assert!(
                IdempotencyRecord::decode(&damaged, String::new).is_err(),
                "byte {i}"
            );
        }
    }
}

#[test]
fn without_a_retention_nothing_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, a, b) = aged_records(&StoreOptions::new(dir.path()));
    assert!(kept(&store, a, "a-40-days"));
    assert!(kept(&store, a, "a-8-days"));
    assert!(kept(&store, b, "b-8-days"));
    assert_eq!(store.idempotency_records_expired(), 0);
}
