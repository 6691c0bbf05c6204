//! Events of the enrollment aggregate. Past tense; each records every
//! consequence of its command so that applying it decides nothing.

use crate::ids::{BusinessId, CustomerId, EnrollmentId, ProgramId, TransactionId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Points taken from, or given back to, the lot that expires at `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotDraw {
    pub expires_at: Option<Timestamp>,
    pub points: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollmentEvent {
    /// `loyalty.customer.enrolled`: the first event of every enrollment.
    Enrolled {
        enrollment_id: EnrollmentId,
        business_id: BusinessId,
        customer_id: CustomerId,
        program_id: ProgramId,
        /// The tier a new member starts in (one with `minPoints` 0), if any.
        tier: Option<String>,
    },
    /// `loyalty.points.earned`.
    PointsEarned {
        transaction_id: TransactionId,
        points: i64,
        /// The purchase amount in minor units, when points came from one.
        amount_minor: Option<i64>,
        /// `Some` when the points are pending until this instant.
        available_at: Option<Timestamp>,
        /// When the points expire once available; `None` for never.
        expires_at: Option<Timestamp>,
        reason: Option<String>,
        reference: Option<String>,
    },
    /// `loyalty.points.matured`: pending points of one earn became available.
    PointsMatured {
        transaction_id: TransactionId,
        points: i64,
        expires_at: Option<Timestamp>,
    },
    /// `loyalty.points.redeemed`.
    PointsRedeemed {
        transaction_id: TransactionId,
        points: i64,
        /// The lots the points came from, soonest-expiring first.
        drawn: Vec<LotDraw>,
        reason: Option<String>,
        reference: Option<String>,
    },
    /// `loyalty.points.reversed`: an earn taken back or a redeem given back.
    PointsReversed {
        transaction_id: TransactionId,
        reversed_transaction_id: TransactionId,
        /// Points of the original transaction this reversal covers.
        points: i64,
        /// Of `points`, those that were spent or expired and could not be
        /// taken back (earn reversals only).
        shortfall: i64,
        /// Points removed from the original earn while still pending.
        from_pending: i64,
        /// Points removed from available lots (earn reversal).
        lots_drawn: Vec<LotDraw>,
        /// Points put back into lots (redeem reversal).
        lots_restored: Vec<LotDraw>,
        /// Change to lifetime points (negative for a reversed available earn).
        lifetime_delta: i64,
        reason: Option<String>,
    },
    /// `loyalty.points.expired`: lots whose date passed.
    PointsExpired { points: i64, lots: Vec<LotDraw> },
    /// `loyalty.tier.upgraded`.
    TierUpgraded {
        from: Option<String>,
        to: String,
        lifetime_points: i64,
    },
    /// `loyalty.tier.downgraded`.
    TierDowngraded {
        from: String,
        to: Option<String>,
        lifetime_points: i64,
    },
}

impl EnrollmentEvent {
    /// The contract's `eventType`.
    pub fn event_type(&self) -> &'static str {
        match self {
            EnrollmentEvent::Enrolled { .. } => "loyalty.customer.enrolled",
            EnrollmentEvent::PointsEarned { .. } => "loyalty.points.earned",
            EnrollmentEvent::PointsMatured { .. } => "loyalty.points.matured",
            EnrollmentEvent::PointsRedeemed { .. } => "loyalty.points.redeemed",
            EnrollmentEvent::PointsReversed { .. } => "loyalty.points.reversed",
            EnrollmentEvent::PointsExpired { .. } => "loyalty.points.expired",
            EnrollmentEvent::TierUpgraded { .. } => "loyalty.tier.upgraded",
            EnrollmentEvent::TierDowngraded { .. } => "loyalty.tier.downgraded",
        }
    }

    /// The transaction this event records, for transaction history.
    pub fn transaction_id(&self) -> Option<TransactionId> {
        match self {
            EnrollmentEvent::PointsEarned { transaction_id, .. }
            | EnrollmentEvent::PointsRedeemed { transaction_id, .. }
            | EnrollmentEvent::PointsReversed { transaction_id, .. } => Some(*transaction_id),
            _ => None,
        }
    }
}
