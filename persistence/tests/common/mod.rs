//! Records the store's tests write, and a crash image of a directory.

use loyalty_engine::enrollment::earn::{EarnPoints, EarnValue};
use loyalty_engine::enrollment::{Request, TransactionOutcome};
use loyalty_engine::{EventId, Timestamp, TransactionId};
use loyalty_persistence::{IdempotencyRecord, StoredAnswer};
use uuid::Uuid;

/// The idempotency record of an earn of 10 points, decided at `recorded_at`.
#[allow(dead_code)] // Not every test file writes records.
pub fn earn_record(recorded_at: Timestamp) -> IdempotencyRecord {
    IdempotencyRecord {
        request: Request::Earn(EarnPoints {
            value: EarnValue::Points(10),
            reason: None,
            reference: Some("till 4".into()),
        }),
        answer: StoredAnswer {
            outcome: TransactionOutcome {
                transaction_id: TransactionId(Uuid::now_v7()),
                points: 10,
                shortfall: 0,
                balance: 10,
                pending: 0,
                lifetime_points: 10,
                tier: None,
                version: 2,
                event_index: 0,
            },
            event_id: EventId(Uuid::now_v7()),
        },
        recorded_at,
    }
}

/// A copy of an open store's directory, file by file: what a kill -9 at
/// this moment would leave (every write so far has reached the operating
/// system, and nothing the store would do on a clean close, such as the
/// aggregate index's last round, has happened).
#[allow(dead_code)] // Not every test file crashes a store.
pub fn crash_image(dir: &std::path::Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, image.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    image
}

/// Store options whose aggregate index rounds come only when a test asks
/// for one (a flush, a clean close) or a count makes one due, never because
/// time passed: what a test finds indexed, or what a crash image holds,
/// does not depend on how fast it ran.
#[allow(dead_code)] // Not every test file counts rounds.
pub fn untimed(path: &std::path::Path) -> loyalty_persistence::StoreOptions {
    let mut options = loyalty_persistence::StoreOptions::new(path);
    options.index_within = std::time::Duration::from_secs(3600);
    options
}

/// The data directory as RocksDB alone sees it (no engine options), to
/// write what the store would not.
#[allow(dead_code)] // Not every test file damages a directory.
pub fn raw_db(dir: &std::path::Path) -> rocksdb::DB {
    use loyalty_persistence::keys::Cf;
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, Cf::ALL.map(Cf::name)).unwrap()
}
