//! Every maximum the domain enforces, by name. Exceeding one is a clear
//! error ([`crate::DomainError`]), never a slowdown or a wrap.

/// Most points one earn, redeem or reversal may move.
pub const POINTS_PER_TRANSACTION_MAX: i64 = 1_000_000_000;

/// Largest amount, in minor currency units, one earn may carry.
pub const AMOUNT_MINOR_PER_TRANSACTION_MAX: i64 = 1_000_000_000_000;

/// Most points an earn rule may give per currency unit.
pub const POINTS_PER_UNIT_MAX: i64 = 1_000_000;

/// Most tiers in one program.
pub const TIERS_PER_PROGRAM_MAX: usize = 32;

/// Longest expiry period, in days (ten years).
pub const EXPIRE_AFTER_DAYS_MAX: u32 = 3_650;

/// Longest pending period, in days.
pub const PENDING_DAYS_MAX: u32 = 365;

/// Most earns that may be pending at once on one enrollment. Each pending
/// earn is kept apart until it matures so it can be reversed on its own.
pub const PENDING_LOTS_MAX: usize = 1_024;

/// How many recent transactions an enrollment remembers for reversal.
/// Older ones can no longer be reversed (`TRANSACTION_NOT_FOUND`).
pub const REVERSIBLE_TRANSACTIONS_MAX: usize = 256;

/// How long a transaction stays reversible, in days.
pub const REVERSAL_WINDOW_DAYS: u32 = 365;

/// Longest name (business, program, customer, tier), in bytes.
pub const NAME_BYTES_MAX: usize = 200;

/// Longest free-text field (`reason`, `reference`, `externalId`, `email`), in bytes.
pub const TEXT_BYTES_MAX: usize = 256;

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
