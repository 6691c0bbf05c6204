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
//!
//! Once a batch is durable its log records also go to [`RecentRecords`],
//! where the event publisher takes them instead of reading them back from
//! the store.

use crate::config::Durability;
use crate::error::EngineError;
use crate::shard::Shard;
use actix::prelude::*;
use loyalty_engine::EnrollmentId;
use loyalty_persistence::store::Batch;
use loyalty_persistence::{CommitGroup, LogRecord, Store, StoreError, StoredAnswer};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// The records `group.events` encode, in the same order, for
    /// [`RecentRecords`].
    records: Vec<LogRecord>,
    reply: Reply,
}

/// Told to a shard after each batch: these versions of these enrollments
/// are durable (or failed to be, with the error).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DurableVersions {
    pub result: Result<(), EngineError>,
    pub versions: Vec<(EnrollmentId, u64)>,
    /// The shard's groups of the batch, written (or failed) and done
    /// with, for the shard to drop after telling its actors. The actors
    /// allocated their buffers, and the allocator frees a block on the
    /// thread that allocated it without the atomic hand-back that a free
    /// from another thread takes. Dropped on the commit thread, they were
    /// 7.7 % of its samples under the batch load, between the fsync and
    /// the batch's answers (notes item 28).
    pub spent: Vec<SpentGroup>,
}

/// A group and its records (those the publisher's cache did not take),
/// on their way back to the shard that made them, to be dropped there.
pub(crate) struct SpentGroup {
    _group: CommitGroup,
    _records: Vec<LogRecord>,
}

/// The newest durable log records, kept in memory for the event publisher
/// so that it need not read back from the store what was written a moment
/// ago (that read and its decoding were about 3 % of the engine's CPU under
/// the NATS load).
///
/// A cache in front of the log, never in place of it: it holds a bounded
/// number of records, dropping the oldest, and a reader that finds what it
/// wants missing (after a restart, or having fallen behind) reads the log
/// instead. It fills only while a reader is started
/// ([`RecentRecords::start`] to [`RecentRecords::stop`]), so an engine
/// without a publisher keeps none, and its shards drop their records
/// themselves rather than hand them to the commit thread to free.
pub struct RecentRecords {
    started: AtomicBool,
    /// Most records held.
    max_records: usize,
    /// Ascending: the commit thread adds each durable batch in sequence
    /// order (whole, unless a job's records did not match its events).
    records: Mutex<VecDeque<(u64, LogRecord)>>,
}

impl Default for RecentRecords {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX)
    }
}

impl RecentRecords {
    /// Most records held, unless the commit batches are larger: four
    /// batches at the default `commit_batch_events_max`. Under the batch
    /// load (32 requests of 1 000 earns in flight) the publisher fell
    /// behind by more than two such batches often enough to read 0.7-6.7 %
    /// of the events back with room for two, and none with room for four
    /// (`loadtests/ab-nats`). 216 bytes per record, plus its texts: 14 MB
    /// or more while a reader stops taking them.
    pub const DEFAULT_MAX: usize = 65_536;

    /// An empty cache of at most `max_records`, not started (the engine's
    /// is made by [`Committer::start`]; benchmarks make their own).
    pub fn new(max_records: usize) -> Self {
        RecentRecords {
            started: AtomicBool::new(false),
            max_records: max_records.max(1),
            records: Mutex::new(VecDeque::new()),
        }
    }

    /// From now on, keeps the records of every durable batch.
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Keeps no more records, and frees those held (the reader is gone).
    pub fn stop(&self) {
        self.started.store(false, Ordering::Release);
        let held = std::mem::take(&mut *self.lock());
        drop(held);
    }

    fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Adds durable records, in ascending sequence after those held (the
    /// commit thread's part).
    pub fn extend(&self, durable: impl IntoIterator<Item = (u64, LogRecord)>) {
        let dropped: Vec<_> = {
            let mut records = self.lock();
            records.extend(durable);
            let excess = records.len().saturating_sub(self.max_records);
            records.drain(..excess).collect()
        };
        // Freed after the lock, so the reader does not wait on it.
        drop(dropped);
    }

    /// The records from `after + 1` on without a gap, at most `limit`,
    /// taken out of the cache; empty if the cache does not hold
    /// `after + 1` (the caller then reads the log). Forgets every record
    /// up to `after`: a reader asks in ascending order.
    pub fn take_after(&self, after: u64, limit: usize) -> Vec<(u64, LogRecord)> {
        let (run, stale): (Vec<_>, Vec<_>) = {
            let mut records = self.lock();
            let stale = records.partition_point(|(seq, _)| *seq <= after);
            let stale: Vec<_> = records.drain(..stale).collect();
            let run = records
                .iter()
                .zip(after.saturating_add(1)..)
                .take(limit)
                .take_while(|((seq, _), expected)| seq == expected)
                .count();
            (records.drain(..run).collect(), stale)
        };
        // Freed after the lock: the commit thread waits on it to answer.
        drop(stale);
        run
    }

    /// What a job carries to the commit thread: its records while a reader
    /// is started, nothing otherwise (dropped here, on the caller's
    /// thread). A job that carries none leaves a gap the reader fills from
    /// the log, so a reader that starts meanwhile loses nothing.
    fn keep_for_reader(&self, records: Vec<LogRecord>) -> Vec<LogRecord> {
        if self.is_started() {
            records
        } else {
            Vec::new()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, LogRecord)>> {
        // Every change leaves the queue whole, so a panic elsewhere while
        // holding it leaves nothing half done.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
    pub recent: Arc<RecentRecords>,
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
        let recent = Arc::new(RecentRecords::new(
            batch_events_max
                .saturating_mul(4)
                .max(RecentRecords::DEFAULT_MAX),
        ));
        let shards = ShardAddrs::default();
        stats
            .durable_sequence
            .store(next_sequence - 1, Ordering::Relaxed);
        let thread = {
            let failed = failed.clone();
            let stats = stats.clone();
            let recent = recent.clone();
            let shards = shards.clone();
            let queued = queued.clone();
            std::thread::Builder::new()
                .name("loyalty-commit".into())
                .spawn(move || {
                    let limits = (next_sequence, batch_events_max, durability);
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let shared = Shared {
                            queued: &queued,
                            failed: &failed,
                            stats: &stats,
                            recent: &recent,
                            shards: &shards,
                        };
                        run(store, rx, limits, writer, shared)
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
                recent,
                shards,
            },
            thread,
        )
    }

    /// Queues a group, and the records its events encode. The receiver
    /// answers once the group is durable. Refuses at once when the queue is
    /// full or the engine has stopped, so the caller can leave its state
    /// untouched.
    pub fn submit(
        &self,
        group: CommitGroup,
        records: Vec<LogRecord>,
    ) -> Result<oneshot::Receiver<Durable>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.reserve()?.send(Job {
            group,
            records: self.recent.keep_for_reader(records),
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
    /// Queues an enrollment actor's group (and the records its events
    /// encode); its shard gets
    /// [`DurableVersions`] once the group is durable, and then `answer`'s
    /// caller its answer. Fails only when the commit thread has exited
    /// (the engine has stopped); `answer`'s caller is then told so too.
    pub(crate) fn submit_for_shard(
        self,
        group: CommitGroup,
        records: Vec<LogRecord>,
        shard: usize,
        enrollment_id: EnrollmentId,
        version: u64,
        answer: Option<DirectAnswer>,
    ) -> Result<(), EngineError> {
        let records = self.committer.recent.keep_for_reader(records);
        self.send(Job {
            group,
            records,
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

/// What the commit thread shares with the [`Committer`]s.
struct Shared<'a> {
    queued: &'a AtomicUsize,
    failed: &'a AtomicBool,
    stats: &'a CommitStats,
    recent: &'a RecentRecords,
    shards: &'a ShardAddrs,
}

fn run(
    store: Store,
    rx: Receiver<Job>,
    (mut next_sequence, batch_events_max, durability): (u64, usize, Durability),
    mut writer: BatchWriter,
    shared: Shared<'_>,
) {
    let Shared {
        queued,
        failed,
        stats,
        recent,
        shards,
    } = shared;
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
        let mut batch = store.batch_for(jobs.iter().map(|job| &job.group));
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
                // Before the durable sequence moves: a reader that sees it
                // finds the records here too.
                if recent.is_started() {
                    recent.extend(durable_records(&mut jobs, &lasts));
                }
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

/// Takes the records out of a durable batch's jobs, each with its
/// sequence (`lasts`: each job's last, as `add_groups` numbered them). A
/// job whose records do not match its events gives none: the cache must
/// not hold a record under another's sequence, and the reader finds the
/// gap and reads the log.
fn durable_records<'a>(
    jobs: &'a mut [Job],
    lasts: &'a [u64],
) -> impl Iterator<Item = (u64, LogRecord)> + 'a {
    jobs.iter_mut()
        .zip(lasts)
        .filter(|(job, _)| job.records.len() == job.group.events.len())
        .flat_map(|(job, last)| {
            let first = last + 1 - job.records.len() as u64;
            (first..).zip(std::mem::take(&mut job.records))
        })
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
    let mut per_shard: Vec<DurableVersions> = addrs
        .iter()
        .map(|_| DurableVersions {
            result: result.clone(),
            versions: Vec::new(),
            spent: Vec::new(),
        })
        .collect();
    let mut answers = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.drain(..).enumerate() {
        let Job {
            group,
            records,
            reply,
        } = job;
        match reply {
            // A catalog write's group is dropped here: it has no shard to
            // go back to, and such writes are rare.
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
                let told = &mut per_shard[shard];
                told.versions.push((enrollment_id, version));
                told.spent.push(SpentGroup {
                    _group: group,
                    _records: records,
                });
                answers.extend(answer);
            }
        }
    }
    for (addr, told) in addrs.iter().zip(per_shard) {
        if !told.versions.is_empty() {
            // Not bounded by the mailbox on purpose: an actor must always
            // learn the fate of what it queued.
            addr.do_send(told);
        }
    }
    for (answer, reply) in answers {
        // As for `Reply::Once`: a caller may have stopped waiting.
        let _ = reply.send(result.clone().map(|()| answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loyalty_engine::catalog::CatalogEvent;
    use loyalty_engine::{BusinessId, DomainEvent, EventId, ProgramId, Timestamp};
    use uuid::Uuid;

    fn record(version: u64) -> LogRecord {
        let business_id = BusinessId(Uuid::now_v7());
        LogRecord {
            aggregate_id: Uuid::now_v7(),
            version,
            event_id: EventId(Uuid::now_v7()),
            business_id,
            recorded_at: Timestamp(1_700_000_000_000),
            event: DomainEvent::Catalog(CatalogEvent::ProgramActivated {
                program_id: ProgramId(Uuid::now_v7()),
                business_id,
            }),
        }
    }

    /// The group that writes these records' events.
    fn group_of(records: &[LogRecord]) -> CommitGroup {
        CommitGroup {
            events: records
                .iter()
                .map(|r| Store::encode_event(r).unwrap())
                .collect(),
            puts: Vec::new(),
        }
    }

    fn sequences(records: &[(u64, LogRecord)]) -> Vec<u64> {
        records.iter().map(|(seq, _)| *seq).collect()
    }

    /// A committer on a fresh store, its writer given, with every job it
    /// queues awaited.
    struct Bench {
        committer: Committer,
        thread: Option<JoinHandle<()>>,
        // Dropped last, so the store's directory outlives the commit thread.
        _dir: tempfile::TempDir,
    }

    impl Bench {
        fn new(writer: BatchWriter) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let options = loyalty_persistence::StoreOptions::new(dir.path().join("data"));
            let (store, _) = Store::open(&options).unwrap();
            let (committer, thread) =
                Committer::start(store, 1, 64, 16_384, Durability::Fsync, writer);
            Bench {
                committer,
                thread: Some(thread),
                _dir: dir,
            }
        }

        /// Commits one group of `versions`' records; the last sequence.
        fn commit(&self, versions: std::ops::RangeInclusive<u64>) -> Durable {
            let records: Vec<LogRecord> = versions.map(record).collect();
            let durable = self.committer.submit(group_of(&records), records).unwrap();
            durable.blocking_recv().unwrap()
        }

        fn held(&self) -> Vec<(u64, u64)> {
            self.committer
                .recent
                .lock()
                .iter()
                .map(|(seq, record)| (*seq, record.version))
                .collect()
        }
    }

    impl Drop for Bench {
        fn drop(&mut self) {
            // The thread ends once its queue's last sender is gone, and
            // closes the store: RocksDB must not outlive the test process's
            // own teardown.
            let (tx, _) = mpsc::channel();
            drop(std::mem::replace(&mut self.committer.tx, tx));
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    #[test]
    fn the_commit_thread_keeps_records_only_while_a_reader_is_started() {
        let bench = Bench::new(store_writer());
        assert_eq!(bench.commit(1..=2).unwrap(), 2);
        assert!(bench.committer.recent.lock().is_empty(), "no reader yet");
        bench.committer.recent.start();
        assert_eq!(bench.commit(5..=7).unwrap(), 5);
        assert_eq!(bench.commit(9..=9).unwrap(), 6);
        // Each record under the sequence the store gave it.
        assert_eq!(bench.held(), [(3, 5), (4, 6), (5, 7), (6, 9)]);
        assert_eq!(bench.commit(11..=12).unwrap(), 8);
        bench.committer.recent.stop();
        assert!(
            bench.committer.recent.lock().is_empty(),
            "stop frees what was held"
        );
        assert_eq!(bench.commit(13..=13).unwrap(), 9);
        assert!(bench.committer.recent.lock().is_empty(), "nor keeps more");
    }

    #[test]
    fn a_failed_write_keeps_nothing() {
        let mut writes = 0;
        let bench = Bench::new(Box::new(move |store, batch, sync| {
            writes += 1;
            if writes == 2 {
                return Err(StoreError::Io("the disk said no".into()));
            }
            store.write(batch, sync)
        }));
        bench.committer.recent.start();
        assert_eq!(bench.commit(1..=2).unwrap(), 2);
        assert!(bench.commit(3..=4).is_err());
        assert_eq!(bench.held(), [(1, 1), (2, 2)], "only what was written");
    }

    #[test]
    fn a_reader_takes_records_in_order_and_each_once() {
        let recent = RecentRecords::default();
        recent.extend((1..=5).map(|seq| (seq, record(seq))));
        let first = recent.take_after(0, 3);
        assert_eq!(sequences(&first), [1, 2, 3]);
        assert_eq!(first[2].1.version, 3, "each record under its own sequence");
        assert_eq!(sequences(&recent.take_after(3, 10)), [4, 5]);
        assert!(recent.take_after(5, 10).is_empty());
    }

    #[test]
    fn records_the_reader_has_passed_are_forgotten() {
        let recent = RecentRecords::default();
        recent.extend((1..=5).map(|seq| (seq, record(seq))));
        // Published from the log meanwhile: 1 to 3 are no use any more.
        assert_eq!(sequences(&recent.take_after(3, 10)), [4, 5]);
        assert!(recent.lock().is_empty());
    }

    #[test]
    fn a_record_not_held_gives_nothing_so_the_reader_reads_the_log() {
        let recent = RecentRecords::default();
        recent.extend((10..=12).map(|seq| (seq, record(seq))));
        assert!(recent.take_after(5, 10).is_empty(), "6 to 9 are not here");
        // Nothing was lost by asking: once the log has given 6 to 9, the
        // rest comes from memory.
        assert_eq!(sequences(&recent.take_after(9, 10)), [10, 11, 12]);
    }

    #[test]
    fn a_gap_ends_what_is_taken() {
        let recent = RecentRecords::default();
        recent.extend([1, 2, 4, 5].map(|seq| (seq, record(seq))));
        assert_eq!(sequences(&recent.take_after(0, 10)), [1, 2]);
        assert!(
            recent.take_after(2, 10).is_empty(),
            "3 must come from the log"
        );
        assert_eq!(sequences(&recent.take_after(3, 10)), [4, 5]);
    }

    #[test]
    fn past_the_bound_the_oldest_records_go() {
        let recent = RecentRecords::default();
        let n = RecentRecords::DEFAULT_MAX as u64 + 10;
        recent.extend((1..=n).map(|seq| (seq, record(seq))));
        assert_eq!(recent.lock().len(), RecentRecords::DEFAULT_MAX);
        assert!(recent.take_after(0, 10).is_empty(), "1 to 10 were dropped");
        assert_eq!(sequences(&recent.take_after(10, 2)), [11, 12]);
    }

    #[test]
    fn a_batch_gives_each_record_its_sequence_and_skips_a_mismatched_job() {
        let job = |events: usize, records: Vec<LogRecord>| Job {
            group: group_of(&records[..events]),
            records,
            reply: Reply::Once(oneshot::channel().0),
        };
        let mut jobs = vec![
            job(2, vec![record(1), record(2)]),
            // A snapshot alone: no events, no records.
            job(0, Vec::new()),
            // One event but two records: not trusted, so not kept.
            job(1, vec![record(1), record(2)]),
            job(1, vec![record(7)]),
        ];
        // As `add_groups` numbers them from 100: 100-101, none, 102, 103.
        let lasts = [101, 101, 102, 103];
        let kept: Vec<(u64, u64)> = durable_records(&mut jobs, &lasts)
            .map(|(seq, record)| (seq, record.version))
            .collect();
        assert_eq!(kept, [(100, 1), (101, 2), (103, 7)]);
    }
}
