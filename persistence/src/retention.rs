//! How long idempotency records are kept, and the compaction filter that
//! drops them afterwards.
//!
//! Every successful transaction leaves an idempotency record (its first
//! request and its answer; in the `answers` column family, or in
//! `idempotency` for an enrollment past its key digests' bound and for
//! directories written before format 4), so without a bound those
//! families grow with every sale for ever. The contract promises keys for
//! at least [`MIN_IDEMPOTENCY_RETENTION`] (7 days); the engine keeps them
//! [`DEFAULT_IDEMPOTENCY_RETENTION`] unless told otherwise, and never less
//! than the contract's 7 days.
//!
//! Records are dropped by RocksDB's compactions, not by a sweep: a
//! compaction that rewrites a record whose `recorded_at` lies further back
//! than the retention leaves it out ([`ExpiredRecords`]). Records put
//! `recorded_at` first (envelope format
//! [`IDEMPOTENCY_FORMAT`](crate::envelope::IDEMPOTENCY_FORMAT)), so the
//! filter checks the envelope and reads one varint, about 50 ns a record
//! (criterion `retention/check`), where decoding the whole record took
//! four times that; every compaction a record passes through pays it
//! again.
//!
//! Nothing else changes: a key whose record is gone is a new key again,
//! and the enrollment's key digests (which may still hold its digest) only
//! cost that key a read that finds nothing. Compactions run as data moves
//! down the levels; for a quiet engine whose files would otherwise never
//! be rewritten, the column family also asks RocksDB for a periodic
//! compaction of any file no compaction has written for a quarter of the
//! retention ([`IdempotencyRetention::periodic_compaction`]), so a record
//! outlives its retention by about that much at most. Not less: a
//! compaction's output files count from when they were written, so a
//! period of a day would rewrite the whole family every day, some thirty
//! times over a record's 30 days, where a quarter costs at most four.
//!
//! A record's age is judged by this machine's clock against the time the
//! engine's clock gave the record: a clock set ahead drops records early,
//! which the default's margin over the contract's 7 days absorbs.
//!
//! A record that cannot be decoded is kept: dropping it would hide damage
//! that reading it reports.

use crate::error::StoreError;
use crate::records::{answer, IdempotencyRecord};
use loyalty_engine::Timestamp;
use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The filter's name in RocksDB's LOG (the factory and its filters alike).
const FILTER_NAME: &CStr = c"loyalty-idempotency-retention";

/// The contract's promise: a key is remembered at least this long.
pub const MIN_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What the engine keeps unless configured: well past the contract's 7
/// days, so that a till that was offline for a week or two and replays
/// its queued sales still finds their keys.
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How long idempotency records are kept: never less than
/// [`MIN_IDEMPOTENCY_RETENTION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyRetention {
    keep_for: Duration,
}

/// A retention shorter than the contract allows.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("idempotency keys must be kept at least {min_days} days (the contract); {days} days asked")]
pub struct RetentionTooShort {
    pub days: u64,
    pub min_days: u64,
}

impl IdempotencyRetention {
    /// Keep records this many days.
    pub fn days(days: u64) -> Result<Self, RetentionTooShort> {
        let min_days = MIN_IDEMPOTENCY_RETENTION.as_secs() / DAY.as_secs();
        if days < min_days {
            return Err(RetentionTooShort { days, min_days });
        }
        Ok(IdempotencyRetention {
            keep_for: DAY.saturating_mul(u32::try_from(days).unwrap_or(u32::MAX)),
        })
    }

    pub fn keep_for(self) -> Duration {
        self.keep_for
    }

    /// The age past which RocksDB rewrites a table file of the records
    /// even when nothing else would: a quarter of the retention, at least
    /// a day. How long a record may outlive its retention on an engine too
    /// quiet to compact, and how often such a file is rewritten for it.
    pub fn periodic_compaction(self) -> Duration {
        (self.keep_for / 4).max(DAY)
    }
}

impl Default for IdempotencyRetention {
    fn default() -> Self {
        IdempotencyRetention {
            keep_for: DEFAULT_IDEMPOTENCY_RETENTION,
        }
    }
}

/// Makes one [`ExpiredRecords`] filter per compaction, each with the time
/// the compaction started (so one compaction judges every record against
/// the same instant). Counts what its filters drop.
pub(crate) struct RetentionFilterFactory {
    pub retention: IdempotencyRetention,
    pub dropped: Arc<AtomicU64>,
    /// How the family's values are laid out.
    pub layout: RecordLayout,
}

