//! `Store::add_groups` (the commit thread's way of filling a batch, with
//! keys sorted per column family) stores exactly what adding the groups one
//! by one stores, and a later put of the same key still wins; the room
//! `Store::batch_for` makes is enough for its groups, and not much more.

use loyalty_engine::catalog::{Business, CatalogEvent};
use loyalty_engine::{BusinessId, DomainEvent, EventId, Timestamp};
use loyalty_persistence::keys::catalog as key;
use loyalty_persistence::{CommitGroup, LogRecord, Store, StoreOptions};
use uuid::Uuid;

fn business(n: u128, name: &str) -> Business {
    Business {
        business_id: BusinessId(Uuid::from_u128(n)),
        name: name.to_owned(),
        created_at: Timestamp(0),
    }
}

/// Groups with events of random-looking aggregates and catalog rows, one
/// row written twice with different values (first in group 3, then 7).
fn groups() -> Vec<CommitGroup> {
    (0..10u128)
        .map(|g| {
            // Ids that are not in key order when taken in group order.
            let id = Uuid::from_u128((g * 7919 % 10 + 1) << 64 | g);
            let b = business(id.as_u128(), &format!("group {g}"));
            let record = LogRecord {
                aggregate_id: id,
                version: 1,
                event_id: EventId(Uuid::now_v7()),
                business_id: b.business_id,
                recorded_at: Timestamp(0),
                event: DomainEvent::Catalog(CatalogEvent::BusinessCreated(b.clone())),
            };
            let mut puts = vec![Store::catalog_put(key::business(id.as_bytes()), &b).unwrap()];
            if g == 3 || g == 7 {
                let shared = business(1, &format!("written by group {g}"));
                puts.push(Store::catalog_put(key::business(&[1; 16]), &shared).unwrap());
            }
            CommitGroup {
                events: vec![Store::encode_event(&record).unwrap()],
                puts,
            }
        })
        .collect()
}

#[test]
fn sorted_batches_store_the_same_as_group_by_group() {
    let one_by_one = tempfile::tempdir().unwrap();
    let sorted = tempfile::tempdir().unwrap();
    let groups = groups();

    let (a, report) = Store::open(&StoreOptions::new(one_by_one.path())).unwrap();
    let mut next_a = report.next_sequence;
    let mut batch = a.batch();
    let lasts_a: Vec<u64> = groups
        .iter()
        .map(|g| a.add_group(&mut batch, g, &mut next_a))
        .collect();
    a.write(batch, true).unwrap();

    let (b, report) = Store::open(&StoreOptions::new(sorted.path())).unwrap();
    let mut next_b = report.next_sequence;
    let mut batch = b.batch();
    let lasts_b = b.add_groups(&mut batch, &groups, &mut next_b);
    b.write(batch, true).unwrap();

    assert_eq!(lasts_a, lasts_b);
    assert_eq!(next_a, next_b);
    assert_eq!(a.read_log(0, 100).unwrap(), b.read_log(0, 100).unwrap());
    for group in &groups {
        let id = group.events[0].aggregate_id;
        assert_eq!(
            a.aggregate_events(id, 1, u64::MAX).unwrap(),
            b.aggregate_events(id, 1, u64::MAX).unwrap()
        );
        let row = key::business(id.as_bytes());
        assert_eq!(
            a.catalog::<Business>(&row).unwrap(),
            b.catalog::<Business>(&row).unwrap()
        );
    }
    let shared = |s: &Store| {
        s.catalog::<Business>(&key::business(&[1; 16]))
            .unwrap()
            .unwrap()
            .name
    };
    assert_eq!(shared(&a), "written by group 7");
    assert_eq!(shared(&b), "written by group 7");
}

#[test]
fn a_batch_sized_for_its_groups_has_room_for_them() {
    let mut mixed = groups();
    // A put of a large value: its length takes a varint of 3 bytes.
    mixed[0].puts[0].value = vec![7; 100_000];
    let events_only: Vec<CommitGroup> = groups()
        .into_iter()
        .map(|g| CommitGroup {
            events: g.events,
            puts: Vec::new(),
        })
        .collect();
    for groups in [mixed, events_only] {
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = Store::open(&StoreOptions::new(dir.path())).unwrap();
        let mut next = report.next_sequence;
        let mut batch = store.batch_for(&groups);
        store.add_groups(&mut batch, &groups, &mut next);
        let records: usize = groups
            .iter()
            .map(|g| 2 * g.events.len() + g.puts.len())
            .sum();
        assert!(
            batch.bytes() <= batch.reserved_bytes(),
            "{} bytes in a batch sized {}",
            batch.bytes(),
            batch.reserved_bytes()
        );
        // Each record's framing is counted at its largest (16 bytes) and
        // is at least 4 (a tag, an id and two lengths of a byte each; no
        // column family is RocksDB's default, whose id is left out).
        assert!(batch.reserved_bytes() - batch.bytes() <= 12 * records);
        store.write(batch, true).unwrap();
        assert_eq!(store.read_log(0, 100).unwrap().len(), groups.len());
    }
}
