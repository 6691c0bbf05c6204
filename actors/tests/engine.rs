//! The runtime end to end: real actors, real RocksDB, real fsyncs.

mod common;

use common::*;
use loyalty_actors::{Clock, Engine, EngineConfig, EngineError, ManualClock, Release, SystemClock};
use loyalty_engine::time::DAY_MS;
use loyalty_engine::{DomainEvent, Timestamp};
use loyalty_persistence::{IdempotencyRetention, KeyDigests, Store, StoreOptions, KEY_DIGESTS_MAX};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Waits until every enrollment actor has been passivated (10 s at most).
async fn passivated(engine: &Engine) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.active_enrollments() > 0 {
        assert!(std::time::Instant::now() < deadline, "not passivated");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The digests a snapshot holds, sorted, once each; `None` for none or
/// past the bound.
fn digests(keys: &Option<KeyDigests>) -> Option<Vec<u32>> {
    let mut digests: Vec<u32> = keys.as_ref()?.known()?.collect();
    digests.sort_unstable();
    digests.dedup();
    Some(digests)
}

#[actix_rt::test]
async fn earn_redeem_reverse_and_everything_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = start(dir.path(), config(), clock.clone());
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, business, program, "c-1").await;

    let earned = engine
        .transact(business, e.enrollment_id, key("k1"), earn(1_200))
        .await
        .unwrap();
    assert_eq!(
        (earned.outcome.points, earned.outcome.balance),
        (1_200, 1_200)
    );
    assert_eq!(earned.outcome.tier.as_deref(), Some("gold"));
    let redeemed = engine
        .transact(business, e.enrollment_id, key("k2"), redeem(300))
        .await
        .unwrap();
    assert_eq!(redeemed.outcome.balance, 900);
    let reversed = engine
        .transact(
            business,
            e.enrollment_id,
            key("k3"),
            reverse(earned.outcome.transaction_id, Some(500)),
        )
        .await
        .unwrap();
    assert_eq!(
        (reversed.outcome.balance, reversed.outcome.lifetime_points),
        (400, 700)
    );
    assert_eq!(reversed.outcome.tier.as_deref(), Some("member"));
    let view = engine.balance(business, e.enrollment_id).await.unwrap();
    assert_eq!(
        (view.balance, view.version),
        (400, reversed.outcome.version)
    );
    engine.shutdown();

    let engine = start(dir.path(), config(), clock);
    let view = engine.balance(business, e.enrollment_id).await.unwrap();
    assert_eq!(
        (view.balance, view.lifetime_points, view.tier.as_deref()),
        (400, 700, Some("member"))
    );
    // Keys survive the restart: the first answer again, no second effect.
    let again = engine
        .transact(business, e.enrollment_id, key("k2"), redeem(300))
        .await
        .unwrap();
    assert_eq!(again, redeemed);
    assert_eq!(
        engine
            .balance(business, e.enrollment_id)
            .await
            .unwrap()
            .balance,
        400
    );
    // The log holds each transaction exactly once.
    let history = engine
        .store()
        .aggregate_events(e.enrollment_id.0, 1, u64::MAX)
        .unwrap();
    let types: Vec<_> = history.iter().map(|(_, r)| r.event.event_type()).collect();
    assert_eq!(
        types,
        [
            "loyalty.customer.enrolled",
            "loyalty.points.earned",
            "loyalty.tier.upgraded",
            "loyalty.points.redeemed",
            "loyalty.points.reversed",
            "loyalty.tier.downgraded"
        ]
    );
    engine.shutdown();
}

#[actix_rt::test]
async fn a_reused_key_answers_the_first_answer_and_a_changed_request_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path(), config(), Arc::new(ManualClock::new(T0)));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, business, program, "c-1").await;
    let first = engine
        .transact(business, e.enrollment_id, key("same"), earn(10))
        .await
        .unwrap();
    let second = engine
        .transact(business, e.enrollment_id, key("same"), earn(10))
        .await
        .unwrap();
    assert_eq!(first, second);
    let conflict = engine
        .transact(business, e.enrollment_id, key("same"), earn(11))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(
        engine
            .balance(business, e.enrollment_id)
            .await
            .unwrap()
            .balance,
        10
    );
    engine.shutdown();
}

/// Operators and the load tests' per-thread CPU figures tell the shards
/// from actix's other threads by name.
#[cfg(target_os = "linux")]
#[actix_rt::test]
async fn shard_threads_carry_their_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path(), config(), Arc::new(ManualClock::new(T0)));
    assert_eq!(config().shards, 2);
    // Both shards have run: each has answered for an enrollment.
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let mut served = std::collections::HashSet::new();
    for i in 0..64 {
        let e = enroll(&engine, business, program, &format!("c-{i}")).await;
        served.insert(engine.shard_index(e.enrollment_id));
        engine.balance(business, e.enrollment_id).await.unwrap();
        if served.len() == 2 {
            break;
        }
    }
    assert_eq!(served.len(), 2, "64 enrollments, all on one shard");
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect();
    for shard in ["loyalty-sh-0", "loyalty-sh-1"] {
        assert!(names.iter().any(|n| n == shard), "{shard} not in {names:?}");
    }
    engine.shutdown();
}

