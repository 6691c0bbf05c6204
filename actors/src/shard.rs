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
//!
//! A tick starts a passivation *round* over the actors idle at its start,
//! done in slices of a bounded number of actors: between two slices the
//! shard answers the commands that arrived meanwhile, so a wave of
//! thousands of idle actors delays a command by one slice, not by the
//! wave. At the end of a round the shard asks the allocator to give the
//! freed memory back ([`Release`]): thoroughly only when no command came
//! since its previous round and many actors passivated, since that holds
//! its thread for milliseconds.

use crate::commit::DurableVersions;
use crate::config::Release;
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
    /// The passivation round under way, if a slice of it is still to run.
    round: Option<Round>,
    /// Whether a command came since the last round ended: if none did, the
    /// shard was quiet since then (about a tick, less after a round that
    /// ran long).
    served_since_round: bool,
    /// Actors passivated since the last thorough release.
    passivated_since_thorough: u64,
}

/// One tick's pass over the actors that were idle when it started.
#[derive(Clone, Copy)]
struct Round {
    started: Instant,
    passivated: u64,
}

/// Idle actors one slice settles, snapshots or drops: about a millisecond
/// of the shard's thread (a snapshot is encoded in about 2.5 µs). It also
/// bounds the snapshots a slice adds to one commit batch.
const PASSIVATION_STEPS_PER_SLICE: usize = 256;

/// Entries one slice looks at, counting those of busy actors that are
/// only put back with their new deadline (cheap, but without bound when
/// many busy actors reach their first deadline at once).
const DEADLINES_PER_SLICE: usize = 8_192;

/// Sent by a shard to itself when the round is not finished. It becomes an
/// item of the shard's own context, which actix runs only once the
/// mailbox is empty, so the commands that arrived meanwhile go first.
#[derive(Message)]
#[rtype(result = "()")]
struct PassivateMore;

impl Shard {
    pub(crate) fn new(rt: Arc<Runtime>, index: usize) -> Self {
        Shard {
            rt,
            index,
            actors: HashMap::new(),
            idle_deadlines: VecDeque::new(),
            round: None,
            served_since_round: false,
            passivated_since_thorough: 0,
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

    /// Starts a passivation round, unless one is still under way.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.round.is_none() {
            self.round = Some(Round {
                started: Instant::now(),
                passivated: 0,
            });
            self.passivate_slice(ctx);
        }
    }

    /// Lets idle actors go, one slice of the round: each one idle for
    /// `passivate_after` settles what is due and writes a snapshot, then is
    /// dropped once all of it is durable (at a later round). Only actors
    /// whose idle deadline had passed at the round's start are looked at,
    /// so a round costs nothing per busy actor, however many are active.
    /// Asks for another slice while due ones remain.
    fn passivate_slice(&mut self, ctx: &mut Context<Self>) {
        let Some(mut round) = self.round else {
            return;
        };
        let rt = self.rt.clone();
        let idle_after = rt.config.passivate_after;
        let now = round.started;
        let mut again = Vec::new();
        let (mut steps, mut looked) = (0usize, 0usize);
        let mut more = false;
        while let Some(&(deadline, id)) = self.idle_deadlines.front() {
            if deadline > now {
                break;
            }
            if steps >= PASSIVATION_STEPS_PER_SLICE || looked >= DEADLINES_PER_SLICE {
                more = true;
                break;
            }
            looked += 1;
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
                    round.passivated += 1;
                    rt.active_enrollments.fetch_sub(1, Ordering::Relaxed);
                }
                IdleStep::Stay => again.push((now + rt.config.tick_interval, id)),
            }
        }
        // Re-queued deadlines are not in order with the rest; an actor may
        // stay up to one `passivate_after` longer than asked, never less.
        // They are later than the round's start, so this round does not
        // see them again.
        self.idle_deadlines.extend(again);
        if steps > 0 {
            rt.passivation_slices.fetch_add(1, Ordering::Relaxed);
        }
        if more {
            self.round = Some(round);
            ctx.notify(PassivateMore);
        } else {
            self.round = None;
            self.end_round(round.passivated);
        }
    }

    /// After the last slice of a round: gives memory back.
    fn end_round(&mut self, passivated: u64) {
        // A directory that emptied gives its memory back: passivated
        // enrollments cost nothing.
        if self.actors.capacity() > 4 * self.actors.len() + 1024 {
            self.actors.shrink_to(2 * self.actors.len());
        }
        if self.idle_deadlines.capacity() > 4 * self.idle_deadlines.len() + 1024 {
            self.idle_deadlines.shrink_to(2 * self.idle_deadlines.len());
        }
        let quiet = !std::mem::take(&mut self.served_since_round);
        self.passivated_since_thorough += passivated;
        let release = release_after_round(
            passivated,
            self.passivated_since_thorough,
            quiet,
            self.rt.config.thorough_release_passivations_min,
        );
        if let Some(release) = release {
            if release.thorough {
                self.passivated_since_thorough = 0;
            }
            if let Some(hook) = self.rt.config.release_memory {
                hook(release);
            }
        }
    }

    /// Notes a command (or a batch of them) for [`Self::end_round`]'s quiet
    /// test.
    fn note_served(&mut self) {
        self.served_since_round = true;
    }
}

