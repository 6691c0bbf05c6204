//! Column families and key layouts. Integers are big-endian so RocksDB's
//! byte order is numeric order.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `log` | sequence `u64` | [`LogRecord`](crate::LogRecord): the global commit order |
//! | `aggregate` | aggregate id (16) + newest version `u64` | sequences `u64` of consecutive versions up to it: one aggregate's history ([`crate::index`]) |
//! | `snapshot` | aggregate id (16) | [`SnapshotRecord`](crate::SnapshotRecord) |
//! | `idempotency` | enrollment id (16) + key bytes | [`IdempotencyRecord`](crate::IdempotencyRecord) |
//! | `answers` | sequence `u64` of the transaction's event | its key and [`IdempotencyRecord`](crate::IdempotencyRecord) ([`crate::records::answer`]) |
//! | `catalog` | tag byte + ids (see [`catalog`]) | catalog records |
//! | `meta` | name | format version, cursors |

/// A column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    Log,
    Aggregate,
    Snapshot,
    Idempotency,
    Answers,
    Catalog,
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 7] = [
        Cf::Log,
        Cf::Aggregate,
        Cf::Snapshot,
        Cf::Idempotency,
        Cf::Answers,
        Cf::Catalog,
        Cf::Meta,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Log => "log",
            Cf::Aggregate => "aggregate",
            Cf::Snapshot => "snapshot",
            Cf::Idempotency => "idempotency",
            Cf::Answers => "answers",
            Cf::Catalog => "catalog",
            Cf::Meta => "meta",
        }
    }
}

/// Length of a `log` key (and of each sequence in an `aggregate` value).
pub const SEQUENCE_BYTES: usize = 8;

/// Length of an `aggregate` key: an aggregate id and a version.
pub const AGGREGATE_VERSION_BYTES: usize = 16 + 8;

pub fn sequence(seq: u64) -> [u8; SEQUENCE_BYTES] {
    seq.to_be_bytes()
}

pub fn parse_sequence(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

pub fn aggregate_version(aggregate: &[u8; 16], version: u64) -> [u8; AGGREGATE_VERSION_BYTES] {
    let mut key = [0u8; AGGREGATE_VERSION_BYTES];
    key[..16].copy_from_slice(aggregate);
    key[16..].copy_from_slice(&version.to_be_bytes());
    key
}

/// The version in an `aggregate` key, if the key is one of `aggregate`'s
/// (readers walk one aggregate's keys and stop at the first that is not).
pub fn parse_aggregate_version(key: &[u8], aggregate: &[u8; 16]) -> Option<u64> {
    let (id, version) = key.split_first_chunk::<16>()?;
    if id != aggregate {
        return None;
    }
    version.try_into().ok().map(u64::from_be_bytes)
}

/// Keys of the `aggregate` and `idempotency` families start with an id of
/// this length: the prefix their memtables are hashed by, and the most
/// their iterators see at once.
pub const ID_PREFIX_BYTES: usize = 16;

pub fn idempotency(enrollment: &[u8; 16], key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + key.len());
    out.extend_from_slice(enrollment);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Keys of the `catalog` column family: a tag byte, then ids.
pub mod catalog {
    fn tagged(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![tag];
        for part in parts {
            out.extend_from_slice(part);
        }
        out
    }

    /// Business by id.
    pub fn business(id: &[u8; 16]) -> Vec<u8> {
        tagged(b'b', &[id])
    }
    /// API key record by the SHA-256 of the key.
    pub fn api_key(sha256: &[u8; 32]) -> Vec<u8> {
        tagged(b'k', &[sha256])
    }
    /// Program by id. All programs are loaded at start-up by this prefix.
    pub fn program(id: &[u8; 16]) -> Vec<u8> {
        tagged(b'p', &[id])
    }
    pub const PROGRAM_PREFIX: u8 = b'p';
    /// Customer by id.
    pub fn customer(id: &[u8; 16]) -> Vec<u8> {
        tagged(b'c', &[id])
    }
    /// Customer id by business and external id: keeps external ids unique.
    pub fn customer_external(business: &[u8; 16], external_id: &str) -> Vec<u8> {
        tagged(b'x', &[business, external_id.as_bytes()])
    }
    /// Enrollment reference by enrollment id.
    pub fn enrollment(id: &[u8; 16]) -> Vec<u8> {
        tagged(b'e', &[id])
    }
    /// Enrollment id by program and customer: one enrollment per pair.
    pub fn enrollment_membership(program: &[u8; 16], customer: &[u8; 16]) -> Vec<u8> {
        tagged(b'm', &[program, customer])
    }
}

/// Keys of the `meta` column family.
pub mod meta {
    /// The data directory's format version.
    pub const FORMAT: &[u8] = b"format";
    /// The event publisher's cursor.
    pub const PUBLISH_CURSOR: &[u8] = b"publish-cursor";
    /// The aggregate index's cursor: every event up to it is indexed.
    pub const INDEX_CURSOR: &[u8] = b"index-cursor";
}