#[actix_rt::test]
async fn fifty_concurrent_requests_with_one_key_have_one_effect() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(start(dir.path(), config(), Arc::new(ManualClock::new(T0))));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, business, program, "c-1").await;
    let calls = (0..50).map(|_| {
        let engine = engine.clone();
        async move {
            engine
                .transact(business, e.enrollment_id, key("once"), earn(7))
                .await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let first = answers[0].as_ref().unwrap();
    assert!(answers.iter().all(|a| a.as_ref().unwrap() == first));
    assert_eq!(
        engine
            .balance(business, e.enrollment_id)
            .await
            .unwrap()
            .balance,
        7
    );
    Arc::into_inner(engine).unwrap().shutdown();
}

#[actix_rt::test]
async fn concurrent_redeems_never_overdraw_and_exactly_the_affordable_ones_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(start(dir.path(), config(), Arc::new(ManualClock::new(T0))));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, business, program, "c-1").await;
    engine
        .transact(business, e.enrollment_id, key("seed"), earn(1_000))
        .await
        .unwrap();
    let calls = (0..100).map(|i| {
        let engine = engine.clone();
        async move {
            engine
                .transact(business, e.enrollment_id, key(&format!("r{i}")), redeem(30))
                .await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let succeeded = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(succeeded, 33, "1000 points cover exactly 33 redeems of 30");
    for answer in &answers {
        match answer {
            Ok(a) => assert!(a.outcome.balance >= 0),
            Err(err) => assert_eq!(err.code(), "INSUFFICIENT_POINTS"),
        }
    }
    assert_eq!(
        engine
            .balance(business, e.enrollment_id)
            .await
            .unwrap()
            .balance,
        10
    );
    Arc::into_inner(engine).unwrap().shutdown();
}

#[actix_rt::test]
async fn another_business_cannot_reach_an_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path(), config(), Arc::new(ManualClock::new(T0)));
    let (a, program) = business_with_program(&engine, rules(None, None)).await;
    let (b, _) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, a, program, "c-1").await;
    let err = engine
        .transact(b, e.enrollment_id, key("x"), earn(5))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotFound { .. }));
    assert!(matches!(
        engine.balance(b, e.enrollment_id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(engine.catalog.program(b, program).is_err());
    assert!(engine.catalog.customer(b, e.customer_id).is_err());
    assert_eq!(engine.balance(a, e.enrollment_id).await.unwrap().balance, 0);
    engine.shutdown();
}

/// Passivations reported to the engine's release-memory hook, and its
/// thorough releases (only the passivation test sets this hook).
static PASSIVATIONS_RELEASED: AtomicU64 = AtomicU64::new(0);
static THOROUGH_RELEASES: AtomicU64 = AtomicU64::new(0);

fn count_memory_release(release: Release) {
    PASSIVATIONS_RELEASED.fetch_add(release.passivated, Ordering::Relaxed);
    if release.thorough {
        THOROUGH_RELEASES.fetch_add(1, Ordering::Relaxed);
    }
}

#[actix_rt::test]
async fn idle_enrollments_leave_memory_and_come_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        passivate_after: Duration::from_millis(100),
        tick_interval: Duration::from_millis(20),
        release_memory: Some(count_memory_release),
        thorough_release_passivations_min: 1,
        ..config()
    };
    let engine = start(dir.path(), config, Arc::new(ManualClock::new(T0)));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let mut enrollments = Vec::new();
    for i in 0..20 {
        let e = enroll(&engine, business, program, &format!("c-{i}")).await;
        engine
            .transact(business, e.enrollment_id, key("k"), earn(i + 1))
            .await
            .unwrap();
        enrollments.push(e);
    }
    assert!(engine.active_enrollments() > 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.active_enrollments() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "actors were not passivated"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // The allocator was asked to give the freed memory back, told of every
    // passivation once (the hook runs at the end of the round that dropped
    // them, after the count of active ones fell); and thoroughly, the shards being
    // quiet from then on (this test asks for it from one passivation).
    let released = || PASSIVATIONS_RELEASED.load(Ordering::Relaxed);
    let thorough = || THOROUGH_RELEASES.load(Ordering::Relaxed);
    while (released() < 20 || thorough() == 0) && std::time::Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(released(), 20);
    assert!(thorough() >= 1, "no thorough release on quiet shards");
    // Passivation wrote a snapshot of each, with the digest of its key, so
    // activation need not read the keys back.
    for e in &enrollments {
        let snapshot = engine.store().snapshot(e.enrollment_id).unwrap().unwrap();
        assert_eq!(digests(&snapshot.keys), Some(vec![KeyDigests::digest("k")]));
    }
    for (i, e) in enrollments.iter().enumerate() {
        let view = engine.balance(business, e.enrollment_id).await.unwrap();
        assert_eq!(view.balance, i as i64 + 1);
        // The key is still known after passivation.
        let again = engine
            .transact(business, e.enrollment_id, key("k"), earn(i as i64 + 1))
            .await
            .unwrap();
        assert_eq!(again.outcome.balance, i as i64 + 1);
    }
    assert_eq!(engine.active_enrollments(), 20);
    engine.shutdown();
}

/// What the slicing test's hook heard, round after round: (passivated,
/// thorough).
static ROUNDS_RELEASED: Mutex<Vec<(u64, bool)>> = Mutex::new(Vec::new());

fn record_round_release(release: Release) {
    ROUNDS_RELEASED
        .lock()
        .unwrap()
        .push((release.passivated, release.thorough));
}

/// More idle actors than one slice holds (256) passivate in one round, in
/// slices; a shard that keeps answering is never asked for a thorough
/// release, and gets one once it is quiet.
#[actix_rt::test]
async fn a_wave_of_idle_actors_passivates_in_slices_and_waits_for_quiet_to_release_thoroughly() {
    const ENROLLMENTS: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        shards: 1,
        passivate_after: Duration::from_millis(100),
        tick_interval: Duration::from_secs(1),
        release_memory: Some(record_round_release),
        thorough_release_passivations_min: ENROLLMENTS as u64,
        ..config()
    };
    let engine = start(dir.path(), config, Arc::new(ManualClock::new(T0)));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let names: Vec<String> = (0..ENROLLMENTS).map(|i| format!("c-{i}")).collect();
    let enrolled = futures_util::future::join_all(
        names
            .iter()
            .map(|name| enroll(&engine, business, program, name)),
    )
    .await;
    // Activated within well under a tick, so at most two rounds find
    // them idle, and one of them at least 300.
    let earned = futures_util::future::join_all(
        enrolled
            .iter()
            .map(|e| engine.transact(business, e.enrollment_id, key("k"), earn(1))),
    )
    .await;
    assert!(earned.iter().all(Result::is_ok));
    assert_eq!(engine.active_enrollments(), ENROLLMENTS as u64);

    // A point-of-sale terminal keeps the shard busy: a query every 10 ms
    // (of an enrollment that does not exist, so it activates nothing).
    let stop = AtomicBool::new(false);
    let unknown = loyalty_engine::EnrollmentId(uuid::Uuid::new_v4());
    let pinging = async {
        let mut pings = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let answer = engine.balance(business, unknown).await;
            assert!(matches!(answer, Err(EngineError::NotFound { .. })));
            pings += 1;
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        pings
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let waiting = async {
        while engine.active_enrollments() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "actors were not passivated"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        // The hook runs at the round's end, after the last drop.
        while ROUNDS_RELEASED
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0)
            .sum::<u64>()
            < ENROLLMENTS as u64
        {
            assert!(
                std::time::Instant::now() < deadline,
                "passivations unreported"
            );
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Relaxed);
    };
    let (pings, ()) = futures_util::join!(pinging, waiting);
    assert!(pings > 10);
    let busy = ROUNDS_RELEASED.lock().unwrap().clone();
    assert_eq!(busy.iter().map(|r| r.0).sum::<u64>(), ENROLLMENTS as u64);
    assert!(
        busy.iter().all(|r| !r.1),
        "a thorough release while the shard was answering: {busy:?}"
    );
    assert!(
        busy.iter().any(|r| r.0 > 256),
        "no round passivated more than one slice: {busy:?}"
    );
    // 600 snapshots, then 600 drops, at most 256 a slice: at least three
    // slices each (in rounds of a single slice, four at most).
    let slices = engine.passivation_slices();
    assert!(slices >= 6, "{slices} slices for {busy:?}");

    // Quiet now: the next round with no command before it releases
    // thoroughly what is owed, with no new passivation.
    while ROUNDS_RELEASED.lock().unwrap().len() == busy.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "no thorough release once quiet"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let after = ROUNDS_RELEASED.lock().unwrap()[busy.len()..].to_vec();
    assert_eq!(after, vec![(0, true)]);
    engine.shutdown();
}

