//! Criterion benchmarks of the hot path, each beside a baseline measured in
//! the same run where one makes sense:
//!
//! - `decide/earn`: one earn decided against an enrollment (no I/O).
//! - `snapshot/encode`, `snapshot/decode`: an enrollment's snapshot through
//!   its checksummed postcard envelope.
//! - `json/earn_decode`, `json/answer_encode`: the HTTP/NATS body of an earn.
//! - `event_json/{serde,by_hand}`: the JSON the publisher sends for an
//!   earned event, written by serde (the reference) and by hand (what the
//!   publisher uses); the same bytes.
//! - `batch/{json,protobuf}_{decode,encode}`: a batch of 1 000 earns and
//!   its 1 000 answers in the batch door's two encodings; throughput in
//!   earns per second.
//! - `group_commit/<events>`: one synced RocksDB write of a batch of that many
//!   events; throughput in events per second.
//! - `write_batch/{grown,sized}`: the commit thread filling one write batch
//!   with 4 096 earns (an event and an idempotency record each), in a
//!   batch that grows as they go in against one made with room for them
//!   (what the commit thread does); no write. `grown` depends on the C
//!   library's malloc: about 4x `sized` when it runs first in a process,
//!   about the same after the benchmarks before it (notes item 27).
//! - `publisher/{read_back,from_memory}`: the publisher's way to 1 000
//!   events just made durable: read back from the log (still in the
//!   memtable) and decoded, against handed over in memory by the commit
//!   thread (its adding them included); throughput in events per second.
//! - `actor/round_trip_*`: `Engine::transact` end to end (fsync and
//!   unsafe-no-fsync), beside `actor/baseline_noop`: an empty message to an
//!   actix actor on another thread and back.

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use loyalty_actors::commit::RecentRecords;
use loyalty_actors::{Durability, Engine, EngineConfig, ManualClock};
use loyalty_api::batch_protobuf::{self, EarnBatchRequest, EarnItem};
use loyalty_api::events::{self, EventJson};
use loyalty_api::ops::{BatchItem, BatchResults};
use loyalty_api::wire::{self, EarnBatchBody, EarnBody, TransactionBody};
use loyalty_benches::fixture::rules;
use loyalty_engine::enrollment::earn::{EarnPoints, EarnValue};
use loyalty_engine::enrollment::{decide, Enrollment, EnrollmentEvent, Request};
use loyalty_engine::idempotency::IdempotencyKey;
use loyalty_engine::program::ProgramRules;
use loyalty_engine::*;
use loyalty_persistence::keys::{self, Cf};
use loyalty_persistence::{
    CommitGroup, KeyDigests, LogRecord, Put, Store, StoreOptions, StoredAnswer,
};
use prost::Message as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const T0: Timestamp = Timestamp(1_700_000_000_000);

/// An enrollment with a realistic history: 40 earns and 10 redeems over
/// 50 days.
fn enrollment(rules: &ProgramRules) -> Enrollment {
    let enrolled = EnrollmentEvent::Enrolled {
        enrollment_id: EnrollmentId(Uuid::now_v7()),
        business_id: BusinessId(Uuid::now_v7()),
        customer_id: CustomerId(Uuid::now_v7()),
        program_id: ProgramId(Uuid::now_v7()),
        tier: Some("member".into()),
    };
    let mut state = Enrollment::from_enrolled(&enrolled, T0);
    for day in 0..50i64 {
        let request = if day % 5 == 4 {
            Request::Redeem(loyalty_engine::enrollment::redeem::RedeemPoints {
                points: 30,
                reason: None,
                reference: None,
            })
        } else {
            earn_request(120)
        };
        let at = Timestamp(T0.0 + day * 86_400_000);
        state = decide(
            &state,
            rules,
            Some((&request, TransactionId(Uuid::now_v7()))),
            at,
        )
        .unwrap()
        .state;
    }
    state
}

fn earn_request(points: i64) -> Request {
    Request::Earn(EarnPoints {
        value: EarnValue::Points(points),
        reason: Some("purchase".into()),
        reference: Some("till-4".into()),
    })
}

