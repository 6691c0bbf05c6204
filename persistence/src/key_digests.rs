//! Digests of one enrollment's idempotency keys: how an active enrollment
//! tells that a key is new without asking the store.
//!
//! Almost every transaction brings a key never seen before, and proving
//! that to RocksDB costs a `Get` through the memtable and the bloom filter
//! of every level-0 file and level: 10.5 % of the engine's CPU under the
//! batch load. An enrollment actor instead keeps a sorted set of 32-bit
//! digests of all its keys that have a record. A key whose digest is not
//! in the set has no record, so the store is not asked; a digest that is
//! in the set (a repeat, or one collision in about 2^32 / n) is looked up
//! as before. The set is a filter in front of the store, never in place
//! of it: it may say "maybe" wrongly, never "no".
//!
//! The set travels with the enrollment's snapshot, so activating an
//! enrollment whose snapshot covers its whole history costs nothing more.
//! Otherwise (events follow the snapshot, as after a crash or a restart,
//! or the snapshot predates digests) the enrollment's first transaction
//! reads the keys from the store once:
//! [`Store::key_digests`](crate::Store::key_digests).

use serde::{Deserialize, Serialize};

/// Most digests one enrollment keeps (16 KiB of memory, up to 20 KiB in a
/// snapshot, as varints). Past this the enrollment
/// asks the store about every key, as it would without digests, so a
/// customer with years of history costs bounded memory and snapshot bytes.
pub const KEY_DIGESTS_MAX: usize = 4_096;

/// The digests of every idempotency key an enrollment has a record for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyDigests {
    /// Sorted ascending, each digest once.
    Known(Vec<u32>),
    /// More than [`KEY_DIGESTS_MAX`] keys: every key is looked up.
    TooMany,
}

impl KeyDigests {
    /// No keys at all (a new enrollment).
    pub fn none() -> Self {
        KeyDigests::Known(Vec::new())
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
        match self {
            KeyDigests::Known(digests) => digests.binary_search(&digest).is_ok(),
            KeyDigests::TooMany => true,
        }
    }

    /// Notes a key about to get a record. Must be called before the record
    /// can be read back from the store, and before any snapshot that
    /// covers it is taken.
    pub fn insert(&mut self, digest: u32) {
        if let KeyDigests::Known(digests) = self {
            if let Err(at) = digests.binary_search(&digest) {
                if digests.len() < KEY_DIGESTS_MAX {
                    digests.insert(at, digest);
                } else {
                    *self = KeyDigests::TooMany;
                }
            }
        }
    }

    /// The digests held, `None` for [`KeyDigests::TooMany`] (which is not
    /// "no keys": it may contain every key).
    pub fn known(&self) -> Option<&[u32]> {
        match self {
            KeyDigests::Known(digests) => Some(digests),
            KeyDigests::TooMany => None,
        }
    }

    /// Whether this is a set [`KeyDigests::may_contain`] can search: sorted,
    /// each digest once, within the bound. A set read back from a snapshot
    /// is checked, as an unsorted one would take known keys for new.
    pub fn is_well_formed(&self) -> bool {
        match self {
            KeyDigests::Known(digests) => {
                digests.len() <= KEY_DIGESTS_MAX && digests.windows(2).all(|w| w[0] < w[1])
            }
            KeyDigests::TooMany => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_new_until_inserted_and_never_forgotten() {
        let mut keys = KeyDigests::none();
        let a = KeyDigests::digest("pos-7-0001");
        let b = KeyDigests::digest("pos-7-0002");
        assert!(!keys.may_contain(a));
        keys.insert(a);
        keys.insert(a);
        assert!(keys.may_contain(a));
        assert!(!keys.may_contain(b));
        keys.insert(b);
        assert!(keys.may_contain(a) && keys.may_contain(b));
        assert_eq!(keys.known().map(<[u32]>::len), Some(2));
        assert!(keys.is_well_formed(), "sorted, no repeats");
        assert!(!KeyDigests::Known(vec![b.max(a), b.min(a)]).is_well_formed());
        assert!(!KeyDigests::Known(vec![a, a]).is_well_formed());
    }

    #[test]
    fn past_the_bound_every_key_is_maybe_seen() {
        let mut keys = KeyDigests::none();
        for n in 0..KEY_DIGESTS_MAX {
            keys.insert(KeyDigests::digest(&format!("key-{n}")));
        }
        assert_eq!(keys.known().map(<[u32]>::len), Some(KEY_DIGESTS_MAX));
        let fresh = KeyDigests::digest("one more");
        assert!(!keys.may_contain(fresh));
        keys.insert(fresh);
        assert_eq!(keys, KeyDigests::TooMany);
        assert_eq!(keys.known(), None);
        assert!(keys.may_contain(KeyDigests::digest("anything at all")));
        keys.insert(KeyDigests::digest("still too many"));
        assert_eq!(keys, KeyDigests::TooMany);
    }

    #[test]
    fn the_digest_is_stable() {
        // Digests are stored in snapshots: a change would make old
        // snapshots say "new" for keys they hold.
        assert_eq!(KeyDigests::digest("123456789"), 0xcbf4_3926);
    }
}