#[actix_rt::test]
async fn points_expire_when_the_clock_passes_their_date() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = start(dir.path(), config(), clock.clone());
    let (business, program) = business_with_program(&engine, rules(Some(1), None)).await;
    let e = enroll(&engine, business, program, "c-1").await;
    engine
        .transact(business, e.enrollment_id, key("k"), earn(50))
        .await
        .unwrap();
    clock.advance_ms(3 * DAY_MS);
    let view = engine.balance(business, e.enrollment_id).await.unwrap();
    assert_eq!((view.balance, view.lifetime_points), (0, 50));
    let history = engine
        .store()
        .aggregate_events(e.enrollment_id.0, 1, u64::MAX)
        .unwrap();
    let last = &history.last().unwrap().1;
    assert!(
        matches!(last.event, DomainEvent::Enrollment(ref ev) if ev.event_type() == "loyalty.points.expired")
    );
    engine.shutdown();
}

#[actix_rt::test]
async fn snapshots_are_taken_every_n_events_and_restarts_use_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let config = EngineConfig {
        snapshot_every_events: 4,
        ..config()
    };
    let engine = start(dir.path(), config.clone(), clock.clone());
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, business, program, "c-1").await;
    for i in 0..10 {
        engine
            .transact(business, e.enrollment_id, key(&format!("k{i}")), earn(10))
            .await
            .unwrap();
    }
    let snapshot = engine
        .store()
        .snapshot(e.enrollment_id)
        .unwrap()
        .expect("a snapshot");
    assert_eq!(
        snapshot.version, 8,
        "versions 1..=11; the last multiple of 4 is 8"
    );
    // The snapshot counts the keys of versions 2..=8, written in its group.
    let mut kept: Vec<u32> = (0..7)
        .map(|i| KeyDigests::digest(&format!("k{i}")))
        .collect();
    kept.sort_unstable();
    assert_eq!(digests(&snapshot.keys), Some(kept));
    engine.shutdown();
    let engine = start(dir.path(), config, clock);
    assert_eq!(
        engine
            .balance(business, e.enrollment_id)
            .await
            .unwrap()
            .balance,
        100
    );
    // Keys of the tail after the snapshot (read back from their records on
    // activation) and of the snapshot are both still known.
    for (k, first_balance) in [("k9", 100), ("k3", 40)] {
        let again = engine
            .transact(business, e.enrollment_id, key(k), earn(10))
            .await
            .unwrap();
        assert_eq!(again.outcome.balance, first_balance, "{k}'s first answer");
    }
    let view = engine.balance(business, e.enrollment_id).await.unwrap();
    assert_eq!(view.balance, 100, "a repeated key was applied again");
    engine.shutdown();
}

