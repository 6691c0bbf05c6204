//! Group commit: one thread gathers the commit groups of many actors into
//! one RocksDB write batch and one fsync, then answers each group.
//!
//! Why a dedicated thread: an fsync blocks its thread for its whole
//! duration (hundreds of microseconds to milliseconds). On the commit thread
//! that time is when the next batch gathers; on an actor's arbiter it
//! would stall every actor of the shard. Why one: sequence numbers are
//! assigned in the order groups are written, and one writer keeps that order
//! without a lock.
//!
//! The loop: wait for one group, take every group already queued (up to
//! `commit_batch_events_max` events), number the events, write them with
//! `sync = true`, then answer every group of the batch: first each shard,
//! in one [`DurableVersions`] message, then the callers whose answer was
//! decided with the group ([`DirectAnswer`]). Telling the shards first
//! keeps read-your-writes: a caller's next command for the enrollment
//! reaches the shard's mailbox after the news that its earn is durable.
//! Answering from this thread, rather than from the shard once it has read
//! that message, spares each answer a wait for the shard's thread. A write or fsync
//! failure answers the batch with an error and stops the engine for good:
//! actors have already applied those events in memory, so carrying on would
//! answer from state the disk does not have (fail-stop).

use crate::config::Durability;
use crate::error::EngineError;
use crate::shard::Shard;
use actix::prelude::*;
use loyalty_engine::EnrollmentId;
use loyalty_persistence::store::Batch;
use loyalty_persistence::{CommitGroup, Store, StoreError, StoredAnswer};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{error, info};

/// The last sequence number of a durable group.
pub type Durable = Result<u64, EngineError>;

/// A transaction's answer, decided with its group and sent by the commit
/// thread as soon as the group is durable (or the error if it cannot be).
pub(crate) type DirectAnswer = (StoredAnswer, AnswerReply);

/// Where a transaction's caller waits for its answer.
pub(crate) type AnswerReply = oneshot::Sender<Result<StoredAnswer, EngineError>>;

/// Who hears that a group is durable.
enum Reply {
    /// A waiting task (the catalog): one channel per group.
    Once(oneshot::Sender<Durable>),
    /// An enrollment actor: its shard is told in one message per batch
    /// for all of its groups, instead of one future per group polled by
    /// the shard (actix polls every spawned future on each wake-up).
    Shard {
        shard: usize,
        enrollment_id: EnrollmentId,
        version: u64,
        /// The caller of the transaction that made the group, if any.
        answer: Option<DirectAnswer>,
    },
}

struct Job {
    group: CommitGroup,
    reply: Reply,
}

/// Told to a shard after each batch: these versions of these enrollments
/// are durable (or failed to be, with the error).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DurableVersions {
    pub result: Result<(), EngineError>,
    pub versions: Vec<(EnrollmentId, u64)>,
}

/// The shards' addresses, set once when the engine has started them (the
/// commit thread starts first, as the shards need it).
pub(crate) type ShardAddrs = Arc<OnceLock<Vec<Addr<Shard>>>>;

/// Upper bounds, in microseconds, of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];
/// Upper bounds of the batch-size histogram buckets, in events.
pub const BATCH_BUCKETS_EVENTS: [u64; 10] = [1, 2, 4, 8, 16, 64, 256, 1_024, 4_096, 16_384];

/// Counters the commit thread keeps; read by `/metrics` and benchmarks.
#[derive(Default)]
pub struct CommitStats {
    pub batches: AtomicU64,
    pub groups: AtomicU64,
    pub events: AtomicU64,
    pub write_us_total: AtomicU64,
    /// Cumulative counts per [`FSYNC_BUCKETS_US`] bucket (+ one for "more").
    pub write_us_buckets: [AtomicU64; 13],
    /// Cumulative counts per [`BATCH_BUCKETS_EVENTS`] bucket (+ one for "more").
    pub batch_events_buckets: [AtomicU64; 11],
    /// The sequence number of the newest durable event.
    pub durable_sequence: AtomicU64,
}

fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len())
}

/// Writes one batch, synced or not. The engine's is [`store_writer`];
/// tests put a failing one in its place to watch the engine stop.
pub type BatchWriter = Box<dyn FnMut(&Store, Batch, bool) -> Result<(), StoreError> + Send>;

