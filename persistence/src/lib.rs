//! Durable storage on RocksDB: the write-ahead event log, snapshots,
//! idempotency records and the catalog.
//!
//! # Where to start reading
//! - [`store`]: [`Store`], opening a data directory (with recovery checks),
//!   writing a commit group in one synced batch, reading an aggregate back.
//! - [`keys`]: the column families and the byte layout of every key. Read
//!   this first to see what lives where.
//! - [`records`]: what the values are ([`LogRecord`], snapshots,
//!   idempotency records, and [`records::answer`]: how a record is kept
//!   by its event's sequence).
//! - [`index`]: the aggregate index, written by a thread of its own off
//!   the commit path, and read through memory until it is.
//! - [`key_digests`]: how an active enrollment knows a key is new without
//!   asking the store.
//! - [`retention`]: how long idempotency records are kept, and how
//!   compactions drop them afterwards.
//! - [`envelope`]: the versioned, checksummed frame around every value.
//! - [`recovery`]: what start-up checks before the engine reports ready.
//!
//! # Durability
//! A commit group is one RocksDB `WriteBatch` written with `sync = true`:
//! the write-ahead log is fsync'd before [`Store::write`] returns, so
//! a caller that answers only after it returns never acknowledges anything
//! a crash can take back. The WAL is opened in "tolerate corrupted tail
//! records" mode: a torn last write (which was never acknowledged, because
//! its sync never returned) is dropped; damage anywhere else refuses to open.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod error;
pub mod index;
pub mod key_digests;
pub mod keys;
pub mod records;
pub mod recovery;
pub mod retention;
pub mod store;

pub use error::StoreError;
pub use index::IndexStats;
pub use key_digests::{KeyDigests, KEY_DIGESTS_MAX};
pub use records::{ApiKeyRecord, IdempotencyRecord, LogRecord, SnapshotRecord, StoredAnswer};
pub use recovery::RecoveryReport;
pub use retention::{IdempotencyRetention, RetentionTooShort};
pub use store::{
    CommitGroup, EncodedEvent, LoadedEnrollment, Put, Store, StoreOptions, VerifyOnOpen,
};
