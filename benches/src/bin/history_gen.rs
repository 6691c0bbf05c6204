//! Writes a data directory with a long history, for the recovery test and
//! the batch load test (with `--earns 0` and many enrollments): a
//! business, an active program, `--enrollments` enrolled customers and
//! `--earns` earns spread over them, each with its idempotency record and a
//! snapshot every 64 events, exactly as the engine writes them (see
//! `loyalty_benches::fixture`). `loadtests/run-all` then times
//! `loyalty serve` on it back to ready.
//!
//!   history_gen --data-dir history --earns 9799996 --enrollments 100000

use clap::Parser;
use loyalty_benches::fixture;
use loyalty_persistence::{Store, StoreOptions};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// A directory that does not exist yet.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 100_000)]
    enrollments: usize,
    #[arg(long, default_value_t = 9_799_996)]
    earns: u64,
    /// Writes the enrollment ids here, one per line (for the load tests).
    #[arg(long)]
    ids_out: Option<std::path::PathBuf>,
}

fn main() -> Result<(), fixture::FixtureError> {
    let args = Args::parse();
    if args.data_dir.exists() {
        return Err(format!("{} already exists", args.data_dir.display()).into());
    }
    let started = Instant::now();
    let (store, _) = Store::open(&StoreOptions::new(&args.data_dir))?;
    let fixture = fixture::populate(
        &store,
        args.enrollments,
        args.earns,
        64,
        loyalty_actors::Clock::now(&loyalty_actors::SystemClock),
        |n| eprintln!("{n} earns written"),
    )?;
    let events = store.next_sequence()? - 1;
    if let Some(path) = &args.ids_out {
        let ids: Vec<String> = fixture
            .enrollments
            .iter()
            .map(|id| id.to_string())
            .collect();
        std::fs::write(path, ids.join("\n") + "\n")?;
    }
    drop(store);
    println!(
        "{}",
        serde_json::json!({
            "events": events,
            "enrollments": args.enrollments,
            "api_key": fixture.api_key,
            "write_s": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
