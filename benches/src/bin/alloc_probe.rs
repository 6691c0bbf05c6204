//! Heap allocations per durable earn, in the engine and in its caller.
//!
//! The CPU figures of a load test move with this machine's hour by more
//! than most single changes to the hot path save; the number of
//! allocations an earn makes does not. This probe counts them, so that a
//! change that removes some can say how many, and a change that adds some
//! shows it. It fills a fresh data directory with enrolled customers (the
//! bulk fixture), starts the engine in this process as `loyalty serve`
//! does, makes every enrollment active with one earn, then counts every
//! Rust allocation (calls and bytes, through the `loyalty` binary's
//! allocator) over rounds of earns, one per enrollment per round:
//!
//! - `single`: `Engine::transact`, many in flight, as the NATS and HTTP
//!   doors call it for one earn;
//! - `batch`: `Engine::transact_many` with `--batch` earns per call, as
//!   the batch door calls it.
//!
//! Allocations are split between the probe's own thread (the caller: the
//! request, its answer channel, the futures that wait) and every other
//! thread (the engine: the shards and the commit thread). RocksDB's own
//! allocations (C++) are not counted, nor are the front doors' (decoding,
//! encoding, NATS): this is the engine's part of an earn.
//!
//!   alloc_probe --enrollments 10000 --rounds 5 --json-out allocs.json

use clap::Parser;
use futures_util::StreamExt;
use loyalty_actors::{Engine, EngineConfig, SystemClock};
use loyalty_benches::fixture;
use loyalty_engine::idempotency::IdempotencyKey;
use loyalty_persistence::{Store, StoreOptions};
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counts allocation calls and bytes, in all and on the thread marked as
/// the caller's.
struct Counting;

static ALL_CALLS: AtomicU64 = AtomicU64::new(0);
static ALL_BYTES: AtomicU64 = AtomicU64::new(0);
static CALLER_CALLS: AtomicU64 = AtomicU64::new(0);
static CALLER_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the probe's own thread: its allocations are the caller's.
    static IS_CALLER: Cell<bool> = const { Cell::new(false) };
}

fn count(bytes: usize) {
    ALL_CALLS.fetch_add(1, Ordering::Relaxed);
    ALL_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    // `try_with`: a thread being torn down has no thread locals left, and
    // is not the caller's.
    if IS_CALLER.try_with(Cell::get).unwrap_or(false) {
        CALLER_CALLS.fetch_add(1, Ordering::Relaxed);
        CALLER_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// SAFETY: defers every call to mimalloc unchanged; only counts. A growing
// `realloc` counts as one allocation of the new size (what a fresh buffer
// and a copy would be), a shrinking one as none.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            count(new_size);
        }
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Parser)]
struct Args {
    /// Enrollments to earn on.
    #[arg(long, default_value_t = 10_000)]
    enrollments: usize,
    /// Measured rounds of each kind: one earn per enrollment each.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Single earns in flight.
    #[arg(long, default_value_t = 256)]
    inflight: usize,
    /// Earns per batch call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Where to write the figures as JSON.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// Counters at one moment.
#[derive(Clone, Copy)]
struct Counts {
    all_calls: u64,
    all_bytes: u64,
    caller_calls: u64,
    caller_bytes: u64,
}

impl Counts {
    fn now() -> Counts {
        Counts {
            all_calls: ALL_CALLS.load(Ordering::Relaxed),
            all_bytes: ALL_BYTES.load(Ordering::Relaxed),
            caller_calls: CALLER_CALLS.load(Ordering::Relaxed),
            caller_bytes: CALLER_BYTES.load(Ordering::Relaxed),
        }
    }