#[actix_rt::test]
async fn a_saturated_engine_refuses_instead_of_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        inflight_max: 0,
        ..config()
    };
    let engine = start(dir.path(), config, Arc::new(ManualClock::new(T0)));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, business, program, "c-1").await;
    let err = engine
        .transact(business, e.enrollment_id, key("k"), earn(1))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Overloaded));
    engine.shutdown();
}

#[actix_rt::test]
async fn catalog_rules_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path(), config(), Arc::new(ManualClock::new(T0)));
    let business = engine
        .catalog
        .create_business("Shop")
        .await
        .unwrap()
        .business_id;
    let draft = engine
        .catalog
        .create_program(business, "Draft", rules(None, None))
        .await
        .unwrap();
    let customer = engine
        .catalog
        .create_customer(business, "ext-1", Some("Ada"), Some("ada@example.com"))
        .await
        .unwrap();
    let err = engine
        .catalog
        .create_customer(business, "ext-1", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "CUSTOMER_EXISTS");
    let err = engine
        .catalog
        .enroll(business, customer.customer_id, draft.program_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "PROGRAM_NOT_ACTIVE");
    engine
        .catalog
        .activate_program(business, draft.program_id)
        .await
        .unwrap();
    let err = engine
        .catalog
        .activate_program(business, draft.program_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "PROGRAM_ALREADY_ACTIVE");
    engine
        .catalog
        .enroll(business, customer.customer_id, draft.program_id)
        .await
        .unwrap();
    let err = engine
        .catalog
        .enroll(business, customer.customer_id, draft.program_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ALREADY_ENROLLED");
    engine.shutdown();
}

#[actix_rt::test]
async fn a_failed_write_stops_the_engine_instead_of_answering() {
    use loyalty_persistence::StoreError;
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let clock = Arc::new(ManualClock::new(T0));
    let engine = start_with_write_hook(dir.path(), clock.clone(), {
        let failing = failing.clone();
        move || match failing.load(Ordering::SeqCst) {
            true => Err(StoreError::Io("injected fsync failure".into())),
            false => Ok(()),
        }
    });
    let (business, enrollment) = enrolled_with_points(&engine, 10).await;

    failing.store(true, Ordering::SeqCst);
    let err = engine
        .transact(business, enrollment, key("lost"), earn(5))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Stopped(_)), "{err}");
    assert!(engine.has_failed());
    // The actor's memory is now ahead of the disk: nothing more is answered.
    failing.store(false, Ordering::SeqCst);
    assert!(matches!(
        engine.balance(business, enrollment).await,
        Err(EngineError::Stopped(_))
    ));
    let err = engine
        .transact(business, enrollment, key("after"), earn(1))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Stopped(_)));
    engine.shutdown();

    // A restart recovers exactly what was durable.
    let engine = start(dir.path(), config(), clock);
    assert_eq!(
        engine.balance(business, enrollment).await.unwrap().balance,
        10
    );
    engine.shutdown();
}

/// A panic on the commit thread is a failed write: the engine stops, and
/// the callers of the batch it was writing are told so rather than left
/// waiting (their answers went down with the thread's jobs).
#[actix_rt::test]
async fn a_panic_on_the_commit_thread_answers_its_callers_and_stops_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let panicking = Arc::new(AtomicBool::new(false));
    let clock = Arc::new(ManualClock::new(T0));
    let engine = start_with_write_hook(dir.path(), clock.clone(), {
        let panicking = panicking.clone();
        move || {
            assert!(!panicking.load(Ordering::SeqCst), "injected panic");
            Ok(())
        }
    });
    let (business, enrollment) = enrolled_with_points(&engine, 10).await;

    panicking.store(true, Ordering::SeqCst);
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        engine.transact(business, enrollment, key("lost"), earn(5)),
    )
    .await
    .expect("the caller is answered, not left waiting");
    assert!(matches!(answer, Err(EngineError::Stopped(_))), "{answer:?}");
    assert!(engine.has_failed());
    let err = engine
        .transact(business, enrollment, key("after"), earn(1))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Stopped(_)), "{err}");
    engine.shutdown();

    let engine = start(dir.path(), config(), clock);
    let view = engine.balance(business, enrollment).await.unwrap();
    assert_eq!(view.balance, 10);
    engine.shutdown();
}

