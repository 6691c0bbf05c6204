//! Key digests in the store: what activation reads when a snapshot has
//! none, what a snapshot keeps, and that a snapshot of the first format
//! (without digests) is still read.

mod common;

use loyalty_engine::enrollment::{Enrollment, EnrollmentEvent};
use loyalty_engine::{
    BusinessId, CustomerId, DomainEvent, EnrollmentId, EventId, ProgramId, Timestamp, TransactionId,
};
use loyalty_persistence::envelope::{self, Kind};
use loyalty_persistence::keys::Cf;
use loyalty_persistence::{
    CommitGroup, KeyDigests, LogRecord, Put, Store, StoreOptions, KEY_DIGESTS_MAX,
};
use uuid::Uuid;

/// When the tests read keys back from the store.
/// A whole minute: key digests keep their times to the minute.
const NOW: Timestamp = Timestamp(1_700_000_040_000);

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&StoreOptions::new(dir.path())).unwrap().0
}

fn enrolled(id: EnrollmentId) -> (Enrollment, LogRecord) {
    let event = EnrollmentEvent::Enrolled {
        enrollment_id: id,
        business_id: BusinessId(Uuid::from_u128(1)),
        customer_id: CustomerId(Uuid::from_u128(2)),
        program_id: ProgramId(Uuid::from_u128(3)),
        tier: None,
    };
    let record = LogRecord {
        aggregate_id: id.0,
        version: 1,
        event_id: EventId(Uuid::now_v7()),
        business_id: BusinessId(Uuid::from_u128(1)),
        recorded_at: Timestamp(0),
        event: DomainEvent::Enrollment(event.clone()),
    };
    (Enrollment::from_enrolled(&event, Timestamp(0)), record)
}

fn key_record(id: EnrollmentId, key: &str) -> Put {
    let record = common::earn_record(Timestamp(0));
    Store::idempotency_put(id, key, &record).unwrap()
}

/// Writes `id` enrolled (version 1) with its snapshot holding `keys`.
fn enrolled_with_snapshot(store: &Store, id: EnrollmentId, keys: &KeyDigests) {
    let (state, record) = enrolled(id);
    let snapshot = Store::snapshot_put(&state, Some(keys)).unwrap();
    write(store, vec![record], vec![snapshot]);
}

fn write(store: &Store, events: Vec<LogRecord>, puts: Vec<Put>) {
    let mut next = store.next_sequence().unwrap();
    let events = events
        .iter()
        .map(|r| Store::encode_event(r).unwrap())
        .collect();
    let mut batch = store.batch();
    store.add_group(&mut batch, &CommitGroup { events, puts }, &mut next);
    store.write(batch, true).unwrap();
}

/// Keys are read one enrollment at a time (the column family's memtable is
/// hashed by enrollment id): neighbouring enrollments' keys must not leak
/// into each other, whether they are in the memtable, in table files, in
/// both, or read after a restart.
#[test]
fn activation_reads_the_digests_of_its_own_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    own_keys_only(StoreOptions::new(dir.path()));
}

/// The same when every enrollment's keys share one hash bucket of the
/// memtable, so that only the readers' own id checks keep them apart.
#[test]
fn activation_reads_its_own_keys_when_all_share_one_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.memtable_buckets = 1;
    own_keys_only(options);
}

