//! A shard: one actix actor per arbiter (thread). It hosts the enrollment
//! actors of its share of enrollments: a directory from enrollment id to
//! [`EnrollmentActor`], each handed its messages in arrival order on this
//! thread.
//!
//! Activation is virtual: the first message for an enrollment loads its
//! snapshot and the events after it. Passivation needs no handshake: on
//! each tick the shard asks every actor idle for `passivate_after` to
//! settle what the clock made due and write a snapshot, and drops it once
//! nothing of it is in flight; the next message for it activates it again
//! from disk, which then holds everything it had. (An active, busy actor
//! settles due points on its next command or query, as `decide` always
//! settles first.)

use crate::commit::DurableVersions;
use crate::enrollment_actor::{Balance, EnrollmentActor, IdleStep, Transact};
use crate::error::EngineError;
use crate::runtime::Runtime;
use actix::prelude::*;
use loyalty_engine::EnrollmentId;
use loyalty_persistence::LoadedEnrollment;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Many commands for enrollments of one shard, in one message (the batch
/// door): one mailbox slot and one wake-up instead of one per command.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TransactMany(pub Vec<Transact>);

pub(crate) struct Shard {
    rt: Arc<Runtime>,
    /// This shard's place in the engine's list: how the commit thread
    /// finds it again.
    index: usize,
    /// Boxed so the directory's slots stay small: a map grows to twice its
    /// length, and an unboxed slot would waste an actor's size per spare.
    actors: HashMap<EnrollmentId, Box<EnrollmentActor>>,
    /// One entry per active actor: when it may next be idle long enough
    /// to passivate, roughly oldest first.
    idle_deadlines: VecDeque<(Instant, EnrollmentId)>,
}

/// Most idle actors one tick settles, snapshots or drops: bounds how long
/// a tick holds the shard's thread when very many go idle at once.
const PASSIVATIONS_PER_TICK_MAX: usize = 8_192;

impl Shard {
    pub(crate) fn new(rt: Arc<Runtime>, index: usize) -> Self {
        Shard {
            rt,
            index,
            actors: HashMap::new(),
            idle_deadlines: VecDeque::new(),
        }
    }

    /// The actor of `id`, activated if needed, beside the runtime it works
    /// with (borrowed apart from the directory, so the hot path need not
    /// clone the shared `Arc`: its count would bounce between the shards'
    /// cores on every command).
    fn activate(
        &mut self,
        id: EnrollmentId,
    ) -> Result<(&mut EnrollmentActor, &Runtime), EngineError> {
        if !self.actors.contains_key(&id) {
            let LoadedEnrollment {
                state,
                snapshot_version,
                keys,
            } = self
                .rt
                .store
                .load_enrollment(id)?
                .ok_or(EngineError::NotFound { what: "enrollment" })?;
            // `keys`: the snapshot's key digests if they cover everything;
            // otherwise the first transaction reads them (a balance query
            // never needs them).
            let program = self.rt.programs.get(state.program_id).ok_or_else(|| {
                EngineError::Storage(format!(
                    "program {} of enrollment {id} is missing",
                    state.program_id
                ))
            })?;
            self.actors.insert(
                id,
                Box::new(EnrollmentActor::new(program, state, snapshot_version, keys)),
            );
            self.idle_deadlines
                .push_back((Instant::now() + self.rt.config.passivate_after, id));
            self.rt.active_enrollments.fetch_add(1, Ordering::Relaxed);
        }
        Ok((self.actors.get_mut(&id).expect("just inserted"), &self.rt))
    }

    fn transact(&mut self, msg: Transact) {
        let index = self.index;
        match self.activate(msg.enrollment_id) {
            Ok((actor, rt)) => actor.transact(msg, rt, index),
            Err(err) => drop(msg.reply.send(Err(err))),
        }
    }

    /// Lets idle actors go: each one idle for `passivate_after` settles
    /// what is due and writes a snapshot, then is dropped once all of it is
    /// durable. Only actors whose idle deadline has passed are looked at,
    /// so a tick costs nothing per busy actor, however many are active.
    fn tick(&mut self) {
        let rt = self.rt.clone();
        let idle_after = rt.config.passivate_after;
        let now = Instant::now();
        let mut again = Vec::new();
        let mut gone = 0u64;
        let mut steps = 0usize;
        while let Some(&(deadline, id)) = self.idle_deadlines.front() {
            if deadline > now || steps >= PASSIVATIONS_PER_TICK_MAX {
                break;
            }
            self.idle_deadlines.pop_front();
            let Some(actor) = self.actors.get_mut(&id) else {
                continue;
            };
            let idle_at = actor.last_used + idle_after;
            if idle_at > now {
                again.push((idle_at, id));
                continue;
            }
            steps += 1;
            match actor.idle_step(&rt, self.index) {
                IdleStep::Passivate => {
                    self.actors.remove(&id);
                    gone += 1;
                }
                IdleStep::Stay => again.push((now + rt.config.tick_interval, id)),
            }
        }
        // Re-queued deadlines are not in order with the rest; an actor may
        // stay up to one `passivate_after` longer than asked, never less.
        self.idle_deadlines.extend(again);
        rt.active_enrollments.fetch_sub(gone, Ordering::Relaxed);
        // A directory that emptied gives its memory back: passivated
        // enrollments cost nothing.
        if self.actors.capacity() > 4 * self.actors.len() + 1024 {
            self.actors.shrink_to(2 * self.actors.len());
        }
        if self.idle_deadlines.capacity() > 4 * self.idle_deadlines.len() + 1024 {
            self.idle_deadlines.shrink_to(2 * self.idle_deadlines.len());
        }
        if gone > 0 {
            if let Some(release) = rt.config.release_memory {
                release(gone);
            }
        }
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.rt.config.tick_interval, |shard, _ctx| shard.tick());
    }
}

impl Handler<Transact> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Transact, _ctx: &mut Self::Context) {
        self.transact(msg);
    }
}

impl Handler<TransactMany> for Shard {
    type Result = ();
    fn handle(&mut self, msg: TransactMany, _ctx: &mut Self::Context) {
        for one in msg.0 {
            self.transact(one);
        }
    }
}

impl Handler<DurableVersions> for Shard {
    type Result = ();
    fn handle(&mut self, msg: DurableVersions, _ctx: &mut Self::Context) {
        for (id, version) in msg.versions {
            // An actor is dropped only with nothing in flight, so it is here.
            if let Some(actor) = self.actors.get_mut(&id) {
                actor.on_durable(version, msg.result.clone());
            }
        }
    }
}

impl Handler<Balance> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Balance, _ctx: &mut Self::Context) {
        let index = self.index;
        match self.activate(msg.enrollment_id) {
            Ok((actor, rt)) => actor.balance(msg, rt, index),
            Err(err) => drop(msg.reply.send(Err(err))),
        }
    }
}
