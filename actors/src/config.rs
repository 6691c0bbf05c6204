//! [`EngineConfig`]: every knob and limit of the runtime, with defaults
//! that suit a laptop.

use std::time::Duration;

/// When an answer of success may be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After the write-ahead log is fsync'd. The default, and the contract.
    Fsync,
    /// After the write reaches the operating system, before the fsync: a
    /// machine crash can lose acknowledged transactions. Only when the
    /// operator asks for it by name; the engine says so at start-up.
    UnsafeNoFsync,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Arbiters (threads) that host enrollment actors. Default: one per core.
    pub shards: usize,
    /// An enrollment idle this long is snapshotted and dropped from memory.
    pub passivate_after: Duration,
    /// How often each shard looks for idle actors to passivate.
    pub tick_interval: Duration,
    /// A snapshot is written whenever an enrollment's version crosses a
    /// multiple of this many events.
    pub snapshot_every_events: u64,
    /// Commands admitted but not yet answered, engine-wide. Beyond it a
    /// command is refused as overloaded.
    pub inflight_max: usize,
    /// Commit groups waiting for the commit thread.
    pub commit_queue_max: usize,
    /// Events in one write batch (one fsync).
    pub commit_batch_events_max: usize,
    pub durability: Durability,
    /// Called on a shard's thread after its actors passivated, so the
    /// process allocator gives their memory back to the operating system
    /// now. Allocators such as mimalloc return freed pages lazily, on later
    /// allocations, which a quiet engine does not make. The `loyalty`
    /// binary sets this to mimalloc's collect, forced when the shard asks
    /// for a [`Release::thorough`] one. `None`: left to the allocator.
    pub release_memory: Option<fn(Release)>,
    /// Passivations since a shard's last thorough release from which the
    /// shard asks for another, at the end of its next quiet round (no
    /// command since the previous round ended, about a tick). A thorough
    /// release visits every page of the
    /// shard's thread (2-10 ms at a million active enrollments), so it
    /// waits for a mass passivation and for nobody to be served.
    pub thorough_release_passivations_min: u64,
}

/// What a shard asks of the allocator, on its own thread, at the end of a
/// passivation round (see [`EngineConfig::release_memory`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// Actors passivated in this round (each is counted in one call only).
    pub passivated: u64,
    /// Give back everything, however long it takes: the shard served no
    /// command since its previous round ended (about a tick), and at least
    /// [`EngineConfig::thorough_release_passivations_min`] actors
    /// passivated since its last thorough release. Otherwise only what is
    /// cheap to give back: the shard is serving commands, which wait for
    /// this call, and which allocate, so the allocator purges the rest on
    /// its own.
    pub thorough: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            passivate_after: Duration::from_secs(300),
            tick_interval: Duration::from_secs(5),
            snapshot_every_events: 64,
            inflight_max: 65_536,
            commit_queue_max: 65_536,
            commit_batch_events_max: 16_384,
            durability: Durability::Fsync,
            release_memory: None,
            thorough_release_passivations_min: 1_024,
        }
    }
}
