//! The front doors of the loyalty engine and the `loyalty` binary.
//!
//! # Where to start reading
//! - `serve.rs`: start-up and shutdown of the whole process.
//! - `ops.rs`: the operations both doors share, below the decoding.
//! - `http.rs`: the HTTP routes; `nats.rs`: the NATS service and the event
//!   publisher.
//! - `wire.rs`: JSON shapes and strict decoding; `batch_protobuf.rs`: the
//!   batch door's binary encoding; `error.rs`: every error's
//!   status and code, in one place.
//! - `auth.rs`: API keys and the operator token; `metrics.rs`: `/metrics`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod batch_protobuf;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod ops;
pub mod serve;
pub mod wire;
