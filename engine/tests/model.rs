//! Property tests: random command sequences against a simple reference
//! model, plus invariants and replay for programs with expiry and pending
//! periods.

use loyalty_engine::enrollment::earn::{EarnPoints, EarnValue};
use loyalty_engine::enrollment::redeem::RedeemPoints;
use loyalty_engine::enrollment::reverse::ReverseTransaction;
use loyalty_engine::enrollment::{decide, decide_in_place, Enrollment, EnrollmentEvent, Request};
use loyalty_engine::program::{EarnRule, ProgramRules, Tier};
use loyalty_engine::{
    BusinessId, CustomerId, DomainError, EnrollmentId, ProgramId, Timestamp, TransactionId,
};
use proptest::prelude::*;
use uuid::Uuid;

const T0: i64 = 1_700_000_000_000;

#[derive(Clone, Debug)]
enum Op {
    Earn(i64),
    EarnAmount(i64),
    Redeem(i64),
    /// Reverse the n-th transaction made so far (modulo), whole or partly.
    Reverse(usize, Option<i64>),
    /// Let this many hours pass.
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-5i64..2_000).prop_map(Op::Earn),
        1 => (0i64..100_000).prop_map(Op::EarnAmount),
        3 => (-5i64..2_500).prop_map(Op::Redeem),
        2 => (0usize..64, proptest::option::of(-5i64..1_500)).prop_map(|(i, p)| Op::Reverse(i, p)),
        1 => (1i64..24 * 20).prop_map(Op::Wait),
    ]
}

fn rules(expire: Option<u32>, pending: Option<u32>) -> ProgramRules {
    ProgramRules::new(
        EarnRule {
            points_per_unit: 3,
            minor_units_per_unit: 100,
        },
        vec![
            Tier {
                name: "base".into(),
                min_points: 0,
            },
            Tier {
                name: "silver".into(),
                min_points: 2_000,
            },
            Tier {
                name: "gold".into(),
                min_points: 10_000,
            },
        ],
        expire,
        pending,
    )
    .unwrap()
}

fn start(rules: &ProgramRules) -> Enrollment {
    let enrolled = EnrollmentEvent::Enrolled {
        enrollment_id: EnrollmentId(Uuid::from_u128(1)),
        business_id: BusinessId(Uuid::from_u128(2)),
        customer_id: CustomerId(Uuid::from_u128(3)),
        program_id: ProgramId(Uuid::from_u128(4)),
        tier: rules.tier_name(rules.tier_for(0)).map(str::to_owned),
    };
    Enrollment::from_enrolled(&enrolled, Timestamp(T0))
}

fn request(op: &Op, made: &[TransactionId]) -> Option<Request> {
    Some(match op {
        Op::Earn(p) => Request::Earn(EarnPoints {
            value: EarnValue::Points(*p),
            reason: None,
            reference: None,
        }),
        Op::EarnAmount(a) => Request::Earn(EarnPoints {
            value: EarnValue::AmountMinor(*a),
            reason: None,
            reference: None,
        }),
        Op::Redeem(p) => Request::Redeem(RedeemPoints {
            points: *p,
            reason: None,
            reference: None,
        }),
        Op::Reverse(i, p) => {
            let target = *made.get(i % made.len().max(1))?;
            Request::Reverse(ReverseTransaction {
                target,
                points: *p,
                reason: None,
            })
        }
        Op::Wait(_) => return None,
    })
}

/// The reference model for a program without expiry or pending points.
#[derive(Default)]
struct Model {
    balance: i64,
    lifetime: i64,
    /// (id, is_earn, points, reversed)
    transactions: Vec<(TransactionId, bool, i64, i64)>,
}

