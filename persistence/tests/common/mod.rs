//! Records the store's tests write.

use loyalty_engine::enrollment::earn::{EarnPoints, EarnValue};
use loyalty_engine::enrollment::{Request, TransactionOutcome};
use loyalty_engine::{EventId, Timestamp, TransactionId};
use loyalty_persistence::{IdempotencyRecord, StoredAnswer};
use uuid::Uuid;

/// The idempotency record of an earn of 10 points, decided at `recorded_at`.
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
