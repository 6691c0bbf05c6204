//! Who is calling: an API key (scoped to one business) or the operator.
//!
//! Keys are `lk_` and 64 hex digits of randomness; only their SHA-256 is
//! stored, so a copy of the data directory does not hand out working keys.

use crate::error::ApiError;
use loyalty_actors::Engine;
use loyalty_engine::BusinessId;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// An authenticated caller: everything it touches is scoped to this business.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub business_id: BusinessId,
}

pub fn new_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("lk_{}", hex(&bytes))
}

pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Lower-case hex, for digests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Resolves an API key to its business.
pub fn authenticate(engine: &Engine, header: Option<&str>) -> Result<Caller, ApiError> {
    let token = bearer(header).ok_or_else(ApiError::unauthorized)?;
    let record = engine
        .catalog
        .api_key(&sha256(token))?
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Caller {
        business_id: record.business_id,
    })
}

/// Checks the operator token, in constant time. `expected` is the token,
/// or `sha256:<hex>` when only its hash is known.
pub fn is_operator(expected: &str, header: Option<&str>) -> bool {
    let Some(token) = bearer(header) else {
        return false;
    };
    let a = match expected.strip_prefix("sha256:") {
        Some(hex_digest) => hex_digest.to_owned(),
        None => hex(&sha256(expected)),
    };
    let b = hex(&sha256(token));
    if a.len() != b.len() {
        return false;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