#[actix_rt::test]
async fn a_batch_answers_each_command_in_order_with_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path(), config(), Arc::new(ManualClock::new(T0)));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let (other, other_program) = business_with_program(&engine, rules(None, None)).await;
    let a = enroll(&engine, business, program, "a").await.enrollment_id;
    let b = enroll(&engine, business, program, "b").await.enrollment_id;
    let foreign = enroll(&engine, other, other_program, "f")
        .await
        .enrollment_id;
    let results = engine
        .transact_many(
            business,
            vec![
                (a, key("1"), earn(10)),
                (b, key("1"), earn(20)),
                // The same key again on `a`: the first answer, no second effect.
                (a, key("1"), earn(10)),
                // The same key with another body: a conflict.
                (a, key("1"), earn(11)),
                (a, key("2"), redeem(1_000)),
                (foreign, key("1"), earn(5)),
                (a, key("3"), earn(1)),
            ],
        )
        .await;
    assert_eq!(results.len(), 7);
    let first = results[0].as_ref().unwrap();
    assert_eq!(first.outcome.balance, 10);
    assert_eq!(results[1].as_ref().unwrap().outcome.balance, 20);
    assert_eq!(results[2].as_ref().unwrap(), first);
    assert!(
        matches!(results[3], Err(EngineError::Domain(_))),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(results[4], Err(EngineError::Domain(_))),
        "{:?}",
        results[4]
    );
    assert!(matches!(results[5], Err(EngineError::NotFound { .. })));
    assert_eq!(results[6].as_ref().unwrap().outcome.balance, 11);
    assert_eq!(engine.balance(business, a).await.unwrap().balance, 11);
    assert_eq!(engine.balance(business, b).await.unwrap().balance, 20);
    assert_eq!(engine.balance(other, foreign).await.unwrap().balance, 0);
    engine.shutdown();
}

/// The commit thread answers a transaction itself once it is durable,
/// without waiting for the shard's thread; it tells the shard first, so a
/// caller's next command for the enrollment finds the shard knowing its
/// earn is durable: its balance includes it, and a retry of its key has
/// no second effect. A race test: with the two steps in the other order
/// it failed in one run of three, and in every run with a pause between
/// them.
#[actix_rt::test]
async fn a_caller_sees_its_own_earn_in_the_next_answer() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path(), config(), Arc::new(ManualClock::new(T0)));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, business, program, "c-1")
        .await
        .enrollment_id;
    for i in 1..=300 {
        let k = format!("k{i}");
        let earned = engine
            .transact(business, e, key(&k), earn(1))
            .await
            .unwrap();
        let view = engine.balance(business, e).await.unwrap();
        assert_eq!(
            (view.balance, view.version),
            (i, earned.outcome.version),
            "the balance asked after earn {i}'s answer"
        );
        if i % 50 == 0 {
            let again = engine
                .transact(business, e, key(&k), earn(1))
                .await
                .unwrap();
            assert_eq!(again, earned, "a retry of earn {i}'s key");
        }
    }
    assert_eq!(engine.balance(business, e).await.unwrap().balance, 300);
    engine.shutdown();
}

#[actix_rt::test]
async fn past_the_digest_bound_repeated_keys_are_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        passivate_after: Duration::from_millis(100),
        tick_interval: Duration::from_millis(20),
        ..config()
    };
    let engine = start(dir.path(), config, Arc::new(ManualClock::new(T0)));
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let a = enroll(&engine, business, program, "a").await.enrollment_id;
    // More keys than an enrollment keeps digests of, in one batch, with a
    // repeat in flight after the bound is passed.
    let n = KEY_DIGESTS_MAX + 10;
    let mut commands: Vec<_> = (0..n)
        .map(|i| (a, key(&format!("k{i}")), earn(1)))
        .collect();
    commands.push((a, key("k3"), earn(1)));
    commands.push((a, key(&format!("k{}", n - 1)), earn(1)));
    let results = engine.transact_many(business, commands).await;
    assert!(results.iter().all(|r| r.is_ok()), "every earn succeeds");
    assert_eq!(results[n].as_ref().unwrap(), results[3].as_ref().unwrap());
    assert_eq!(
        results[n + 1].as_ref().unwrap(),
        results[n - 1].as_ref().unwrap()
    );
    let balance = n as i64;
    assert_eq!(engine.balance(business, a).await.unwrap().balance, balance);
    // After passivation, from the snapshot (which says "too many"): still
    // found, in the store.
    passivated(&engine).await;
    let snapshot = engine.store().snapshot(a).unwrap().unwrap();
    let keys = snapshot.keys.expect("passivation saves the digests");
    assert_eq!(keys.count(), None, "past the bound");
    assert_eq!(keys.rescan_at(), None, "records are kept for ever here");
    for i in [0, KEY_DIGESTS_MAX + 5] {
        engine
            .transact(business, a, key(&format!("k{i}")), earn(1))
            .await
            .unwrap();
    }
    assert_eq!(engine.balance(business, a).await.unwrap().balance, balance);
    engine.shutdown();
}

