//! Reverse: undo a recent earn or redeem, whole or in part (a return at
//! the till).
//!
//! - An earn's points come back out: from its pending lot if it has not
//!   matured, else from its own lot first and then soonest-expiring lots,
//!   never below zero. Points already spent or expired are reported as the
//!   `shortfall`. Lifetime points fall by the whole reversed amount, so the
//!   tier can fall too.
//! - A redeem's points go back into the lots they came from, latest-expiring
//!   first; any whose date has passed expire in the same decision.

use super::earn::check_points;
use super::lots::{plan_draw, total};
use super::{check_text, Enrollment, EnrollmentEvent, Handled, LotDraw, ReversibleKind};
use crate::error::DomainError;
use crate::ids::TransactionId;
use crate::limits::REVERSAL_WINDOW_DAYS;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// The `reverse` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseTransaction {
    /// The earn or redeem to reverse.
    pub target: TransactionId,
    /// Points to reverse; `None` reverses all that is left.
    pub points: Option<i64>,
    pub reason: Option<String>,
}

pub(super) fn handle(
    state: &Enrollment,
    reverse: &ReverseTransaction,
    transaction_id: TransactionId,
    now: Timestamp,
) -> Result<Handled, DomainError> {
    check_text("reason", &reverse.reason)?;
    let within_window = |t: &&crate::enrollment::ReversibleTransaction| {
        t.at.plus_days(REVERSAL_WINDOW_DAYS)
            .is_some_and(|until| until >= now)
    };
    let target = state
        .recent
        .iter()
        .find(|t| t.transaction_id == reverse.target)
        .filter(within_window)
        .ok_or_else(|| DomainError::TransactionNotFound(reverse.target.to_string()))?;
    let remaining = target.points - target.reversed;
    if remaining == 0 {
        return Err(DomainError::AlreadyReversed(reverse.target.to_string()));
    }
    let points = match reverse.points {
        Some(points) => {
            check_points("points", points)?;
            if points > remaining {
                return Err(DomainError::ReversalExceedsTransaction {
                    requested: points,
                    remaining,
                });
            }
            points
        }
        None => remaining,
    };

    let mut from_pending = 0;
    let mut lots_drawn = Vec::new();
    let mut lots_restored = Vec::new();
    let mut lifetime_delta = 0;
    let mut shortfall = 0;
    match &target.kind {
        ReversibleKind::Earn { expires_at } => {
            if let Some(pending) = state
                .pending
                .iter()
                .find(|p| p.transaction_id == reverse.target)
            {
                // Still pending: it never reached the balance or lifetime.
                assert!(
                    pending.points >= points,
                    "a pending lot holds what is left of its earn"
                );
                from_pending = points;
            } else {
                let take = points.min(state.points_available);
                lots_drawn = plan_draw(&state.lots, take, Some(*expires_at));
                shortfall = points - total(&lots_drawn);
                lifetime_delta = -points;
            }
        }
        ReversibleKind::Redeem { drawn } => {
            lots_restored = plan_restore(drawn, target.reversed, points);
        }
    }
    Ok(Handled {
        event: EnrollmentEvent::PointsReversed {
            transaction_id,
            reversed_transaction_id: reverse.target,
            points,
            shortfall,
            from_pending,
            lots_drawn,
            lots_restored,
            lifetime_delta,
            reason: reverse.reason.clone(),
        },
        points: points - shortfall,
        shortfall,
    })
}

/// Plans giving back `points` of a redeem that drew `drawn`, of which
/// `already` were given back by earlier reversals. Gives back to the
/// latest-expiring lots first, the reverse of the order they were spent.
fn plan_restore(drawn: &[LotDraw], already: i64, points: i64) -> Vec<LotDraw> {
    let mut skip = already;
    let mut left = points;
    let mut restored = Vec::new();
    for draw in drawn.iter().rev() {
        if left == 0 {
            break;
        }
        let mut available = draw.points;
        let skipped = skip.min(available);
        skip -= skipped;
        available -= skipped;
        let give = left.min(available);
        if give > 0 {
            restored.push(LotDraw {
                expires_at: draw.expires_at,
                points: give,
            });
            left -= give;
        }
    }
    assert_eq!(left, 0, "a redeem gives back no more than it took");
    restored
}
