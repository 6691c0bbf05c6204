//! The loyalty domain: commands are checked against state and yield events;
//! applying an event never fails and never decides anything.
//!
//! This crate is the floor of the house: no I/O, no async, no clock of its
//! own. Time comes in as an argument ([`Timestamp`]), ids come in as
//! arguments, so the same inputs always give the same events. Replaying a
//! log is `apply` over its events.
//!
//! # Where to start reading
//! - [`enrollment`]: the aggregate that owns a customer's points in one
//!   program. `enrollment/mod.rs` has the state and `decide`; each thing a
//!   customer can do has its own file (`earn.rs`, `redeem.rs`, `reverse.rs`,
//!   `settle.rs` for expiry and maturing, `tier.rs`).
//! - [`catalog`]: businesses, programs, customers and enrollment creation:
//!   the slow-moving records the hot path reads.
//! - [`idempotency`]: the rule that turns a repeated key into the first
//!   answer or a conflict.
//! - [`limits`]: every maximum the domain enforces, by name.
//! - [`error`]: [`DomainError`], one variant per refusal, each with a stable
//!   code.
//!
//! # The path of one earn through this crate
//! `enrollment::decide(&state, &rules, Command::Earn(..), now)` settles what
//! the clock made due (pending points that matured, lots that expired), then
//! runs `earn::handle`, then checks the tier. It returns a [`Decision`]: the
//! events, the new state (those events applied to a copy), and the answer.
//! The caller makes the events durable and only then answers.
//!
//! [`Decision`]: enrollment::Decision
#![forbid(unsafe_code)]

pub mod catalog;
pub mod enrollment;
pub mod error;
pub mod event;
pub mod idempotency;
pub mod ids;
pub mod limits;
pub mod program;
pub mod time;

pub use error::DomainError;
pub use event::DomainEvent;
pub use ids::{BusinessId, CustomerId, EnrollmentId, EventId, ProgramId, TransactionId};
pub use time::Timestamp;
