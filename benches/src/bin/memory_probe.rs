//! Memory per active enrollment, and what a passivated one costs.
//!
//! Fills a fresh data directory with N enrolled customers (the bulk
//! fixture), starts the engine on it in this process, makes every
//! enrollment active with one durable earn, and measures; then waits until
//! every actor has passivated and measures again.
//!
//! Three measures at each point (before, all active, all passivated):
//! - live Rust heap bytes, counted by a wrapping global allocator: exactly
//!   what the actors, their mailboxes and the shards' directories hold;
//! - the process's resident set (VmRSS) as it runs: it also holds RocksDB's
//!   memtables and block cache (bounded by configuration) and whatever the
//!   allocators keep for reuse;
//! - the resident set *settled*: RocksDB's memtables flushed and its
//!   compactions finished, the C library's allocator (RocksDB's) made to
//!   give back the pages it holds free, and mimalloc those of this thread
//!   (each shard gives back its own after passivating); then less what
//!   RocksDB reports holding (`Store::rocksdb_memory_bytes`: now its block
//!   cache, table readers and fresh memtables, filled memory). Subtracting
//!   RocksDB's figures from the running resident set instead said nothing:
//!   memtable arenas are counted by whole blocks, resident or not, so that
//!   difference came out below zero.
//!
//! The start is measured settled, so the running figures at the later
//! points count what built up since: at "active", the memtables the
//! earns filled; at "passivated", those the passivation snapshots filled
//! (the active point's settling flushed the earns').
//!
//! While the actors passivate, pingers (four per shard) ask their shard
//! for the balance of an enrollment that does not exist, about once a
//! millisecond each, and time the answers from the moment the first
//! actors can be idle: the longest is how long the wave of passivations
//! held up a point-of-sale command on its shard. The times include the
//! probe's own scheduling (one thread runs the pingers) and the 2 cores
//! the wave's other work shares. An unknown enrollment keeps no actor in
//! memory, so the pingers do not hold up the "all passivated" point; they
//! do keep their shards from being quiet.
//!
//!   memory_probe --enrollments 1000000 --json-out memory.json

use clap::Parser;
use futures_util::StreamExt;
use loyalty_actors::{Engine, EngineConfig, Release, SystemClock};
use loyalty_benches::fixture;
use loyalty_engine::idempotency::IdempotencyKey;
use loyalty_persistence::{Store, StoreOptions};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts live heap bytes: every allocation the Rust side makes, through
/// the allocator the `loyalty` binary uses.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers every call to mimalloc unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Parser)]
struct Args {
    /// Enrollments to make active.
    #[arg(long, default_value_t = 1_000_000)]
    enrollments: usize,
    /// Earns in flight while activating.
    #[arg(long, default_value_t = 2_048)]
    inflight: usize,
    /// Idle time before an actor passivates. Must exceed the time to
    /// activate them all; the probe checks that none left early.
    #[arg(long, default_value_t = 120)]
    passivate_after_s: u64,
    /// Pingers per shard timing answers while the actors passivate.
    #[arg(long, default_value_t = 4)]
    pingers_per_shard: usize,
    /// Where to write the figures as JSON.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// When the pingers' balance queries were asked, and their answer times
/// in microseconds.
#[derive(Default)]
struct PingTimes {
    answers_us: Vec<(Instant, u64)>,
    /// Queries answered with something other than `NotFound`.
    unexpected: u64,
}

/// Asks for the balance of `unknown` about once a millisecond until
/// `stop`, timing each answer.
async fn ping(
    engine: &Engine,
    business: loyalty_engine::BusinessId,
    unknown: loyalty_engine::EnrollmentId,
    stop: &std::sync::atomic::AtomicBool,
) -> PingTimes {
    let mut times = PingTimes::default();
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let answer = engine.balance(business, unknown).await;
        let took_us = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        times.answers_us.push((asked, took_us));
        if !matches!(answer, Err(loyalty_actors::EngineError::NotFound { .. })) {
            times.unexpected += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    times
}

/// Longest calls of the hook below, in microseconds, thorough and cheap:
/// it runs on a shard thread, so it is time no command on that shard is
/// served.
static THOROUGH_RELEASE_MAX_US: AtomicU64 = AtomicU64::new(0);
static CHEAP_RELEASE_MAX_US: AtomicU64 = AtomicU64::new(0);

/// The engine's hook after passivation, as the `loyalty` binary sets it
/// (see its `release_freed_memory`), timed.
fn release_freed_memory(release: Release) {
    let started = Instant::now();
    // SAFETY: `mi_collect` takes no pointers and may be called on any
    // thread at any time; it only frees memory no allocation holds.
    unsafe { libmimalloc_sys::mi_collect(release.thorough) }
    let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let longest = if release.thorough {
        &THOROUGH_RELEASE_MAX_US
    } else {
        &CHEAP_RELEASE_MAX_US
    };
    longest.fetch_max(took_us, Ordering::Relaxed);
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed) as i64
}

/// Memory at one measuring point.
struct Sample {
    rss: u64,
    heap: i64,
    rocksdb: u64,
}

impl Sample {
    /// As the process holds it while it runs.
    fn running(store: &Store) -> Result<Sample, fixture::FixtureError> {
        Ok(Sample {
            rss: rss_bytes(),
            heap: live_bytes(),
            rocksdb: store.rocksdb_memory_bytes()?,
        })
    }

