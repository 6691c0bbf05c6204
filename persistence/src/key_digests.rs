//! Digests of one enrollment's idempotency keys: how an active enrollment
//! tells that a key is new without asking the store.
//!
//! Almost every transaction brings a key never seen before, and proving
//! that to RocksDB costs a `Get` through the memtable and the bloom filter
//! of every level-0 file and level: 10.5 % of the engine's CPU under the
//! batch load. An enrollment actor instead keeps sorted 32-bit digests of
//! its keys that have a record. A key whose digest is not held has no
//! record, so the store is not asked; a digest that is held (a repeat, or
//! one collision in about 2^32 / n) is looked up as before. The digests
//! are a filter in front of the store, never in place of it: they may say
//! "maybe" wrongly, never "no".
//!
//! **They age with the records.** Records are dropped once older than the
//! store's retention ([`crate::retention`]), so a digest need not outlive
//! its record's retention; without aging, a loyal customer's digests
//! would only grow, until past [`KEY_DIGESTS_MAX`] the enrollment gave up
//! on them for good and paid a store read per transaction. So the digests
//! are held in two generations, each a sorted run: new keys join the
//! current one; once the older one's newest key is more than a retention
//! old, that generation is dropped and the current one becomes the older.
//! Every key is held for longer than the retention after it was noted,
//! by the clock that stamps its record, so at least as long as the store
//! promises to keep the record; and for about two retentions at most.
//! Without a retention (records kept for ever) nothing ages. A clock set
//! ahead forgets digests early, as it drops records early
//! ([`crate::retention`]).
//!
//! Past the bound (more keys than [`KEY_DIGESTS_MAX`] within two
//! generations) every key is looked up in the store. That state ends a
//! retention later: the enrollment's next transaction then reads its keys
//! from the store again ([`KeyDigests::rescan_at`]), once, and keeps
//! digests if what is left fits.
//!
//! The digests travel with the enrollment's snapshot, so activating an
//! enrollment whose snapshot covers its whole history costs nothing more.
//! Otherwise (events follow the snapshot, as after a crash or a restart,
//! or the snapshot predates digests) the enrollment's first transaction
//! reads the keys from the store once:
//! [`Store::key_digests`](crate::Store::key_digests).

use loyalty_engine::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Most digests one enrollment keeps (16 KiB of memory, up to 20 KiB in a
/// snapshot, as varints). Past this the enrollment
/// asks the store about every key, as it would without digests, so a
/// customer with many transactions within a retention costs bounded memory
/// and snapshot bytes.
pub const KEY_DIGESTS_MAX: usize = 4_096;

/// The digests of every idempotency key an enrollment may have a record for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDigests(Held);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Held {
    Known {
        /// Two runs, each sorted ascending with each digest once:
        /// `digests[..older]` the older generation, `digests[older..]` the
        /// current one. A digest may be in both (a key noted again after
        /// its record expired, or two keys of one digest).
        digests: Vec<u32>,
        older: u32,
        /// When the newest key of the older generation was noted: the
        /// generation is dropped once more than a retention has passed
        /// since.
        older_newest: Timestamp,
        /// When the newest key of the current generation was noted; `None`
        /// if unknown (no key yet, or digests of a format-2 snapshot): the
        /// generation then counts as noted when it becomes the older one.
        current_newest: Option<Timestamp>,
    },
    /// More than [`KEY_DIGESTS_MAX`] keys: every key is looked up.
    TooMany {
        /// When the keys are worth reading from the store again (some will
        /// have expired by then); `None` without a retention: never.
        rescan_at: Option<Timestamp>,
    },
}

/// Digests as snapshots of envelope format 2 held them: one run that
/// never aged. Read, never written.
#[derive(Deserialize)]
pub(crate) enum KeyDigestsV2 {
    Known(Vec<u32>),
    TooMany,
}

impl From<KeyDigestsV2> for KeyDigests {
    /// The old run becomes the current generation, noted at an unknown
    /// time: the next insert makes it the older one, held for a retention
    /// from then.
    /// "Too many" is read again at the next transaction.
    fn from(old: KeyDigestsV2) -> Self {
        KeyDigests(match old {
            KeyDigestsV2::Known(digests) => Held::Known {
                digests,
                older: 0,
                older_newest: Timestamp(0),
                current_newest: None,
            },
            KeyDigestsV2::TooMany => Held::TooMany {
                rescan_at: Some(Timestamp(0)),
            },
        })
    }
}

/// `at` plus `keep_for`, saturating.
fn after(at: Timestamp, keep_for: Duration) -> Timestamp {
    let keep_for_ms = i64::try_from(keep_for.as_millis()).unwrap_or(i64::MAX);
    Timestamp(at.0.saturating_add(keep_for_ms))
}

impl KeyDigests {
    /// No keys at all (a new enrollment).
    pub fn none() -> Self {
        KeyDigests(Held::Known {
            digests: Vec::new(),
            older: 0,
            older_newest: Timestamp(0),
            current_newest: None,
        })
    }