fn own_keys_only(options: StoreOptions) {
    // Three enrollments with adjacent ids, so their keys are neighbours; the
    // last id is the largest, whose scan has no upper bound to stop at.
    let ids: Vec<_> = [10, 11, u128::MAX]
        .into_iter()
        .map(|n| EnrollmentId(Uuid::from_u128(n)))
        .collect();
    // Written last, after the others are flushed to a table file.
    let late = EnrollmentId(Uuid::from_u128(12));
    let count = |store: &Store, id| store.key_digests(id, NOW).unwrap().count();
    // `late_written`: whether `late` has its key yet; `extra`: keys the
    // largest id has beyond its first three.
    let check = |store: &Store, late_written: bool, extra: usize| {
        assert_eq!(count(store, ids[0]), Some(1));
        let middle = store.key_digests(ids[1], NOW).unwrap();
        assert_eq!(middle.count(), Some(2));
        assert!(middle.may_contain(KeyDigests::digest("key-0")));
        assert!(middle.may_contain(KeyDigests::digest("key-1")));
        assert!(!middle.may_contain(KeyDigests::digest("key-2")));
        assert_eq!(count(store, ids[2]), Some(3 + extra));
        let stranger = EnrollmentId(Uuid::from_u128(99));
        assert_eq!(store.key_digests(stranger, NOW).unwrap().count(), Some(0));
        assert_eq!(count(store, late), Some(usize::from(late_written)));
        // Point lookups find exactly the keys written, per enrollment.
        assert!(store.idempotency(ids[1], "key-1").unwrap().is_some());
        assert!(store.idempotency(ids[0], "key-1").unwrap().is_none());
        assert!(store.idempotency(stranger, "key-0").unwrap().is_none());
        let late_key = store.idempotency(late, "key-0").unwrap();
        assert_eq!(late_key.is_some(), late_written);
    };
    {
        let store = Store::open(&options).unwrap().0;
        let mut puts = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            for k in 0..=i {
                puts.push(key_record(*id, &format!("key-{k}")));
            }
        }
        write(&store, vec![enrolled(ids[0]).1], puts);
        // From the memtable, then from table files.
        check(&store, false, 0);
        store.flush().unwrap();
        check(&store, false, 0);
        // A neighbour's key in the memtable, over the others' in a table
        // file; and one enrollment with keys in both.
        write(
            &store,
            vec![],
            vec![key_record(late, "key-0"), key_record(ids[2], "key-3")],
        );
        check(&store, true, 1);
    }
    // After a restart.
    let store = Store::open(&options).unwrap().0;
    check(&store, true, 1);
}

#[test]
fn past_the_bound_activation_gives_up_on_digests() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = EnrollmentId(Uuid::from_u128(7));
    let puts = (0..=KEY_DIGESTS_MAX)
        .map(|k| key_record(id, &format!("k{k}")))
        .collect();
    write(&store, vec![], puts);
    let keys = store.key_digests(id, NOW).unwrap();
    assert_eq!(
        (keys.count(), keys.rescan_at()),
        (None, None),
        "kept for ever here"
    );
}

#[test]
fn a_snapshot_keeps_its_digests_until_an_event_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = EnrollmentId(Uuid::from_u128(5));
    let mut keys = KeyDigests::none();
    keys.insert(KeyDigests::digest("till-1"), NOW, None);
    enrolled_with_snapshot(&store, id, &keys);
    let loaded = store.load_enrollment(id).unwrap().unwrap();
    assert_eq!((loaded.snapshot_version, loaded.keys), (1, Some(keys)));

    // An event after the snapshot (as a crash leaves): its key is not in
    // the snapshot's digests, so they are not offered.
    let (_, mut later) = enrolled(id);
    later.version = 2;
    later.event = DomainEvent::Enrollment(EnrollmentEvent::PointsEarned {
        transaction_id: TransactionId(Uuid::now_v7()),
        points: 5,
        amount_minor: None,
        available_at: None,
        expires_at: None,
        reason: None,
        reference: None,
    });
    write(&store, vec![later], vec![key_record(id, "till-2")]);
    let loaded = store.load_enrollment(id).unwrap().unwrap();
    assert_eq!((loaded.snapshot_version, loaded.keys), (1, None));
}

