//! The aggregate index (aggregate id, newest version) -> sequences is read
//! one aggregate at a time (its memtable is hashed by aggregate id): each
//! aggregate's newest version and its events must come out whole and
//! unmixed with its neighbours', from the events noted in memory and not
//! yet indexed, from the memtable, from table files, from all at once,
//! after a restart, and after a crash that left events unindexed.

use loyalty_engine::catalog::{Business, CatalogEvent};
use loyalty_engine::{BusinessId, DomainEvent, EventId, Timestamp};
use loyalty_persistence::index::ENTRY_VERSIONS_MAX;
use loyalty_persistence::{CommitGroup, LogRecord, Store, StoreError, StoreOptions};
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

mod common;

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

/// The same when the indexer writes a round every few events, so that
/// reads find an aggregate's versions partly in the store and partly in
/// memory.
#[test]
fn each_aggregate_reads_back_its_own_versions_when_rounds_come_often() {
    for every in [1, 4, 7] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new(dir.path());
        options.index_every_events = every;
        own_versions_only(options);
    }
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

/// A round writes one entry per aggregate for all the versions it noted,
/// not one per event (what takes the index off the commit path's cost).
#[test]
fn a_round_writes_one_entry_per_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&common::untimed(dir.path())).unwrap();
    let aggregates = [10, 11, 12].map(Uuid::from_u128);
    append(&store, &aggregates, 1, 5);
    assert_eq!(store.index_stats().pending_events, 15);
    assert_eq!(store.index_stats().rounds, 0, "no round is due yet");
    store.index_now().unwrap();
    let stats = store.index_stats();
    assert_eq!(
        (
            stats.rounds,
            stats.events,
            stats.entries,
            stats.pending_events
        ),
        (1, 15, 3, 0)
    );
    check(&store, &aggregates, 5);
}

/// A run longer than an entry holds is split over several entries, and
/// reads across their boundaries find every version once.
#[test]
fn a_long_run_is_split_over_entries_that_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new(dir.path());
    let aggregate = Uuid::from_u128(7);
    let newest = 2 * ENTRY_VERSIONS_MAX as u64 + 88;
    {
        let (store, _) = Store::open(&options).unwrap();
        append(&store, &[aggregate], 1, newest);
        store.index_now().unwrap();
        assert_eq!(store.index_stats().entries, 3);
        check_windows(&store, aggregate, newest);
    }
    let (store, report) = Store::open(&options).unwrap();
    assert_eq!(
        report.events_indexed, 0,
        "a clean close left nothing to index"
    );
    check(&store, &[aggregate], newest);
    check_windows(&store, aggregate, newest);
}

/// Windows that start, end and cross the entries' boundaries.
fn check_windows(store: &Store, aggregate: Uuid, newest: u64) {
    let edge = ENTRY_VERSIONS_MAX as u64;
    check_versions_in(
        store,
        aggregate,
        newest,
        &[
            (1, 1),
            (edge, edge),
            (edge - 3, edge + 3),
            (edge + 1, 2 * edge + 1),
            (2 * edge, newest),
            (newest, newest),
            (newest, u64::MAX),
        ],
    );
}

/// Each window `from..=to` reads back exactly its versions up to `newest`.
fn check_versions_in(store: &Store, aggregate: Uuid, newest: u64, windows: &[(u64, u64)]) {
    for &(from, to) in windows {
        let versions: Vec<u64> = store
            .aggregate_events(aggregate, from, to)
            .unwrap()
            .iter()
            .map(|(_, r)| r.version)
            .collect();
        assert_eq!(
            versions,
            (from..=to.min(newest)).collect::<Vec<_>>(),
            "{from}..={to}"
        );
    }
}

/// What a kill -9 leaves: events written and noted but never indexed in
/// the store. Opening indexes them from the log before it is ready, in
/// rounds when they are many.
#[test]
fn events_a_crash_left_unindexed_are_indexed_when_the_store_opens() {
    let aggregates = [10, 11, u128::MAX].map(Uuid::from_u128);
    let open = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&common::untimed(open.path())).unwrap();
    append(&store, &aggregates, 1, 5);
    store.index_now().unwrap();
    append(&store, &aggregates, 6, 8);
    let crashed = common::crash_image(open.path());
    drop(store);
    for every in [2, 1000] {
        let image = common::crash_image(crashed.path());
        let mut options = common::untimed(image.path());
        options.index_every_events = every;
        let (store, report) = Store::open(&options).unwrap();
        assert_eq!(
            report.events_indexed, 9,
            "the 3 versions of 3 aggregates after the round"
        );
        let stats = store.index_stats();
        assert_eq!((stats.events, stats.pending_events), (9, 0));
        assert_eq!(stats.rounds, if every == 2 { 5 } else { 1 });
        check(&store, &aggregates, 8);
        // Indexed in the store, not only in memory: whole after another
        // crash too.
        let again = common::crash_image(image.path());
        drop(store);
        let (store, report) = Store::open(&StoreOptions::new(again.path())).unwrap();
        assert_eq!(report.events_indexed, 0);
        check(&store, &aggregates, 8);
    }
}

/// The log sequences of an aggregate's versions, oldest first.
fn sequences_of(store: &Store, aggregate: Uuid) -> Vec<u64> {
    store
        .aggregate_events(aggregate, 1, u64::MAX)
        .unwrap()
        .iter()
        .map(|(seq, _)| *seq)
        .collect()
}

