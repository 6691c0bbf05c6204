//! Shared set-up for the runtime's tests: a data directory, an engine on a
//! manual clock, and a business with an active program.
#![allow(dead_code)]

use loyalty_actors::{Engine, EngineConfig, ManualClock};
use loyalty_engine::catalog::EnrollmentRef;
use loyalty_engine::enrollment::earn::{EarnPoints, EarnValue};
use loyalty_engine::enrollment::redeem::RedeemPoints;
use loyalty_engine::enrollment::reverse::ReverseTransaction;
use loyalty_engine::enrollment::Request;
use loyalty_engine::idempotency::IdempotencyKey;
use loyalty_engine::program::{EarnRule, ProgramRules, Tier};
use loyalty_engine::{BusinessId, EnrollmentId, ProgramId, Timestamp, TransactionId};
use loyalty_persistence::{Store, StoreError, StoreOptions};
use std::path::Path;
use std::sync::Arc;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);

pub fn config() -> EngineConfig {
    EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    }
}

pub fn start(dir: &Path, config: EngineConfig, clock: Arc<ManualClock>) -> Engine {
    let (store, report) = Store::open(&StoreOptions::new(dir)).expect("open store");
    Engine::start(store, &report, config, clock).expect("start engine")
}

/// An engine on the default test configuration whose commit thread calls
/// `before_write` before each write: a test fails the write there (an
/// error) or panics, as a broken disk or a bug would.
pub fn start_with_write_hook(
    dir: &Path,
    clock: Arc<ManualClock>,
    before_write: impl FnMut() -> Result<(), StoreError> + Send + 'static,
) -> Engine {
    start_with_write_hook_on(&StoreOptions::new(dir), config(), clock, before_write)
}

/// [`start_with_write_hook`] on a store and engine configured as given.
pub fn start_with_write_hook_on(
    options: &StoreOptions,
    config: EngineConfig,
    clock: Arc<ManualClock>,
    mut before_write: impl FnMut() -> Result<(), StoreError> + Send + 'static,
) -> Engine {
    let (store, report) = Store::open(options).expect("open store");
    let writer = Box::new(move |store: &Store, batch, sync| {
        before_write()?;
        store.write(batch, sync)
    });
    Engine::start_with_writer(store, &report, config, clock, writer).expect("start engine")
}

/// A business with a program and one enrollment that has earned `points`
/// (key `ok`): where the failure tests start.
pub async fn enrolled_with_points(engine: &Engine, points: i64) -> (BusinessId, EnrollmentId) {
    let (business, program) = business_with_program(engine, rules(None, None)).await;
    let enrollment = enroll(engine, business, program, "c-1").await.enrollment_id;
    engine
        .transact(business, enrollment, key("ok"), earn(points))
        .await
        .expect("the first earn");
    (business, enrollment)
}

pub fn rules(expire_days: Option<u32>, pending_days: Option<u32>) -> ProgramRules {
    ProgramRules::new(
        EarnRule {
            points_per_unit: 1,
            minor_units_per_unit: 100,
        },
        vec![
            Tier {
                name: "member".into(),
                min_points: 0,
            },
            Tier {
                name: "gold".into(),
                min_points: 1_000,
            },
        ],
        expire_days,
        pending_days,
    )
    .unwrap()
}

/// A business with one active program.
pub async fn business_with_program(
    engine: &Engine,
    rules: ProgramRules,
) -> (BusinessId, ProgramId) {
    let business = engine.catalog.create_business("Corner Shop").await.unwrap();
    let program = engine
        .catalog
        .create_program(business.business_id, "Stamps", rules)
        .await
        .unwrap();
    engine
        .catalog
        .activate_program(business.business_id, program.program_id)
        .await
        .unwrap();
    (business.business_id, program.program_id)
}

pub async fn enroll(
    engine: &Engine,
    business: BusinessId,
    program: ProgramId,
    external_id: &str,
) -> EnrollmentRef {
    let customer = engine
        .catalog
        .create_customer(business, external_id, None, None)
        .await
        .unwrap();
    engine
        .catalog
        .enroll(business, customer.customer_id, program)
        .await
        .unwrap()
}

pub fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

pub fn earn(points: i64) -> Request {
    Request::Earn(EarnPoints {
        value: EarnValue::Points(points),
        reason: None,
        reference: None,
    })
}

pub fn redeem(points: i64) -> Request {
    Request::Redeem(RedeemPoints {
        points,
        reason: None,
        reference: None,
    })
}

pub fn reverse(target: TransactionId, points: Option<i64>) -> Request {
    Request::Reverse(ReverseTransaction {
        target,
        points,
        reason: None,
    })
}
