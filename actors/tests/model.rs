//! Property test of the runtime: random earns and redeems, with idempotency
//! keys drawn from a small pool (so keys repeat, with the same request or a
//! different one) and restarts in between, against a simple model. Balances
//! match, repeats change nothing, conflicts are refused, and what a restart
//! rebuilds from snapshot + log equals what was live.

mod common;

use common::*;
use loyalty_actors::{EngineConfig, ManualClock};
use loyalty_engine::enrollment::Request;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    Earn { points: i64, key: u8 },
    Redeem { points: i64, key: u8 },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1i64..500, 0u8..12).prop_map(|(points, key)| Op::Earn { points, key }),
        4 => (1i64..400, 0u8..12).prop_map(|(points, key)| Op::Redeem { points, key }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_runtime_agrees_with_the_model_across_repeats_and_restarts(ops in proptest::collection::vec(op(), 1..60)) {
        actix_rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new(T0));
            // A small snapshot interval so restarts use snapshot + tail.
            let config = EngineConfig { snapshot_every_events: 3, ..config() };
            let mut engine = start(dir.path(), config.clone(), clock.clone());
            let (business, program) = business_with_program(&engine, rules(None, None)).await;
            let e = enroll(&engine, business, program, "c").await;
            let mut balance = 0i64;
            // key -> (request, balance answered)
            let mut first: HashMap<u8, (Request, i64)> = HashMap::new();
            for op in ops {
                let (request, k) = match op {
                    Op::Restart => {
                        let before = engine.balance(business, e.enrollment_id).await.unwrap();
                        engine.shutdown();
                        engine = start(dir.path(), config.clone(), clock.clone());
                        let after = engine.balance(business, e.enrollment_id).await.unwrap();
                        assert_eq!(after, before, "a restart rebuilds the live state");
                        continue;
                    }
                    Op::Earn { points, key } => (earn(points), key),
                    Op::Redeem { points, key } => (redeem(points), key),
                };
                let answer = engine.transact(business, e.enrollment_id, key(&format!("k{k}")), request.clone()).await;
                match first.get(&k) {
                    Some((first_request, first_balance)) if *first_request == request => {
                        // A repeat: the first answer, no second effect.
                        assert_eq!(answer.unwrap().outcome.balance, *first_balance);
                    }
                    Some(_) => assert_eq!(answer.unwrap_err().code(), "IDEMPOTENCY_CONFLICT"),
                    None => match (&request, answer) {
                        (Request::Earn(_), Ok(a)) => {
                            balance += a.outcome.points;
                            assert_eq!(a.outcome.balance, balance);
                            first.insert(k, (request, balance));
                        }
                        (Request::Redeem(r), Ok(a)) => {
                            assert!(r.points <= balance);
                            balance -= r.points;
                            assert_eq!(a.outcome.balance, balance);
                            first.insert(k, (request, balance));
                        }
                        (Request::Redeem(r), Err(err)) => {
                            // A refusal records no key: the same key may be used again.
                            assert!(r.points > balance);
                            assert_eq!(err.code(), "INSUFFICIENT_POINTS");
                        }
                        (request, result) => panic!("unexpected {result:?} for {request:?}"),
                    },
                }
                assert!(balance >= 0);
            }
            assert_eq!(engine.balance(business, e.enrollment_id).await.unwrap().balance, balance);
            engine.shutdown();
        });
    }
}