/// The real writer: [`Store::write`].
pub fn store_writer() -> BatchWriter {
    Box::new(|store, batch, sync| store.write(batch, sync))
}

/// The actors' side of the commit thread. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: Sender<Job>,
    /// Groups queued and not yet taken by the commit thread: the queue's
    /// bound, kept by [`Committer::reserve`] rather than by the channel so
    /// a caller can hold a place before it changes any state.
    queued: Arc<AtomicUsize>,
    queue_max: usize,
    failed: Arc<AtomicBool>,
    pub stats: Arc<CommitStats>,
    pub(crate) shards: ShardAddrs,
}

impl Committer {
    /// Starts the commit thread. Sequence numbers continue from `next_sequence`.
    pub fn start(
        store: Store,
        next_sequence: u64,
        queue_max: usize,
        batch_events_max: usize,
        durability: Durability,
        writer: BatchWriter,
    ) -> (Committer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(CommitStats::default());
        let shards = ShardAddrs::default();
        stats
            .durable_sequence
            .store(next_sequence - 1, Ordering::Relaxed);
        let thread = {
            let failed = failed.clone();
            let stats = stats.clone();
            let shards = shards.clone();
            let queued = queued.clone();
            std::thread::Builder::new()
                .name("loyalty-commit".into())
                .spawn(move || {
                    let limits = (next_sequence, batch_events_max, durability);
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(store, rx, &queued, limits, writer, &failed, &stats, &shards)
                    }));
                    if ran.is_err() {
                        // A panic here is a failed commit like any other:
                        // stop, so the process restarts from the disk.
                        failed.store(true, Ordering::Release);
                        error!("the commit thread panicked; the engine has stopped");
                    }
                })
                .expect("spawn the commit thread")
        };
        (
            Committer {
                tx,
                queued,
                queue_max: queue_max.max(1),
                failed,
                stats,
                shards,
            },
            thread,
        )
    }

    /// Queues a group. The receiver answers once the group is durable.
    /// Refuses at once when the queue is full or the engine has stopped, so
    /// the caller can leave its state untouched.
    pub fn submit(&self, group: CommitGroup) -> Result<oneshot::Receiver<Durable>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.reserve()?.send(Job {
            group,
            reply: Reply::Once(reply),
        })?;
        Ok(rx)
    }

    /// Holds a place in the queue, or refuses (`OVERLOADED` when full,
    /// `STOPPED` after a failed write). An enrollment actor reserves
    /// *before* it decides, because it applies a decision to its state in
    /// place: once it has, the group must reach the commit thread.
    pub(crate) fn reserve(&self) -> Result<Reservation<'_>, EngineError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(stopped());
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.queue_max {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Overloaded);
        }
        Ok(Reservation {
            committer: self,
            sent: false,
        })
    }

    /// Whether a write failed and the engine has stopped.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// A place held in the commit queue; given back if dropped unused.
pub(crate) struct Reservation<'a> {
    committer: &'a Committer,
    sent: bool,
}

