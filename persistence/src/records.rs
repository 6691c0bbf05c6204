//! The values stored in each column family.

use crate::key_digests::KeyDigests;
use loyalty_engine::enrollment::{Enrollment, Request, TransactionOutcome};
use loyalty_engine::{BusinessId, DomainEvent, EventId, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The aggregate (enrollment, program, customer, business) it belongs to.
    pub aggregate_id: Uuid,
    /// The aggregate's version after this event; the first event is 1.
    pub version: u64,
    pub event_id: EventId,
    /// The tenant whose feed the event belongs to.
    pub business_id: BusinessId,
    /// When the command that produced it was decided.
    pub recorded_at: Timestamp,
    pub event: DomainEvent,
}

/// An enrollment's state at a version, so activation replays only the tail
/// (envelope format [`SNAPSHOT_FORMAT`](crate::envelope::SNAPSHOT_FORMAT)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub version: u64,
    pub state: Enrollment,
    /// Digests of every idempotency key the enrollment had a record for at
    /// `version`; `None` if the writer did not know them (a snapshot of
    /// the first format, or one written in bulk by a tool).
    pub keys: Option<KeyDigests>,
}

/// A snapshot to encode, borrowing the state: encodes to the same bytes as
/// [`SnapshotRecord`] without copying the state first.
#[derive(Serialize)]
pub(crate) struct SnapshotRecordRef<'a> {
    pub version: u64,
    pub state: &'a Enrollment,
    pub keys: Option<&'a KeyDigests>,
}

/// A snapshot of envelope format 1, before key digests: still read.
#[derive(Deserialize)]
pub(crate) struct SnapshotRecordV1 {
    pub version: u64,
    pub state: Enrollment,
}

/// What a transaction answered: kept with its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub outcome: TransactionOutcome,
    /// The id of the event that records the transaction.
    pub event_id: EventId,
}

/// The first request made with an idempotency key, and its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub request: Request,
    pub answer: StoredAnswer,
    pub recorded_at: Timestamp,
}

/// An API key, found by the SHA-256 of its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: Uuid,
    pub business_id: BusinessId,
    pub issued_at: Timestamp,
}