    /// Per earn, of what was counted since `before`.
    fn per_earn_since(self, before: Counts, earns: usize) -> PerEarn {
        let per = |now: u64, then: u64| (now - then) as f64 / earns as f64;
        let caller_calls = per(self.caller_calls, before.caller_calls);
        let caller_bytes = per(self.caller_bytes, before.caller_bytes);
        PerEarn {
            engine_allocations: per(self.all_calls, before.all_calls) - caller_calls,
            engine_bytes: per(self.all_bytes, before.all_bytes) - caller_bytes,
            caller_allocations: caller_calls,
            caller_bytes,
        }
    }
}

/// Allocations per earn of one kind of call.
#[derive(serde::Serialize)]
struct PerEarn {
    engine_allocations: f64,
    engine_bytes: f64,
    caller_allocations: f64,
    caller_bytes: f64,
}

#[derive(serde::Serialize)]
struct Figures {
    enrollments: usize,
    rounds: usize,
    inflight: usize,
    batch: usize,
    single: PerEarn,
    batched: PerEarn,
}

fn key(kind: &str, round: usize, i: usize) -> IdempotencyKey {
    IdempotencyKey::parse(&format!("{kind}-{round}-{i}")).expect("valid key")
}

fn main() -> Result<(), fixture::FixtureError> {
    let args = Args::parse();
    if args.enrollments == 0 || args.rounds == 0 || args.inflight == 0 || args.batch == 0 {
        return Err("--enrollments, --rounds, --inflight and --batch must be above 0".into());
    }
    IS_CALLER.with(|c| c.set(true));
    let dir = tempfile::tempdir()?;
    let now = loyalty_actors::Clock::now(&SystemClock);
    let fixture = {
        let (store, _) = Store::open(&StoreOptions::new(dir.path()))?;
        fixture::populate(&store, args.enrollments, 0, 64, now, |_| {})?
    };
    let system = actix_rt::System::new();
    let figures = system.block_on(async move {
        let (store, recovered) = Store::open(&StoreOptions::new(dir.path()))?;
        // Long enough that no actor passivates while it is counted.
        let config = EngineConfig {
            passivate_after: Duration::from_secs(3_600),
            ..EngineConfig::default()
        };
        let engine = Engine::start(store, &recovered, config, Arc::new(SystemClock))?;
        let business = fixture.business_id;
        let engine = &engine;
        let singles = |kind: &'static str, round: usize| {
            futures_util::stream::iter(fixture.enrollments.iter().enumerate())
                .map(move |(i, id)| async move {
                    engine
                        .transact(business, *id, key(kind, round, i), fixture::earn(10))
                        .await
                        .is_err()
                })
                .buffer_unordered(args.inflight)
                .filter(|failed| std::future::ready(*failed))
                .count()
        };
        // Activation reads each enrollment's snapshot and key digests:
        // not an earn's steady cost, so not counted.
        let failed = singles("warm", 0).await;
        if failed > 0 {
            return Err(format!("{failed} warm-up earns failed").into());
        }

        let before = Counts::now();
        for round in 0..args.rounds {
            let failed = singles("single", round).await;
            if failed > 0 {
                return Err(format!("{failed} single earns failed").into());
            }
        }
        let single = Counts::now().per_earn_since(before, args.enrollments * args.rounds);

        let before = Counts::now();
        for round in 0..args.rounds {
            for (c, chunk) in fixture.enrollments.chunks(args.batch).enumerate() {
                let commands = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let i = c * args.batch + i;
                        (*id, key("batch", round, i), fixture::earn(10))
                    })
                    .collect();
                let failed = engine
                    .transact_many(business, commands)
                    .await
                    .iter()
                    .filter(|answer| answer.is_err())
                    .count();
                if failed > 0 {
                    return Err(format!("{failed} batched earns failed").into());
                }
            }
        }
        let batched = Counts::now().per_earn_since(before, args.enrollments * args.rounds);
        Ok::<_, fixture::FixtureError>(Figures {
            enrollments: args.enrollments,
            rounds: args.rounds,
            inflight: args.inflight,
            batch: args.batch,
            single,
            batched,
        })
    })?;
    for (name, per) in [("single", &figures.single), ("batched", &figures.batched)] {
        println!(
            "{name:>8} earn: engine {:.2} allocations ({:.0} bytes), caller {:.2} ({:.0} bytes)",
            per.engine_allocations, per.engine_bytes, per.caller_allocations, per.caller_bytes
        );
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)?;
    }
    Ok(())
}