/// Which of the two families holding idempotency records a filter judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordLayout {
    /// `idempotency`: a record's envelope.
    Keyed,
    /// `answers`: its key, then its envelope ([`crate::records::answer`]).
    Answer,
}

impl RecordLayout {
    /// When a stored value of this layout was recorded, decoding nothing
    /// else.
    fn recorded_at_of(self, value: &[u8]) -> Result<Timestamp, StoreError> {
        match self {
            RecordLayout::Keyed => IdempotencyRecord::recorded_at_of(value),
            RecordLayout::Answer => answer::recorded_at_of(value),
        }
    }
}

/// A duration in whole milliseconds, saturating (retentions are judged
/// against millisecond timestamps).
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl CompactionFilterFactory for RetentionFilterFactory {
    type Filter = ExpiredRecords;

    fn create(&mut self, _context: CompactionFilterContext) -> ExpiredRecords {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, duration_ms);
        ExpiredRecords {
            recorded_before_ms: now_ms.saturating_sub(duration_ms(self.retention.keep_for)),
            dropped: self.dropped.clone(),
            layout: self.layout,
        }
    }

    fn name(&self) -> &CStr {
        FILTER_NAME
    }
}

/// The filter of one compaction: drops idempotency records recorded
/// before `recorded_before_ms`. Its count is of decisions: a compaction
/// that fails and is run again counts its records again.
pub(crate) struct ExpiredRecords {
    recorded_before_ms: i64,
    dropped: Arc<AtomicU64>,
    layout: RecordLayout,
}

/// Whether a stored idempotency record was recorded before
/// `recorded_before_ms` (milliseconds since the epoch): what the filter
/// asks of every record a compaction rewrites. A value that cannot be
/// decoded is not: a read of it reports the damage, a drop would hide it.
pub fn expired(value: &[u8], recorded_before_ms: i64) -> bool {
    expired_as(RecordLayout::Keyed, value, recorded_before_ms)
}

/// [`expired`] for a value of either family.
fn expired_as(layout: RecordLayout, value: &[u8], recorded_before_ms: i64) -> bool {
    match layout.recorded_at_of(value) {
        Ok(recorded_at) => recorded_at.0 < recorded_before_ms,
        Err(_) => false,
    }
}

impl CompactionFilter for ExpiredRecords {
    fn filter(&mut self, _level: u32, _key: &[u8], value: &[u8]) -> Decision {
        if expired_as(self.layout, value, self.recorded_before_ms) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            Decision::Remove
        } else {
            Decision::Keep
        }
    }

    fn name(&self) -> &CStr {
        FILTER_NAME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_never_below_the_contracts_seven_days() {
        assert_eq!(
            IdempotencyRetention::days(6),
            Err(RetentionTooShort {
                days: 6,
                min_days: 7
            })
        );
        assert_eq!(
            IdempotencyRetention::days(0).unwrap_err().to_string(),
            "idempotency keys must be kept at least 7 days (the contract); 0 days asked"
        );
        assert_eq!(
            IdempotencyRetention::days(7).unwrap().keep_for(),
            MIN_IDEMPOTENCY_RETENTION
        );
        assert_eq!(
            IdempotencyRetention::default().keep_for(),
            IdempotencyRetention::days(30).unwrap().keep_for()
        );
        // A file nothing else rewrites is rewritten every quarter of the
        // retention, never more often than daily.
        assert_eq!(
            IdempotencyRetention::default().periodic_compaction(),
            DAY * 30 / 4
        );
        assert_eq!(
            IdempotencyRetention::days(7).unwrap().periodic_compaction(),
            DAY * 7 / 4
        );
        assert_eq!(
            IdempotencyRetention::days(3650)
                .unwrap()
                .periodic_compaction(),
            DAY * 3650 / 4
        );
        // Absurdly long asks saturate rather than overflow.
        assert!(IdempotencyRetention::days(u64::MAX).is_ok());
    }

    #[test]
    fn an_undecodable_value_is_kept() {
        for layout in [RecordLayout::Keyed, RecordLayout::Answer] {
            let mut filter = ExpiredRecords {
                recorded_before_ms: i64::MAX,
                dropped: Arc::default(),
                layout,
            };
            for value in [&b"not an envelope"[..], b"", b"\x05abc"] {
                assert!(matches!(filter.filter(1, b"key", value), Decision::Keep));
            }
            assert_eq!(filter.dropped.load(Ordering::Relaxed), 0);
        }
    }
}