    /// The digests of an enrollment's keys as read from the store at `now`
    /// (`None`: more than [`KEY_DIGESTS_MAX`]), sorted with each once.
    /// They are held for `keep_for` from `now`, as if all noted then.
    pub fn read_back(found: Option<Vec<u32>>, now: Timestamp, keep_for: Option<Duration>) -> Self {
        KeyDigests(match found {
            Some(digests) => Held::Known {
                digests,
                older: 0,
                older_newest: Timestamp(0),
                current_newest: Some(now),
            },
            None => Held::TooMany {
                rescan_at: keep_for.map(|keep_for| after(now, keep_for)),
            },
        })
    }

    /// The digest of a key. It is stored, so it must never change: CRC-32
    /// (Castagnoli would do as well; this is the one already in use).
    pub fn digest(key: &str) -> u32 {
        Self::digest_bytes(key.as_bytes())
    }

    /// [`KeyDigests::digest`] of a key as stored (its UTF-8 bytes).
    pub fn digest_bytes(key: &[u8]) -> u32 {
        crc32fast::hash(key)
    }

    /// False only if no record for a key of this digest can exist.
    pub fn may_contain(&self, digest: u32) -> bool {
        match &self.0 {
            Held::Known { digests, older, .. } => {
                let (older, current) = digests.split_at(*older as usize);
                current.binary_search(&digest).is_ok() || older.binary_search(&digest).is_ok()
            }
            Held::TooMany { .. } => true,
        }
    }

    /// Notes a key about to get a record stamped `at`, in a store that
    /// keeps records `keep_for` (`None`: for ever). Must be called before
    /// the record can be read back from the store, and before any snapshot
    /// that covers it is taken.
    pub fn insert(&mut self, digest: u32, at: Timestamp, keep_for: Option<Duration>) {
        let Held::Known {
            digests,
            older,
            older_newest,
            current_newest,
        } = &mut self.0
        else {
            return;
        };
        if let Some(keep_for) = keep_for {
            // Every key of the older generation was noted more than a
            // retention ago by this clock, so its record may be gone (the
            // retention drops records older than that): drop the
            // generation, and start a new current one.
            if *older == 0 || at > after(*older_newest, keep_for) {
                digests.drain(..*older as usize);
                *older = digests.len() as u32;
                *older_newest = current_newest.take().unwrap_or(at);
            }
        }
        let start = *older as usize;
        if let Err(place) = digests[start..].binary_search(&digest) {
            if digests.len() < KEY_DIGESTS_MAX {
                digests.insert(start + place, digest);
                *current_newest = Some(current_newest.map_or(at, |newest| newest.max(at)));
            } else {
                self.0 = Held::TooMany {
                    rescan_at: keep_for.map(|keep_for| after(at, keep_for)),
                };
            }
        }
    }

    /// When "too many" is worth reading from the store again; `None` while
    /// digests are held, or for good without a retention.
    pub fn rescan_at(&self) -> Option<Timestamp> {
        match &self.0 {
            Held::Known { .. } => None,
            Held::TooMany { rescan_at } => *rescan_at,
        }
    }

