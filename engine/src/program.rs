//! Programs: the rules one enrollment's points follow.
//!
//! A program is created as a draft and activated once; customers can only
//! enroll in an active program. Its rules do not change after activation,
//! so an enrollment can rely on the rules it was enrolled under.

use crate::error::DomainError;
use crate::ids::{BusinessId, ProgramId};
use crate::limits::{
    EXPIRE_AFTER_DAYS_MAX, NAME_BYTES_MAX, PENDING_DAYS_MAX, POINTS_PER_UNIT_MAX,
    TIERS_PER_PROGRAM_MAX,
};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// How an amount of money becomes points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarnRule {
    /// Points given per whole currency unit.
    pub points_per_unit: i64,
    /// Minor units in one currency unit (100 for cents). Amounts are
    /// always sent in minor units; the fraction of a unit earns nothing.
    pub minor_units_per_unit: i64,
}

impl EarnRule {
    /// The points an amount in minor units earns, rounded down.
    pub fn points_for_amount(&self, amount_minor: i64) -> Result<i64, DomainError> {
        // i128 keeps the intermediate product exact; the result is then
        // checked against i64 like every other figure.
        let points = i128::from(amount_minor) * i128::from(self.points_per_unit)
            / i128::from(self.minor_units_per_unit);
        i64::try_from(points).map_err(|_| DomainError::Overflow {
            what: "amount to points",
        })
    }
}

/// A tier reached when lifetime points reach `min_points`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub name: String,
    pub min_points: i64,
}

/// Draft until activated; only active programs take enrollments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgramStatus {
    Draft,
    Active,
}

impl ProgramStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramStatus::Draft => "draft",
            ProgramStatus::Active => "active",
        }
    }
}

/// The part of a program an enrollment's decisions read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRules {
    pub earn_rule: EarnRule,
    /// Sorted by `min_points`, ascending, names unique.
    pub tiers: Vec<Tier>,
    /// Earned points expire at the first midnight UTC this many days after
    /// they become available; `None` means they never expire.
    pub points_expire_after_days: Option<u32>,
    /// Earned points stay pending this many days before they can be spent.
    pub pending_days: Option<u32>,
}

impl ProgramRules {
    /// Checks a program definition and sorts its tiers.
    pub fn new(
        earn_rule: EarnRule,
        mut tiers: Vec<Tier>,
        points_expire_after_days: Option<u32>,
        pending_days: Option<u32>,
    ) -> Result<Self, DomainError> {
        if earn_rule.points_per_unit <= 0 || earn_rule.points_per_unit > POINTS_PER_UNIT_MAX {
            return Err(DomainError::invalid(
                "earnRule.pointsPerUnit",
                format!("must be between 1 and {POINTS_PER_UNIT_MAX}"),
            ));
        }
        if earn_rule.minor_units_per_unit <= 0 || earn_rule.minor_units_per_unit > 1_000_000 {
            return Err(DomainError::invalid(
                "earnRule.minorUnitsPerUnit",
                "must be between 1 and 1000000",
            ));
        }
        if tiers.len() > TIERS_PER_PROGRAM_MAX {
            return Err(DomainError::invalid(
                "tiers",
                format!("at most {TIERS_PER_PROGRAM_MAX} tiers"),
            ));
        }
        for tier in &tiers {
            check_name("tiers.name", &tier.name)?;
            if tier.min_points < 0 {
                return Err(DomainError::invalid(
                    "tiers.minPoints",
                    "must not be negative",
                ));
            }
        }
        tiers.sort_by_key(|t| t.min_points);
        for pair in tiers.windows(2) {
            if pair[0].min_points == pair[1].min_points {
                return Err(DomainError::invalid("tiers.minPoints", "must be distinct"));
            }
        }
        let mut names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(DomainError::invalid("tiers.name", "must be distinct"));
        }
        if let Some(days) = points_expire_after_days {
            if days == 0 || days > EXPIRE_AFTER_DAYS_MAX {
                return Err(DomainError::invalid(
                    "pointsExpireAfterDays",
                    format!("must be between 1 and {EXPIRE_AFTER_DAYS_MAX}"),
                ));
            }
        }
        if let Some(days) = pending_days {
            if days > PENDING_DAYS_MAX {
                return Err(DomainError::invalid(
                    "pendingDays",
                    format!("must be between 0 and {PENDING_DAYS_MAX}"),
                ));
            }
        }
        Ok(ProgramRules {
            earn_rule,
            tiers,
            points_expire_after_days,
            pending_days: pending_days.filter(|d| *d > 0),
        })
    }

    /// The index of the highest tier `lifetime_points` reaches.
    pub fn tier_for(&self, lifetime_points: i64) -> Option<u16> {
        self.tiers
            .iter()
            .rposition(|t| lifetime_points >= t.min_points)
            .map(|i| i as u16)
    }

    /// The name of a tier index, as stored in an enrollment.
    pub fn tier_name(&self, index: Option<u16>) -> Option<&str> {
        index
            .and_then(|i| self.tiers.get(usize::from(i)))
            .map(|t| t.name.as_str())
    }
}

/// A program as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub program_id: ProgramId,
    pub business_id: BusinessId,
    pub name: String,
    pub rules: ProgramRules,
    pub status: ProgramStatus,
    pub created_at: Timestamp,
    pub activated_at: Option<Timestamp>,
}

/// Checks a display name: not blank, not too long, no control characters.
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), DomainError> {
    if name.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(DomainError::invalid(
            field,
            format!("at most {NAME_BYTES_MAX} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}
