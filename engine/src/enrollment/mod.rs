//! The enrollment aggregate: one customer's points in one program.
//!
//! [`decide`] is the only way state changes: it checks a [`Request`]
//! against the current [`Enrollment`] at a given time and returns a
//! [`Decision`] holding the events and the state those events produce.
//! [`Enrollment::apply`] replays one event and never fails: the handler
//! has already checked everything, and the event records every consequence
//! (which lots were drawn, what tier was reached) so replay decides nothing.
//!
//! Each thing a customer can do has its own file: [`earn`], [`redeem`],
//! [`reverse`]; [`settle`] is what the clock does (maturing pending points,
//! expiring lots) and [`tier`] follows lifetime points.

pub mod earn;
mod event;
mod lots;
pub mod redeem;
pub mod reverse;
pub mod settle;
mod state;
pub mod tier;

pub use event::{EnrollmentEvent, LotDraw};
pub use lots::Lot;
pub use state::{BalanceView, Enrollment, PendingLot, ReversibleKind, ReversibleTransaction};

use crate::error::DomainError;
use crate::ids::TransactionId;
use crate::limits::TEXT_BYTES_MAX;
use crate::program::ProgramRules;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a caller asks of an enrollment. It is also what an idempotency key
/// is bound to: the same key with a different `Request` is a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Earn(earn::EarnPoints),
    Redeem(redeem::RedeemPoints),
    Reverse(reverse::ReverseTransaction),
}

impl Request {
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Earn(_) => "earn",
            Request::Redeem(_) => "redeem",
            Request::Reverse(_) => "reverse",
        }
    }
}

/// The answer to a request, as the caller sees it and as an idempotency
/// record keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionOutcome {
    pub transaction_id: TransactionId,
    /// Points this transaction moved: earned, redeemed, or reversed.
    pub points: i64,
    /// For a reversal of an earn: the points that had already been spent or
    /// had expired and so could not be taken back. Zero otherwise.
    pub shortfall: i64,
    pub balance: i64,
    pub pending: i64,
    pub lifetime_points: i64,
    /// The enrollment's tier once this transaction is applied (shared with
    /// its state: see [`Enrollment::tier`]).
    pub tier: Option<Arc<str>>,
    /// The enrollment's version once this transaction is applied.
    pub version: u64,
    /// Index, in the decision's events, of the event that records this
    /// transaction (the caller reports that event's id).
    pub event_index: usize,
}

/// The result of [`decide`]: events to make durable, the state they lead
/// to, and the answer once they are durable.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Events in the order they were applied. May be empty for a settle
    /// with nothing due.
    pub events: Vec<EnrollmentEvent>,
    /// `state` with `events` applied.
    pub state: Enrollment,
    /// `None` for a settle (no request).
    pub outcome: Option<TransactionOutcome>,
}

/// Checks `request` against `state` at `now` and returns the events and the
/// new state. Anything the clock has made due (pending points maturing,
/// lots expiring) is settled first, so every answer reflects `now`.
///
/// `transaction_id` names the new transaction; the caller generates it.
/// With `request == None` only the clock's work is done.
///
/// This is the pure form, for tests and tools: it copies the state. The
/// runtime uses [`decide_in_place`], which gives the same events and
/// outcome without the copy.
pub fn decide(
    state: &Enrollment,
    rules: &ProgramRules,
    request: Option<(&Request, TransactionId)>,
    now: Timestamp,
) -> Result<Decision, DomainError> {
    let mut next = state.clone();
    let Applied { events, outcome } = decide_on(&mut next, rules, request, now)?;
    Ok(Decision {
        events,
        state: next,
        outcome,
    })
}

/// What [`decide_in_place`] applied to the state it was given.
#[derive(Clone, Debug)]
pub struct Applied {
    /// Events in the order they were applied. May be empty for a settle
    /// with nothing due.
    pub events: Vec<EnrollmentEvent>,
    /// `None` for a settle (no request).
    pub outcome: Option<TransactionOutcome>,
}

/// [`decide`] without copying the state: on success `state` is the new
/// state; on a refusal it is exactly as it was.
///
/// Why it exists: an active enrollment keeps up to
/// `REVERSIBLE_TRANSACTIONS_MAX` recent transactions, and copying them on
/// every command was the largest cost of deciding. A refusal can only come
/// from checking the request, which reads the state; the one thing that
/// changes the state before that check is settling what the clock made due,
/// so only then (at most once per lot date) is the decision made on a copy.
pub fn decide_in_place(
    state: &mut Enrollment,
    rules: &ProgramRules,
    request: Option<(&Request, TransactionId)>,
    now: Timestamp,
) -> Result<Applied, DomainError> {
    if request.is_some() && settle::next_due(state).is_some_and(|due| due <= now) {
        let mut next = state.clone();
        let applied = decide_on(&mut next, rules, request, now)?;
        *state = next;
        return Ok(applied);
    }
    decide_on(state, rules, request, now)
}

/// The decision itself, applied to `next` as it goes. Every refusal is
/// returned before anything but settling has changed `next`.
fn decide_on(
    next: &mut Enrollment,
    rules: &ProgramRules,
    request: Option<(&Request, TransactionId)>,
    now: Timestamp,
) -> Result<Applied, DomainError> {
    let mut events = Vec::new();
    settle::settle(next, now, &mut events);
    let mut event_index = None;
    let mut shortfall = 0;
    let mut points = 0;
    if let Some((request, transaction_id)) = request {
        if next.remembers(transaction_id) {
            return Err(DomainError::invalid("transactionId", "already used"));
        }
        event_index = Some(events.len());
        let handled = match request {
            Request::Earn(earn) => earn::handle(next, rules, earn, transaction_id, now)?,
            Request::Redeem(redeem) => redeem::handle(next, redeem, transaction_id)?,
            Request::Reverse(reverse) => reverse::handle(next, reverse, transaction_id, now)?,
        };
        points = handled.points;
        shortfall = handled.shortfall;
        emit(next, &mut events, handled.event, now);
        // A reversed redeem can give back points whose lot has already
        // passed its date: they expire in the same decision.
        settle::expire(next, now, &mut events);
    }
    tier::follow_lifetime(next, rules, now, &mut events);
    let outcome = event_index
        .zip(request)
        .map(|(event_index, (_, transaction_id))| TransactionOutcome {
            transaction_id,
            points,
            shortfall,
            balance: next.points_available,
            pending: next.points_pending,
            lifetime_points: next.points_lifetime,
            tier: next.tier.clone(),
            version: next.version,
            event_index,
        });
    Ok(Applied { events, outcome })
}

/// What a command handler decided: one event, and the figures to answer.
pub struct Handled {
    pub event: EnrollmentEvent,
    pub points: i64,
    pub shortfall: i64,
}

/// Applies `event` to `state` and records it: the one place a decision's
/// events and its new state are kept in step.
fn emit(
    state: &mut Enrollment,
    events: &mut Vec<EnrollmentEvent>,
    event: EnrollmentEvent,
    now: Timestamp,
) {
    state.apply(&event, now);
    events.push(event);
}

/// Checks an optional free-text field.
pub(crate) fn check_text(field: &'static str, value: &Option<String>) -> Result<(), DomainError> {
    if let Some(text) = value {
        if text.len() > TEXT_BYTES_MAX {
            return Err(DomainError::invalid(
                field,
                format!("at most {TEXT_BYTES_MAX} bytes"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                field,
                "must not contain control characters",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
