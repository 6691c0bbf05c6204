//! The aggregate index (aggregate id, version) -> sequence is read one
//! aggregate at a time (its memtable is hashed by aggregate id): each
//! aggregate's newest version and its events must come out whole and
//! unmixed with its neighbours', from the memtable, from table files, from
//! both at once, and after a restart.

use loyalty_engine::catalog::{Business, CatalogEvent};
use loyalty_engine::{BusinessId, DomainEvent, EventId, Timestamp};
use loyalty_persistence::{CommitGroup, LogRecord, Store, StoreOptions};
use uuid::Uuid;

fn record(aggregate: Uuid, version: u64) -> LogRecord {
    let business = Business {
        business_id: BusinessId(aggregate),
        name: format!("v{version}"),
        created_at: Timestamp(0),
    };
    LogRecord {
        aggregate_id: aggregate,
        version,
        event_id: EventId(Uuid::now_v7()),
        business_id: business.business_id,
        recorded_at: Timestamp(0),
        event: DomainEvent::Catalog(CatalogEvent::BusinessCreated(business)),
    }
}

/// Appends versions `from..=to` of each aggregate, in one batch.
fn append(store: &Store, aggregates: &[Uuid], from: u64, to: u64) {
    let mut next = store.next_sequence().unwrap();
    let mut batch = store.batch();
    for version in from..=to {
        for aggregate in aggregates {
            let events = vec![Store::encode_event(&record(*aggregate, version)).unwrap()];
            let group = CommitGroup {
                events,
                puts: vec![],
            };
            store.add_group(&mut batch, &group, &mut next);
        }
    }
    store.write(batch, true).unwrap();
}

/// Each aggregate has versions 1..=newest, and nothing of another's.
fn check(store: &Store, aggregates: &[Uuid], newest: u64) {
    for aggregate in aggregates {
        assert_eq!(store.aggregate_version(*aggregate).unwrap(), Some(newest));
        let all = store.aggregate_events(*aggregate, 1, u64::MAX).unwrap();
        let versions: Vec<u64> = all.iter().map(|(_, r)| r.version).collect();
        assert_eq!(versions, (1..=newest).collect::<Vec<_>>());
        assert!(all.iter().all(|(_, r)| r.aggregate_id == *aggregate));
        // A middle range, as a snapshot's tail or a history page asks.
        let tail = store.aggregate_events(*aggregate, 3, newest - 1).unwrap();
        assert_eq!(tail.len() as u64, newest - 3);
    }
    let stranger = Uuid::from_u128(99);
    assert_eq!(store.aggregate_version(stranger).unwrap(), None);
    assert!(store
        .aggregate_events(stranger, 1, u64::MAX)
        .unwrap()
        .is_empty());
}

#[test]
fn each_aggregate_reads_back_its_own_versions_wherever_they_are() {
    let dir = tempfile::tempdir().unwrap();
    own_versions_only(StoreOptions::new(dir.path()));
}

/// The same when every aggregate shares one hash bucket of the memtable,
/// so that only the readers' own id checks keep them apart.
#[test]
fn each_aggregate_reads_back_its_own_versions_when_all_share_one_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.memtable_buckets = 1;
    own_versions_only(options);
}

fn own_versions_only(options: StoreOptions) {
    // Adjacent ids, so their index keys are neighbours; the largest id has
    // no next prefix to stop at.
    let aggregates = [10, 11, u128::MAX].map(Uuid::from_u128);
    {
        let (store, _) = Store::open(&options).unwrap();
        append(&store, &aggregates, 1, 5);
        check(&store, &aggregates, 5);
        store.flush().unwrap();
        check(&store, &aggregates, 5);
        // Newer versions in the memtable over older ones in a table file.
        append(&store, &aggregates, 6, 8);
        check(&store, &aggregates, 8);
    }
    let (store, _) = Store::open(&options).unwrap();
    check(&store, &aggregates, 8);
}
