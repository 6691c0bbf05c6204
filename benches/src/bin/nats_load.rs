//! A NATS load generator that behaves like a fleet of point-of-sale
//! terminals and speaks k6's vocabulary: virtual users (requests in flight,
//! closed model) or an arrival rate (open model), a duration, thresholds,
//! checks, and an end-of-test summary, also as JSON (`--summary-export`).
//!
//! Each iteration is one earn request on `--subject` with a fresh
//! idempotency key, for an enrollment drawn from `--enrollments-file`.
//! A check passes when the reply carries no `Nats-Service-Error` header.
//! With `--batch N` each iteration is one batch request (`…earn.batch`)
//! of N earns over N enrollments, each with its own key; its check passes
//! only if every item succeeded, and the summary counts earns as well.
//! `--encoding protobuf` sends the batches in the batch door's binary
//! encoding (`Content-Type: application/protobuf`) and reads the replies
//! in it.
//!
//! ```text
//! nats_load --url nats://127.0.0.1:4222 --api-key lk_… --enrollments-file ids.txt --vus 256 --duration 15s
//! nats_load … --rate 5000 --max-in-flight 1024          # open model
//! ```

use clap::{Parser, ValueEnum};
use loyalty_api::batch_protobuf::{self, EarnBatchReply, EarnBatchRequest, EarnItem, Outcome};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The same allocator as the `loyalty` binary, so the comparison is of
/// the work done, not of allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Clone)]
#[command(about = "k6-style NATS load generator for the loyalty engine")]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Request subject, e.g. loyalty.v1.earn (or the do-nothing responder's).
    #[arg(long, default_value = "loyalty.v1.earn")]
    subject: String,
    #[arg(long, default_value = "none")]
    api_key: String,
    /// One enrollment id per line.
    #[arg(long)]
    enrollments_file: std::path::PathBuf,
    /// Virtual users: requests in flight (closed model).
    #[arg(long, default_value_t = 64)]
    vus: usize,
    /// Arrivals per second (open model); replaces --vus.
    #[arg(long)]
    rate: Option<u64>,
    /// Open model: most requests in flight; arrivals beyond it are dropped
    /// and counted (k6's dropped_iterations).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// e.g. 15s, 2m.
    #[arg(long, default_value = "15s")]
    duration: String,
    /// Threshold on the 99th percentile latency, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    threshold_p99_ms: f64,
    /// Threshold on the failed-request rate.
    #[arg(long, default_value_t = 0.001)]
    threshold_failed_rate: f64,
    /// Earns per request: above 1, each request is a batch
    /// (`{"items": [...]}`) for the batch subject.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// How a batch is encoded: the contract's JSON, or the batch door's
    /// protobuf messages.
    #[arg(long, value_enum, default_value_t = Encoding::Json)]
    encoding: Encoding,
    /// Writes the summary as JSON here.
    #[arg(long)]
    summary_export: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Encoding {
    Json,
    Protobuf,
}

fn parse_duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number.parse().expect("a duration such as 15s or 2m");
    Duration::from_secs_f64(match unit {
        "ms" => value / 1_000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        other => panic!("unknown duration unit {other}"),
    })
}

#[derive(Default)]
struct Tally {
    /// Latency of every completed request, in microseconds.
    latencies_us: Mutex<Vec<u32>>,
    passes: AtomicU64,
    fails: AtomicU64,
    dropped: AtomicU64,
    counter: AtomicU64,
}