/// A key is remembered for the retention (here the contract's 7 days) and
/// then forgotten by the store's compactions: a retry after that is a new
/// transaction, even on an enrollment whose key digests still hold the
/// key, while a key inside the retention still answers its first answer.
#[actix_rt::test]
async fn a_key_past_its_retention_is_forgotten_and_its_retry_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemClock.now();
    let clock = Arc::new(ManualClock::new(Timestamp(now.0 - 8 * DAY_MS)));
    let mut options = StoreOptions::new(dir.path());
    options.idempotency_retention = Some(IdempotencyRetention::days(7).unwrap());
    let (store, report) = Store::open(&options).unwrap();
    let engine = Engine::start(store, &report, config(), clock.clone()).unwrap();
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let e = enroll(&engine, business, program, "c-1")
        .await
        .enrollment_id;

    let old = engine
        .transact(business, e, key("old"), earn(100))
        .await
        .unwrap();
    clock.set(Timestamp(now.0 - 6 * DAY_MS));
    let recent = engine
        .transact(business, e, key("recent"), earn(10))
        .await
        .unwrap();
    // Before any compaction both keys are still known.
    let again = engine
        .transact(business, e, key("old"), earn(100))
        .await
        .unwrap();
    assert_eq!(again, old);

    engine.store().flush().unwrap();
    engine.store().compact_idempotency();
    assert_eq!(engine.store().idempotency_records_expired(), 1);

    clock.set(now);
    let again = engine
        .transact(business, e, key("recent"), earn(10))
        .await
        .unwrap();
    assert_eq!(again, recent);
    let retried = engine
        .transact(business, e, key("old"), earn(100))
        .await
        .unwrap();
    assert_ne!(retried.outcome.transaction_id, old.outcome.transaction_id);
    assert_eq!(retried.outcome.balance, 210);
    engine.shutdown();
}

/// Holds the commit thread's writes back while held, to keep transactions
/// in flight, letting through as many as it has passes for; `waiting` says
/// a write has been held.
#[derive(Default)]
struct WriteGate {
    /// (held, passes)
    state: Mutex<(bool, usize)>,
    changed: std::sync::Condvar,
    waiting: AtomicBool,
}

