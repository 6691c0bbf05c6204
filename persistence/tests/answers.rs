//! Idempotency records kept in `answers`, under the sequence of their
//! transaction's event: found by key through the enrollment's index
//! (among many versions, in the memtable, in table files and after a
//! restart), counted by the key digests read back, listed for copying,
//! and dropped past their retention.

mod common;

use loyalty_engine::enrollment::EnrollmentEvent;
use loyalty_engine::time::DAY_MS;
use loyalty_engine::{
    BusinessId, CustomerId, DomainEvent, EnrollmentId, EventId, ProgramId, Timestamp, TransactionId,
};
use loyalty_persistence::records::answer;
use loyalty_persistence::{
    CommitGroup, IdempotencyRecord, IdempotencyRetention, LogRecord, Store, StoreOptions,
};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn event(id: EnrollmentId, version: u64) -> LogRecord {
    let event = if version == 1 {
        EnrollmentEvent::Enrolled {
            enrollment_id: id,
            business_id: BusinessId(Uuid::from_u128(1)),
            customer_id: CustomerId(Uuid::from_u128(2)),
            program_id: ProgramId(Uuid::from_u128(3)),
            tier: None,
        }
    } else {
        EnrollmentEvent::PointsEarned {
            transaction_id: TransactionId(Uuid::now_v7()),
            points: 1,
            amount_minor: None,
            available_at: None,
            expires_at: None,
            reason: None,
            reference: None,
        }
    };
    LogRecord {
        aggregate_id: id.0,
        version,
        event_id: EventId(Uuid::now_v7()),
        business_id: BusinessId(Uuid::from_u128(1)),
        recorded_at: Timestamp(0),
        event: DomainEvent::Enrollment(event),
    }
}

/// Writes versions `from..=to` of `id`, each but the first with the record
/// of key `k<version>` recorded at `recorded_at`, one group per version.
fn write_versions(store: &Store, id: EnrollmentId, from: u64, to: u64, recorded_at: i64) {
    let mut next = store.next_sequence().unwrap();
    let mut batch = store.batch();
    for version in from..=to {
        let mut encoded = Store::encode_event(&event(id, version)).unwrap();
        if version > 1 {
            let record = common::earn_record(Timestamp(recorded_at));
            encoded.answer = Some(answer::encode(&format!("k{version}"), &record).unwrap());
        }
        let group = CommitGroup {
            events: vec![encoded],
            puts: Vec::new(),
        };
        store.add_group(&mut batch, &group, &mut next);
    }
    store.write(batch, true).unwrap();
}

fn found(store: &Store, id: EnrollmentId, key: &str) -> Option<IdempotencyRecord> {
    store.idempotency(id, key).unwrap()
}

/// Keys at the newest version, at the oldest, and in between (past the
/// first window of the search), for two neighbouring enrollments whose
/// versions interleave, in every place a record can be.
#[test]
fn a_record_in_answers_is_found_by_its_key_and_only_for_its_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.memtable_buckets = 1;
    let (a, b) = (
        EnrollmentId(Uuid::from_u128(40)),
        EnrollmentId(Uuid::from_u128(41)),
    );
    let store = Store::open(&options).unwrap().0;
    write_versions(&store, a, 1, 150, 1_000);
    write_versions(&store, b, 1, 3, 2_000);
    store.flush().unwrap();
    write_versions(&store, a, 151, 300, 3_000);
    let check = |store: &Store| {
        for (key, at) in [
            ("k2", 1_000),
            ("k150", 1_000),
            ("k151", 3_000),
            ("k300", 3_000),
        ] {
            let record = found(store, a, key).unwrap_or_else(|| panic!("{key} of a"));
            assert_eq!(record.recorded_at, Timestamp(at), "{key}");
            // `idempotency_up_to` stops at the version it is given.
            assert!(store
                .idempotency_up_to(a, key, Some(300))
                .unwrap()
                .is_some());
        }
        assert!(store
            .idempotency_up_to(a, "k300", Some(299))
            .unwrap()
            .is_none());
        let record = found(store, b, "k3").expect("k3 of b");
        assert_eq!(record.recorded_at, Timestamp(2_000));
        for (id, key) in [(a, "k1"), (a, "k301"), (a, "k"), (b, "k4"), (b, "k150")] {
            assert_eq!(found(store, id, key), None, "{key}");
        }
        let stranger = EnrollmentId(Uuid::from_u128(42));
        assert_eq!(found(store, stranger, "k2"), None);
        // Digests read back count every key in answers, and only its own.
        assert_eq!(
            store.key_digests(a, Timestamp(0)).unwrap().count(),
            Some(299)
        );
        assert_eq!(store.key_digests(b, Timestamp(0)).unwrap().count(), Some(2));
        let listed = store.answers_of(b, Timestamp(0)).unwrap();
        let keys: Vec<_> = listed.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["k2", "k3"]);
    };
    check(&store);
    drop(store);
    let store = Store::open(&options).unwrap().0;
    check(&store);
}

/// Past the retention by this machine's clock, compactions drop records in
/// `answers` as in `idempotency`; the index and the log are untouched, and
/// `answers_of` leaves out what the retention no longer keeps.
#[test]
fn records_in_answers_are_dropped_past_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.idempotency_retention = Some(IdempotencyRetention::days(7).unwrap());
    let (store, _) = Store::open(&options).unwrap();
    let a = EnrollmentId(Uuid::from_u128(50));
    let now = now_ms();
    write_versions(&store, a, 1, 3, now - 8 * DAY_MS);
    write_versions(&store, a, 4, 5, now - 6 * DAY_MS);
    let kept: Vec<_> = store
        .answers_of(a, Timestamp(now))
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        kept,
        ["k4", "k5"],
        "what a copy takes, before any compaction"
    );
    assert!(
        found(&store, a, "k2").is_some(),
        "dropped only by a compaction"
    );
    store.flush().unwrap();
    store.compact_idempotency();
    assert_eq!(store.idempotency_records_expired(), 2);
    for key in ["k2", "k3"] {
        assert_eq!(found(&store, a, key), None, "{key}");
    }
    for key in ["k4", "k5"] {
        assert!(found(&store, a, key).is_some(), "{key}");
    }
    assert_eq!(store.aggregate_events(a.0, 1, u64::MAX).unwrap().len(), 5);
}