    /// The digests held, both generations (a digest in both comes twice);
    /// `None` past the bound (which is not "no keys": it may contain
    /// every key).
    pub fn known(&self) -> Option<impl Iterator<Item = u32> + '_> {
        match &self.0 {
            Held::Known { digests, .. } => Some(digests.iter().copied()),
            Held::TooMany { .. } => None,
        }
    }

    /// How many digests are held (see [`KeyDigests::known`]).
    pub fn count(&self) -> Option<usize> {
        match &self.0 {
            Held::Known { digests, .. } => Some(digests.len()),
            Held::TooMany { .. } => None,
        }
    }

    /// Whether these are digests [`KeyDigests::may_contain`] can search:
    /// two runs, each sorted with each digest once, within the bound. A
    /// set read back from a snapshot is checked, as an unsorted one would
    /// take known keys for new.
    pub fn is_well_formed(&self) -> bool {
        match &self.0 {
            Held::Known { digests, older, .. } => {
                let sorted = |run: &[u32]| run.windows(2).all(|w| w[0] < w[1]);
                digests.len() <= KEY_DIGESTS_MAX
                    && (*older as usize) <= digests.len()
                    && sorted(&digests[..*older as usize])
                    && sorted(&digests[*older as usize..])
            }
            Held::TooMany { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_engine::time::DAY_MS;

    const T0: Timestamp = Timestamp(1_700_000_000_000);
    const WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    fn day(n: i64) -> Timestamp {
        Timestamp(T0.0 + n * DAY_MS)
    }

    #[test]
    fn a_key_is_new_until_inserted_and_never_forgotten_without_a_retention() {
        let mut keys = KeyDigests::none();
        let a = KeyDigests::digest("pos-7-0001");
        let b = KeyDigests::digest("pos-7-0002");
        assert!(!keys.may_contain(a));
        keys.insert(a, day(0), None);
        keys.insert(a, day(0), None);
        assert!(keys.may_contain(a));
        assert!(!keys.may_contain(b));
        keys.insert(b, day(10_000), None);
        assert!(keys.may_contain(a) && keys.may_contain(b));
        assert_eq!(keys.count(), Some(2));
        assert!(keys.is_well_formed(), "sorted, no repeats");
        let run = |digests| KeyDigests::read_back(Some(digests), T0, None);
        assert!(!run(vec![b.max(a), b.min(a)]).is_well_formed());
        assert!(!run(vec![a, a]).is_well_formed());
    }

    #[test]
    fn a_key_is_held_for_the_retention_after_it_was_noted_then_forgotten() {
        let mut keys = KeyDigests::none();
        let digest = |n: i64| KeyDigests::digest(&format!("key-{n}"));
        // One key a day for 30 days, a week's retention.
        for n in 0..30 {
            keys.insert(digest(n), day(n), Some(WEEK));
            for m in 0..=n {
                let age = n - m;
                if age < 7 {
                    assert!(keys.may_contain(digest(m)), "day {n}: key of day {m} lost");
                }
                // Never more than two retentions' worth.
                if age > 15 {
                    assert!(!keys.may_contain(digest(m)), "day {n}: key of day {m} kept");
                }
            }
            assert!(keys.count().unwrap() <= 16, "{:?} on day {n}", keys.count());
            assert!(keys.is_well_formed());
        }
    }

    #[test]
    fn the_hold_is_measured_from_the_newest_key_even_when_the_clock_steps_back() {
        let mut keys = KeyDigests::none();
        let (early, late, after_step) = (
            KeyDigests::digest("early"),
            KeyDigests::digest("late"),
            KeyDigests::digest("after the step"),
        );
        keys.insert(early, day(0), Some(WEEK));
        keys.insert(late, day(10), Some(WEEK));
        // The clock steps back a day: `late` was noted on day 10 and must
        // be held until day 17 by any reading of the clock.
        keys.insert(after_step, day(9), Some(WEEK));
        keys.insert(KeyDigests::digest("day 16"), day(16), Some(WEEK));
        assert!(keys.may_contain(late) && keys.may_contain(after_step));
        keys.insert(KeyDigests::digest("day 30"), day(30), Some(WEEK));
        assert!(!keys.may_contain(early));
    }

    #[test]
    fn past_the_bound_every_key_is_maybe_seen_until_the_rescan() {
        let mut keys = KeyDigests::none();
        for n in 0..KEY_DIGESTS_MAX {
            keys.insert(KeyDigests::digest(&format!("key-{n}")), day(0), Some(WEEK));
        }
        assert_eq!(keys.count(), Some(KEY_DIGESTS_MAX));
        assert_eq!(keys.rescan_at(), None);
        let fresh = KeyDigests::digest("one more");
        assert!(!keys.may_contain(fresh));
        keys.insert(fresh, day(1), Some(WEEK));
        assert_eq!(keys.count(), None);
        assert_eq!(keys.rescan_at(), Some(day(8)));
        assert!(keys.may_contain(KeyDigests::digest("anything at all")));
        keys.insert(KeyDigests::digest("still too many"), day(2), Some(WEEK));
        assert_eq!(
            keys.rescan_at(),
            Some(day(8)),
            "set once, when the bound was passed"
        );
        // Without a retention nothing expires, so there is no rescan.
        let mut kept = KeyDigests::none();
        for n in 0..=KEY_DIGESTS_MAX {
            kept.insert(KeyDigests::digest(&format!("key-{n}")), day(0), None);
        }
        assert_eq!((kept.count(), kept.rescan_at()), (None, None));
    }

    #[test]
    fn a_year_of_daily_keys_stays_within_the_bound() {
        // Twenty keys a day for a year with the default 30 days: before
        // the digests aged, this customer passed the bound in 205 days.
        let mut keys = KeyDigests::none();
        let month = Duration::from_secs(30 * 24 * 60 * 60);
        for n in 0..365 * 20 {
            let at = Timestamp(T0.0 + n * DAY_MS / 20);
            keys.insert(KeyDigests::digest(&format!("key-{n}")), at, Some(month));
        }
        let held = keys.count().expect("within the bound");
        assert!((600..=1_220).contains(&held), "{held} digests held");
    }

    #[test]
    fn digests_of_format_2_snapshots_are_read_and_then_age() {
        let a = KeyDigests::digest("a");
        let mut keys = KeyDigests::from(KeyDigestsV2::Known(vec![a]));
        assert!(keys.is_well_formed() && keys.may_contain(a));
        keys.insert(KeyDigests::digest("b"), day(100), Some(WEEK));
        assert!(
            keys.may_contain(a),
            "held for a retention from the first insert"
        );
        keys.insert(KeyDigests::digest("c"), day(106), Some(WEEK));
        assert!(keys.may_contain(a));
        keys.insert(KeyDigests::digest("d"), day(108), Some(WEEK));
        assert!(!keys.may_contain(a));
        let too_many = KeyDigests::from(KeyDigestsV2::TooMany);
        assert_eq!(
            too_many.rescan_at(),
            Some(Timestamp(0)),
            "read again at once"
        );
    }

    #[test]
    fn the_digest_is_stable() {
        // Digests are stored in snapshots: a change would make old
        // snapshots say "new" for keys they hold.
        assert_eq!(KeyDigests::digest("123456789"), 0xcbf4_3926);
    }
}