impl WriteGate {
    /// The hook the commit thread calls before each write.
    fn before_write(
        gate: &Arc<WriteGate>,
    ) -> impl FnMut() -> Result<(), loyalty_persistence::StoreError> + Send + 'static {
        let gate = gate.clone();
        move || {
            let mut state = gate.state.lock().unwrap();
            while state.0 && state.1 == 0 {
                gate.waiting.store(true, Ordering::SeqCst);
                state = gate.changed.wait(state).unwrap();
            }
            if state.0 {
                state.1 -= 1;
            }
            Ok(())
        }
    }

    fn set(&self, held: bool, passes: usize) {
        *self.state.lock().unwrap() = (held, passes);
        self.changed.notify_all();
    }

    /// Returns once a write has been held.
    async fn until_a_write_waits(&self) {
        while !self.waiting.load(Ordering::SeqCst) {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A store that keeps idempotency records 7 days, and a clock set 20 days
/// back: where the tests of keys across retentions start. `days_ago(n)` is
/// `n` days before this machine's now (which the store's compactions
/// judge by).
fn seven_day_retention(
    dir: &std::path::Path,
) -> (StoreOptions, Arc<ManualClock>, impl Fn(i64) -> Timestamp) {
    let now = SystemClock.now();
    let days_ago = move |days: i64| Timestamp(now.0 - days * DAY_MS);
    let clock = Arc::new(ManualClock::new(days_ago(20)));
    let mut options = StoreOptions::new(dir);
    options.idempotency_retention = Some(IdempotencyRetention::days(7).unwrap());
    (options, clock, days_ago)
}

/// Digests that gave up past their bound come back a retention later: the
/// enrollment's next transaction reads the keys the store has left, and
/// its snapshots hold digests again instead of "too many" for good.
#[actix_rt::test]
async fn digests_given_up_past_the_bound_come_back_a_retention_later() {
    let dir = tempfile::tempdir().unwrap();
    let (options, clock, days_ago) = seven_day_retention(dir.path());
    let config = EngineConfig {
        passivate_after: Duration::from_millis(100),
        tick_interval: Duration::from_millis(20),
        ..config()
    };
    let gate = Arc::new(WriteGate::default());
    let hook = WriteGate::before_write(&gate);
    let engine = start_with_write_hook_on(&options, config, clock.clone(), hook);
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let a = enroll(&engine, business, program, "a").await.enrollment_id;
    let n = KEY_DIGESTS_MAX + 10;
    let commands = (0..n)
        .map(|i| (a, key(&format!("k{i}")), earn(1)))
        .collect();
    let results = engine.transact_many(business, commands).await;
    assert!(results.iter().all(|r| r.is_ok()), "every earn succeeds");
    passivated(&engine).await;
    let saved = || engine.store().snapshot(a).unwrap().unwrap().keys.unwrap();
    assert_eq!(saved().count(), None, "past the bound");
    assert_eq!(saved().rescan_at(), Some(days_ago(13)), "a retention on");

    // Not due yet: still "too many".
    clock.set(days_ago(14));
    engine
        .transact(business, a, key("before"), earn(1))
        .await
        .unwrap();
    passivated(&engine).await;
    assert_eq!(saved().count(), None);

    // Every record so far is past the retention by this machine's clock:
    // the first KEY_DIGESTS_MAX twice (in `answers`, and the copy to
    // `idempotency` made as the digests gave up), the rest and "before"
    // once.
    engine.store().flush().unwrap();
    engine.store().compact_idempotency();
    assert_eq!(
        engine.store().idempotency_records_expired(),
        (KEY_DIGESTS_MAX + n + 1) as u64
    );

    // "after" is decided while the digests are still given up on, and its
    // write is held back. The clock then reaches the rescan, and a retry of
    // "after" comes while it is in flight: the rescan cannot see its
    // record, and the retry must wait for its answer, not be taken for new.
    gate.set(true, 0);
    let first = engine.transact(business, a, key("after"), earn(1));
    let retry = async {
        gate.until_a_write_waits().await;
        clock.set(days_ago(13));
        let retried = engine.transact(business, a, key("after"), earn(1));
        let probe = async {
            handled_so_far(&engine, a).await;
            gate.set(false, 0);
        };
        futures_util::join!(retried, probe).0
    };
    let (first, retried) = futures_util::join!(first, retry);
    let first = first.unwrap();
    assert_eq!(retried.unwrap(), first, "the retry got the first answer");
    assert_eq!(first.outcome.balance, n as i64 + 2);
    let again = engine
        .transact(business, a, key("after"), earn(1))
        .await
        .unwrap();
    assert_eq!(again, first, "the key read back is known");
    passivated(&engine).await;
    assert_eq!(
        digests(&Some(saved())),
        Some(vec![KeyDigests::digest("after")]),
        "digests again, of what the store has left"
    );
    engine.shutdown();
}

/// Digests read back from the store can come out "too many" where the
/// enrollment never gave them up (the store still holds records the
/// digests had aged out, not yet compacted away). Its records in `answers`
/// were then never copied to `idempotency`, where keys are looked up past
/// the bound: until its next transaction copies them, they are looked up
/// in `answers` too, and no retry of a key within the retention is taken
/// for new, before the copy, after it, or after a restart from a snapshot
/// that says "too many".
#[actix_rt::test]
async fn digests_read_back_past_the_bound_copy_their_answers_before_relying_on_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (options, clock, days_ago) = seven_day_retention(dir.path());
    let config = EngineConfig {
        // No snapshot covers the tail at the restart: the digests are read
        // back from the store.
        snapshot_every_events: 1_000_000,
        passivate_after: Duration::from_millis(100),
        tick_interval: Duration::from_millis(20),
        ..config()
    };
    let start_on = |clock: &Arc<ManualClock>| {
        let (store, report) = Store::open(&options).unwrap();
        Engine::start(store, &report, config.clone(), clock.clone()).unwrap()
    };
    let engine = start_on(&clock);
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let a = enroll(&engine, business, program, "a").await.enrollment_id;
    let old = KEY_DIGESTS_MAX - 10;
    let commands = (0..old)
        .map(|i| (a, key(&format!("old-{i}")), earn(1)))
        .collect();
    assert!(engine
        .transact_many(business, commands)
        .await
        .iter()
        .all(|r| r.is_ok()));
    // A retention later the digests let the old keys go; the store keeps
    // their records until a compaction.
    clock.set(days_ago(12));
    let mut late = Vec::new();
    for i in 0..20 {
        let answer = engine
            .transact(business, a, key(&format!("late-{i}")), earn(10))
            .await
            .unwrap();
        late.push(answer);
    }
    let balance = old as i64 + 200;
    engine.shutdown();
    assert!(engine_snapshot_lags(&options, a));

    let engine = start_on(&clock);
    let retry = |i: usize| engine.transact(business, a, key(&format!("late-{i}")), earn(10));
    // Read back "too many", nothing copied yet: found in `answers`.
    assert_eq!(retry(3).await.unwrap(), late[3]);
    // A new key: its transaction copies the records the retention keeps.
    // Retries sent with it reach the actor before the copies are durable,
    // and are found among them in memory (not applied again).
    let answers = engine
        .transact_many(
            business,
            vec![
                (a, key("fresh"), earn(1)),
                (a, key("late-7"), earn(10)),
                (a, key("late-11"), earn(10)),
            ],
        )
        .await;
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert_eq!(answers[1].as_ref().unwrap(), &late[7]);
    assert_eq!(answers[2].as_ref().unwrap(), &late[11]);
    for i in [5, 19] {
        let copied = engine.store().idempotency_by_key(a, &format!("late-{i}"));
        assert!(copied.unwrap().is_some(), "late-{i} copied");
    }
    assert!(
        engine
            .store()
            .idempotency_by_key(a, "old-1")
            .unwrap()
            .is_none(),
        "past the retention: not copied"
    );
    assert_eq!(retry(5).await.unwrap(), late[5], "found by key once copied");
    assert_eq!(
        engine.balance(business, a).await.unwrap().balance,
        balance + 1
    );
    passivated(&engine).await;
    let snapshot = engine.store().snapshot(a).unwrap().unwrap();
    let keys = snapshot.keys.expect("once copied, a snapshot carries them");
    assert_eq!(keys.count(), None, "past the bound");
    engine.shutdown();

    // From that snapshot ("too many", the copies durable before it).
    let engine = start_on(&clock);
    for i in [0, 19] {
        let again = engine
            .transact(business, a, key(&format!("late-{i}")), earn(10))
            .await
            .unwrap();
        assert_eq!(again, late[i]);
    }
    assert_eq!(
        engine.balance(business, a).await.unwrap().balance,
        balance + 1
    );
    engine.shutdown();
}

/// Whether `id`'s snapshot (if any) is older than its newest event, so that
/// activation reads its key digests from the store.
fn engine_snapshot_lags(options: &StoreOptions, id: loyalty_engine::EnrollmentId) -> bool {
    let (store, _) = Store::open(options).unwrap();
    let newest = store.aggregate_version(id.0).unwrap().unwrap();
    store
        .snapshot(id)
        .unwrap()
        .is_none_or(|s| s.version < newest)
}

/// Returns once `a`'s actor has handled everything sent to it before: a
/// transaction of a stranger business, which the actor refuses before
/// anything else, comes back refused.
async fn handled_so_far(engine: &Engine, a: loyalty_engine::EnrollmentId) {
    let stranger = loyalty_engine::BusinessId(uuid::Uuid::now_v7());
    let refused = engine.transact(stranger, a, key("probe"), earn(1)).await;
    assert!(
        matches!(refused, Err(EngineError::NotFound { .. })),
        "{refused:?}"
    );
}

/// A key in flight when the next transaction gives the digests up, whose
/// own version is durable before that transaction's: a retry in between
/// must find it in memory. Its record is then in `answers`, no longer
/// looked through, and its copy in `idempotency` is not durable yet.
#[actix_rt::test]
async fn a_key_in_flight_as_the_digests_give_up_is_found_until_its_copy_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (options, clock, _) = seven_day_retention(dir.path());
    let config = EngineConfig {
        // No snapshot or passivation writes of their own to let through.
        snapshot_every_events: 1_000_000,
        passivate_after: Duration::from_secs(3_600),
        ..config()
    };
    let gate = Arc::new(WriteGate::default());
    let hook = WriteGate::before_write(&gate);
    let engine = start_with_write_hook_on(&options, config, clock.clone(), hook);
    let (business, program) = business_with_program(&engine, rules(None, None)).await;
    let a = enroll(&engine, business, program, "a").await.enrollment_id;
    let commands = (0..KEY_DIGESTS_MAX - 1)
        .map(|i| (a, key(&format!("k{i}")), earn(1)))
        .collect();
    assert!(engine
        .transact_many(business, commands)
        .await
        .iter()
        .all(|r| r.is_ok()));
    let full = KEY_DIGESTS_MAX as i64;

    // "last" fills the digests, and its write is held.
    gate.set(true, 0);
    let last = engine.transact(business, a, key("last"), earn(1));
    let rest = async {
        gate.until_a_write_waits().await;
        // "over" gives them up, copying "last" with the records in
        // `answers`; its write queues behind.
        let over = engine.transact(business, a, key("over"), earn(1));
        let between = async {
            handled_so_far(&engine, a).await;
            // "last" is written, "over" held.
            gate.set(true, 1);
            while engine.balance(business, a).await.unwrap().balance < full {
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            let retried = engine.transact(business, a, key("last"), earn(1));
            let release = async {
                handled_so_far(&engine, a).await;
                gate.set(false, 0);
            };
            futures_util::join!(retried, release).0
        };
        futures_util::join!(over, between)
    };
    let (last, (over, retried)) = futures_util::join!(last, rest);
    let last = last.unwrap();
    over.unwrap();
    assert_eq!(retried.unwrap(), last, "the retry got the first answer");
    assert_eq!(
        engine.balance(business, a).await.unwrap().balance,
        full + 1,
        "the retry was not applied again"
    );
    // The window was there: "last" was recorded while the digests were
    // held (in `answers`), and "over" gave them up, copying it.
    let store = engine.store();
    assert!(store
        .answers_of(a, clock.now())
        .unwrap()
        .iter()
        .any(|(k, _)| k == "last"));
    assert!(store.idempotency_by_key(a, "last").unwrap().is_some());
    engine.shutdown();
}
