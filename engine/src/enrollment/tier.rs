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
    // Compared as borrowed names: nearly every earn stays in its tier.
    let earned_name = rules.tier_name(earned);
    if earned_name == state.tier.as_deref() {
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
                from: current_name(state),
                to: earned_name.map(str::to_owned),
                lifetime_points,
            }
        }
        (Some(_), None) => EnrollmentEvent::TierDowngraded {
            from: current_name(state),
            to: None,
            lifetime_points,
        },
        (_, Some(_)) => EnrollmentEvent::TierUpgraded {
            from: state.tier.as_deref().map(str::to_owned),
            to: earned_name.expect("an earned tier has a name").to_owned(),
            lifetime_points,
        },
        (None, None) => return,
    };
    emit(state, events, event, now);
}

/// The current tier's name, for an event leaving it.
fn current_name(state: &Enrollment) -> String {
    state
        .tier
        .as_deref()
        .expect("current tier is set")
        .to_owned()
}
