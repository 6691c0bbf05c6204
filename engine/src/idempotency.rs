//! Idempotency: every mutating request carries a key. The same key with the
//! same request answers the first answer again with no second effect; the
//! same key with a different request is a conflict.
//!
//! Keys are scoped to one enrollment, so the actor that owns the enrollment
//! is the only one that ever checks or records them: no race between two
//! requests with one key is possible.

use crate::enrollment::Request;
use crate::error::DomainError;
use crate::limits::IDEMPOTENCY_KEY_BYTES_MAX;
use serde::{Deserialize, Serialize};

/// A client-chosen key: 1 to 128 bytes of visible ASCII.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<Self, DomainError> {
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err(DomainError::invalid(
                "idempotencyKey",
                format!("must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
            ));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DomainError::invalid(
                "idempotencyKey",
                "must be visible ASCII without spaces",
            ));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Given the request a key was first used with and its answer, what a
/// request with the same key gets: the first answer, or a conflict.
pub fn replay<'a, A>(
    first_request: &Request,
    first_answer: &'a A,
    request: &Request,
) -> Result<&'a A, DomainError> {
    if first_request == request {
        Ok(first_answer)
    } else {
        Err(DomainError::IdempotencyConflict)
    }
}