impl Model {
    /// What the model expects: Ok((points moved, shortfall)) or the error code.
    fn apply(&mut self, request: &Request, id: TransactionId) -> Result<(i64, i64), &'static str> {
        match request {
            Request::Earn(e) => {
                let points = match e.value {
                    EarnValue::Points(p) => p,
                    EarnValue::AmountMinor(a) if a <= 0 => return Err("INVALID_FIELD"),
                    EarnValue::AmountMinor(a) => a * 3 / 100,
                };
                if points <= 0 {
                    return Err("INVALID_FIELD");
                }
                self.balance += points;
                self.lifetime += points;
                self.transactions.push((id, true, points, 0));
                Ok((points, 0))
            }
            Request::Redeem(r) => {
                if r.points <= 0 {
                    return Err("INVALID_FIELD");
                }
                if r.points > self.balance {
                    return Err("INSUFFICIENT_POINTS");
                }
                self.balance -= r.points;
                self.transactions.push((id, false, r.points, 0));
                Ok((r.points, 0))
            }
            Request::Reverse(r) => {
                let t = self
                    .transactions
                    .iter_mut()
                    .find(|t| t.0 == r.target)
                    .ok_or("TRANSACTION_NOT_FOUND")?;
                let remaining = t.2 - t.3;
                if remaining == 0 {
                    return Err("ALREADY_REVERSED");
                }
                let points = match r.points {
                    Some(p) if p <= 0 => return Err("INVALID_FIELD"),
                    Some(p) if p > remaining => return Err("REVERSAL_EXCEEDS_TRANSACTION"),
                    Some(p) => p,
                    None => remaining,
                };
                t.3 += points;
                if t.1 {
                    let taken = points.min(self.balance);
                    self.balance -= taken;
                    self.lifetime -= points;
                    Ok((taken, points - taken))
                } else {
                    self.balance += points;
                    Ok((points, 0))
                }
            }
        }
    }

    fn tier(&self) -> &'static str {
        match self.lifetime {
            l if l >= 10_000 => "gold",
            l if l >= 2_000 => "silver",
            _ => "base",
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Without expiry or pending points, the engine agrees with the model on
    /// every answer, every refusal, and the final figures.
    #[test]
    fn agrees_with_the_reference_model(ops in proptest::collection::vec(op(), 1..80)) {
        let rules = rules(None, None);
        let mut state = start(&rules);
        let mut model = Model::default();
        let mut made = Vec::new();
        let mut now = T0;
        for (n, op) in ops.iter().enumerate() {
            if let Op::Wait(hours) = op { now += hours * 3_600_000; continue; }
            let Some(request) = request(op, &made) else { continue };
            let id = TransactionId(Uuid::from_u128(1_000 + n as u128));
            let expected = model.apply(&request, id);
            match (decide(&state, &rules, Some((&request, id)), Timestamp(now)), expected) {
                (Ok(decision), Ok((points, shortfall))) => {
                    let outcome = decision.outcome.clone().unwrap();
                    prop_assert_eq!((outcome.points, outcome.shortfall), (points, shortfall));
                    prop_assert_eq!(outcome.balance, model.balance);
                    prop_assert_eq!(outcome.lifetime_points, model.lifetime);
                    prop_assert_eq!(outcome.tier.as_deref(), Some(model.tier()));
                    state = decision.state;
                    if !matches!(request, Request::Reverse(_)) { made.push(id); }
                }
                (Err(err), Err(code)) => prop_assert_eq!(err.code(), code),
                (got, want) => prop_assert!(false, "engine {:?} vs model {:?} for {:?}", got.map(|d| d.outcome), want, request),
            }
            prop_assert!(state.points_available >= 0);
        }
    }

    /// With expiry and pending periods: balances are never negative, equal
    /// the sum of their events, and replaying the events (from the start or
    /// from a mid-way snapshot) gives the live state.
    #[test]
    fn events_account_for_the_balance_and_replay_to_the_same_state(
        ops in proptest::collection::vec(op(), 1..80),
        expire in proptest::option::of(1u32..30),
        pending in proptest::option::of(1u32..5),
        snapshot_at in 0usize..80,
    ) {
        let rules = rules(expire, pending);
        let initial = start(&rules);
        let mut state = initial.clone();
        let mut log: Vec<(EnrollmentEvent, Timestamp)> = Vec::new();
        let mut snapshot: Option<(Enrollment, usize)> = None;
        let mut made = Vec::new();
        let mut now = T0;
        for (n, op) in ops.iter().enumerate() {
            if n == snapshot_at { snapshot = Some((state.clone(), log.len())); }
            let request = request(op, &made);
            if let Op::Wait(hours) = op { now += hours * 3_600_000; }
            let id = TransactionId(Uuid::from_u128(1_000 + n as u128));
            let result = decide(&state, &rules, request.as_ref().map(|r| (r, id)), Timestamp(now));
            // The runtime's form decides the same without the copy, and a
            // refusal leaves its state untouched.
            let mut in_place = state.clone();
            match (decide_in_place(&mut in_place, &rules, request.as_ref().map(|r| (r, id)), Timestamp(now)), &result) {
                (Ok(applied), Ok(decision)) => {
                    prop_assert_eq!(&applied.events, &decision.events);
                    prop_assert_eq!(&applied.outcome, &decision.outcome);
                    prop_assert_eq!(&in_place, &decision.state);
                }
                (Err(got), Err(want)) => {
                    prop_assert_eq!(got, want.clone());
                    prop_assert_eq!(&in_place, &state);
                }
                (got, want) => prop_assert!(false, "in place {:?} vs copy {:?}", got.map(|a| a.outcome), want.as_ref().map(|d| &d.outcome)),
            }
            match result {
                Ok(decision) => {
                    log.extend(decision.events.iter().cloned().map(|e| (e, Timestamp(now))));
                    state = decision.state;
                    if matches!(request, Some(Request::Earn(_)) | Some(Request::Redeem(_))) { made.push(id); }
                }
                Err(DomainError::InvalidField { .. } | DomainError::InsufficientPoints { .. }
                    | DomainError::TransactionNotFound(_) | DomainError::AlreadyReversed(_)
                    | DomainError::ReversalExceedsTransaction { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
            }
            prop_assert!(state.points_available >= 0 && state.points_pending >= 0);
            state.check_invariants();
        }
        // Sum of the events' movements equals available + pending.
        let mut sum = 0i64;
        for (event, _) in &log {
            sum += match event {
                EnrollmentEvent::PointsEarned { points, .. } => *points,
                EnrollmentEvent::PointsRedeemed { points, .. } => -points,
                EnrollmentEvent::PointsReversed { from_pending, lots_drawn, lots_restored, .. } => {
                    lots_restored.iter().map(|l| l.points).sum::<i64>()
                        - lots_drawn.iter().map(|l| l.points).sum::<i64>()
                        - from_pending
                }
                EnrollmentEvent::PointsExpired { points, .. } => -points,
                _ => 0,
            };
        }
        prop_assert_eq!(sum, state.points_available + state.points_pending);
        let mut replayed = initial;
        for (event, at) in &log { replayed.apply(event, *at); }
        prop_assert_eq!(&replayed, &state);
        if let Some((mut from_snapshot, offset)) = snapshot {
            for (event, at) in &log[offset..] { from_snapshot.apply(event, *at); }
            prop_assert_eq!(&from_snapshot, &state);
        }
    }
}