#[test]
fn a_snapshot_of_the_first_format_is_read_without_digests() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = EnrollmentId(Uuid::from_u128(6));
    let (state, record) = enrolled(id);
    // What a build before digests wrote: format 1, version and state.
    let value = envelope::encode_as(envelope::FORMAT, Kind::Snapshot, &(1u64, &state)).unwrap();
    let old = Put {
        cf: Cf::Snapshot,
        key: id.as_bytes().to_vec(),
        value,
    };
    write(&store, vec![record], vec![old]);
    let snapshot = store.snapshot(id).unwrap().unwrap();
    assert_eq!(
        (snapshot.version, &snapshot.state, snapshot.keys),
        (1, &state, None)
    );
    let loaded = store.load_enrollment(id).unwrap().unwrap();
    assert_eq!((loaded.state, loaded.keys), (state, None));
}

#[test]
fn a_snapshot_of_the_second_format_is_read_with_its_digests() {
    /// How format 2 encoded digests: one run, or "too many".
    #[derive(serde::Serialize)]
    enum DigestsV2 {
        Known(Vec<u32>),
        TooMany,
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (till, stranger) = (KeyDigests::digest("till-1"), KeyDigests::digest("till-2"));
    let (a, b) = (
        EnrollmentId(Uuid::from_u128(8)),
        EnrollmentId(Uuid::from_u128(9)),
    );
    let mut puts = Vec::new();
    let mut events = Vec::new();
    for (id, keys) in [(a, DigestsV2::Known(vec![till])), (b, DigestsV2::TooMany)] {
        let (state, record) = enrolled(id);
        let value = envelope::encode_as(
            envelope::SNAPSHOT_FORMAT_V2,
            Kind::Snapshot,
            &(1u64, &state, Some(keys)),
        )
        .unwrap();
        puts.push(Put {
            cf: Cf::Snapshot,
            key: id.as_bytes().to_vec(),
            value,
        });
        events.push(record);
    }
    write(&store, events, puts);
    let keys = store.load_enrollment(a).unwrap().unwrap().keys.unwrap();
    assert!(keys.may_contain(till) && !keys.may_contain(stranger));
    assert!(keys.is_well_formed());
    // "Too many" in format 2 is read again at the enrollment's next
    // transaction, whenever that is.
    let keys = store.load_enrollment(b).unwrap().unwrap().keys.unwrap();
    assert_eq!((keys.count(), keys.rescan_at()), (None, Some(Timestamp(0))));
}

#[test]
fn a_snapshot_with_digests_out_of_order_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = EnrollmentId(Uuid::from_u128(10));
    let unsorted = KeyDigests::read_back(Some(vec![9, 3]), NOW, None);
    enrolled_with_snapshot(&store, id, &unsorted);
    assert!(matches!(
        store.snapshot(id),
        Err(loyalty_persistence::StoreError::Corrupt { .. })
    ));
}

/// Keys read back are held a retention from their newest record when
/// that is later than the reading (a clock set back since they were
/// written): the store keeps each record by its own time.
#[test]
fn keys_read_back_are_held_from_their_newest_record() {
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    let week = Some(std::time::Duration::from_secs(7 * 24 * 60 * 60));
    let days = |n: i64| Timestamp(NOW.0 + n * DAY_MS);
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let id = EnrollmentId(Uuid::from_u128(11));
    let stamped = |key: &str, at: Timestamp| {
        Store::idempotency_put(id, key, &common::earn_record(at)).unwrap()
    };
    write(
        &store,
        vec![],
        vec![stamped("early", days(-20)), stamped("ahead", days(3))],
    );
    let mut keys = store.key_digests(id, NOW).unwrap();
    let ahead = KeyDigests::digest("ahead");
    // The next key makes the read ones the older generation; it goes once
    // the newest record ("ahead", three days on) is more than a week old.
    keys.insert(KeyDigests::digest("next"), days(8), week);
    keys.insert(KeyDigests::digest("day 10"), days(10), week);
    assert!(keys.may_contain(ahead), "its record is kept until day 10");
    keys.insert(KeyDigests::digest("later"), Timestamp(days(10).0 + 1), week);
    assert!(!keys.may_contain(ahead));
}