async fn one_request(
    client: &async_nats::Client,
    args: &Args,
    enrollments: &[String],
    tally: &Tally,
) {
    let enrollment =
        |n: u64| &enrollments[(n as usize).wrapping_mul(2_654_435_761) % enrollments.len()];
    let key = |n: u64| format!("nl-{}-{n}", std::process::id());
    let item = |n: u64| JsonEarn {
        enrollment_id: enrollment(n),
        points: 10,
        idempotency_key: key(n),
    };
    let protobuf = args.encoding == Encoding::Protobuf;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {}", args.api_key).as_str());
    let body = if protobuf {
        let first = tally
            .counter
            .fetch_add(args.batch as u64, Ordering::Relaxed);
        headers.insert("Content-Type", batch_protobuf::CONTENT_TYPE);
        EarnBatchRequest {
            items: (first..first + args.batch as u64)
                .map(|n| EarnItem {
                    enrollment_id: enrollment(n).clone(),
                    points: Some(10),
                    idempotency_key: key(n),
                    ..EarnItem::default()
                })
                .collect(),
        }
        .encode_to_vec()
    } else if args.batch > 1 {
        let first = tally
            .counter
            .fetch_add(args.batch as u64, Ordering::Relaxed);
        let items: Vec<_> = (first..first + args.batch as u64).map(item).collect();
        serde_json::to_vec(&JsonBatch { items }).expect("a batch serializes")
    } else {
        serde_json::to_vec(&item(tally.counter.fetch_add(1, Ordering::Relaxed)))
            .expect("an earn serializes")
    };
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request_with_headers(args.subject.clone(), headers, body.into()),
    )
    .await;
    let elapsed_us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    let ok = matches!(&reply, Ok(Ok(m)) if m.headers.as_ref().and_then(|h| h.get("Nats-Service-Error")).is_none()
        && (args.batch <= 1 || batch_all_ok(&m.payload, args.batch, protobuf)));
    if ok {
        tally.passes.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.fails.fetch_add(1, Ordering::Relaxed);
    }
    tally.latencies_us.lock().unwrap().push(elapsed_us);
}

/// Whether a batch answer holds `items` results and none is an error.
fn batch_all_ok(payload: &[u8], items: usize, protobuf: bool) -> bool {
    if protobuf {
        return EarnBatchReply::decode(payload).is_ok_and(|reply| {
            reply.results.len() == items
                && reply
                    .results
                    .iter()
                    .all(|r| matches!(r.outcome, Some(Outcome::Earned(_))))
        });
    }
    serde_json::from_slice::<JsonReply>(payload).is_ok_and(|reply| {
        reply.results.len() == items && reply.results.iter().all(|r| r.error.is_none())
    })
}

/// An earn as the JSON door takes it; typed, as a POS system would build
/// it, so that the load generator's cost is alike in both encodings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonEarn<'a> {
    enrollment_id: &'a str,
    points: i64,
    idempotency_key: String,
}

#[derive(Serialize)]
struct JsonBatch<'a> {
    items: Vec<JsonEarn<'a>>,
}

/// The part of a JSON batch answer the check reads: whether each result
/// is an error (every other field is skipped unread).
#[derive(Deserialize)]
struct JsonReply {
    results: Vec<JsonResult>,
}

