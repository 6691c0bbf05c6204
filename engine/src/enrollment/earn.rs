//! Earn: points for a purchase, or points given outright.
//!
//! Points go to the lot that expires at the program's expiry date, or, when
//! the program has `pendingDays`, wait as a pending lot until they mature.

use super::{check_text, Enrollment, EnrollmentEvent, Handled};
use crate::error::{add, DomainError};
use crate::ids::TransactionId;
use crate::limits::{
    AMOUNT_MINOR_PER_TRANSACTION_MAX, PENDING_LOTS_MAX, POINTS_PER_TRANSACTION_MAX,
};
use crate::program::ProgramRules;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// What is earned: points, or an amount the earn rule turns into points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EarnValue {
    Points(i64),
    /// Money in minor currency units.
    AmountMinor(i64),
}

/// The `earn` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarnPoints {
    pub value: EarnValue,
    pub reason: Option<String>,
    pub reference: Option<String>,
}

pub(super) fn handle(
    state: &Enrollment,
    rules: &ProgramRules,
    earn: &EarnPoints,
    transaction_id: TransactionId,
    now: Timestamp,
) -> Result<Handled, DomainError> {
    check_text("reason", &earn.reason)?;
    check_text("reference", &earn.reference)?;
    let (points, amount_minor) = match earn.value {
        EarnValue::Points(points) => {
            check_points("points", points)?;
            (points, None)
        }
        EarnValue::AmountMinor(amount) => {
            if amount <= 0 || amount > AMOUNT_MINOR_PER_TRANSACTION_MAX {
                return Err(DomainError::invalid(
                    "amount",
                    format!("must be between 1 and {AMOUNT_MINOR_PER_TRANSACTION_MAX}"),
                ));
            }
            let points = rules.earn_rule.points_for_amount(amount)?;
            if points == 0 {
                return Err(DomainError::invalid(
                    "amount",
                    "is too small to earn any points",
                ));
            }
            check_points("amount", points)?;
            (points, Some(amount))
        }
    };
    // Every figure this earn will raise must still fit once it lands.
    add(state.points_available, points, "balance")?;
    add(
        add(state.points_available, state.points_pending, "balance")?,
        points,
        "balance",
    )?;
    // Pending points join lifetime points when they mature.
    add(
        add(
            state.points_lifetime,
            state.points_pending,
            "lifetime points",
        )?,
        points,
        "lifetime points",
    )?;

    let available_at = match rules.pending_days {
        Some(days) => {
            if state.pending.len() >= PENDING_LOTS_MAX {
                return Err(DomainError::TooManyPending {
                    max: PENDING_LOTS_MAX,
                });
            }
            Some(now.plus_days(days).ok_or(DomainError::Overflow {
                what: "pending date",
            })?)
        }
        None => None,
    };
    let expires_at = match rules.points_expire_after_days {
        Some(days) => Some(
            available_at
                .unwrap_or(now)
                .midnight_after_days(days)
                .ok_or(DomainError::Overflow {
                    what: "expiry date",
                })?,
        ),
        None => None,
    };
    Ok(Handled {
        event: EnrollmentEvent::PointsEarned {
            transaction_id,
            points,
            amount_minor,
            available_at,
            expires_at,
            reason: earn.reason.clone(),
            reference: earn.reference.clone(),
        },
        points,
        shortfall: 0,
    })
}

/// Points moved by one transaction: positive and at most the maximum.
pub(crate) fn check_points(field: &'static str, points: i64) -> Result<(), DomainError> {
    if points <= 0 {
        return Err(DomainError::invalid(field, "must be greater than zero"));
    }
    if points > POINTS_PER_TRANSACTION_MAX {
        return Err(DomainError::invalid(
            field,
            format!("at most {POINTS_PER_TRANSACTION_MAX} points per transaction"),
        ));
    }
    Ok(())
}
