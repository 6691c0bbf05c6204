//! The enrollment actor: owns one enrollment's state, decides its commands
//! one at a time, and answers each only once its events are durable.
//!
//! It is a *hosted* actor: it has no mailbox or task of its own. Its shard
//! (one actix actor per arbiter thread) owns it and hands it each message
//! for its enrollment in arrival order, on the shard's thread, so the state
//! is still owned by one thread and changed without locks. Hosting saves
//! the ~1.5 KiB an actix actor costs (task, context, mailbox, timer) per
//! active enrollment, and a thread hop per command; see ADR 0003.
//!
//! The state is changed in memory as soon as a decision is queued for
//! commit, so the next command is decided without waiting for the disk;
//! answers still wait for the fsync that covers them. Queries answer from
//! the newest *durable* version, never from state a crash could take back.

use crate::commit::{AnswerReply, DirectAnswer, Reservation};
use crate::error::EngineError;
use crate::runtime::Runtime;
use actix::prelude::*;
use loyalty_engine::enrollment::{
    self, settle, Applied, BalanceView, Enrollment, EnrollmentEvent, Request,
};
use loyalty_engine::idempotency::{self, IdempotencyKey};
use loyalty_engine::program::Program;
use loyalty_engine::{BusinessId, DomainEvent, EnrollmentId, EventId, Timestamp, TransactionId};
use loyalty_persistence::{
    CommitGroup, IdempotencyRecord, KeyDigests, LogRecord, Put, Store, StoreError, StoredAnswer,
    KEY_DIGESTS_MAX,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use uuid::Uuid;

pub(crate) type ViewReply = oneshot::Sender<Result<BalanceView, EngineError>>;

/// Earn, redeem or reverse, with its idempotency key.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Transact {
    pub business_id: BusinessId,
    pub enrollment_id: EnrollmentId,
    pub key: IdempotencyKey,
    pub request: Request,
    pub reply: AnswerReply,
}

/// The balance and tier, as of the newest durable version.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Balance {
    pub business_id: BusinessId,
    pub enrollment_id: EnrollmentId,
    pub reply: ViewReply,
}

/// Someone waiting for a version to become durable.
enum Waiter {
    /// A retry of a key whose first transaction is still in flight (the
    /// first caller is answered by the commit thread).
    Answer(StoredAnswer, AnswerReply),
    /// A refusal decided against state that was not durable yet: it is sent
    /// only once that state is, so no caller is told something a crash
    /// could take back.
    Refusal(EngineError, AnswerReply),
    View(ViewReply),
}

impl Waiter {
    /// Answers, now that the version with `figures` is durable.
    fn resolve(self, figures: &Figures, state: &Enrollment) {
        // A caller that stopped waiting is not an error.
        match self {
            Waiter::Answer(answer, reply) => drop(reply.send(Ok(answer))),
            Waiter::Refusal(err, reply) => drop(reply.send(Err(err))),
            Waiter::View(reply) => drop(reply.send(Ok(figures.view(state)))),
        }
    }

    fn fail(self, err: EngineError) {
        match self {
            Waiter::Answer(_, reply) | Waiter::Refusal(_, reply) => drop(reply.send(Err(err))),
            Waiter::View(reply) => drop(reply.send(Err(err))),
        }
    }
}

/// What a balance query answers of one version, less the ids the state
/// holds anyway: keeping whole views cost 64 bytes of ids per active
/// enrollment, and per version in flight.
#[derive(Clone, Debug)]
struct Figures {
    version: u64,
    balance: i64,
    pending: i64,
    lifetime_points: i64,
    tier: Option<Arc<str>>,
}

impl Figures {
    fn of(state: &Enrollment) -> Self {
        Figures {
            version: state.version,
            balance: state.points_available,
            pending: state.points_pending,
            lifetime_points: state.points_lifetime,
            tier: state.tier.clone(),
        }
    }

