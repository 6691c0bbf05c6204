//! The runtime: one virtual actor per enrollment, hosted by one actix shard
//! actor per core (ADR 0003), over a group-committed RocksDB log.
//!
//! # Where to start reading
//! - [`engine`]: [`Engine`], the handle the front doors call.
//! - `shard.rs`: routing, activation and passivation of enrollment actors.
//! - `enrollment_actor.rs`: one enrollment: decide, apply in memory, queue
//!   for commit, answer when durable.
//! - [`commit`]: the group-commit thread: many actors' events, one fsync.
//! - [`catalog`]: businesses, programs, customers, enrollment creation.
//!
//! # The path of one earn
//! `Engine::transact` admits it (or refuses: overloaded) and sends it to the
//! shard that owns the enrollment. The shard activates the actor if needed
//! (snapshot + tail from RocksDB) and hands it the message. The actor checks the
//! idempotency key (in-flight keys in memory, older ones in RocksDB), calls
//! the pure `loyalty_engine::enrollment::decide`, encodes the events with an
//! idempotency record (and a snapshot every N versions) into one commit
//! group, queues it for the commit thread, applies the new state in memory
//! and goes on to its next message. The commit thread writes many groups in
//! one synced batch; when it returns, it tells each shard which versions
//! are durable, and the actors answer their callers.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod clock;
pub mod commit;
pub mod config;
pub mod engine;
mod enrollment_actor;
pub mod error;
mod runtime;
mod shard;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Durability, EngineConfig, Release};
pub use engine::Engine;
pub use error::EngineError;
pub use runtime::ProgramCache;