#[derive(Deserialize)]
struct JsonResult {
    error: Option<serde::de::IgnoredAny>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank]) / 1_000.0
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args = Args::parse();
    if args.encoding == Encoding::Protobuf && args.batch <= 1 {
        eprintln!("--encoding protobuf is the batch door's: give --batch 2 or more");
        std::process::exit(2);
    }
    let enrollments: Vec<String> = std::fs::read_to_string(&args.enrollments_file)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    assert!(
        !enrollments.is_empty(),
        "no enrollment ids in {}",
        args.enrollments_file.display()
    );
    let duration = parse_duration(&args.duration);
    let client = async_nats::connect(args.url.as_str()).await?;
    let tally = Arc::new(Tally::default());
    let enrollments = Arc::new(enrollments);
    let args = Arc::new(args);
    let started = Instant::now();
    let deadline = started + duration;
    match args.rate {
        None => {
            let users: Vec<_> = (0..args.vus)
                .map(|_| {
                    let (client, args, enrollments, tally) = (
                        client.clone(),
                        args.clone(),
                        enrollments.clone(),
                        tally.clone(),
                    );
                    tokio::spawn(async move {
                        while Instant::now() < deadline {
                            one_request(&client, &args, &enrollments, &tally).await;
                        }
                    })
                })
                .collect();
            for user in users {
                user.await?;
            }
        }
        Some(rate) => {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight));
            let mut ticker =
                tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut running = Vec::new();
            while Instant::now() < deadline {
                ticker.tick().await;
                match in_flight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (client, args, enrollments, tally) = (
                            client.clone(),
                            args.clone(),
                            enrollments.clone(),
                            tally.clone(),
                        );
                        running.push(tokio::spawn(async move {
                            one_request(&client, &args, &enrollments, &tally).await;
                            drop(permit);
                        }));
                    }
                    Err(_) => {
                        tally.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            for task in running {
                task.await?;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let protobuf_batches = args.encoding == Encoding::Protobuf;
    let mut latencies = std::mem::take(&mut *tally.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let count = latencies.len() as u64;
    let (passes, fails) = (
        tally.passes.load(Ordering::Relaxed),
        tally.fails.load(Ordering::Relaxed),
    );
    let failed_rate = if count == 0 {
        1.0
    } else {
        fails as f64 / count as f64
    };
    let avg = latencies.iter().map(|l| f64::from(*l)).sum::<f64>() / count.max(1) as f64 / 1_000.0;
    let (med, p90, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
    );
    let p99_ok = p99 < args.threshold_p99_ms;
    let failed_ok = failed_rate < args.threshold_failed_rate;
    let summary = json!({
        "options": {"subject": args.subject, "encoding": if protobuf_batches { "protobuf" } else { "json" }, "vus": if args.rate.is_none() { Some(args.vus) } else { None }, "rate": args.rate, "duration_s": duration.as_secs_f64()},
        "metrics": {
            "nats_reqs": {"count": count, "rate": count as f64 / elapsed},
            "earns": {"count": passes * args.batch as u64, "rate": (passes * args.batch as u64) as f64 / elapsed},
            "nats_req_duration": {"avg": avg, "med": med, "p(90)": p90, "p(99)": p99, "max": max},
            "nats_req_failed": {"rate": failed_rate},
            "checks": {"passes": passes, "fails": fails},
            "dropped_iterations": {"count": tally.dropped.load(Ordering::Relaxed)},
        },
        "thresholds": {
            format!("nats_req_duration p(99)<{}", args.threshold_p99_ms): p99_ok,
            format!("nats_req_failed rate<{}", args.threshold_failed_rate): failed_ok,
        },
    });
    println!(
        "  checks.........................: {:.2}% ✓ {passes} ✗ {fails}",
        100.0 * passes as f64 / count.max(1) as f64
    );
    println!("  nats_req_duration..............: avg={avg:.2}ms med={med:.2}ms p(90)={p90:.2}ms p(99)={p99:.2}ms max={max:.2}ms");
    println!(
        "  nats_req_failed................: {:.4}%",
        100.0 * failed_rate
    );
    println!(
        "  nats_reqs......................: {count} {:.1}/s",
        count as f64 / elapsed
    );
    println!(
        "  earns (in passed requests).....: {} {:.1}/s",
        passes * args.batch as u64,
        (passes * args.batch as u64) as f64 / elapsed
    );
    println!(
        "  dropped_iterations.............: {}",
        tally.dropped.load(Ordering::Relaxed)
    );
    println!(
        "  thresholds: p(99)<{}ms {}, failed<{} {}",
        args.threshold_p99_ms,
        if p99_ok { "✓" } else { "✗" },
        args.threshold_failed_rate,
        if failed_ok { "✓" } else { "✗" }
    );
    if let Some(path) = &args.summary_export {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    // Like k6: a crossed threshold is a non-zero exit.
    if !(p99_ok && failed_ok) {
        std::process::exit(99);
    }
    Ok(())
}
