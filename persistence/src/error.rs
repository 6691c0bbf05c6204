//! [`StoreError`]: everything that can go wrong below the runtime.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// RocksDB refused to open the directory for a reason other than damage
    /// (permissions, a lock held by another process, ...).
    #[error("cannot open data directory {path}: {detail}")]
    Open { path: String, detail: String },

    /// Stored data failed a check. `what` names the file, column family or
    /// key; start-up refuses rather than serve from damaged data.
    #[error("data is damaged in {what}: {detail}")]
    Corrupt { what: String, detail: String },

    /// The directory was written by an incompatible format version: a
    /// newer build's, or one this build never knew. `expected` is the
    /// format this build writes; it reads every older one it upgrades.
    #[error("data directory format {found} is not supported (this build reads formats up to {expected})")]
    Format { found: u32, expected: u32 },

    /// A read or write failed.
    #[error("storage I/O failed: {0}")]
    Io(String),

    /// A record could not be encoded: a bug, never bad input.
    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
}

impl From<rocksdb::Error> for StoreError {
    fn from(err: rocksdb::Error) -> Self {
        let detail = err.into_string();
        if detail.contains("Corruption") {
            StoreError::Corrupt {
                what: "RocksDB".into(),
                detail,
            }
        } else {
            StoreError::Io(detail)
        }
    }
}