    /// The view these figures are of; the ids never change.
    fn view(&self, state: &Enrollment) -> BalanceView {
        BalanceView {
            enrollment_id: state.enrollment_id,
            business_id: state.business_id,
            customer_id: state.customer_id,
            program_id: state.program_id,
            balance: self.balance,
            pending: self.pending,
            lifetime_points: self.lifetime_points,
            tier: self.tier.as_deref().map(str::to_owned),
            version: self.version,
        }
    }
}

/// A version applied in memory, waiting for its fsync.
struct InflightVersion {
    figures: Figures,
    waiters: Vec<Waiter>,
}

/// What a transaction that gives the key digests up copies to
/// `idempotency`: the puts, and the records copied from `answers`, found in
/// `inflight_keys` until the puts are durable.
struct Copies {
    puts: Vec<Put>,
    records: Vec<(IdempotencyKey, IdempotencyRecord)>,
}

/// An idempotency key whose record is not durable yet, so not yet readable
/// from the store (or, while the digests' give-up is in flight, whose copy
/// to `idempotency` is not).
struct InflightKey {
    /// Compared first: a search compares a number per entry, not a string.
    digest: u32,
    key: IdempotencyKey,
    request: Request,
    answer: StoredAnswer,
    /// When its record was stamped (copied with it if the digests give up).
    recorded_at: Timestamp,
    version: u64,
}

pub(crate) struct EnrollmentActor {
    program: Arc<Program>,
    /// The newest state, including versions not yet durable.
    state: Enrollment,
    /// The newest durable version's figures: what queries answer.
    durable: Figures,
    /// Versions applied but not yet durable, oldest first. Empty (and
    /// holding no allocation) whenever the actor is idle.
    inflight: VecDeque<InflightVersion>,
    /// Keys of versions in flight, oldest first. Searched only for a key
    /// whose digest is known (a repeat, or any key of an enrollment past
    /// the digests' bound), so a list: it holds a handful of keys at most
    /// moments, and costs 24 bytes per actor, not a map's 48. (Once per
    /// give-up past the bound it also holds the copied records until their
    /// copies are durable.)
    inflight_keys: Vec<InflightKey>,
    /// Digests of every idempotency key with a record or in flight (within
    /// the store's retention): a key not in here is new without asking the
    /// store. `None` until the first transaction needs them, when the
    /// snapshot did not bring them (they are then read from the store once;
    /// again a retention after they gave up past their bound).
    keys: Option<KeyDigests>,
    /// Whether the newest snapshot, durable or queued, carries `keys`. If
    /// not, passivation writes one that does, so the next activation need
    /// not read them.
    snapshot_has_keys: bool,
    /// Version of the newest durable snapshot (0: none).
    snapshot_version: u64,
    /// A snapshot queued for commit but not durable yet.
    snapshot_queued: Option<u64>,
    /// When the actor last handled a message: the shard lets it go after
    /// `passivate_after` of this.
    pub(crate) last_used: Instant,
    /// Set when a commit failed: this actor's memory is ahead of the disk
    /// and it must never answer again.
    broken: Option<Box<EngineError>>,
}

/// What an idle actor asked of its shard on a tick.
pub(crate) enum IdleStep {
    /// Still busy, or a snapshot was just queued: ask again next tick.
    Stay,
    /// Everything is durable and snapshotted: drop it from memory.
    Passivate,
}

impl EnrollmentActor {
    /// `keys`, if given (from the snapshot), must cover every idempotency
    /// key of the enrollment whose record the store still keeps by its
    /// retention.
    pub(crate) fn new(
        program: Arc<Program>,
        state: Enrollment,
        snapshot_version: u64,
        keys: Option<KeyDigests>,
    ) -> Self {
        let durable = Figures::of(&state);
        EnrollmentActor {
            program,
            state,
            durable,
            inflight: VecDeque::new(),
            inflight_keys: Vec::new(),
            snapshot_has_keys: keys.is_some(),
            keys,
            snapshot_version,
            snapshot_queued: None,
            last_used: Instant::now(),
            broken: None,
        }
    }

