//! Prometheus metrics: requests by route and status, request latency,
//! commit batch sizes, fsync latency, active actors, events published and
//! publish lag. Rendered as text on `/metrics`.

use loyalty_actors::commit::{BATCH_BUCKETS_EVENTS, FSYNC_BUCKETS_US};
use loyalty_actors::Engine;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the request latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000, 1_000_000,
];

#[derive(Default)]
struct RouteStats {
    count: u64,
    latency_us_sum: u64,
    /// Per bucket of `LATENCY_BUCKETS_US`, plus one for slower.
    buckets: [u64; 13],
}

#[derive(Default)]
pub struct Metrics {
    /// (method, route, status) -> stats. A mutex is fine here: it is held
    /// for a few additions, far from the fsync that dominates a request.
    routes: Mutex<BTreeMap<(String, String, u16), RouteStats>>,
    pub events_published: AtomicU64,
    /// Log records the publisher read back from the store because they
    /// were no longer in memory (after a restart, or having fallen behind).
    pub events_read_back: AtomicU64,
    /// Sequence number of the newest event published to NATS.
    pub published_sequence: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let us = elapsed.as_micros() as u64;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        let mut routes = self.routes.lock().expect("metrics lock is never poisoned");
        let stats = routes
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default();
        stats.count += 1;
        stats.latency_us_sum += us;
        stats.buckets[bucket] += 1;
    }

    pub fn render(&self, engine: &Engine) -> String {
        let mut out = String::new();
        out.push_str("# HELP loyalty_http_requests_total HTTP requests by route and status.\n# TYPE loyalty_http_requests_total counter\n");
        let routes = self.routes.lock().expect("metrics lock is never poisoned");
        for ((method, route, status), stats) in routes.iter() {
            let _ = writeln!(out, "loyalty_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}", stats.count);
        }
        out.push_str("# HELP loyalty_http_request_duration_seconds HTTP request latency.\n# TYPE loyalty_http_request_duration_seconds histogram\n");
        for ((method, route, status), stats) in routes.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            histogram(
                &mut out,
                "loyalty_http_request_duration_seconds",
                &labels,
                &LATENCY_BUCKETS_US,
                &stats.buckets,
                stats.latency_us_sum,
                1e-6,
            );
        }
        drop(routes);
        let commit = engine.commit_stats();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let fsync: Vec<u64> = commit.write_us_buckets.iter().map(load).collect();
        let batch: Vec<u64> = commit.batch_events_buckets.iter().map(load).collect();
        out.push_str("# HELP loyalty_fsync_duration_seconds Write + fsync latency of one commit batch.\n# TYPE loyalty_fsync_duration_seconds histogram\n");
        histogram(
            &mut out,
            "loyalty_fsync_duration_seconds",
            "",
            &FSYNC_BUCKETS_US,
            &fsync,
            load(&commit.write_us_total),
            1e-6,
        );
        out.push_str("# HELP loyalty_commit_batch_events Events per commit batch (one fsync).\n# TYPE loyalty_commit_batch_events histogram\n");
        let events_total = load(&commit.events);
        histogram(
            &mut out,
            "loyalty_commit_batch_events",
            "",
            &BATCH_BUCKETS_EVENTS,
            &batch,
            events_total,
            1.0,
        );
        let durable = load(&commit.durable_sequence);
        let published = self.published_sequence.load(Ordering::Relaxed);
        let index = engine.store().index_stats();
        let _ = write!(
            out,
            "# HELP loyalty_events_committed_total Events made durable.\n# TYPE loyalty_events_committed_total counter\nloyalty_events_committed_total {events_total}\n\
             # HELP loyalty_durable_sequence Newest durable log sequence.\n# TYPE loyalty_durable_sequence gauge\nloyalty_durable_sequence {durable}\n\
             # HELP loyalty_active_enrollments Enrollment actors in memory.\n# TYPE loyalty_active_enrollments gauge\nloyalty_active_enrollments {}\n\
             # HELP loyalty_passivation_slices_total Slices of idle enrollments passivated (each holds its shard about a millisecond).\n# TYPE loyalty_passivation_slices_total counter\nloyalty_passivation_slices_total {}\n\
             # HELP loyalty_events_published_total Events published to NATS.\n# TYPE loyalty_events_published_total counter\nloyalty_events_published_total {}\n\
             # HELP loyalty_events_read_back_total Log records the publisher read back from the data directory (not in memory any more).\n# TYPE loyalty_events_read_back_total counter\nloyalty_events_read_back_total {}\n\
             # HELP loyalty_publish_lag_events Durable events not yet published.\n# TYPE loyalty_publish_lag_events gauge\nloyalty_publish_lag_events {}\n\
             # HELP loyalty_idempotency_records_expired_total Idempotency records dropped past their retention since start.\n# TYPE loyalty_idempotency_records_expired_total counter\nloyalty_idempotency_records_expired_total {}\n\
             # HELP loyalty_index_rounds_total Rounds of the aggregate index's writer since start.\n# TYPE loyalty_index_rounds_total counter\nloyalty_index_rounds_total {}\n\
             # HELP loyalty_index_events_total Events the aggregate index's rounds wrote since start.\n# TYPE loyalty_index_events_total counter\nloyalty_index_events_total {}\n\
             # HELP loyalty_index_entries_total Entries the aggregate index's rounds wrote since start (each covers one or more versions).\n# TYPE loyalty_index_entries_total counter\nloyalty_index_entries_total {}\n\
             # HELP loyalty_index_pending_events Durable events not yet in the aggregate index (held in memory; indexed again from the log after a crash).\n# TYPE loyalty_index_pending_events gauge\nloyalty_index_pending_events {}\n",
            engine.active_enrollments(),
            engine.passivation_slices(),
            self.events_published.load(Ordering::Relaxed),
            self.events_read_back.load(Ordering::Relaxed),
            durable.saturating_sub(published),
            engine.store().idempotency_records_expired(),
            index.rounds,
            index.events,
            index.entries,
            index.pending_events,
        );
        out
    }
}

/// Writes one Prometheus histogram from per-bucket (non-cumulative) counts.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[u64],
    counts: &[u64],
    sum: u64,
    scale: f64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
            *bound as f64 * scale
        );
    }
    cumulative += counts.get(bounds.len()).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", sum as f64 * scale);
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}
