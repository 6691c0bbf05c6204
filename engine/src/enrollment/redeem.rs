//! Redeem: spend available points, soonest-expiring lots first, never
//! below zero.

use super::earn::check_points;
use super::lots::plan_draw;
use super::{check_text, Enrollment, EnrollmentEvent, Handled};
use crate::error::DomainError;
use crate::ids::TransactionId;
use serde::{Deserialize, Serialize};

/// The `redeem` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemPoints {
    pub points: i64,
    pub reason: Option<String>,
    pub reference: Option<String>,
}

pub(super) fn handle(
    state: &Enrollment,
    redeem: &RedeemPoints,
    transaction_id: TransactionId,
) -> Result<Handled, DomainError> {
    check_text("reason", &redeem.reason)?;
    check_text("reference", &redeem.reference)?;
    check_points("points", redeem.points)?;
    if redeem.points > state.points_available {
        return Err(DomainError::InsufficientPoints {
            requested: redeem.points,
            available: state.points_available,
        });
    }
    let drawn = plan_draw(&state.lots, redeem.points, None);
    Ok(Handled {
        event: EnrollmentEvent::PointsRedeemed {
            transaction_id,
            points: redeem.points,
            drawn,
            reason: redeem.reason.clone(),
            reference: redeem.reference.clone(),
        },
        points: redeem.points,
        shortfall: 0,
    })
}
