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
//! "maybe" wrongly, never "no". They are also what finds a record kept in
//! `answers` by its event's sequence ([`crate::records::answer`]): only a
//! key whose digest is held is looked for there, so past the bound, where
//! every key is looked up without one, records are kept and copied by key
//! ([`KeyDigests::answers_uncopied`]).
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
//! ([`crate::retention`]). A clock set back holds keys long enough: each
//! generation is timed by the newest time any of its keys was noted.
//! Digests read back from the store are timed by their newest record
//! (or the reading, if later); those of a format-2 snapshot, which had no
//! times, from the enrollment's next transaction.
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

use crate::retention::duration_ms;
use loyalty_engine::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::num::NonZeroU32;
use std::time::Duration;

/// Most digests one enrollment keeps (16 KiB of memory, up to 20 KiB in a
/// snapshot, as varints). Past this the enrollment
/// asks the store about every key, as it would without digests, so a
/// customer with many transactions within a retention costs bounded memory
/// and snapshot bytes.
pub const KEY_DIGESTS_MAX: usize = 4_096;

/// The digests of every idempotency key an enrollment may have a record for.
///
/// In memory one vector of words, so that they take 24 bytes of every
/// active actor, as before they aged: the times they need inline (16 bytes
/// more) put the actor in the allocator's next size class, which cost
/// about 110 bytes of resident memory per active enrollment in the memory
/// probe. `words` is one of
/// - empty: no keys;
/// - `[older_len, older_newest, current_newest, digests...]`: the two
///   generations (`digests[..older_len]` the older one), each sorted
///   ascending with each digest once; a digest may be in both (a key noted
///   again after its record expired, or two keys of one digest). The two
///   times are [`noted_minute`]s, 0 for none: `older_newest` when the
///   older generation's newest key was noted (it is dropped once more than
///   a retention has passed since), `current_newest` the same for the
///   current one (none if unknown, as for digests of a format-2 snapshot:
///   the generation then counts as noted when it becomes the older one);
/// - `[TOO_MANY, has_rescan, rescan_at low, rescan_at high, uncopied low,
///   uncopied high]`: more than [`KEY_DIGESTS_MAX`] keys, every key looked
///   up; `rescan_at` (in milliseconds, if `has_rescan`) is when the keys
///   are worth reading from the store again, never without a retention;
///   `uncopied` is [`KeyDigests::answers_uncopied`] (0 for none).
///
/// Snapshots hold [`Generations`] instead, checked as they are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDigests {
    words: Vec<u32>,
}

const HEADER_WORDS: usize = 3;
/// The first word of "too many": never a length (at most [`KEY_DIGESTS_MAX`]).
const TOO_MANY: u32 = u32::MAX;

/// Key digests as snapshots (envelope format 3) hold them.
#[derive(Deserialize)]
enum Generations {
    Known {
        digests: Vec<u32>,
        older_len: u32,
        older_newest: Option<NonZeroU32>,
        current_newest: Option<NonZeroU32>,
    },
    TooMany {
        rescan_at: Option<Timestamp>,
    },
}

/// [`Generations`], borrowed from [`KeyDigests`] to be encoded.
#[derive(Serialize)]
enum GenerationsRef<'a> {
    Known {
        digests: &'a [u32],
        older_len: u32,
        older_newest: Option<NonZeroU32>,
        current_newest: Option<NonZeroU32>,
    },
    TooMany {
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
    /// from then. "Too many" is read again at the next transaction.
    fn from(old: KeyDigestsV2) -> Self {
        match old {
            KeyDigestsV2::Known(digests) => KeyDigests::generations(digests, 0, 0, 0),
            KeyDigestsV2::TooMany => KeyDigests::too_many(Some(Timestamp(0))),
        }
    }
}

/// `at` plus `keep_for`, saturating.
fn plus(at: Timestamp, keep_for: Duration) -> Timestamp {
    Timestamp(at.0.saturating_add(duration_ms(keep_for)))
}

const MINUTE_MS: i64 = 60_000;

/// When a key was noted, as a generation keeps it: whole minutes since the
/// epoch, rounded up (never earlier than the key, so a generation is only
/// held a little longer), at least 1 (0 is "none"). A `u32` of minutes
/// lasts beyond the year 10 000.
fn noted_minute(at: Timestamp) -> u32 {
    let minutes = at.0.div_euclid(MINUTE_MS) + i64::from(at.0.rem_euclid(MINUTE_MS) != 0);
    u32::try_from(minutes.max(1)).unwrap_or(u32::MAX)
}

/// The instant a retention after a [`noted_minute`]: keys noted in it may
/// have lost their records once it has passed.
fn minute_plus(minute: u32, keep_for: Duration) -> Timestamp {
    plus(Timestamp(i64::from(minute) * MINUTE_MS), keep_for)
}