/// What to ask of the allocator at the end of a round that passivated
/// `passivated` actors, `since_thorough` of them (this round's included)
/// since the last thorough release: nothing if nothing is to be given
/// back; a thorough release if the shard was `quiet` since the previous
/// round ended and enough are owed; else a cheap one.
fn release_after_round(
    passivated: u64,
    since_thorough: u64,
    quiet: bool,
    thorough_min: u64,
) -> Option<Release> {
    let thorough = quiet && since_thorough >= thorough_min.max(1);
    (thorough || passivated > 0).then_some(Release {
        passivated,
        thorough,
    })
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.rt.config.tick_interval, |shard, ctx| shard.tick(ctx));
    }
}

impl Handler<Transact> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Transact, _ctx: &mut Self::Context) {
        self.note_served();
        self.transact(msg);
    }
}

impl Handler<TransactMany> for Shard {
    type Result = ();
    fn handle(&mut self, msg: TransactMany, _ctx: &mut Self::Context) {
        self.note_served();
        for one in msg.0 {
            self.transact(one);
        }
    }
}

impl Handler<PassivateMore> for Shard {
    type Result = ();
    fn handle(&mut self, _msg: PassivateMore, ctx: &mut Self::Context) {
        self.passivate_slice(ctx);
    }
}

impl Handler<DurableVersions> for Shard {
    type Result = ();
    fn handle(&mut self, msg: DurableVersions, _ctx: &mut Self::Context) {
        let DurableVersions {
            result,
            versions,
            spent,
        } = msg;
        for (id, version) in versions {
            // An actor is dropped only with nothing in flight, so it is here.
            if let Some(actor) = self.actors.get_mut(&id) {
                actor.on_durable(version, result.clone());
            }
        }
        // On this thread, where the groups' buffers were allocated.
        drop(spent);
    }
}

impl Handler<Balance> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Balance, _ctx: &mut Self::Context) {
        self.note_served();
        let index = self.index;
        match self.activate(msg.enrollment_id) {
            Ok((actor, rt)) => actor.balance(msg, rt, index),
            Err(err) => drop(msg.reply.send(Err(err))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(passivated: u64, thorough: bool) -> Option<Release> {
        Some(Release {
            passivated,
            thorough,
        })
    }

    #[test]
    fn a_busy_shard_only_ever_gets_cheap_releases() {
        assert_eq!(
            release_after_round(5_000, 5_000, false, 1_024),
            release(5_000, false)
        );
        assert_eq!(
            release_after_round(1, 90_000, false, 1_024),
            release(1, false)
        );
        // Nothing passivated, busy: nothing to ask.
        assert_eq!(release_after_round(0, 90_000, false, 1_024), None);
    }

    #[test]
    fn a_quiet_shard_releases_thoroughly_what_is_owed_from_the_threshold() {
        assert_eq!(
            release_after_round(1_024, 1_024, true, 1_024),
            release(1_024, true)
        );
        // Owed from earlier, busy rounds; this quiet one passivated none.
        assert_eq!(release_after_round(0, 3_000, true, 1_024), release(0, true));
        // Below the threshold: a cheap release for what this round freed.
        assert_eq!(
            release_after_round(10, 1_023, true, 1_024),
            release(10, false)
        );
        assert_eq!(release_after_round(0, 0, true, 1_024), None);
        // A threshold of zero means one passivation, not none.
        assert_eq!(release_after_round(0, 0, true, 0), None);
    }
}
