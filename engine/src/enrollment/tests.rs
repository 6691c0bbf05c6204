//! Given/when/then tests of the enrollment aggregate: given past events,
//! when a request is decided at a time, then these events (or this error).

use super::earn::{EarnPoints, EarnValue};
use super::redeem::RedeemPoints;
use super::reverse::ReverseTransaction;
use super::*;
use crate::ids::{BusinessId, CustomerId, EnrollmentId, ProgramId};
use crate::program::{EarnRule, Tier};
use crate::time::DAY_MS;
use uuid::Uuid;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn id(n: u128) -> TransactionId {
    TransactionId(Uuid::from_u128(n))
}

fn rules() -> ProgramRules {
    ProgramRules::new(
        EarnRule {
            points_per_unit: 2,
            minor_units_per_unit: 100,
        },
        vec![
            Tier {
                name: "silver".into(),
                min_points: 0,
            },
            Tier {
                name: "gold".into(),
                min_points: 1_000,
            },
        ],
        None,
        None,
    )
    .unwrap()
}

fn rules_with(expire: Option<u32>, pending: Option<u32>) -> ProgramRules {
    ProgramRules {
        points_expire_after_days: expire,
        pending_days: pending,
        ..rules()
    }
}

/// Given the enrollment has these requests already decided at these times.
struct Given {
    rules: ProgramRules,
    state: Enrollment,
}

fn given(rules: ProgramRules) -> Given {
    let enrolled = EnrollmentEvent::Enrolled {
        enrollment_id: EnrollmentId(Uuid::from_u128(1)),
        business_id: BusinessId(Uuid::from_u128(2)),
        customer_id: CustomerId(Uuid::from_u128(3)),
        program_id: ProgramId(Uuid::from_u128(4)),
        tier: rules.tier_name(rules.tier_for(0)).map(str::to_owned),
    };
    Given {
        state: Enrollment::from_enrolled(&enrolled, T0),
        rules,
    }
}

impl Given {
    fn then_did(mut self, request: Request, txn: u128, at: Timestamp) -> Self {
        let decision = decide(&self.state, &self.rules, Some((&request, id(txn))), at)
            .expect("given step succeeds");
        self.state = decision.state;
        self
    }

    fn when(&self, request: Request, txn: u128, at: Timestamp) -> Result<Decision, DomainError> {
        decide(&self.state, &self.rules, Some((&request, id(txn))), at)
    }
}

fn earn(points: i64) -> Request {
    Request::Earn(EarnPoints {
        value: EarnValue::Points(points),
        reason: None,
        reference: None,
    })
}

fn earn_amount(amount: i64) -> Request {
    Request::Earn(EarnPoints {
        value: EarnValue::AmountMinor(amount),
        reason: None,
        reference: None,
    })
}

fn redeem(points: i64) -> Request {
    Request::Redeem(RedeemPoints {
        points,
        reason: None,
        reference: None,
    })
}

fn reverse(target: u128, points: Option<i64>) -> Request {
    Request::Reverse(ReverseTransaction {
        target: id(target),
        points,
        reason: None,
    })
}

fn types(decision: &Decision) -> Vec<&'static str> {
    decision
        .events
        .iter()
        .map(EnrollmentEvent::event_type)
        .collect()
}

#[test]
fn earn_points_adds_to_balance_and_lifetime() {
    let d = given(rules()).when(earn(100), 10, T0).unwrap();
    assert_eq!(types(&d), ["loyalty.points.earned"]);
    let o = d.outcome.unwrap();
    assert_eq!(
        (o.points, o.balance, o.pending, o.lifetime_points),
        (100, 100, 0, 100)
    );
    assert_eq!(o.tier.as_deref(), Some("silver"));
    assert_eq!(o.version, 2);
}

