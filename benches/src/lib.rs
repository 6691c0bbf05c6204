//! Benchmarks and load-test helpers. The criterion benchmarks are in
//! `benches/hot_path.rs`; `src/bin/null_http.rs` is the do-nothing HTTP
//! responder the load tests measure beside the engine, and `durable` the
//! group-commit log that makes it (and `null_nats`) a durable do-nothing
//! responder.
#![forbid(unsafe_code)]

pub mod durable;
pub mod fixture;