    fn id(&self) -> EnrollmentId {
        self.state.enrollment_id
    }

    /// Turns a decision's events into log records with fresh event ids;
    /// the first event gets version `first_version`.
    fn records(
        &self,
        events: Vec<EnrollmentEvent>,
        first_version: u64,
        now: Timestamp,
    ) -> Vec<LogRecord> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| LogRecord {
                aggregate_id: self.id().0,
                version: first_version + i as u64,
                event_id: EventId(Uuid::now_v7()),
                business_id: self.state.business_id,
                recorded_at: now,
                event: DomainEvent::Enrollment(event),
            })
            .collect()
    }

    /// Queues for commit the records of a decision already applied to
    /// `state` (which was at `before` until then), with a snapshot if the
    /// decision crossed a snapshot boundary, and notes the new version as
    /// in flight. `answer`, the decision's answer and its caller, goes
    /// with the group: the commit thread sends it once the group is
    /// durable.
    ///
    /// The state is already ahead of the disk here, so a failure (the
    /// engine stopped, or a record that would not encode) breaks the actor:
    /// it never answers again rather than answer from state the disk may
    /// never have, and `answer`'s caller is sent the error. Overload cannot
    /// happen here: the caller reserved its place in the queue before
    /// deciding.
    #[allow(clippy::too_many_arguments)]
    fn commit_applied(
        &mut self,
        rt: &Runtime,
        place: Reservation<'_>,
        before: u64,
        records: Vec<LogRecord>,
        event_answer: Option<(usize, Vec<u8>)>,
        mut puts: Vec<Put>,
        shard: usize,
        mut answer: Option<DirectAnswer>,
    ) -> Result<u64, EngineError> {
        let version = self.state.version;
        let queued = (|| {
            let every = rt.config.snapshot_every_events.max(1);
            let snapshot = version / every != before / every;
            if snapshot {
                puts.push(self.snapshot_put()?);
            }
            let mut events = records
                .iter()
                .map(Store::encode_event)
                .collect::<Result<Vec<_>, _>>()?;
            if let Some((index, value)) = event_answer {
                events[index].answer = Some(value);
            }
            // On failure `submit_for_shard` tells `answer`'s caller itself.
            let group = CommitGroup { events, puts };
            place.submit_for_shard(group, records, shard, self.id(), version, answer.take())?;
            Ok::<_, EngineError>(snapshot)
        })();
        match queued {
            Ok(snapshot) => {
                if snapshot {
                    self.note_snapshot_queued(version);
                }
                self.note_in_flight();
                Ok(version)
            }
            Err(err) => {
                self.stop_answering(&err);
                if let Some((_, reply)) = answer {
                    let _ = reply.send(Err(err.clone()));
                }
                Err(err)
            }
        }
    }

    /// A snapshot of the current state, with the key digests if they have
    /// been read.
    fn snapshot_put(&self) -> Result<Put, StoreError> {
        Store::snapshot_put(&self.state, self.keys_for_snapshot())
    }

    /// The key digests a snapshot may carry: not digests given up on whose
    /// records in `answers` are not yet queued to be copied, as a snapshot
    /// cannot say so (activation reads the keys from the store instead).
    fn keys_for_snapshot(&self) -> Option<&KeyDigests> {
        self.keys
            .as_ref()
            .filter(|keys| keys.answers_uncopied() != Some(u64::MAX))
    }

    /// Notes that a snapshot made by [`Self::snapshot_put`] at `version` is
    /// queued for commit.
    fn note_snapshot_queued(&mut self, version: u64) {
        self.snapshot_queued = Some(version);
        self.snapshot_has_keys = self.keys_for_snapshot().is_some();
    }

    /// Notes that the current state's version is queued for commit: its
    /// waiters gather here until [`Self::on_durable`] reaches it.
    fn note_in_flight(&mut self) {
        self.inflight.push_back(InflightVersion {
            figures: Figures::of(&self.state),
            waiters: Vec::new(),
        });
    }

    /// A decision applied in memory could not be queued for commit: the
    /// state is ahead of anything the disk will have, so this actor never
    /// answers again.
    fn stop_answering(&mut self, err: &EngineError) {
        tracing::error!(enrollment = %self.id(), cause = %err, "a decision applied in memory could not be queued for commit; this enrollment stops answering");
        self.broken = Some(Box::new(err.clone()));
    }

    /// A commit covering versions up to `version` finished.
    pub(crate) fn on_durable(&mut self, version: u64, result: Result<(), EngineError>) {
        if let Err(err) = result {
            self.broken = Some(Box::new(err.clone()));
            for entry in self.inflight.drain(..) {
                for waiter in entry.waiters {
                    waiter.fail(err.clone());
                }
            }
            self.inflight_keys = Vec::new();
            return;
        }
        while self
            .inflight
            .front()
            .is_some_and(|e| e.figures.version <= version)
        {
            let entry = self.inflight.pop_front().expect("checked non-empty");
            for waiter in entry.waiters {
                waiter.resolve(&entry.figures, &self.state);
            }
            self.durable = entry.figures;
        }
        self.inflight_keys.retain(|k| k.version > version);
        if self.inflight.is_empty() {
            // Give the buffers back: most active enrollments are idle, and
            // an idle one should hold only its state (the memory target is
            // per active enrollment).
            self.inflight = VecDeque::new();
            self.inflight_keys = Vec::new();
        }
        if let Some(queued) = self.snapshot_queued.filter(|v| *v <= version) {
            self.snapshot_version = queued;
            self.snapshot_queued = None;
        }
    }

    /// The key digests, read from the store on first need, and again when
    /// digests that gave up past their bound are due a new look.
    fn keys(&mut self, rt: &Runtime) -> Result<&mut KeyDigests, EngineError> {
        let read_at = match self.keys.as_ref().map(KeyDigests::rescan_at) {
            None => Some(rt.clock.now()),
            Some(None) => None,
            Some(Some(due)) => Some(rt.clock.now()).filter(|now| *now >= due),
        };
        if let Some(now) = read_at {
            let mut keys = rt.store.key_digests(self.id(), now)?;
            if keys.count().is_none() {
                // Given up on as read: the store cannot tell whether its
                // records in `answers` were all copied to `idempotency`,
                // so the next transaction copies them (again).
                keys.set_answers_uncopied(Some(u64::MAX));
            }
            // Keys in flight have no record in the store yet, and a retry
            // of one must still find it in `inflight_keys`, which is
            // searched only for a digest held. (Only a rescan can meet
            // them: nothing is in flight before the first read.)
            let keep_for = rt.store.keep_keys_for();
            for key in &self.inflight_keys {
                keys.insert(key.digest, now, keep_for);
            }
            self.keys = Some(keys);
            // A snapshot holds digests given up on, or none: the next one
            // should carry these.
            self.snapshot_has_keys = false;
        }
        Ok(self.keys.as_mut().expect("read above if it was not held"))
    }

    /// Answers `waiter` once `version` is durable (at once if it is).
    fn when_durable(&mut self, version: u64, waiter: Waiter) {
        if version <= self.durable.version {
            waiter.resolve(&self.durable, &self.state);
            return;
        }
        match self
            .inflight
            .iter_mut()
            .find(|e| e.figures.version >= version)
        {
            Some(entry) => entry.waiters.push(waiter),
            None => waiter.fail(EngineError::Stopped(
                "version is neither durable nor in flight".into(),
            )),
        }
    }

    /// Handles an earn, redeem or reverse for this enrollment.
    ///
    /// Its idempotency record goes in the same commit group as its events:
    /// in `answers`, under its event's sequence, while the enrollment holds
    /// the digests of its keys; in `idempotency`, by key, once they are
    /// given up past their bound (keys are then looked up there without a
    /// digest, so the transaction that gives them up copies the records
    /// the enrollment has in `answers` there too).
    pub(crate) fn transact(&mut self, msg: Transact, rt: &Runtime, shard: usize) {
        self.last_used = Instant::now();
        if let Some(err) = &self.broken {
            let _ = msg.reply.send(Err((**err).clone()));
            return;
        }
        let Transact {
            business_id,
            key,
            request,
            reply,
            ..
        } = msg;
        if business_id != self.state.business_id {
            let _ = reply.send(Err(EngineError::NotFound { what: "enrollment" }));
            return;
        }
        // The same key seen before: the first answer again, or a conflict.
        // Most keys are new, and their digest says so without a look.
        let digest = KeyDigests::digest(key.as_str());
        let (maybe_seen, answers_too) = match self.keys(rt) {
            // Given up on with the copies not made yet, `answers` may hold
            // the key's record. Once they are queued, the copies are in
            // `inflight_keys` until durable, and in `idempotency` after: a
            // look through `answers` for every new key until then took
            // seconds for a batch after a restart.
            Ok(keys) => (
                keys.may_contain(digest),
                keys.count().is_some() || keys.answers_uncopied() == Some(u64::MAX),
            ),
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        if maybe_seen {
            let in_flight = self
                .inflight_keys
                .iter()
                .find(|k| k.digest == digest && k.key == key);
            if let Some(first) = in_flight {
                match idempotency::replay(&first.request, &first.answer, &request) {
                    Ok(answer) => {
                        let (answer, version) = (answer.clone(), first.version);
                        self.when_durable(version, Waiter::Answer(answer, reply));
                    }
                    Err(err) => {
                        let version = self.state.version;
                        self.when_durable(version, Waiter::Refusal(err.into(), reply));
                    }
                }
                return;
            }
            // Past the bound with every record copied, `idempotency` has
            // them all; otherwise `answers` may hold this key's.
            let found = if answers_too {
                rt.store
                    .idempotency_up_to(self.id(), key.as_str(), Some(self.state.version))
            } else {
                rt.store.idempotency_by_key(self.id(), key.as_str())
            };
            match found {
                Err(err) => {
                    let _ = reply.send(Err(err.into()));
                    return;
                }
                Ok(Some(first)) => {
                    let answer =
                        idempotency::replay(&first.request, &first.answer, &request).cloned();
                    let _ = reply.send(answer.map_err(EngineError::from));
                    return;
                }
                Ok(None) => {}
            }
        }
        // A place in the commit queue first: the decision is applied to the
        // state in place, and must not be refused after that.
        let place = match rt.committer.reserve() {
            Ok(place) => place,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        let now = rt.clock.now();
        let keep_for = rt.store.keep_keys_for();
        // Read before deciding, for the same reason.
        let copies = match self.copies_if_giving_up(rt, digest, now, keep_for) {
            Ok(copies) => copies,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        let transaction_id = TransactionId(Uuid::now_v7());
        let before = self.state.version;
        let applied = match enrollment::decide_in_place(
            &mut self.state,
            &self.program.rules,
            Some((&request, transaction_id)),
            now,
        ) {
            Ok(applied) => applied,
            Err(err) => {
                // Refused: the state is unchanged.
                self.when_durable(before, Waiter::Refusal(err.into(), reply));
                return;
            }
        };
        let Applied { events, outcome } = applied;
        let outcome = outcome.expect("a request's decision has an outcome");
        let records = self.records(events, before + 1, now);
        let event_index = outcome.event_index;
        let answer = StoredAnswer {
            event_id: records[event_index].event_id,
            outcome,
        };
        let record = IdempotencyRecord {
            request,
            answer,
            recorded_at: now,
        };
        // Before the commit is queued: a snapshot in the same group must
        // count this key. (`keys` was read above.)
        let keys = self.keys.as_mut().expect("read above");
        keys.insert(digest, now, keep_for);
        let holds_digests = keys.count().is_some();
        let gives_up = copies.is_some();
        if gives_up {
            keys.set_answers_uncopied(Some(self.state.version));
        }
        let (mut puts, copied) = copies.map_or_else(Default::default, |c| (c.puts, c.records));
        let mut event_answer = None;
        let written = if holds_digests {
            loyalty_persistence::records::answer::encode(key.as_str(), &record)
                .map(|value| event_answer = Some((event_index, value)))
        } else {
            Store::idempotency_put(self.id(), key.as_str(), &record).map(|put| puts.push(put))
        };
        if let Err(err) = written {
            let err = EngineError::from(err);
            self.stop_answering(&err);
            let _ = reply.send(Err(err));
            return;
        }
        let IdempotencyRecord {
            request, answer, ..
        } = record;
        // The commit thread answers once the group is durable; a failure
        // to queue it is answered by `commit_applied`.
        let direct = Some((answer.clone(), reply));
        if let Ok(version) = self.commit_applied(
            rt,
            place,
            before,
            records,
            event_answer,
            puts,
            shard,
            direct,
        ) {
            // Found here until the copies are durable with this version:
            // those from `answers`, and the keys already in flight, whose
            // own versions may be durable before this one (their records
            // are then in `answers`, which is no longer looked through,
            // and not yet in `idempotency`).
            if gives_up {
                for k in &mut self.inflight_keys {
                    k.version = version;
                }
            }
            self.inflight_keys
                .extend(copied.into_iter().map(|(key, record)| InflightKey {
                    digest: KeyDigests::digest(key.as_str()),
                    key,
                    request: record.request,
                    answer: record.answer,
                    recorded_at: record.recorded_at,
                    version,
                }));
            self.inflight_keys.push(InflightKey {
                digest,
                key,
                request,
                answer,
                recorded_at: now,
                version,
            });
        }
    }

    /// If noting `digest` at `now` (as the transaction will, with the
    /// store's `keep_for`) would give the enrollment's key digests
    /// up past their bound, or they were given up on without their records
    /// in `answers` being copied (read back so from the store), the copies
    /// to write to `idempotency` with the transaction: every record the
    /// retention still keeps in `answers`, and those of the keys in flight.
    fn copies_if_giving_up(
        &self,
        rt: &Runtime,
        digest: u32,
        now: Timestamp,
        keep_for: Option<std::time::Duration>,
    ) -> Result<Option<Copies>, EngineError> {
        let keys = self.keys.as_ref().expect("read by the caller");
        let giving_up = match keys.count() {
            None => keys.answers_uncopied() == Some(u64::MAX),
            // Only a full set can give up; try the insert on a copy.
            Some(count) if count >= KEY_DIGESTS_MAX => {
                let mut probe = keys.clone();
                probe.insert(digest, now, keep_for);
                probe.count().is_none()
            }
            Some(_) => false,
        };
        if !giving_up {
            return Ok(None);
        }
        let mut puts = Vec::new();
        let mut records = Vec::new();
        for (key, record) in rt.store.answers_of(self.id(), now)? {
            puts.push(Store::idempotency_put(self.id(), &key, &record)?);
            // Keys were checked when first recorded; one that no longer
            // parses is still copied, and found by key once durable.
            if let Ok(key) = IdempotencyKey::parse(&key) {
                records.push((key, record));
            }
        }
        for k in &self.inflight_keys {
            let record = IdempotencyRecord {
                request: k.request.clone(),
                answer: k.answer.clone(),
                recorded_at: k.recorded_at,
            };
            puts.push(Store::idempotency_put(self.id(), k.key.as_str(), &record)?);
        }
        tracing::info!(
            enrollment = %self.id(),
            records = puts.len(),
            "key digests given up past their bound; idempotency records copied to be found by key"
        );
        Ok(Some(Copies { puts, records }))
    }

    /// Commits what the clock has made due, if anything. Returns the
    /// version to wait for, if a commit was queued.
    fn settle_due(&mut self, rt: &Runtime, shard: usize) -> Result<Option<u64>, EngineError> {
        let now = rt.clock.now();
        if settle::next_due(&self.state).is_none_or(|due| due > now) {
            return Ok(None);
        }
        let place = rt.committer.reserve()?;
        let before = self.state.version;
        let applied = enrollment::decide_in_place(&mut self.state, &self.program.rules, None, now)?;
        if applied.events.is_empty() {
            return Ok(None);
        }
        let records = self.records(applied.events, before + 1, now);
        self.commit_applied(rt, place, before, records, None, Vec::new(), shard, None)
            .map(Some)
    }

    /// Answers a balance query for this enrollment.
    pub(crate) fn balance(&mut self, msg: Balance, rt: &Runtime, shard: usize) {
        self.last_used = Instant::now();
        if let Some(err) = &self.broken {
            let _ = msg.reply.send(Err((**err).clone()));
            return;
        }
        if msg.business_id != self.state.business_id {
            let _ = msg
                .reply
                .send(Err(EngineError::NotFound { what: "enrollment" }));
            return;
        }
        match self.settle_due(rt, shard) {
            Ok(Some(version)) => self.when_durable(version, Waiter::View(msg.reply)),
            Ok(None) => drop(msg.reply.send(Ok(self.durable.view(&self.state)))),
            Err(err) => drop(msg.reply.send(Err(err))),
        }
    }

    /// Called by the shard on each tick for an actor idle longer than
    /// `passivate_after`: settles what the clock made due, writes a
    /// snapshot so the next activation replays no tail, and says when the
    /// actor can be dropped. Nothing is dropped while a commit is in
    /// flight, so a later activation always reads everything from disk.
    pub(crate) fn idle_step(&mut self, rt: &Runtime, shard: usize) -> IdleStep {
        if self.broken.is_some() || !self.inflight.is_empty() || self.snapshot_queued.is_some() {
            return IdleStep::Stay;
        }
        match self.settle_due(rt, shard) {
            Ok(None) => {}
            Ok(Some(_)) => return IdleStep::Stay,
            Err(err) => {
                tracing::warn!(enrollment = %self.id(), cause = %err, "settling due points failed; will retry");
                return IdleStep::Stay;
            }
        }
        let keys_unsaved = self.keys_for_snapshot().is_some() && !self.snapshot_has_keys;
        if self.snapshot_version < self.state.version || keys_unsaved {
            // Nothing changes in memory here, so a refusal only defers it.
            let version = self.state.version;
            let queued = self
                .snapshot_put()
                .map_err(EngineError::from)
                .and_then(|put| {
                    rt.committer.reserve()?.submit_for_shard(
                        CommitGroup {
                            events: Vec::new(),
                            puts: vec![put],
                        },
                        Vec::new(),
                        shard,
                        self.id(),
                        version,
                        None,
                    )
                });
            match queued {
                Ok(()) => {
                    self.note_snapshot_queued(version);
                    self.note_in_flight();
                }
                Err(err) => {
                    tracing::debug!(enrollment = %self.id(), cause = %err, "snapshot before passivation deferred")
                }
            }
            return IdleStep::Stay;
        }
        IdleStep::Passivate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each active enrollment is one allocation of this actor, and the
    /// allocator's size classes step just above its size: 16 bytes more
    /// (448) cost about 110 bytes of resident memory per active enrollment
    /// in the memory probe, not 16 (`loadtests/PERFORMANCE-notes.md`, item
    /// 24). A change that grows the actor should be measured with
    /// `loadtests/run-memory`, and this bound moved only if it is worth it.
    #[test]
    fn the_actor_stays_in_its_allocation_size_class() {
        assert!(
            std::mem::size_of::<EnrollmentActor>() <= 432,
            "{} bytes",
            std::mem::size_of::<EnrollmentActor>()
        );
    }
}