/// Whether each digest of a run is greater than the one before.
fn sorted(run: &[u32]) -> bool {
    run.windows(2).all(|w| w[0] < w[1])
}

impl KeyDigests {
    /// No keys at all (a new enrollment).
    pub fn none() -> Self {
        KeyDigests { words: Vec::new() }
    }

    /// Two generations, the older one `digests[..older_len]`; times as
    /// [`noted_minute`]s, 0 for none.
    fn generations(
        digests: Vec<u32>,
        older_len: u32,
        older_newest: u32,
        current_newest: u32,
    ) -> Self {
        if digests.is_empty() {
            return KeyDigests::none();
        }
        // Room for the key whose transaction usually comes next.
        let mut words = Vec::with_capacity(HEADER_WORDS + digests.len() + 1);
        words.extend_from_slice(&[older_len, older_newest, current_newest]);
        words.extend_from_slice(&digests);
        KeyDigests { words }
    }

    fn too_many(rescan_at: Option<Timestamp>) -> Self {
        let ms = rescan_at.map_or(0, |at| at.0 as u64);
        KeyDigests {
            words: vec![
                TOO_MANY,
                u32::from(rescan_at.is_some()),
                ms as u32,
                (ms >> 32) as u32,
                0,
                0,
            ],
        }
    }

    /// Past the bound, the records in `answers` may lack their copy in
    /// `idempotency` (where keys are looked up while the digests are given
    /// up on) until this version is durable: `Some(u64::MAX)` while the
    /// copies are not even queued. `None` once they are all copied, and
    /// while digests are held (every key is then found through them).
    /// Only in memory: a snapshot is written either after the copies
    /// (so they are durable when it is) or without these digests.
    pub fn answers_uncopied(&self) -> Option<u64> {
        match self.words[..] {
            [TOO_MANY, _, _, _, low, high] => {
                Some(u64::from(high) << 32 | u64::from(low)).filter(|v| *v != 0)
            }
            _ => None,
        }
    }

    /// Sets [`KeyDigests::answers_uncopied`]; nothing while digests are held.
    pub fn set_answers_uncopied(&mut self, until: Option<u64>) {
        if let [TOO_MANY, _, _, _, ref mut low, ref mut high] = self.words[..] {
            let until = until.unwrap_or(0);
            *low = until as u32;
            *high = (until >> 32) as u32;
        }
    }

    /// The digests of an enrollment's keys as read from the store (`None`:
    /// more than [`KEY_DIGESTS_MAX`]), sorted with each once, held for
    /// `keep_for` from `newest`: the later of the time they were read and
    /// the newest `recorded_at` among their records, as if all were noted
    /// then.
    pub fn read_back(
        found: Option<Vec<u32>>,
        newest: Timestamp,
        keep_for: Option<Duration>,
    ) -> Self {
        match found {
            Some(digests) => KeyDigests::generations(digests, 0, 0, noted_minute(newest)),
            None => KeyDigests::too_many(keep_for.map(|keep_for| plus(newest, keep_for))),
        }
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

    fn is_too_many(&self) -> bool {
        self.words.first() == Some(&TOO_MANY)
    }

    /// The older and the current generation; `None` past the bound.
    fn runs(&self) -> Option<(&[u32], &[u32])> {
        match self.words.first() {
            None => Some((&[], &[])),
            Some(&TOO_MANY) => None,
            Some(&older_len) => Some(self.words[HEADER_WORDS..].split_at(older_len as usize)),
        }
    }

    /// False only if no record for a key of this digest can exist.
    pub fn may_contain(&self, digest: u32) -> bool {
        match self.runs() {
            Some((older, current)) => {
                current.binary_search(&digest).is_ok() || older.binary_search(&digest).is_ok()
            }
            None => true,
        }
    }

    /// Notes a key about to get a record stamped `at`, in a store that
    /// keeps records `keep_for` (`None`: for ever). Must be called before
    /// the record can be read back from the store, and before any snapshot
    /// that covers it is taken.
    pub fn insert(&mut self, digest: u32, at: Timestamp, keep_for: Option<Duration>) {
        if self.is_too_many() {
            return;
        }
        if self.words.is_empty() {
            self.words.extend_from_slice(&[0, 0, 0]);
        }
        let words = &mut self.words;
        if let Some(keep_for) = keep_for {
            // Every key of the older generation was noted more than a
            // retention ago by this clock, so the store may have dropped
            // its record (it drops records older than that): drop the
            // generation, and start a new current one. An empty older
            // generation is replaced at once, so that the first keys'
            // generation is timed from the first insert after them.
            let older_len = words[0] as usize;
            if older_len > 0 && words[1] == 0 {
                // Of unknown time (never written so): held from now on.
                words[1] = noted_minute(at);
            }
            let (older_newest, current_newest) = (words[1], words[2]);
            if older_len == 0 || at > minute_plus(older_newest, keep_for) {
                words.drain(HEADER_WORDS..HEADER_WORDS + older_len);
                words[0] = (words.len() - HEADER_WORDS) as u32;
                words[1] = if current_newest == 0 {
                    noted_minute(at)
                } else {
                    current_newest
                };
                words[2] = 0;
            }
        }
        let start = HEADER_WORDS + words[0] as usize;
        let noted = match words[start..].binary_search(&digest) {
            // Already held (a repeat, or another key of this digest): the
            // generation must now be held from this key's time on.
            Ok(_) => true,
            Err(place) if words.len() - HEADER_WORDS < KEY_DIGESTS_MAX => {
                words.insert(start + place, digest);
                true
            }
            Err(_) => false,
        };
        if noted {
            words[2] = words[2].max(noted_minute(at));
        } else {
            *self = KeyDigests::too_many(keep_for.map(|keep_for| plus(at, keep_for)));
        }
    }

    /// When "too many" is worth reading from the store again; `None` while
    /// digests are held, or for good without a retention.
    pub fn rescan_at(&self) -> Option<Timestamp> {
        match self.words[..] {
            [TOO_MANY, 1, low, high, _, _] => {
                Some(Timestamp((u64::from(high) << 32 | u64::from(low)) as i64))
            }
            _ => None,
        }
    }

    /// The digests held, both generations (a digest in both comes twice);
    /// `None` past the bound (which is not "no keys": it may contain
    /// every key).
    pub fn known(&self) -> Option<impl Iterator<Item = u32> + '_> {
        self.runs()
            .map(|(older, current)| older.iter().chain(current).copied())
    }

