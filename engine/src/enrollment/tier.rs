//! Tiers follow lifetime points: up when they rise past a threshold, down
//! when a reversal takes them back below one.

use super::{emit, Enrollment, EnrollmentEvent};
use crate::program::ProgramRules;
use crate::time::Timestamp;

/// Emits a tier event if lifetime points now put the enrollment in another tier.
pub fn follow_lifetime(
    state: &mut Enrollment,
    rules: &ProgramRules,
    now: Timestamp,
    events: &mut Vec<EnrollmentEvent>,
) {
    let earned = rules.tier_for(state.points_lifetime);
    let earned_name = rules.tier_name(earned).map(str::to_owned);
    if earned_name == state.tier {
        return;
    }
    let current = state
        .tier
        .as_deref()
        .and_then(|name| rules.tiers.iter().position(|t| t.name == name));
    let lifetime_points = state.points_lifetime;
    let event = match (current, earned) {
        (Some(current), Some(earned)) if usize::from(earned) < current => {
            EnrollmentEvent::TierDowngraded {
                from: state.tier.clone().expect("current tier is set"),
                to: earned_name,
                lifetime_points,
            }
        }
        (Some(_), None) => EnrollmentEvent::TierDowngraded {
            from: state.tier.clone().expect("current tier is set"),
            to: None,
            lifetime_points,
        },
        (_, Some(_)) => EnrollmentEvent::TierUpgraded {
            from: state.tier.clone(),
            to: earned_name.expect("an earned tier has a name"),
            lifetime_points,
        },
        (None, None) => return,
    };
    emit(state, events, event, now);
}
