//! The frame around every stored value: format version, record kind, CRC-32
//! and a `postcard` payload.
//!
//! ```text
//! [format: u8][kind: u8][crc32 of kind+payload: u32 LE][payload ...]
//! ```
//!
//! RocksDB checksums its own blocks; this CRC also covers the path from our
//! encoder to RocksDB and back, and the version byte lets a later release
//! read what an earlier one wrote.

use crate::error::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The envelope format of every record but snapshots.
pub const FORMAT: u8 = 1;
/// Snapshots since their enrollment's key digests age with the records'
/// retention ([`KeyDigests`](crate::KeyDigests): two generations).
/// Snapshots of [`SNAPSHOT_FORMAT_V2`] (one run of digests that never
/// aged) and of [`FORMAT`] (no digests) are still read.
pub const SNAPSHOT_FORMAT: u8 = 3;
/// Snapshots since they first carried key digests, up to
/// [`SNAPSHOT_FORMAT`]: read, never written.
pub const SNAPSHOT_FORMAT_V2: u8 = 2;
/// Idempotency records since they put `recorded_at` first, so that a
/// compaction judging their age reads one number instead of the record
/// ([`retention`](crate::retention)). Idempotency records of format
/// [`FORMAT`] are still read.
pub const IDEMPOTENCY_FORMAT: u8 = 2;

const HEADER_BYTES: usize = 6;
/// First capacity of an encoded record: a typical log record or
/// idempotency record fits (snapshots grow from there).
const ENCODE_CAPACITY_BYTES: usize = 256;

/// What an envelope holds; a value read back must be the kind expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    LogRecord = 1,
    Snapshot = 2,
    Idempotency = 3,
    Catalog = 4,
    Meta = 5,
}

pub fn encode<T: Serialize>(kind: Kind, value: &T) -> Result<Vec<u8>, StoreError> {
    encode_as(FORMAT, kind, value)
}

/// [`encode`] in a given format.
pub fn encode_as<T: Serialize>(format: u8, kind: Kind, value: &T) -> Result<Vec<u8>, StoreError> {
    // Sized for a log or idempotency record at once: growing from the
    // header's 6 bytes took five reallocations and copies per record.
    let mut out = Vec::with_capacity(ENCODE_CAPACITY_BYTES);
    out.extend_from_slice(&[format, kind as u8, 0, 0, 0, 0]);
    let mut out = postcard::to_extend(value, out).map_err(|e| StoreError::Encode {
        what: kind_name(kind),
        detail: e.to_string(),
    })?;
    let crc = checksum(&out);
    out[2..6].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// CRC-32 of the kind byte and the payload (everything but the version
/// and the checksum itself).
fn checksum(envelope: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&envelope[1..2]);
    hasher.update(&envelope[HEADER_BYTES..]);
    hasher.finalize()
}

/// Decodes an envelope, checking version, kind and checksum. `what` names
/// where the bytes came from, for the error.
pub fn decode<T: DeserializeOwned>(
    kind: Kind,
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    decode_as(FORMAT, kind, bytes, what)
}

/// The format byte of an envelope, if it is long enough to have one.
pub fn format_of(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

/// [`decode`], expecting a given format.
pub fn decode_as<T: DeserializeOwned>(
    format: u8,
    kind: Kind,
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    let mut what = Some(what);
    let mut name = || what.take().map_or_else(String::new, |what| what());
    let payload = payload(format, kind, bytes, &mut name)?;
    postcard::from_bytes(payload).map_err(|e| StoreError::Corrupt {
        what: name(),
        detail: format!("undecodable payload: {e}"),
    })
}

/// The payload of an envelope of a given format and kind, once its header
/// and checksum are checked: for a reader that decodes only part of it.
pub fn payload(
    format: u8,
    kind: Kind,
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<&[u8], StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: what(),
        detail,
    };
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "record of {} bytes is shorter than its header",
            bytes.len()
        )));
    }
    if bytes[0] != format {
        return Err(corrupt(format!("unknown record format {}", bytes[0])));
    }
    if bytes[1] != kind as u8 {
        return Err(corrupt(format!(
            "expected a {} record, found kind {}",
            kind_name(kind),
            bytes[1]
        )));
    }
    let stored = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes"));
    let actual = checksum(bytes);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    Ok(&bytes[HEADER_BYTES..])
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::LogRecord => "log",
        Kind::Snapshot => "snapshot",
        Kind::Idempotency => "idempotency",
        Kind::Catalog => "catalog",
        Kind::Meta => "meta",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_flipped_byte() {
        let bytes = encode(Kind::Meta, &(42u64, "hello".to_string())).unwrap();
        let back: (u64, String) = decode(Kind::Meta, &bytes, || "test".into()).unwrap();
        assert_eq!(back, (42, "hello".into()));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            let result: Result<(u64, String), _> = decode(Kind::Meta, &damaged, || "test".into());
            assert!(
                matches!(result, Err(StoreError::Corrupt { .. })),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn refuses_the_wrong_kind_and_short_records() {
        let bytes = encode(Kind::Meta, &1u8).unwrap();
        assert!(decode::<u8>(Kind::Snapshot, &bytes, || "t".into()).is_err());
        assert!(decode::<u8>(Kind::Meta, &bytes[..3], || "t".into()).is_err());
    }
}
