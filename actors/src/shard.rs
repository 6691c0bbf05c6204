//! A shard: one per arbiter (thread). It owns the directory of its active
//! enrollment actors, activates them on first use and lets idle ones go.
//!
//! Activation is virtual: the first message for an enrollment loads its
//! snapshot and the events after it, then starts its actor on this
//! shard's arbiter. Passivation is a handshake so no message is ever lost:
//! an idle actor asks to go, saying how many messages it has handled; the
//! shard agrees only if it has forwarded exactly that many, and forgets the
//! actor in the same step, so nothing more can reach it.

use crate::enrollment_actor::{Balance, EnrollmentActor, PassivateAnswer, Transact};
use crate::error::EngineError;
use crate::runtime::Runtime;
use actix::dev::SendError;
use actix::prelude::*;
use loyalty_engine::EnrollmentId;
use std::collections::HashMap;
use std::sync::Arc;

/// A message routed to one enrollment, which can be refused in place.
pub(crate) trait Routed: Message<Result = ()> + Send + 'static {
    fn enrollment_id(&self) -> EnrollmentId;
    fn refuse(self, err: EngineError);
}

impl Routed for Transact {
    fn enrollment_id(&self) -> EnrollmentId {
        self.enrollment_id
    }
    fn refuse(self, err: EngineError) {
        let _ = self.reply.send(Err(err));
    }
}

impl Routed for Balance {
    fn enrollment_id(&self) -> EnrollmentId {
        self.enrollment_id
    }
    fn refuse(self, err: EngineError) {
        let _ = self.reply.send(Err(err));
    }
}

/// An idle actor asking to be let go.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PassivateRequest {
    pub enrollment_id: EnrollmentId,
    pub handled: u64,
}

struct Entry {
    addr: Addr<EnrollmentActor>,
    /// Messages forwarded to the actor.
    forwarded: u64,
}

pub(crate) struct Shard {
    rt: Arc<Runtime>,
    actors: HashMap<EnrollmentId, Entry>,
}

impl Shard {
    pub(crate) fn new(rt: Arc<Runtime>) -> Self {
        Shard {
            rt,
            actors: HashMap::new(),
        }
    }

    fn activate(
        &mut self,
        id: EnrollmentId,
        ctx: &mut Context<Self>,
    ) -> Result<&mut Entry, EngineError> {
        if !self.actors.contains_key(&id) {
            let (state, snapshot_version) = self
                .rt
                .store
                .load_enrollment(id)?
                .ok_or(EngineError::NotFound { what: "enrollment" })?;
            let program = self.rt.programs.get(state.program_id).ok_or_else(|| {
                EngineError::Storage(format!(
                    "program {} of enrollment {id} is missing",
                    state.program_id
                ))
            })?;
            let actor = EnrollmentActor::new(
                self.rt.clone(),
                ctx.address(),
                program,
                state,
                snapshot_version,
            );
            // The mailbox bound is set before the address is handed out:
            // messages forwarded right after activation must not meet
            // actix's small default capacity.
            let mut actor_ctx = Context::new();
            actor_ctx.set_mailbox_capacity(self.rt.config.enrollment_mailbox_max);
            self.actors.insert(
                id,
                Entry {
                    addr: actor_ctx.run(actor),
                    forwarded: 0,
                },
            );
        }
        Ok(self.actors.get_mut(&id).expect("just inserted"))
    }

    fn route<M>(&mut self, msg: M, ctx: &mut Context<Self>)
    where
        M: Routed,
        EnrollmentActor: Handler<M>,
    {
        let entry = match self.activate(msg.enrollment_id(), ctx) {
            Ok(entry) => entry,
            Err(err) => return msg.refuse(err),
        };
        match entry.addr.try_send(msg) {
            Ok(()) => entry.forwarded += 1,
            Err(SendError::Full(msg)) => msg.refuse(EngineError::Overloaded),
            Err(SendError::Closed(msg)) => {
                // The actor is gone (it panicked): forget it so the next
                // message activates a fresh one from the log.
                let id = msg.enrollment_id();
                self.actors.remove(&id);
                msg.refuse(EngineError::Stopped(
                    "enrollment actor stopped; retry".into(),
                ))
            }
        }
    }
}

impl Actor for Shard {
    type Context = Context<Self>;
}

impl Handler<Transact> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Transact, ctx: &mut Self::Context) {
        self.route(msg, ctx);
    }
}

impl Handler<Balance> for Shard {
    type Result = ();
    fn handle(&mut self, msg: Balance, ctx: &mut Self::Context) {
        self.route(msg, ctx);
    }
}

impl Handler<PassivateRequest> for Shard {
    type Result = ();
    fn handle(&mut self, msg: PassivateRequest, _ctx: &mut Self::Context) {
        let Some(entry) = self.actors.get(&msg.enrollment_id) else {
            return;
        };
        let stop = entry.forwarded == msg.handled;
        // Control messages bypass the mailbox bound on purpose: the actor
        // must always learn the answer, or it would never ask again.
        entry.addr.do_send(PassivateAnswer { stop });
        if stop {
            self.actors.remove(&msg.enrollment_id);
        }
    }
}
