//! [`DomainError`]: every way the domain can refuse a command.
//!
//! Each variant has a stable `code()` for the wire and a `field()` where a
//! particular input is at fault. The API maps variants to HTTP statuses in
//! one place; nothing here knows about HTTP.

use thiserror::Error;

/// A refusal by the domain. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// An input is malformed or out of range.
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    /// The balance cannot cover a redeem.
    #[error("insufficient points: {requested} requested, {available} available")]
    InsufficientPoints { requested: i64, available: i64 },

    /// Checked arithmetic overflowed; the command would have broken an invariant.
    #[error("arithmetic overflow in {what}")]
    Overflow { what: &'static str },

    /// The program is not active (still a draft).
    #[error("program {0} is not active")]
    ProgramNotActive(String),

    /// The program was already activated.
    #[error("program {0} is already active")]
    ProgramAlreadyActive(String),

    /// The customer is already enrolled in this program.
    #[error("customer is already enrolled in this program")]
    AlreadyEnrolled,

    /// Another customer of this business has this external id.
    #[error("a customer with this externalId exists")]
    CustomerExists,

    /// The transaction to reverse is unknown to this enrollment, or older
    /// than the reversal window.
    #[error("transaction {0} not found on this enrollment")]
    TransactionNotFound(String),

    /// The transaction has no points left to reverse.
    #[error("transaction {0} is already fully reversed")]
    AlreadyReversed(String),

    /// A partial reversal asked for more than is left to reverse.
    #[error("reversal of {requested} points exceeds the {remaining} left on the transaction")]
    ReversalExceedsTransaction { requested: i64, remaining: i64 },

    /// Too many earns are pending on this enrollment.
    #[error("too many pending earns on this enrollment (at most {max})")]
    TooManyPending { max: usize },

    /// The same idempotency key was used with a different command.
    #[error("idempotency key was used with a different request")]
    IdempotencyConflict,
}

impl DomainError {
    /// The stable machine-readable code, `SCREAMING_SNAKE`.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InvalidField { .. } => "INVALID_FIELD",
            DomainError::InsufficientPoints { .. } => "INSUFFICIENT_POINTS",
            DomainError::Overflow { .. } => "POINTS_OVERFLOW",
            DomainError::ProgramNotActive(_) => "PROGRAM_NOT_ACTIVE",
            DomainError::ProgramAlreadyActive(_) => "PROGRAM_ALREADY_ACTIVE",
            DomainError::AlreadyEnrolled => "ALREADY_ENROLLED",
            DomainError::CustomerExists => "CUSTOMER_EXISTS",
            DomainError::TransactionNotFound(_) => "TRANSACTION_NOT_FOUND",
            DomainError::AlreadyReversed(_) => "ALREADY_REVERSED",
            DomainError::ReversalExceedsTransaction { .. } => "REVERSAL_EXCEEDS_TRANSACTION",
            DomainError::TooManyPending { .. } => "TOO_MANY_PENDING",
            DomainError::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
        }
    }

    /// The request field at fault, where one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            DomainError::InvalidField { field, .. } => Some(field),
            DomainError::InsufficientPoints { .. } | DomainError::Overflow { .. } => Some("points"),
            DomainError::TransactionNotFound(_) | DomainError::AlreadyReversed(_) => {
                Some("transactionId")
            }
            DomainError::ReversalExceedsTransaction { .. } => Some("points"),
            DomainError::IdempotencyConflict => Some("idempotencyKey"),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DomainError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// Checked addition that names what overflowed.
pub(crate) fn add(a: i64, b: i64, what: &'static str) -> Result<i64, DomainError> {
    a.checked_add(b).ok_or(DomainError::Overflow { what })
}