    /// Once RocksDB's memtables are flushed, its compactions done, and
    /// the allocators have given back the free pages they keep: what is
    /// left resident is live memory, and RocksDB's figures are then of
    /// filled memory only.
    fn settled(store: &Store) -> Result<Sample, fixture::FixtureError> {
        store.flush_and_wait(Duration::from_secs(120))?;
        // SAFETY: `malloc_trim` takes no pointers and only returns free
        // pages of the C library's heaps (all of its arenas) to the system.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        unsafe {
            libc::malloc_trim(0);
        }
        // SAFETY: as in `release_freed_memory`; this thread's pages only.
        unsafe { libmimalloc_sys::mi_collect(true) }
        Sample::running(store)
    }

    /// Resident set less RocksDB's memory.
    fn rss_less_rocksdb(&self) -> f64 {
        self.rss as f64 - self.rocksdb as f64
    }
}

fn main() -> Result<(), fixture::FixtureError> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let now = loyalty_actors::Clock::now(&SystemClock);
    let started = Instant::now();
    let fixture = {
        let (store, _) = Store::open(&StoreOptions::new(dir.path()))?;
        fixture::populate(&store, args.enrollments, 0, 64, now, |_| {})?
    };
    eprintln!(
        "{} enrollments written in {:.1} s",
        args.enrollments,
        started.elapsed().as_secs_f64()
    );

    let system = actix_rt::System::new();
    let figures = system.block_on(async move {
        let (store, recovered) = Store::open(&StoreOptions::new(dir.path()))?;
        let config = EngineConfig {
            passivate_after: Duration::from_secs(args.passivate_after_s),
            tick_interval: Duration::from_millis(250),
            // As `loyalty serve` sets it.
            release_memory: Some(release_freed_memory),
            ..EngineConfig::default()
        };
        let shards = config.shards;
        let engine = Engine::start(store, &recovered, config, Arc::new(SystemClock))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let store = engine.store().clone();
        // Settled, so the fixture's writes are out of every figure: the
        // start of the running figures and of the settled ones alike.
        let before = Sample::settled(&store)?;

        let activating = Instant::now();
        let business = fixture.business_id;
        let engine_ref = &engine;
        let failures = futures_util::stream::iter(fixture.enrollments.iter().enumerate())
            .map(|(i, id)| async move {
                let key = IdempotencyKey::parse(&format!("memory-{i}")).expect("valid key");
                engine_ref
                    .transact(business, *id, key, fixture::earn(10))
                    .await
                    .is_err()
            })
            .buffer_unordered(args.inflight)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        let activate_s = activating.elapsed().as_secs_f64();
        if failures > 0 {
            return Err(format!("{failures} earns failed while activating").into());
        }
        let active = engine.active_enrollments();
        if active != args.enrollments as u64 {
            return Err(format!(
                "{active} of {} enrollments active at measurement: raise --passivate-after-s above the {activate_s:.0} s activation took",
                args.enrollments
            )
            .into());
        }
        let active_running = Sample::running(&store)?;
        let active_settled = Sample::settled(&store)?;
        eprintln!(
            "{active} active after {activate_s:.1} s; waiting for them to passivate"
        );

        let waiting = Instant::now();
        let stop_pinging = std::sync::atomic::AtomicBool::new(false);
        // No actor can be idle before this (the first was activated at
        // `activating`): the wave starts after it.
        let wave_from = activating + Duration::from_secs(args.passivate_after_s);
        let mut unknown_per_shard = vec![Vec::new(); shards];
        while unknown_per_shard
            .iter()
            .any(|ids| ids.len() < args.pingers_per_shard)
        {
            let id = loyalty_engine::EnrollmentId(uuid::Uuid::new_v4());
            let ids = &mut unknown_per_shard[engine.shard_index(id)];
            if ids.len() < args.pingers_per_shard {
                ids.push(id);
            }
        }
        let pinging = futures_util::future::join_all(
            unknown_per_shard
                .into_iter()
                .flatten()
                .map(|unknown| ping(engine_ref, business, unknown, &stop_pinging)),
        );
        let passivating = async {
            while engine.active_enrollments() > 0 {
                if waiting.elapsed() > Duration::from_secs(args.passivate_after_s * 3 + 60) {
                    return Err(format!(
                        "{} enrollments still active long after passivate_after",
                        engine.active_enrollments()
                    ));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            stop_pinging.store(true, Ordering::Relaxed);
            Ok(())
        };
        let (pinged, passivated) = futures_util::join!(pinging, passivating);
        passivated?;
        let unexpected: u64 = pinged.iter().map(|p| p.unexpected).sum();
        if unexpected > 0 {
            return Err(format!("{unexpected} pings were answered other than NotFound").into());
        }
        let mut answers_us: Vec<u64> = pinged
            .into_iter()
            .flat_map(|p| p.answers_us)
            .filter(|(asked, _)| *asked >= wave_from)
            .map(|(_, took_us)| took_us)
            .collect();
        answers_us.sort_unstable();
        let pings = answers_us.len();
        let ping_p99_us = answers_us
            .get(pings.saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(0);
        let ping_max_us = answers_us.last().copied().unwrap_or(0);
        // The times are heap too: gone before the "all passivated" point.
        drop(answers_us);
        // Let the last actors' stop and the shards' bookkeeping finish:
        // several ticks, now with no command, so the shards are quiet.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let passive_running = Sample::running(&store)?;
        let passive_settled = Sample::settled(&store)?;
        let passivation_slices = engine.passivation_slices();
        engine.shutdown();
        let n = args.enrollments as f64;
        let per = |after: f64, before: f64| (after - before) / n;
        Ok::<_, fixture::FixtureError>(serde_json::json!({
            "enrollments": args.enrollments,
            "activate_s": activate_s,
            "heap_bytes_per_active": per(active_running.heap as f64, before.heap as f64),
            "heap_bytes_per_passivated": per(passive_running.heap as f64, before.heap as f64),
            "rss_bytes_per_active": per(active_running.rss as f64, before.rss as f64),
            "rss_bytes_per_passivated": per(passive_running.rss as f64, before.rss as f64),
            "settled_rss_bytes_per_active": per(active_settled.rss as f64, before.rss as f64),
            "settled_rss_bytes_per_passivated": per(passive_settled.rss as f64, before.rss as f64),
            "settled_rss_less_rocksdb_bytes_per_active": per(active_settled.rss_less_rocksdb(), before.rss_less_rocksdb()),
            "settled_rss_less_rocksdb_bytes_per_passivated": per(passive_settled.rss_less_rocksdb(), before.rss_less_rocksdb()),
            "rocksdb_before_bytes": before.rocksdb,
            "rocksdb_active_bytes": active_running.rocksdb,
            "rocksdb_passivated_bytes": passive_running.rocksdb,
            "settled_rocksdb_before_bytes": before.rocksdb,
            "settled_rocksdb_active_bytes": active_settled.rocksdb,
            "settled_rocksdb_passivated_bytes": passive_settled.rocksdb,
            "rss_before_bytes": before.rss,
            "rss_active_bytes": active_running.rss,
            "rss_passivated_bytes": passive_running.rss,
            "settled_rss_before_bytes": before.rss,
            "settled_rss_active_bytes": active_settled.rss,
            "settled_rss_passivated_bytes": passive_settled.rss,
            "heap_before_bytes": before.heap,
            "heap_active_bytes": active_running.heap,
            "heap_passivated_bytes": passive_running.heap,
            "thorough_release_max_us": THOROUGH_RELEASE_MAX_US.load(Ordering::Relaxed),
            "cheap_release_max_us": CHEAP_RELEASE_MAX_US.load(Ordering::Relaxed),
            "shards": shards,
            "passivation_pingers": shards * args.pingers_per_shard,
            "passivation_slices": passivation_slices,
            "passivation_pings": pings,
            "passivation_ping_p99_us": ping_p99_us,
            "passivation_ping_max_us": ping_max_us,
        }))
    })?;
    let text = serde_json::to_string_pretty(&figures)?;
    println!("{text}");
    if let Some(path) = args.json_out {
        std::fs::write(path, text)?;
    }
    Ok(())
}
