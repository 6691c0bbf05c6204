//! Crash test: a child process drives the engine under load and records
//! every acknowledgement the moment it receives it; this test kills it with
//! SIGKILL at random moments, restarts it on the same data, and finally
//! checks every acknowledged transaction is in the log exactly once and
//! every balance equals its history.
//!
//! The child is this same test binary, re-run on the ignored test
//! `crash_child` with the data directory in its environment.

mod common;

use common::*;
use loyalty_actors::{EngineError, SystemClock};
use loyalty_engine::enrollment::EnrollmentEvent;
use loyalty_engine::{BusinessId, DomainEvent, EnrollmentId, Timestamp, TransactionId};
use loyalty_persistence::{Store, StoreOptions};
use rand::Rng;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KILLS: usize = 24;
const ENROLLMENTS: usize = 8;
const WORKERS: usize = 32;

#[test]
fn kill_9_under_load_loses_no_acknowledged_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acks = dir.path().join("acks");
    let mut rng = rand::rng();
    let mut killed_after_acks = 0;
    for round in 0..KILLS {
        let before = count_lines(&acks);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CRASH_DATA_DIR", &data)
            .env("CRASH_ACK_FILE", &acks)
            .env("CRASH_ROUND", round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Wait until the child is acknowledging (or a random early moment,
        // to kill during recovery too), then kill at a random point.
        let started = Instant::now();
        let early = round % 6 == 5;
        while !early && count_lines(&acks) == before && started.elapsed() < Duration::from_secs(60)
        {
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        drop_torn_line(&acks);
        if count_lines(&acks) > before {
            killed_after_acks += 1;
        }
    }
    assert!(
        killed_after_acks >= 20,
        "only {killed_after_acks} kills happened under load"
    );
    reconcile(&data, &acks);
}

/// One acknowledged transaction, as the child recorded it.
struct Ack {
    enrollment: EnrollmentId,
    key: String,
    transaction: TransactionId,
    kind: String,
    points: i64,
}

/// Cuts off a line the kill left half written, so the next round's lines
/// start on a line of their own. The kernel can stop a write at a page
/// boundary for a fatal signal, so even one short `write` can be cut.
fn drop_torn_line(path: &Path) {
    let Ok(text) = std::fs::read(path) else {
        return; // no ack yet
    };
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(whole as u64).unwrap();
    }
}

#[test]
fn a_torn_ack_line_is_cut_off_before_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acks");
    drop_torn_line(&path); // no file yet: nothing to do
    std::fs::write(&path, "a 1\nb 2\nc").unwrap();
    drop_torn_line(&path);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\nb 2\n");
    drop_torn_line(&path);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\nb 2\n");
    std::fs::write(&path, "torn").unwrap();
    drop_torn_line(&path);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.matches('\n').count())
        .unwrap_or(0)
}

fn read_acks(path: &Path) -> Vec<Ack> {
    let text = std::fs::read_to_string(path).unwrap();
    // A line cut by the last kill has no newline: it was never fully
    // recorded (those of earlier kills were cut off after each).
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Ack {
                enrollment: f[0].parse().unwrap(),
                key: f[1].to_owned(),
                transaction: f[2].parse().unwrap(),
                kind: f[3].to_owned(),
                points: f[4].parse().unwrap(),
            }
        })
        .collect()
}