#[test]
fn earn_amount_uses_the_earn_rule_rounding_down() {
    // 2 points per unit of 100 minor units: 12.99 -> 25 points.
    let d = given(rules()).when(earn_amount(1_299), 10, T0).unwrap();
    assert_eq!(d.outcome.unwrap().points, 25);
    match &d.events[0] {
        EnrollmentEvent::PointsEarned { amount_minor, .. } => {
            assert_eq!(*amount_minor, Some(1_299))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn earn_refuses_zero_negative_oversized_and_tiny_amounts() {
    let g = given(rules());
    for (request, field) in [
        (earn(0), "points"),
        (earn(-5), "points"),
        (
            earn(crate::limits::POINTS_PER_TRANSACTION_MAX + 1),
            "points",
        ),
        (earn_amount(0), "amount"),
        (earn_amount(49), "amount"),
        (earn_amount(i64::MAX), "amount"),
    ] {
        let err = g.when(request, 10, T0).unwrap_err();
        assert_eq!(err.code(), "INVALID_FIELD");
        assert_eq!(err.field(), Some(field));
    }
}

#[test]
fn earn_refuses_overflowing_balance() {
    let mut g = given(rules());
    g.state.points_available = i64::MAX - 10;
    g.state.points_lifetime = 0;
    g.state.lots = vec![Lot {
        expires_at: None,
        points: i64::MAX - 10,
    }];
    let err = g.when(earn(11), 10, T0).unwrap_err();
    assert_eq!(err.code(), "POINTS_OVERFLOW");
}

#[test]
fn earn_refuses_overlong_reason_and_control_characters() {
    let g = given(rules());
    let long = Request::Earn(EarnPoints {
        value: EarnValue::Points(1),
        reason: Some("x".repeat(300)),
        reference: None,
    });
    assert_eq!(g.when(long, 10, T0).unwrap_err().field(), Some("reason"));
    let ctl = Request::Earn(EarnPoints {
        value: EarnValue::Points(1),
        reason: None,
        reference: Some("a\u{0}b".into()),
    });
    assert_eq!(g.when(ctl, 10, T0).unwrap_err().field(), Some("reference"));
}

#[test]
fn a_transaction_id_cannot_be_used_twice() {
    let g = given(rules()).then_did(earn(5), 10, T0);
    assert_eq!(
        g.when(earn(5), 10, T0).unwrap_err().field(),
        Some("transactionId")
    );
}

/// The newest-id shortcut gives the answers of a full look through the
/// remembered transactions: ids out of order, with the cache warm (kept
/// by each decision) and cold (a state read back from a snapshot).
#[test]
fn used_transaction_ids_are_found_however_they_were_ordered() {
    let g = given(rules())
        .then_did(earn(5), 30, T0)
        .then_did(earn(5), 10, T0)
        .then_did(redeem(3), 20, T0);
    let cold = {
        let bytes = postcard::to_stdvec(&g.state).unwrap();
        postcard::from_bytes::<Enrollment>(&bytes).unwrap()
    };
    assert_eq!(cold.newest_transaction_id.0, None);
    assert_eq!(g.state.newest_transaction_id.0, Some(id(30)));
    for state in [&g.state, &cold] {
        for used in [10, 20, 30] {
            let refused = decide(state, &g.rules, Some((&earn(1), id(used))), T0);
            assert_eq!(refused.unwrap_err().field(), Some("transactionId"));
        }
        for unused in [5, 15, 25, 35] {
            assert!(decide(state, &g.rules, Some((&earn(1), id(unused))), T0).is_ok());
        }
    }
}

#[test]
fn earn_crossing_a_threshold_upgrades_the_tier() {
    let d = given(rules())
        .then_did(earn(900), 10, T0)
        .when(earn(100), 11, T0)
        .unwrap();
    assert_eq!(
        types(&d),
        ["loyalty.points.earned", "loyalty.tier.upgraded"]
    );
    assert_eq!(d.state.tier.as_deref(), Some("gold"));
    // The answer reports the earn's event, not the tier's.
    assert_eq!(d.outcome.unwrap().event_index, 0);
}

#[test]
fn redeem_takes_points_and_refuses_going_below_zero() {
    let g = given(rules()).then_did(earn(100), 10, T0);
    let d = g.when(redeem(60), 11, T0).unwrap();
    assert_eq!(types(&d), ["loyalty.points.redeemed"]);
    assert_eq!(d.outcome.unwrap().balance, 40);
    let err = g.when(redeem(101), 11, T0).unwrap_err();
    assert_eq!(
        err,
        DomainError::InsufficientPoints {
            requested: 101,
            available: 100
        }
    );
    assert_eq!(err.code(), "INSUFFICIENT_POINTS");
    assert_eq!(
        g.when(redeem(0), 11, T0).unwrap_err().field(),
        Some("points")
    );
}

#[test]
fn redeem_consumes_soonest_expiring_lots_first() {
    let g = given(rules_with(Some(30), None))
        .then_did(earn(50), 10, T0)
        .then_did(earn(70), 11, Timestamp(T0.0 + 5 * DAY_MS));
    let d = g
        .when(redeem(60), 12, Timestamp(T0.0 + 6 * DAY_MS))
        .unwrap();
    let EnrollmentEvent::PointsRedeemed { drawn, .. } = &d.events[0] else {
        panic!()
    };
    assert_eq!(drawn.iter().map(|l| l.points).collect::<Vec<_>>(), [50, 10]);
    assert!(drawn[0].expires_at < drawn[1].expires_at);
    assert_eq!(d.state.lots.len(), 1);
    assert_eq!(d.state.lots[0].points, 60);
}

#[test]
fn points_expire_at_midnight_after_the_period_and_not_before() {
    let g = given(rules_with(Some(30), None)).then_did(earn(100), 10, T0);
    let expiry = T0.midnight_after_days(30).unwrap();
    let before = decide(&g.state, &g.rules, None, Timestamp(expiry.0 - 1)).unwrap();
    assert!(before.events.is_empty());
    let at = decide(&g.state, &g.rules, None, expiry).unwrap();
    assert_eq!(types(&at), ["loyalty.points.expired"]);
    assert_eq!(at.state.points_available, 0);
    // Expiry does not touch lifetime points, so the tier stays.
    assert_eq!(at.state.points_lifetime, 100);
    assert_eq!(settle::next_due(&g.state), Some(expiry));
}

#[test]
fn a_request_settles_due_expiry_first() {
    let g = given(rules_with(Some(1), None)).then_did(earn(100), 10, T0);
    let err = g
        .when(redeem(1), 11, Timestamp(T0.0 + 3 * DAY_MS))
        .unwrap_err();
    assert_eq!(
        err,
        DomainError::InsufficientPoints {
            requested: 1,
            available: 0
        }
    );
    let d = g.when(earn(5), 11, Timestamp(T0.0 + 3 * DAY_MS)).unwrap();
    assert_eq!(
        types(&d),
        ["loyalty.points.expired", "loyalty.points.earned"]
    );
    assert_eq!(d.outcome.unwrap().event_index, 1);
}

#[test]
fn pending_points_mature_after_pending_days() {
    let g = given(rules_with(None, Some(14))).then_did(earn(100), 10, T0);
    assert_eq!(
        (
            g.state.points_available,
            g.state.points_pending,
            g.state.points_lifetime
        ),
        (0, 100, 0)
    );
    assert_eq!(
        g.when(redeem(1), 11, T0).unwrap_err().code(),
        "INSUFFICIENT_POINTS"
    );
    let d = decide(&g.state, &g.rules, None, Timestamp(T0.0 + 14 * DAY_MS)).unwrap();
    assert_eq!(types(&d), ["loyalty.points.matured"]);
    assert_eq!(
        (
            d.state.points_available,
            d.state.points_pending,
            d.state.points_lifetime
        ),
        (100, 0, 100)
    );
}

#[test]
fn pending_points_that_mature_into_a_threshold_upgrade_the_tier() {
    let g = given(rules_with(None, Some(1))).then_did(earn(1_000), 10, T0);
    let d = decide(&g.state, &g.rules, None, Timestamp(T0.0 + DAY_MS)).unwrap();
    assert_eq!(
        types(&d),
        ["loyalty.points.matured", "loyalty.tier.upgraded"]
    );
}

#[test]
fn too_many_pending_earns_are_refused() {
    let mut g = given(rules_with(None, Some(30)));
    for n in 0..crate::limits::PENDING_LOTS_MAX as u128 {
        g = g.then_did(earn(1), 100 + n, T0);
    }
    assert_eq!(
        g.when(earn(1), 99, T0).unwrap_err().code(),
        "TOO_MANY_PENDING"
    );
}

#[test]
fn reversing_an_earn_takes_its_points_back_and_lowers_the_tier() {
    let g = given(rules()).then_did(earn(1_200), 10, T0);
    assert_eq!(g.state.tier.as_deref(), Some("gold"));
    let d = g.when(reverse(10, None), 11, T0).unwrap();
    assert_eq!(
        types(&d),
        ["loyalty.points.reversed", "loyalty.tier.downgraded"]
    );
    let o = d.outcome.unwrap();
    assert_eq!(
        (o.points, o.shortfall, o.balance, o.lifetime_points),
        (1_200, 0, 0, 0)
    );
    assert_eq!(o.tier.as_deref(), Some("silver"));
}

#[test]
fn reversing_a_spent_earn_reports_the_shortfall_and_never_goes_below_zero() {
    let g = given(rules())
        .then_did(earn(100), 10, T0)
        .then_did(redeem(70), 11, T0);
    let d = g.when(reverse(10, None), 12, T0).unwrap();
    let o = d.outcome.unwrap();
    assert_eq!((o.points, o.shortfall, o.balance), (30, 70, 0));
    assert_eq!(d.state.points_lifetime, 0);
}

#[test]
fn partial_reversals_add_up_to_the_transaction_and_no_further() {
    let g = given(rules())
        .then_did(earn(100), 10, T0)
        .then_did(reverse(10, Some(40)), 11, T0);
    assert_eq!(g.state.points_available, 60);
    let err = g.when(reverse(10, Some(61)), 12, T0).unwrap_err();
    assert_eq!(
        err,
        DomainError::ReversalExceedsTransaction {
            requested: 61,
            remaining: 60
        }
    );
    let g = g.then_did(reverse(10, None), 12, T0);
    assert_eq!(g.state.points_available, 0);
    assert_eq!(
        g.when(reverse(10, None), 13, T0).unwrap_err().code(),
        "ALREADY_REVERSED"
    );
}

#[test]
fn reversing_a_pending_earn_removes_it_before_it_matures() {
    let g = given(rules_with(None, Some(7))).then_did(earn(100), 10, T0);
    let d = g.when(reverse(10, Some(30)), 11, T0).unwrap();
    assert_eq!((d.state.points_pending, d.state.points_available), (70, 0));
    let matured = decide(&d.state, &g.rules, None, Timestamp(T0.0 + 7 * DAY_MS)).unwrap();
    assert_eq!(matured.state.points_available, 70);
    assert_eq!(matured.state.points_lifetime, 70);
}

#[test]
fn reversing_a_redeem_gives_the_points_back_to_their_lots() {
    let g = given(rules_with(Some(30), None))
        .then_did(earn(50), 10, T0)
        .then_did(earn(50), 11, Timestamp(T0.0 + 2 * DAY_MS))
        .then_did(redeem(80), 12, Timestamp(T0.0 + 3 * DAY_MS));
    let d = g
        .when(reverse(12, Some(40)), 13, Timestamp(T0.0 + 3 * DAY_MS))
        .unwrap();
    let EnrollmentEvent::PointsReversed { lots_restored, .. } = &d.events[0] else {
        panic!()
    };
    // The latest-expiring lot is refilled first.
    assert_eq!(lots_restored.len(), 2);
    assert_eq!(lots_restored[0].points, 30);
    assert_eq!(lots_restored[1].points, 10);
    assert_eq!(d.state.points_available, 60);
    // Lifetime points are untouched by redeems and their reversal.
    assert_eq!(d.state.points_lifetime, 100);
}

#[test]
fn a_redeem_given_back_after_its_lot_expired_expires_at_once() {
    let g = given(rules_with(Some(1), None))
        .then_did(earn(50), 10, T0)
        .then_did(redeem(50), 11, T0);
    let later = Timestamp(T0.0 + 5 * DAY_MS);
    let d = g.when(reverse(11, None), 12, later).unwrap();
    assert_eq!(
        types(&d),
        ["loyalty.points.reversed", "loyalty.points.expired"]
    );
    assert_eq!(d.state.points_available, 0);
}

#[test]
fn unknown_and_old_transactions_cannot_be_reversed() {
    let g = given(rules()).then_did(earn(10), 10, T0);
    assert_eq!(
        g.when(reverse(99, None), 11, T0).unwrap_err().code(),
        "TRANSACTION_NOT_FOUND"
    );
    let much_later = T0
        .plus_days(crate::limits::REVERSAL_WINDOW_DAYS + 1)
        .unwrap();
    let g = g.then_did(earn(1), 11, much_later);
    assert_eq!(
        g.when(reverse(10, None), 12, much_later)
            .unwrap_err()
            .code(),
        "TRANSACTION_NOT_FOUND"
    );
}

#[test]
fn replaying_the_events_gives_the_same_state() {
    let g = given(rules_with(Some(10), Some(2)));
    let start = g.state.clone();
    let mut state = start.clone();
    let mut log = Vec::new();
    let steps = [
        (earn(100), T0),
        (earn(40), Timestamp(T0.0 + DAY_MS)),
        (redeem(30), Timestamp(T0.0 + 3 * DAY_MS)),
        (reverse(1, Some(10)), Timestamp(T0.0 + 4 * DAY_MS)),
        (earn(5), Timestamp(T0.0 + 20 * DAY_MS)),
    ];
    for (n, (request, at)) in steps.into_iter().enumerate() {
        // Transaction ids 1.. so step 4 reverses step 1's earn.
        if let Ok(d) = decide(&state, &g.rules, Some((&request, id(n as u128 + 1))), at) {
            log.extend(d.events.into_iter().map(|e| (e, at)));
            state = d.state;
        }
    }
    let mut replayed = start;
    for (event, at) in &log {
        replayed.apply(event, *at);
    }
    assert_eq!(replayed, state);
}

#[test]
fn a_transaction_past_the_reversal_window_cannot_be_reversed_even_without_other_activity() {
    let g = given(rules()).then_did(earn(10), 10, T0);
    let later = T0
        .plus_days(crate::limits::REVERSAL_WINDOW_DAYS + 1)
        .unwrap();
    assert_eq!(
        g.when(reverse(10, None), 11, later).unwrap_err().code(),
        "TRANSACTION_NOT_FOUND"
    );
    let inside = T0
        .plus_days(crate::limits::REVERSAL_WINDOW_DAYS - 1)
        .unwrap();
    assert!(g.when(reverse(10, None), 11, inside).is_ok());
}

#[test]
fn pending_earns_stay_reversible_however_many_transactions_follow() {
    let mut g = given(rules_with(None, Some(30))).then_did(earn(5), 1, T0);
    for n in 0..(crate::limits::REVERSIBLE_TRANSACTIONS_MAX as u128 + 10) {
        g = g.then_did(earn(1), 100 + n, T0);
    }
    // The first earn is still pending, so it can still be reversed.
    let d = g.when(reverse(1, None), 2, T0).unwrap();
    assert_eq!(d.outcome.unwrap().points, 5);
}

#[test]
fn a_first_entry_takes_room_for_one_not_four() {
    // An active enrollment with a single earn is the common case; the
    // memory target per active enrollment counts on its lists not
    // growing to four entries for one.
    let d = given(rules()).when(earn(100), 10, T0).unwrap();
    assert_eq!((d.state.lots.capacity(), d.state.recent.capacity()), (1, 1));
    let pending = given(rules_with(None, Some(14)))
        .when(earn(100), 10, T0)
        .unwrap();
    assert_eq!(pending.state.pending.capacity(), 1);
    // From the second entry on, lists grow as usual.
    let two = given(rules())
        .then_did(earn(100), 10, T0)
        .when(earn(5), 11, Timestamp(T0.0 + DAY_MS))
        .unwrap();
    assert_eq!(two.state.recent.len(), 2);
    assert_eq!(two.state.recent.capacity(), 4);
}

#[test]
fn redeems_holding_too_many_lot_draws_stop_being_reversible_oldest_first() {
    use crate::limits::REVERSIBLE_DRAWS_MAX;
    // One point earned on each of 3 000 days: 3 000 lots, each with its
    // own expiry (ten years on, none expired yet).
    const LOTS: i64 = 3_000;
    let mut g = given(rules_with(Some(3_650), None));
    for day in 0..LOTS {
        g = g.then_did(earn(1), 100 + day as u128, Timestamp(T0.0 + day * DAY_MS));
    }
    let at = Timestamp(T0.0 + LOTS * DAY_MS);
    // Three redeems of every lot, each given back in full, so each draws
    // from all 3 000 lots: 9 000 draws, past the bound.
    let g = g
        .then_did(redeem(LOTS), 1, at)
        .then_did(reverse(1, None), 2, at)
        .then_did(redeem(LOTS), 3, at)
        .then_did(reverse(3, None), 4, at)
        .then_did(redeem(LOTS), 5, at);
    let draws: Vec<(u128, usize)> = g
        .state
        .recent
        .iter()
        .filter_map(|t| match &t.kind {
            ReversibleKind::Redeem { drawn } => Some((t.transaction_id.0.as_u128(), drawn.len())),
            ReversibleKind::Earn { .. } => None,
        })
        .collect();
    assert_eq!(draws, [(3, 3_000), (5, 3_000)], "the oldest redeem went");
    assert!(draws.iter().map(|(_, n)| n).sum::<usize>() <= REVERSIBLE_DRAWS_MAX);
    assert!(matches!(
        g.when(reverse(1, None), 6, at),
        Err(DomainError::TransactionNotFound(_))
    ));
    // The newer ones can still be reversed.
    let back = g.when(reverse(5, None), 7, at).unwrap();
    assert_eq!(back.outcome.unwrap().balance, LOTS);
}
