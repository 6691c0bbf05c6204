//! [`Engine`]: the handle the front doors hold. It admits a command (or
//! refuses it when the engine is saturated), routes it to the shard that
//! owns its enrollment, and awaits the answer, which arrives only after the
//! fsync that covers it.

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::commit::{self, CommitStats, Committer, RecentRecords};
use crate::config::{Durability, EngineConfig};
use crate::enrollment_actor::{Balance, Transact};
use crate::error::EngineError;
use crate::runtime::{ProgramCache, Runtime};
use crate::shard::{Shard, TransactMany};
use actix::prelude::*;
use loyalty_engine::enrollment::{BalanceView, Request};
use loyalty_engine::idempotency::IdempotencyKey;
use loyalty_engine::program::Program;
use loyalty_engine::{BusinessId, EnrollmentId};
use loyalty_persistence::keys::catalog::PROGRAM_PREFIX;
use loyalty_persistence::{RecoveryReport, Store, StoredAnswer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use tracing::{info, warn};

pub struct Engine {
    rt: Arc<Runtime>,
    shards: Vec<Addr<Shard>>,
    arbiters: Vec<Arbiter>,
    commit_thread: Option<JoinHandle<()>>,
    /// Commands admitted and not yet answered.
    inflight: Arc<AtomicUsize>,
    pub catalog: Catalog,
}

/// A shard's mailbox full is overload; a shard gone is a stopped engine.
fn shard_refused<M>(err: &actix::dev::SendError<M>) -> EngineError {
    match err {
        actix::dev::SendError::Full(_) => EngineError::Overloaded,
        actix::dev::SendError::Closed(_) => {
            EngineError::Stopped("an actor thread has stopped".into())
        }
    }
}

/// Names the calling thread, as `ps -L`, `top -H` and profilers show it.
/// actix names every arbiter `actix-rt|system:…`, so the shards would be
/// indistinguishable from the HTTP workers; the load tests' per-thread
/// CPU figures need them apart. The kernel keeps 15 bytes of a name, so
/// `loyalty-sh-` leaves room for four digits of a shard's number. Best
/// effort: a platform without the file keeps the old name.
fn name_this_thread(name: &str) {
    #[cfg(target_os = "linux")]
    if let Err(err) = std::fs::write("/proc/thread-self/comm", name) {
        warn!(name, cause = %err, "cannot name the thread");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// An answer channel dropped unanswered: whoever held it (the commit
/// thread or an actor's shard) stopped before it could answer.
fn unanswered(_: oneshot::error::RecvError) -> EngineError {
    EngineError::Stopped("the engine stopped before answering".into())
}

/// Holds units of the engine's in-flight budget until dropped.
struct Admission(Arc<AtomicUsize>, usize);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

impl Engine {
    /// Starts the commit thread and one shard per configured arbiter. Must
    /// be called inside a running actix `System` (as `actix_web::main` or
    /// `actix_rt::test` provide).
    pub fn start(
        store: Store,
        recovered: &RecoveryReport,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, EngineError> {
        Self::start_with_writer(store, recovered, config, clock, commit::store_writer())
    }

    /// [`Engine::start`] with another batch writer (fault-injection tests).
    pub fn start_with_writer(
        store: Store,
        recovered: &RecoveryReport,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        writer: commit::BatchWriter,
    ) -> Result<Engine, EngineError> {
        if config.durability == Durability::UnsafeNoFsync {
            warn!("durability is UNSAFE-NO-FSYNC: answers are given before the fsync; a machine crash can lose acknowledged transactions");
        }
        let programs = ProgramCache::default();
        for program in store.catalog_scan::<Program>(&[PROGRAM_PREFIX])? {
            programs.insert(program);
        }
        let (committer, commit_thread) = Committer::start(
            store.clone(),
            recovered.next_sequence,
            config.commit_queue_max,
            config.commit_batch_events_max,
            config.durability,
            writer,
        );
        let rt = Arc::new(Runtime {
            store,
            committer,
            clock,
            programs,
            config: config.clone(),
            active_enrollments: AtomicU64::new(0),
            passivation_slices: AtomicU64::new(0),
        });
        let mut arbiters = Vec::new();
        let mut shards = Vec::new();
        for index in 0..config.shards.max(1) {
            let arbiter = Arbiter::new();
            let shard_rt = rt.clone();
            // The shard's mailbox is created here with its bound, so the
            // address never refuses early at actix's default capacity.
            // Commands are bounded by the in-flight budget before they
            // reach it; the rest is room for the commit thread's
            // durability notices, which the mailbox counts too: a caller
            // is answered (and its place in the budget freed) before its
            // shard reads the notice, so at the budget's limit unread
            // notices must not make a command look like overload.
            let mailbox = config.inflight_max.max(1) + config.commit_queue_max.max(1);
            let (tx, rx) = actix::dev::channel::channel::<Shard>(mailbox);
            arbiter.spawn_fn(move || {
                name_this_thread(&format!("loyalty-sh-{index}"));
                Context::with_receiver(rx).run(Shard::new(shard_rt, index));
            });
            shards.push(Addr::new(tx));
            arbiters.push(arbiter);
        }
        if rt.committer.shards.set(shards.clone()).is_err() {
            unreachable!("the shards are set once, here");
        }
        info!(
            shards = shards.len(),
            next_sequence = recovered.next_sequence,
            "engine started"
        );
        Ok(Engine {
            catalog: Catalog::new(rt.clone()),
            rt,
            shards,
            arbiters,
            commit_thread: Some(commit_thread),
            inflight: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn admit(&self) -> Result<Admission, EngineError> {
        self.admit_many(1)
    }

    /// Admits `n` commands together, or none of them.
    fn admit_many(&self, n: usize) -> Result<Admission, EngineError> {
        if self.rt.committer.has_failed() {
            return Err(EngineError::Stopped(
                "a write failed; the engine has stopped".into(),
            ));
        }
        let before = self.inflight.fetch_add(n, Ordering::AcqRel);
        let admission = Admission(self.inflight.clone(), n);
        if before + n > self.rt.config.inflight_max {
            return Err(EngineError::Overloaded);
        }
        Ok(admission)
    }

    /// The shard (of [`EngineConfig::shards`]) that hosts `id`.
    pub fn shard_index(&self, id: EnrollmentId) -> usize {
        // UUIDv7's low bits are random, so they spread enrollments evenly.
        let low = u64::from_le_bytes(id.as_bytes()[8..16].try_into().expect("8 bytes"));
        (low % self.shards.len() as u64) as usize
    }

    fn shard(&self, id: EnrollmentId) -> &Addr<Shard> {
        &self.shards[self.shard_index(id)]
    }

    /// Earn, redeem or reverse on one enrollment. Answers once durable.
    pub async fn transact(
        &self,
        business_id: BusinessId,
        enrollment_id: EnrollmentId,
        key: IdempotencyKey,
        request: Request,
    ) -> Result<StoredAnswer, EngineError> {
        let _admission = self.admit()?;
        let (reply, answer) = oneshot::channel();
        let msg = Transact {
            business_id,
            enrollment_id,
            key,
            request,
            reply,
        };
        self.shard(enrollment_id)
            .try_send(msg)
            .map_err(|err| shard_refused(&err))?;
        answer.await.map_err(unanswered)?
    }

    /// Many independent commands of one business (the batch door): each
    /// with its own idempotency key and its own answer, in the order given.
    /// They travel as one message per shard, and their events share the
    /// commit thread's batches. The batch is admitted whole or refused
    /// whole as overloaded.
    pub async fn transact_many(
        &self,
        business_id: BusinessId,
        commands: Vec<(EnrollmentId, IdempotencyKey, Request)>,
    ) -> Vec<Result<StoredAnswer, EngineError>> {
        let n = commands.len();
        let _admission = match self.admit_many(n) {
            Ok(admission) => admission,
            Err(err) => return (0..n).map(|_| Err(err.clone())).collect(),
        };
        let mut per_shard: Vec<Vec<Transact>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        let mut answers = Vec::with_capacity(n);
        for (enrollment_id, key, request) in commands {
            let (reply, answer) = oneshot::channel();
            per_shard[self.shard_index(enrollment_id)].push(Transact {
                business_id,
                enrollment_id,
                key,
                request,
                reply,
            });
            answers.push(answer);
        }
        for (shard, commands) in self.shards.iter().zip(per_shard) {
            if commands.is_empty() {
                continue;
            }
            if let Err(err) = shard.try_send(TransactMany(commands)) {
                let refusal = shard_refused(&err);
                for command in err.into_inner().0 {
                    let _ = command.reply.send(Err(refusal.clone()));
                }
            }
        }
        let mut results = Vec::with_capacity(n);
        for answer in answers {
            results.push(answer.await.unwrap_or_else(|err| Err(unanswered(err))));
        }
        results
    }

    /// The balance as of the newest durable version.
    pub async fn balance(
        &self,
        business_id: BusinessId,
        enrollment_id: EnrollmentId,
    ) -> Result<BalanceView, EngineError> {
        let _admission = self.admit()?;
        let (reply, view) = oneshot::channel();
        let msg = Balance {
            business_id,
            enrollment_id,
            reply,
        };
        self.shard(enrollment_id)
            .try_send(msg)
            .map_err(|err| shard_refused(&err))?;
        view.await.map_err(unanswered)?
    }

    pub fn store(&self) -> &Store {
        &self.rt.store
    }

    pub fn commit_stats(&self) -> &CommitStats {
        &self.rt.committer.stats
    }

    /// The newest durable log records, for the event publisher (see
    /// [`RecentRecords`]).
    pub fn recent_records(&self) -> &RecentRecords {
        &self.rt.committer.recent
    }

    /// The most commands admitted and not yet answered at once
    /// ([`EngineConfig::inflight_max`]); front doors bound their own queues
    /// by it.
    pub fn inflight_max(&self) -> usize {
        self.rt.config.inflight_max
    }

    /// Enrollment actors in memory now.
    pub fn active_enrollments(&self) -> u64 {
        self.rt.active_enrollments.load(Ordering::Relaxed)
    }

    /// Passivation slices that settled, snapshotted or dropped at least one
    /// actor since the start, over all shards: a wave of idle actors is
    /// passivated a bounded slice at a time (see the shard's module doc).
    pub fn passivation_slices(&self) -> u64 {
        self.rt.passivation_slices.load(Ordering::Relaxed)
    }

    /// Whether a write failed, so the process must stop.
    pub fn has_failed(&self) -> bool {
        self.rt.committer.has_failed() || self.rt.store.has_failed()
    }

    /// Stops the shards, lets the commit thread write what is queued, and
    /// waits for it. Call after the front doors stopped taking requests.
    pub fn shutdown(mut self) {
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
            let _ = arbiter.join();
        }
        self.shards.clear();
        let commit_thread = self.commit_thread.take();
        drop(self);
        if let Some(thread) = commit_thread {
            let _ = thread.join();
        }
    }
}