fn domain(c: &mut Criterion) {
    let rules = rules();
    let state = enrollment(&rules);
    let request = earn_request(25);
    let id = TransactionId(Uuid::now_v7());
    let now = Timestamp(T0.0 + 51 * 86_400_000);
    c.bench_function("decide/earn", |b| {
        b.iter(|| decide(black_box(&state), &rules, Some((&request, id)), now).unwrap())
    });

    // A snapshot with the digests of 32 keys, as an enrollment with a
    // few weeks of purchases has.
    let mut keys = KeyDigests::none();
    for n in 0..32 {
        keys.insert(
            KeyDigests::digest(&format!("till-4-receipt-{n}")),
            now,
            None,
        );
    }
    let snapshot = Store::snapshot_put(&state, Some(&keys)).unwrap();
    c.bench_function("snapshot/encode", |b| {
        b.iter(|| Store::snapshot_put(black_box(&state), Some(&keys)).unwrap())
    });
    let value = snapshot.value.clone();
    c.bench_function("snapshot/decode", |b| {
        b.iter(|| {
            let record: loyalty_persistence::SnapshotRecord =
                loyalty_persistence::envelope::decode_as(
                    loyalty_persistence::envelope::SNAPSHOT_FORMAT,
                    loyalty_persistence::envelope::Kind::Snapshot,
                    black_box(&value),
                    || "bench".into(),
                )
                .unwrap();
            record
        })
    });

    // A new key checked and noted in an enrollment's digests, as every
    // transaction does: aging (a 30-day retention, two generations over 32
    // days of four keys a day) beside the same keys never aged (no
    // retention: one run, as before digests aged).
    let month = Some(Duration::from_secs(30 * 24 * 60 * 60));
    let quarter_day_ms = 6 * 60 * 60 * 1000;
    let mut group = c.benchmark_group("key_digests");
    for (name, keep_for) in [("new_key_aging", month), ("new_key_kept_for_ever", None)] {
        let mut keys = KeyDigests::none();
        for n in 0..128 {
            let at = Timestamp(T0.0 + n * quarter_day_ms);
            keys.insert(
                KeyDigests::digest(&format!("till-4-receipt-{n}")),
                at,
                keep_for,
            );
        }
        let at = Timestamp(T0.0 + 128 * quarter_day_ms);
        let fresh = KeyDigests::digest("till-4-receipt-88213");
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || keys.clone(),
                |keys| {
                    if !keys.may_contain(black_box(fresh)) {
                        keys.insert(fresh, at, keep_for);
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // What a compaction asks of each idempotency record it rewrites: is it
    // past its retention? (A decode of the record; it is kept here.)
    let record = loyalty_persistence::IdempotencyRecord {
        request: request.clone(),
        answer: StoredAnswer {
            outcome: decide(&state, &rules, Some((&request, id)), now)
                .unwrap()
                .outcome
                .expect("an earn has an outcome"),
            event_id: EventId(Uuid::now_v7()),
        },
        recorded_at: now,
    };
    let value = Store::idempotency_put(state.enrollment_id, "till-4-receipt-88213", &record)
        .unwrap()
        .value;
    c.bench_function("retention/check", |b| {
        b.iter(|| loyalty_persistence::retention::expired(black_box(&value), T0.0))
    });

    let body = br#"{"enrollmentId":"0190d6a1-2b3c-7d4e-8f90-123456789abc","points":120,"idempotencyKey":"till-4-receipt-88213","reason":"purchase","reference":"till-4"}"#;
    c.bench_function("json/earn_decode", |b| {
        b.iter(|| wire::decode::<EarnBody>(black_box(body)).unwrap())
    });
    let decision = decide(&state, &rules, Some((&request, id)), now).unwrap();
    let answer = StoredAnswer {
        outcome: decision.outcome.unwrap(),
        event_id: EventId(Uuid::now_v7()),
    };
    c.bench_function("json/answer_encode", |b| {
        b.iter(|| {
            serde_json::to_vec(&TransactionBody::new(
                "0190d6a1-2b3c-7d4e-8f90-123456789abc",
                black_box(&answer),
                false,
            ))
            .unwrap()
        })
    });

    // An earned event as a till sends it: an amount, an expiry, a reason
    // and a reference.
    let record = LogRecord {
        aggregate_id: Uuid::now_v7(),
        version: 52,
        event_id: EventId(Uuid::now_v7()),
        business_id: BusinessId(Uuid::now_v7()),
        recorded_at: now,
        event: DomainEvent::Enrollment(EnrollmentEvent::PointsEarned {
            transaction_id: id,
            points: 120,
            amount_minor: Some(1_200),
            available_at: None,
            expires_at: Some(Timestamp(now.0 + 365 * 86_400_000)),
            reason: Some("purchase".into()),
            reference: Some("till-4".into()),
        }),
    };
    assert_eq!(
        events::publish_bytes(1_000_042, &record),
        wire::encode(&EventJson::new(1_000_042, &record))
    );
    let mut group = c.benchmark_group("event_json");
    group.bench_function("serde", |b| {
        b.iter(|| wire::encode(&EventJson::new(1_000_042, black_box(&record))))
    });
    group.bench_function("by_hand", |b| {
        b.iter(|| events::publish_bytes(1_000_042, black_box(&record)))
    });
    group.finish();
}

/// The batch door's decoding and encoding, JSON against protobuf, for a
/// batch of this many earns (the load tests' size).
const BATCH_EARNS: usize = 1_000;

fn batch_encodings(c: &mut Criterion) {
    let id = |n: usize| format!("0190d6a1-2b3c-7d4e-8f90-{n:012}");
    let key = |n: usize| format!("till-4-receipt-{n}");
    let json_body = serde_json::to_vec(&serde_json::json!({
        "items": (0..BATCH_EARNS)
            .map(|n| serde_json::json!({"enrollmentId": id(n), "points": 120, "idempotencyKey": key(n)}))
            .collect::<Vec<_>>()
    }))
    .unwrap();
    let protobuf_body = EarnBatchRequest {
        items: (0..BATCH_EARNS)
            .map(|n| EarnItem {
                enrollment_id: id(n),
                points: Some(120),
                idempotency_key: key(n),
                ..EarnItem::default()
            })
            .collect(),
    }
    .encode_to_vec();
    let results = || BatchResults {
        results: (0..BATCH_EARNS)
            .map(|n| {
                BatchItem::Ok(TransactionBody {
                    transaction_id: "0190d6a1-2b3c-7d4e-8f90-000000000001".into(),
                    enrollment_id: id(n),
                    points: 120,
                    balance: 4_520,
                    pending: 0,
                    tier: Some("Gold".into()),
                    event_id: "0190d6a1-2b3c-7d4e-8f90-000000000002".into(),
                    shortfall: None,
                })
            })
            .collect(),
    };
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(BATCH_EARNS as u64));
    group.bench_function("json_decode", |b| {
        b.iter(|| wire::decode::<EarnBatchBody>(black_box(&json_body)).unwrap())
    });
    group.bench_function("protobuf_decode", |b| {
        b.iter(|| batch_protobuf::decode_request(black_box(&protobuf_body)).unwrap())
    });
    // The answers are built outside the timing; only the encoding is timed.
    group.bench_function("json_encode", |b| {
        b.iter_batched(
            results,
            |results| wire::encode(&results),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("protobuf_encode", |b| {
        b.iter_batched(results, batch_protobuf::encode_reply, BatchSize::LargeInput)
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = Store::open(&StoreOptions::new(dir.path())).unwrap();
    let mut next = report.next_sequence;
    let rules = rules();
    let state = enrollment(&rules);
    let event = decide(
        &state,
        &rules,
        Some((&earn_request(10), TransactionId(Uuid::now_v7()))),
        T0,
    )
    .unwrap()
    .events
    .remove(0);
    // The earn as a log record of the enrollment at `version`.
    let record = |version: u64| LogRecord {
        aggregate_id: state.enrollment_id.0,
        version,
        event_id: EventId(Uuid::now_v7()),
        business_id: state.business_id,
        recorded_at: T0,
        event: DomainEvent::Enrollment(event.clone()),
    };
    // `count` of those earns, from version `first` on, encoded as one group.
    let group_of = |first: u64, count: usize| CommitGroup {
        events: (first..first + count as u64)
            .map(|version| Store::encode_event(&record(version)).unwrap())
            .collect(),
        ..CommitGroup::default()
    };
    // The commit thread's batch under the batch load: 4 096 earns, each
    // its event and its idempotency record (a key and a value of the
    // sizes an earn's record has).
    let earns: Vec<CommitGroup> = (0..4_096u64)
        .map(|version| CommitGroup {
            events: vec![Store::encode_event(&record(version + 1)).unwrap()],
            puts: vec![Put {
                cf: Cf::Idempotency,
                key: keys::idempotency(Uuid::now_v7().as_bytes(), "till-4-receipt-88213-0001"),
                value: vec![0x5a; 80],
            }],
        })
        .collect();
    let mut group = c.benchmark_group("write_batch");
    group.throughput(Throughput::Elements(earns.len() as u64));
    group.bench_function("grown", |b| {
        b.iter(|| {
            let mut batch = store.batch();
            let mut seq = 1;
            store.add_groups(&mut batch, &earns, &mut seq);
            batch
        })
    });
    group.bench_function("sized", |b| {
        b.iter(|| {
            let mut batch = store.batch_for(&earns);
            let mut seq = 1;
            store.add_groups(&mut batch, &earns, &mut seq);
            batch
        })
    });
    group.finish();

    let mut group = c.benchmark_group("group_commit");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    for events in [1usize, 16, 256, 4_096] {
        group.throughput(Throughput::Elements(events as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(events),
            &events,
            |b, &events| {
                b.iter(|| {
                    let mut batch = store.batch();
                    let commit = group_of(1_000_000, events);
                    store.add_group(&mut batch, &commit, &mut next);
                    store.write(batch, true).unwrap();
                })
            },
        );
    }
    group.finish();

    // The publisher's chunk of 1 000 events, just written (in the
    // memtable, where the publisher finds them under load).
    const CHUNK: usize = 1_000;
    let after = next - 1;
    let mut batch = store.batch();
    let commit = group_of(2_000_000, CHUNK);
    store.add_group(&mut batch, &commit, &mut next);
    store.write(batch, true).unwrap();
    let mut group = c.benchmark_group("publisher");
    group.throughput(Throughput::Elements(CHUNK as u64));
    // Both keep the chunk out of the timing (its drop is the same either
    // way): `iter_batched` drops what the routine returns afterwards.
    group.bench_function("read_back", |b| {
        b.iter_batched(
            || (),
            |()| {
                let chunk = store.read_log(after, CHUNK).unwrap();
                assert_eq!(chunk.len(), CHUNK);
                chunk
            },
            BatchSize::LargeInput,
        )
    });
    let durable = store.read_log(after, CHUNK).unwrap();
    let recent = RecentRecords::default();
    group.bench_function("from_memory", |b| {
        b.iter_batched(
            || durable.clone(),
            |records| {
                recent.extend(records);
                let chunk = recent.take_after(after, CHUNK);
                assert_eq!(chunk.len(), CHUNK);
                chunk
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Ping(u64);

struct Noop;
impl Actor for Noop {
    type Context = Context<Self>;
}
impl Handler<Ping> for Noop {
    type Result = u64;
    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u64 {
        msg.0
    }
}

fn actors(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let mut group = c.benchmark_group("actor");
    group.measurement_time(Duration::from_secs(5));
    let noop = system.block_on(async {
        let arbiter = Arbiter::new();
        Noop::start_in_arbiter(&arbiter.handle(), |_| Noop)
    });
    group.bench_function("baseline_noop", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let started = Instant::now();
                for i in 0..iters {
                    black_box(noop.send(Ping(i)).await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    for (name, durability) in [
        ("round_trip_fsync", Durability::Fsync),
        ("round_trip_unsafe_no_fsync", Durability::UnsafeNoFsync),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (engine, business, enrollment) = system.block_on(async {
            let (store, report) = Store::open(&StoreOptions::new(dir.path())).unwrap();
            let config = EngineConfig {
                durability,
                ..EngineConfig::default()
            };
            let engine =
                Engine::start(store, &report, config, Arc::new(ManualClock::new(T0))).unwrap();
            let business = engine
                .catalog
                .create_business("Bench")
                .await
                .unwrap()
                .business_id;
            let program = engine
                .catalog
                .create_program(business, "P", rules())
                .await
                .unwrap()
                .program_id;
            engine
                .catalog
                .activate_program(business, program)
                .await
                .unwrap();
            let customer = engine
                .catalog
                .create_customer(business, "c", None, None)
                .await
                .unwrap()
                .customer_id;
            let enrollment = engine
                .catalog
                .enroll(business, customer, program)
                .await
                .unwrap()
                .enrollment_id;
            (engine, business, enrollment)
        });
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        n += 1;
                        let key = IdempotencyKey::parse(&format!("k{n}")).unwrap();
                        black_box(
                            engine
                                .transact(business, enrollment, key, earn_request(1))
                                .await
                                .unwrap(),
                        );
                    }
                    started.elapsed()
                })
            })
        });
        engine.shutdown();
    }
    group.finish();
}

criterion_group!(benches, domain, batch_encodings, group_commit, actors);
criterion_main!(benches);
