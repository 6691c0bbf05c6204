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

/// Most lot draws the remembered redeems may hold together (24 B each, so
/// 192 KiB). A redeem keeps the lots its points came from, so that its
/// reversal gives them back with their expiry; without this bound, 256
/// redeems each drawing from thousands of daily lots would hold megabytes
/// for one customer. Past it the oldest redeems can no longer be reversed
/// (`TRANSACTION_NOT_FOUND`), as past the count or the window. One redeem
/// draws from at most `EXPIRE_AFTER_DAYS_MAX + 1` lots (one per expiry
/// day), so the newest always fits.
pub const REVERSIBLE_DRAWS_MAX: usize = 8_192;

const _: () = assert!(REVERSIBLE_DRAWS_MAX > EXPIRE_AFTER_DAYS_MAX as usize + 1);

/// Longest name (business, program, customer, tier), in bytes.
pub const NAME_BYTES_MAX: usize = 200;

/// Longest free-text field (`reason`, `reference`, `externalId`, `email`), in bytes.
pub const TEXT_BYTES_MAX: usize = 256;

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
