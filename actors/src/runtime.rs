//! What every shard and actor shares: the store, the commit thread, the
//! clock, the program cache and the configuration.

use crate::clock::Clock;
use crate::commit::Committer;
use crate::config::EngineConfig;
use loyalty_engine::program::Program;
use loyalty_engine::ProgramId;
use loyalty_persistence::Store;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

/// Every program, by id. Programs are few and read on every activation;
/// they change only through the catalog, which writes here after the
/// change is durable.
#[derive(Clone, Default)]
pub struct ProgramCache(Arc<RwLock<HashMap<ProgramId, Arc<Program>>>>);

impl ProgramCache {
    pub fn get(&self, id: ProgramId) -> Option<Arc<Program>> {
        self.0
            .read()
            .expect("program cache lock is never poisoned")
            .get(&id)
            .cloned()
    }

    pub fn insert(&self, program: Program) {
        self.0
            .write()
            .expect("program cache lock is never poisoned")
            .insert(program.program_id, Arc::new(program));
    }
}

pub(crate) struct Runtime {
    pub store: Store,
    pub committer: Committer,
    pub clock: Arc<dyn Clock>,
    pub programs: ProgramCache,
    pub config: EngineConfig,
    /// Enrollment actors in memory right now.
    pub active_enrollments: AtomicU64,
    /// Passivation slices that settled, snapshotted or dropped at least
    /// one actor, over all shards.
    pub passivation_slices: AtomicU64,
}