fn reconcile(data: &Path, acks: &Path) {
    let acks = read_acks(acks);
    assert!(
        acks.len() > 100,
        "too little load to mean anything: {} acks",
        acks.len()
    );
    let (store, _) = Store::open(&StoreOptions::new(data))
        .expect("the data directory opens after all the kills");
    // Every transaction in the log, counted.
    let mut seen: HashMap<TransactionId, (EnrollmentId, usize, i64)> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.read_log(after, 10_000).unwrap();
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (_, record) in page {
            if let DomainEvent::Enrollment(
                EnrollmentEvent::PointsEarned {
                    transaction_id,
                    points,
                    ..
                }
                | EnrollmentEvent::PointsRedeemed {
                    transaction_id,
                    points,
                    ..
                },
            ) = record.event
            {
                let entry = seen.entry(transaction_id).or_insert((
                    EnrollmentId(record.aggregate_id),
                    0,
                    points,
                ));
                entry.1 += 1;
            }
        }
    }
    for ack in &acks {
        let Some((enrollment, count, points)) = seen.get(&ack.transaction) else {
            panic!(
                "acknowledged {} {} ({}) is missing from the log",
                ack.kind, ack.transaction, ack.key
            );
        };
        assert_eq!(
            *count, 1,
            "transaction {} is in the log {count} times",
            ack.transaction
        );
        assert_eq!((*enrollment, *points), (ack.enrollment, ack.points));
        let record = store
            .idempotency(ack.enrollment, &ack.key)
            .unwrap()
            .expect("its idempotency record");
        assert_eq!(record.answer.outcome.transaction_id, ack.transaction);
    }
    assert!(
        seen.values().all(|(_, count, _)| *count == 1),
        "a transaction was applied twice"
    );
    // Every balance equals its history: snapshot + tail, full replay, and
    // the sum of the events all agree.
    let enrollments: std::collections::HashSet<_> = acks.iter().map(|a| a.enrollment).collect();
    for id in enrollments {
        let loaded = store.load_enrollment(id).unwrap().unwrap();
        let state = loaded.state;
        // Key digests kept in a snapshot must cover every key with a
        // record, or an activation would take a repeated key for new.
        if let Some(kept) = loaded.keys.as_ref().filter(|keys| keys.count().is_some()) {
            let stored = store.key_digests(id, Timestamp(0)).unwrap();
            let stored = stored
                .known()
                .expect("fewer keys than the bound in this test");
            let missing: Vec<_> = stored.filter(|d| !kept.may_contain(*d)).collect();
            assert!(
                missing.is_empty(),
                "the snapshot of {id} lacks the digests of {} stored keys",
                missing.len()
            );
        }
        let history = store.aggregate_events(id.0, 1, u64::MAX).unwrap();
        let mut sum = 0;
        let mut replayed = None;
        for (_, record) in &history {
            let DomainEvent::Enrollment(event) = &record.event else {
                panic!("foreign event")
            };
            sum += match event {
                EnrollmentEvent::PointsEarned { points, .. } => *points,
                EnrollmentEvent::PointsRedeemed { points, .. } => -points,
                _ => 0,
            };
            match replayed.as_mut() {
                None => {
                    replayed = Some(loyalty_engine::enrollment::Enrollment::from_enrolled(
                        event,
                        record.recorded_at,
                    ))
                }
                Some(s) => s.apply(event, record.recorded_at),
            }
        }
        assert_eq!(
            state.points_available, sum,
            "balance of {id} differs from its history"
        );
        assert_eq!(
            replayed.as_ref(),
            Some(&state),
            "snapshot + tail differs from a full replay for {id}"
        );
        assert!(state.points_available >= 0);
    }
}

/// The child: sets up once, then earns and redeems until killed.
#[actix_rt::test]
#[ignore = "run by kill_9_under_load_loses_no_acknowledged_transaction"]
async fn crash_child() {
    let Ok(data) = std::env::var("CRASH_DATA_DIR") else {
        return;
    };
    let acks_path = std::env::var("CRASH_ACK_FILE").unwrap();
    let round: usize = std::env::var("CRASH_ROUND").unwrap().parse().unwrap();
    let data = Path::new(&data);
    let setup_path = data.with_extension("setup");
    let config = loyalty_actors::EngineConfig {
        snapshot_every_events: 16,
        ..config()
    };
    let (store, report) = Store::open(&StoreOptions::new(data)).unwrap();
    let engine = Arc::new(
        loyalty_actors::Engine::start(store, &report, config, Arc::new(SystemClock)).unwrap(),
    );
    let (business, enrollments) = match std::fs::read_to_string(&setup_path) {
        Ok(text) => parse_setup(&text),
        Err(_) => {
            let (business, program) = business_with_program(&engine, rules(None, None)).await;
            let mut ids = Vec::new();
            for i in 0..ENROLLMENTS {
                ids.push(
                    enroll(&engine, business, program, &format!("c{i}"))
                        .await
                        .enrollment_id,
                );
            }
            let text = format!(
                "{business} {}\n",
                ids.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            // Written only after the set-up is durable; a kill before this
            // line leaves a set-up the next round does again from scratch.
            std::fs::write(&setup_path, text).unwrap();
            (business, ids)
        }
    };
    let acks = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&acks_path)
            .unwrap(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let workers = (0..WORKERS).map(|w| {
        let (engine, acks, enrollments) = (engine.clone(), acks.clone(), enrollments.clone());
        actix_rt::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let (enrollment, redeem_it, points) = {
                    let mut rng = rand::rng();
                    (
                        enrollments[rng.random_range(0..enrollments.len())],
                        rng.random_bool(0.3),
                        rng.random_range(1..100),
                    )
                };
                let k = format!("r{round}-w{w}-{n}");
                let request = if redeem_it {
                    redeem(points)
                } else {
                    earn(points)
                };
                match engine
                    .transact(business, enrollment, key(&k), request)
                    .await
                {
                    Ok(answer) => {
                        let kind = if redeem_it { "redeem" } else { "earn" };
                        let line = format!(
                            "{enrollment} {k} {} {kind} {points}\n",
                            answer.outcome.transaction_id
                        );
                        acks.lock().unwrap().write_all(line.as_bytes()).unwrap();
                    }
                    Err(EngineError::Domain(_)) | Err(EngineError::Overloaded) => {}
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
        })
    });
    futures_util::future::join_all(workers).await;
}

fn parse_setup(text: &str) -> (BusinessId, Vec<EnrollmentId>) {
    let mut fields = text.split_whitespace();
    let business = fields.next().unwrap().parse().unwrap();
    (business, fields.map(|f| f.parse().unwrap()).collect())
}
