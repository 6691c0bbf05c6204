//! What the clock does to an enrollment: pending earns mature, lots whose
//! date has passed expire. Run at the start of every decision, so every
//! answer reflects `now`, and on a timer for idle-but-active enrollments.

use super::{emit, Enrollment, EnrollmentEvent, LotDraw};
use crate::time::Timestamp;

/// Matures due pending earns, then expires due lots.
pub fn settle(state: &mut Enrollment, now: Timestamp, events: &mut Vec<EnrollmentEvent>) {
    let due: Vec<_> = state
        .pending
        .iter()
        .filter(|p| p.available_at <= now)
        .map(|p| EnrollmentEvent::PointsMatured {
            transaction_id: p.transaction_id,
            points: p.points,
            expires_at: p.expires_at,
        })
        .collect();
    for event in due {
        emit(state, events, event, now);
    }
    expire(state, now, events);
}

/// Expires every lot whose date is at or before `now`, as one event.
pub fn expire(state: &mut Enrollment, now: Timestamp, events: &mut Vec<EnrollmentEvent>) {
    let lots: Vec<LotDraw> = state
        .lots
        .iter()
        .take_while(|l| l.expires_at.is_some_and(|at| at <= now))
        .map(|l| LotDraw {
            expires_at: l.expires_at,
            points: l.points,
        })
        .collect();
    if lots.is_empty() {
        return;
    }
    let points = lots.iter().map(|l| l.points).sum();
    emit(
        state,
        events,
        EnrollmentEvent::PointsExpired { points, lots },
        now,
    );
}

/// The earliest instant at which settling would change something, so a
/// runtime can schedule it.
pub fn next_due(state: &Enrollment) -> Option<Timestamp> {
    let pending = state.pending.iter().map(|p| p.available_at).min();
    let lot = state.lots.first().and_then(|l| l.expires_at);
    match (pending, lot) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
