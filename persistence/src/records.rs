//! The values stored in each column family.

use crate::envelope::{self, Kind, FORMAT, IDEMPOTENCY_FORMAT};
use crate::error::StoreError;
use crate::key_digests::{KeyDigests, KeyDigestsV2};
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

/// A snapshot of envelope format 2, whose key digests did not age: still
/// read.
#[derive(Deserialize)]
pub(crate) struct SnapshotRecordV2 {
    pub version: u64,
    pub state: Enrollment,
    pub keys: Option<KeyDigestsV2>,
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

/// An idempotency record as encoded since envelope format
/// [`IDEMPOTENCY_FORMAT`]: `recorded_at` first, so that a compaction
/// judging the record's age ([`crate::retention`]) reads one varint and
/// decodes nothing else. Format [`FORMAT`] (the fields in
/// [`IdempotencyRecord`]'s order) is still read.
#[derive(Serialize)]
struct IdempotencyRecordRef<'a> {
    recorded_at: Timestamp,
    request: &'a Request,
    answer: &'a StoredAnswer,
}

/// [`IdempotencyRecordRef`], read back.
#[derive(Deserialize)]
struct IdempotencyRecordV2 {
    recorded_at: Timestamp,
    request: Request,
    answer: StoredAnswer,
}

impl IdempotencyRecord {
    /// The record's envelope, in the current format.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let record = IdempotencyRecordRef {
            recorded_at: self.recorded_at,
            request: &self.request,
            answer: &self.answer,
        };
        envelope::encode_as(IDEMPOTENCY_FORMAT, Kind::Idempotency, &record)
    }

    /// Reads a record of either format.
    pub fn decode(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Self, StoreError> {
        if envelope::format_of(bytes) == Some(FORMAT) {
            return envelope::decode_as(FORMAT, Kind::Idempotency, bytes, what);
        }
        let IdempotencyRecordV2 {
            recorded_at,
            request,
            answer,
        } = envelope::decode_as(IDEMPOTENCY_FORMAT, Kind::Idempotency, bytes, what)?;
        Ok(IdempotencyRecord {
            request,
            answer,
            recorded_at,
        })
    }

    /// When a stored record was recorded, with its envelope checked but
    /// (in the current format) nothing else decoded.
    pub fn recorded_at_of(bytes: &[u8]) -> Result<Timestamp, StoreError> {
        if envelope::format_of(bytes) == Some(FORMAT) {
            return Self::decode(bytes, String::new).map(|record| record.recorded_at);
        }
        let payload = envelope::payload(IDEMPOTENCY_FORMAT, Kind::Idempotency, bytes, String::new)?;
        postcard::take_from_bytes::<Timestamp>(payload)
            .map(|(recorded_at, _)| recorded_at)
            .map_err(|e| StoreError::Corrupt {
                what: String::new(),
                detail: format!("undecodable payload: {e}"),
            })
    }
}

/// Values of the `answers` column family: an idempotency record kept under
/// the sequence of its transaction's event, with its key in front.
///
/// A record kept by (enrollment, key) is an insert at a random place of a
/// hashed memtable on the commit thread and a merge of its hashed lists at
/// every flush: a quarter of the engine's CPU per batched earn (notes,
/// "What remains", item 4). Kept by sequence, it goes in behind the log's
/// own record, in order. Lookups by key are rare (a retry, or another key
/// of the same digest) and walk the enrollment's index for the sequences
/// ([`Store::idempotency`](crate::Store::idempotency)).
///
/// Layout: the key's length (one byte: keys are at most
/// [`IDEMPOTENCY_KEY_BYTES_MAX`] bytes), the key, then the record's
/// envelope as [`IdempotencyRecord::encode`] makes it (its time first,
/// for the retention's compaction filter).
pub mod answer {
    use super::IdempotencyRecord;
    use crate::error::StoreError;
    use loyalty_engine::limits::IDEMPOTENCY_KEY_BYTES_MAX;
    use loyalty_engine::Timestamp;

    const _: () = assert!(IDEMPOTENCY_KEY_BYTES_MAX <= u8::MAX as usize);

    /// The stored value of `key`'s record.
    pub fn encode(key: &str, record: &IdempotencyRecord) -> Result<Vec<u8>, StoreError> {
        let length = u8::try_from(key.len()).map_err(|_| StoreError::Encode {
            what: "answer",
            detail: format!("idempotency key of {} bytes", key.len()),
        })?;
        let envelope = record.encode()?;
        let mut out = Vec::with_capacity(1 + key.len() + envelope.len());
        out.push(length);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&envelope);
        Ok(out)
    }

    /// The key and the record's envelope; `None` if the value is too short
    /// for the length it gives.
    fn split(value: &[u8]) -> Option<(&[u8], &[u8])> {
        let (&length, rest) = value.split_first()?;
        (rest.len() >= usize::from(length)).then(|| rest.split_at(usize::from(length)))
    }

    fn short(what: impl FnOnce() -> String) -> StoreError {
        StoreError::Corrupt {
            what: what(),
            detail: "shorter than the key length it starts with".into(),
        }
    }

    /// The key a stored value is the record of.
    pub fn key_of(value: &[u8], what: impl FnOnce() -> String) -> Result<&[u8], StoreError> {
        split(value).map(|(key, _)| key).ok_or_else(|| short(what))
    }

    /// The key and the record.
    pub fn decode(
        value: &[u8],
        what: impl Fn() -> String,
    ) -> Result<(&[u8], IdempotencyRecord), StoreError> {
        let (key, envelope) = split(value).ok_or_else(|| short(&what))?;
        Ok((key, IdempotencyRecord::decode(envelope, what)?))
    }

    /// When the record was recorded, decoding nothing else.
    pub fn recorded_at_of(value: &[u8]) -> Result<Timestamp, StoreError> {
        let (_, envelope) = split(value).ok_or_else(|| short(String::new))?;
        IdempotencyRecord::recorded_at_of(envelope)
    }
}

/// An API key, found by the SHA-256 of its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: Uuid,
    pub business_id: BusinessId,
    pub issued_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    /// An enrollment's tier (and a transaction outcome's) is held as an
    /// `Arc<str>` since it stopped being copied per earn; snapshots and
    /// idempotency records written while it was a `String` must read the
    /// same, and new ones must be readable by a build from before.
    #[test]
    fn a_shared_tier_name_encodes_as_the_string_it_was() {
        for tier in [None, Some("gold"), Some("")] {
            let shared: Option<Arc<str>> = tier.map(Arc::from);
            let owned: Option<String> = tier.map(str::to_owned);
            let shared_bytes = postcard::to_allocvec(&shared).unwrap();
            assert_eq!(shared_bytes, postcard::to_allocvec(&owned).unwrap());
            let read: Option<Arc<str>> = postcard::from_bytes(&shared_bytes).unwrap();
            assert_eq!(read.as_deref(), tier);
        }
    }
}