    /// How many digests are held (see [`KeyDigests::known`]).
    pub fn count(&self) -> Option<usize> {
        self.runs()
            .map(|(older, current)| older.len() + current.len())
    }

    /// Whether these are digests [`KeyDigests::may_contain`] can search:
    /// two runs, each sorted with each digest once, within the bound.
    /// Digests read back from a snapshot are checked, as an unsorted run
    /// would take known keys for new.
    pub fn is_well_formed(&self) -> bool {
        match self.words[..] {
            [] | [TOO_MANY, 0 | 1, _, _, _, _] => true,
            [TOO_MANY, ..] => false,
            [older_len, _, _, ref digests @ ..] => {
                digests.len() <= KEY_DIGESTS_MAX
                    && !digests.is_empty()
                    && (older_len as usize) <= digests.len()
                    && sorted(&digests[..older_len as usize])
                    && sorted(&digests[older_len as usize..])
            }
            _ => false,
        }
    }
}

impl Serialize for KeyDigests {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match self.words[..] {
            [] => GenerationsRef::Known {
                digests: &[],
                older_len: 0,
                older_newest: None,
                current_newest: None,
            },
            [TOO_MANY, ..] => GenerationsRef::TooMany {
                rescan_at: self.rescan_at(),
            },
            [older_len, older_newest, current_newest, ref digests @ ..] => GenerationsRef::Known {
                digests,
                older_len,
                older_newest: NonZeroU32::new(older_newest),
                current_newest: NonZeroU32::new(current_newest),
            },
            _ => unreachable!("key digests of {} words", self.words.len()),
        };
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for KeyDigests {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let digests = match Generations::deserialize(deserializer)? {
            Generations::Known {
                digests,
                older_len,
                older_newest,
                current_newest,
            } => KeyDigests::generations(
                digests,
                older_len,
                older_newest.map_or(0, NonZeroU32::get),
                current_newest.map_or(0, NonZeroU32::get),
            ),
            Generations::TooMany { rescan_at } => KeyDigests::too_many(rescan_at),
        };
        // Checked here too, so that no malformed digests exist in memory.
        if !digests.is_well_formed() {
            return Err(serde::de::Error::custom(
                "key digests not in two sorted runs within the bound",
            ));
        }
        Ok(digests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_engine::time::DAY_MS;

    /// A whole minute, so that days from it are too.
    const T0: Timestamp = Timestamp(1_700_000_040_000);
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
                // The store keeps a record a week old to the millisecond.
                if age <= 7 {
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
    fn a_generation_is_held_from_its_newest_key_even_when_the_clock_steps_back() {
        let mut keys = KeyDigests::none();
        let [early, first, late, after_step] =
            ["early", "first", "late", "after the step"].map(KeyDigests::digest);
        keys.insert(early, day(0), Some(WEEK));
        // `first` starts the generation that `late` and `after_step` join.
        keys.insert(first, day(1), Some(WEEK));
        keys.insert(late, day(5), Some(WEEK));
        // The clock steps back a day: `late` was noted on day 5 and must
        // be held a week from then by any later reading of the clock.
        keys.insert(after_step, day(4), Some(WEEK));
        keys.insert(KeyDigests::digest("day 8"), day(8), Some(WEEK));
        assert!(!keys.may_contain(early), "more than a week old on day 8");
        keys.insert(KeyDigests::digest("day 12"), day(12), Some(WEEK));
        assert!(keys.may_contain(late) && keys.may_contain(after_step));
        keys.insert(
            KeyDigests::digest("just after"),
            Timestamp(day(12).0 + 1),
            Some(WEEK),
        );
        assert!(!keys.may_contain(late) && !keys.may_contain(after_step));
    }

    #[test]
    fn a_digest_noted_again_holds_its_generation_from_the_later_key() {
        // Two keys of one digest (or one key whose record expired): the
        // second's record is kept a retention from its own time.
        let mut keys = KeyDigests::none();
        let shared = KeyDigests::digest("shared");
        keys.insert(KeyDigests::digest("start"), day(0), Some(WEEK));
        keys.insert(shared, day(1), Some(WEEK));
        keys.insert(KeyDigests::digest("other"), day(2), Some(WEEK));
        keys.insert(shared, day(6), Some(WEEK));
        keys.insert(KeyDigests::digest("day 8"), day(8), Some(WEEK));
        keys.insert(KeyDigests::digest("day 13"), day(13), Some(WEEK));
        assert!(
            keys.may_contain(shared),
            "noted again on day 6: held to day 13"
        );
        keys.insert(KeyDigests::digest("day 14"), day(14), Some(WEEK));
        assert!(!keys.may_contain(shared));
    }

    #[test]
    fn times_are_kept_to_the_minute_rounded_up() {
        // Noted a millisecond into a minute: held to the end of that
        // minute plus the retention, never less than the retention.
        let mut keys = KeyDigests::none();
        let (a, b) = (KeyDigests::digest("a"), KeyDigests::digest("b"));
        keys.insert(KeyDigests::digest("start"), day(0), Some(WEEK));
        keys.insert(b, day(1), Some(WEEK));
        // The newest of its generation: the generation is timed by it.
        keys.insert(a, Timestamp(day(2).0 + 1), Some(WEEK));
        keys.insert(KeyDigests::digest("c"), day(8), Some(WEEK));
        let minute_on = Timestamp(day(9).0 + MINUTE_MS);
        keys.insert(KeyDigests::digest("d"), minute_on, Some(WEEK));
        assert!(keys.may_contain(a) && keys.may_contain(b));
        keys.insert(
            KeyDigests::digest("e"),
            Timestamp(minute_on.0 + 1),
            Some(WEEK),
        );
        assert!(!keys.may_contain(a) && !keys.may_contain(b));
        assert_eq!(noted_minute(Timestamp(0)), 1);
        assert_eq!(noted_minute(Timestamp(-5)), 1);
        assert_eq!(noted_minute(Timestamp(i64::MAX)), u32::MAX);
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
    fn every_shape_goes_through_a_snapshot_unchanged() {
        let mut aged = KeyDigests::none();
        for n in 0..20 {
            let at = Timestamp(day(n).0 + 1);
            aged.insert(KeyDigests::digest(&format!("key-{n}")), at, Some(WEEK));
        }
        let mut too_many = KeyDigests::none();
        for n in 0..=KEY_DIGESTS_MAX {
            too_many.insert(KeyDigests::digest(&format!("key-{n}")), day(3), Some(WEEK));
        }
        let shapes = [
            KeyDigests::none(),
            aged,
            KeyDigests::from(KeyDigestsV2::Known(vec![1, 5])),
            too_many,
            KeyDigests::read_back(None, day(1), None),
            KeyDigests::from(KeyDigestsV2::TooMany),
        ];
        for keys in shapes {
            let bytes = postcard::to_allocvec(&keys).unwrap();
            let back: KeyDigests = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, keys);
            assert_eq!(
                (back.count(), back.rescan_at()),
                (keys.count(), keys.rescan_at())
            );
        }
        let unsorted = KeyDigests::read_back(Some(vec![9, 3]), T0, None);
        let bytes = postcard::to_allocvec(&unsorted).unwrap();
        assert!(postcard::from_bytes::<KeyDigests>(&bytes).is_err());
    }

    #[test]
    fn the_digests_take_no_more_of_an_actor_than_a_vector() {
        // See `KeyDigests`: 16 bytes more put the actor in the next size
        // class of the allocator, at about 110 bytes per active enrollment.
        assert_eq!(std::mem::size_of::<Option<KeyDigests>>(), 24);
    }

    #[test]
    fn the_digest_is_stable() {
        // Digests are stored in snapshots: a change would make old
        // snapshots say "new" for keys they hold.
        assert_eq!(KeyDigests::digest("123456789"), 0xcbf4_3926);
    }
}