impl Reservation<'_> {
    /// Queues an enrollment actor's group; its shard gets
    /// [`DurableVersions`] once the group is durable, and then `answer`'s
    /// caller its answer. Fails only when the commit thread has exited
    /// (the engine has stopped); `answer`'s caller is then told so too.
    pub(crate) fn submit_for_shard(
        self,
        group: CommitGroup,
        shard: usize,
        enrollment_id: EnrollmentId,
        version: u64,
        answer: Option<DirectAnswer>,
    ) -> Result<(), EngineError> {
        self.send(Job {
            group,
            reply: Reply::Shard {
                shard,
                enrollment_id,
                version,
                answer,
            },
        })
    }

    fn send(mut self, job: Job) -> Result<(), EngineError> {
        self.sent = true;
        self.committer.tx.send(job).map_err(|mpsc::SendError(job)| {
            self.committer.queued.fetch_sub(1, Ordering::AcqRel);
            let err = EngineError::Stopped("commit thread has exited".into());
            if let Reply::Shard {
                answer: Some((_, reply)),
                ..
            } = job.reply
            {
                let _ = reply.send(Err(err.clone()));
            }
            err
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.committer.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn stopped() -> EngineError {
    EngineError::Stopped(
        "a write to the data directory failed; the engine stopped to avoid answering wrongly"
            .into(),
    )
}

#[allow(clippy::too_many_arguments)]
fn run(
    store: Store,
    rx: Receiver<Job>,
    queued: &AtomicUsize,
    (mut next_sequence, batch_events_max, durability): (u64, usize, Durability),
    mut writer: BatchWriter,
    failed: &AtomicBool,
    stats: &CommitStats,
    shards: &ShardAddrs,
) {
    let mut jobs: Vec<Job> = Vec::new();
    // Declared after `jobs`, so a panic while a batch is numbered or
    // written (in `add_groups` or the writer) drops it first as it unwinds
    // this function: the engine is marked failed before the callers of
    // that batch learn, from their dropped answers, that it stopped.
    let _fail_on_panic = FailOnPanic(failed);
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        let mut events = jobs[0].group.events.len();
        while events < batch_events_max {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.group.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Taken off the queue: their places are free for the next batch.
        queued.fetch_sub(jobs.len(), Ordering::AcqRel);
        if failed.load(Ordering::Acquire) {
            answer(&mut jobs, None, Err(stopped()), shards);
            continue;
        }
        let mut batch = store.batch();
        let mut seq = next_sequence;
        let lasts = store.add_groups(&mut batch, jobs.iter().map(|job| &job.group), &mut seq);
        let started = Instant::now();
        let written = writer(&store, batch, durability == Durability::Fsync);
        let write_us = started.elapsed().as_micros() as u64;
        match written {
            Ok(()) => {
                next_sequence = seq;
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.groups.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                stats.events.fetch_add(events as u64, Ordering::Relaxed);
                stats.write_us_total.fetch_add(write_us, Ordering::Relaxed);
                stats.write_us_buckets[bucket(&FSYNC_BUCKETS_US, write_us)]
                    .fetch_add(1, Ordering::Relaxed);
                stats.batch_events_buckets[bucket(&BATCH_BUCKETS_EVENTS, events as u64)]
                    .fetch_add(1, Ordering::Relaxed);
                stats
                    .durable_sequence
                    .store(next_sequence - 1, Ordering::Release);
                answer(&mut jobs, Some(&lasts), Ok(()), shards);
            }
            Err(err) => {
                failed.store(true, Ordering::Release);
                error!(cause = %err, groups = jobs.len(), "write to the data directory failed; stopping the engine");
                answer(&mut jobs, None, Err(stopped()), shards);
            }
        }
    }
    info!(
        next_sequence,
        "commit thread finished: every queued group was written"
    );
}

/// Marks the engine failed if dropped by a panic (see [`run`]).
struct FailOnPanic<'a>(&'a AtomicBool);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Tells every job of a batch its outcome: each waiting task on its
/// channel, each shard in one message for all of its groups, and then
/// each transaction's caller (see the module docs for why in this order).
fn answer(
    jobs: &mut Vec<Job>,
    lasts: Option<&[u64]>,
    result: Result<(), EngineError>,
    shards: &ShardAddrs,
) {
    let addrs = shards.get().map_or(&[][..], Vec::as_slice);
    let mut per_shard: Vec<Vec<(EnrollmentId, u64)>> = vec![Vec::new(); addrs.len()];
    let mut answers = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.drain(..).enumerate() {
        match job.reply {
            Reply::Once(reply) => {
                let outcome = match (&result, lasts) {
                    (Ok(()), Some(lasts)) => Ok(lasts[i]),
                    (Err(err), _) => Err(err.clone()),
                    (Ok(()), None) => unreachable!("a successful batch has its sequences"),
                };
                // A caller that gave up waiting is no reason to stop.
                let _ = reply.send(outcome);
            }
            Reply::Shard {
                shard,
                enrollment_id,
                version,
                answer,
            } => {
                per_shard[shard].push((enrollment_id, version));
                answers.extend(answer);
            }
        }
    }
    for (addr, versions) in addrs.iter().zip(per_shard) {
        if !versions.is_empty() {
            // Not bounded by the mailbox on purpose: an actor must always
            // learn the fate of what it queued.
            addr.do_send(DurableVersions {
                result: result.clone(),
                versions,
            });
        }
    }
    for (answer, reply) in answers {
        // As for `Reply::Once`: a caller may have stopped waiting.
        let _ = reply.send(result.clone().map(|()| answer));
    }
}