/// The data directory as RocksDB alone sees it, to write entries the
/// store would not.
fn raw_put(dir: &Path, key: &[u8], value: &[u8]) {
    let db = common::raw_db(dir);
    db.put_cf(db.cf_handle("aggregate").unwrap(), key, value)
        .unwrap();
}

fn entry(aggregate: Uuid, sequences: &[u64], newest: u64) -> (Vec<u8>, Vec<u8>) {
    let mut key = aggregate.as_bytes().to_vec();
    key.extend_from_slice(&newest.to_be_bytes());
    (
        key,
        sequences.iter().flat_map(|s| s.to_be_bytes()).collect(),
    )
}

/// A round torn by a crash, then written again by the next start, leaves
/// entries that overlap: readers merge them. A version no entry holds,
/// below one that is held, is damage.
#[test]
fn overlapping_entries_are_merged_and_a_missing_version_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new(dir.path());
    let aggregate = Uuid::from_u128(5);
    let sequences: Vec<u64> = {
        let (store, _) = Store::open(&options).unwrap();
        append(&store, &[aggregate], 1, 8);
        sequences_of(&store, aggregate)
    };
    // Versions 3..=6 again, under a key of their own.
    let (key, value) = entry(aggregate, &sequences[2..6], 6);
    raw_put(dir.path(), &key, &value);
    {
        let (store, _) = Store::open(&options).unwrap();
        check(&store, &[aggregate], 8);
    }
    // An entry of versions 11..=12 where 9 and 10 are nowhere.
    let (key, value) = entry(aggregate, &[900, 901], 12);
    raw_put(dir.path(), &key, &value);
    let (store, _) = Store::open(&options).unwrap();
    let err = store.aggregate_events(aggregate, 1, u64::MAX).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("version 9 is missing (found 11)"),
        "{err}"
    );
    // A value that is not a whole number of sequences.
    drop(store);
    let (key, _) = entry(aggregate, &[], 20);
    raw_put(dir.path(), &key, &[1, 2, 3]);
    let (store, _) = Store::open(&options).unwrap();
    let err = store.aggregate_events(aggregate, 15, u64::MAX).unwrap_err();
    assert!(err.to_string().contains("not a list of sequences"), "{err}");
}

/// A quiet store does not keep its last events in memory (nor leave them
/// to a restart after a crash to index again): a round writes them
/// `index_within` after the oldest was noted, however few they are.
#[test]
fn a_quiet_store_indexes_its_few_last_events_within_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.index_within = Duration::from_millis(50);
    let (store, _) = Store::open(&options).unwrap();
    let aggregates = [10, 11, 12].map(Uuid::from_u128);
    for round in 1..=2u64 {
        append(&store, &aggregates, 2 * round - 1, 2 * round);
        let noted = Instant::now();
        while store.index_stats().pending_events > 0 {
            assert!(
                noted.elapsed() < Duration::from_secs(30),
                "round {round}: {:?} still pending",
                store.index_stats()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let stats = store.index_stats();
        assert_eq!(
            (stats.rounds, stats.events, stats.entries),
            (round, 6 * round, 3 * round),
            "far fewer than index_every_events ({}), written all the same",
            options.index_every_events
        );
    }
    let image = common::crash_image(dir.path());
    drop(store);
    let (store, report) = Store::open(&common::untimed(image.path())).unwrap();
    assert_eq!(report.events_indexed, 0, "nothing left to index again");
    check(&store, &aggregates, 4);
}

/// Data formats up to 4 wrote one entry per event, keyed by its own
/// version: such entries read as they are, beside the rounds' entries of
/// many versions that later writes add.
#[test]
fn entries_of_one_event_each_read_as_they_are_beside_a_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let aggregate = Uuid::from_u128(21);
    let neighbour = Uuid::from_u128(22);
    let sequences: Vec<u64> = {
        let (store, _) = Store::open(&common::untimed(dir.path())).unwrap();
        append(&store, &[aggregate, neighbour], 1, 4);
        sequences_of(&store, aggregate)
    };
    // The round's entry of versions 1..=4 replaced by four of one version.
    {
        let db = common::raw_db(dir.path());
        let cf = db.cf_handle("aggregate").unwrap();
        db.delete_cf(cf, entry(aggregate, &sequences, 4).0).unwrap();
        for (version, seq) in (1..=4).zip(&sequences) {
            let (key, value) = entry(aggregate, &[*seq], version);
            db.put_cf(cf, key, value).unwrap();
        }
        let keys = db
            .prefix_iterator_cf(cf, aggregate.as_bytes())
            .map(|item| item.unwrap().0)
            .take_while(|key| key.starts_with(aggregate.as_bytes()))
            .count();
        assert_eq!(keys, 4, "one entry per version, as format 4 wrote");
    }
    let (store, _) = Store::open(&common::untimed(dir.path())).unwrap();
    check(&store, &[aggregate, neighbour], 4);
    check_versions_in(&store, aggregate, 4, &[(2, 2), (2, 3), (4, u64::MAX)]);
    append(&store, &[aggregate, neighbour], 5, 7);
    store.index_now().unwrap();
    check(&store, &[aggregate, neighbour], 7);
    drop(store);
    let (store, _) = Store::open(&common::untimed(dir.path())).unwrap();
    check(&store, &[aggregate, neighbour], 7);
}
