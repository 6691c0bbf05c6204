//! The durable do-nothing responders' log: the least a durable door must
//! do before it answers, and nothing more.
//!
//! `null_http --durable-dir` and `null_nats --durable-dir` hand each
//! request they would answer to a [`GroupLog`]: one writer thread takes
//! everything queued, writes it to its log in one write, calls
//! `fdatasync` once, and only then releases the answers, as the engine's
//! commit thread does for its groups (group commit, `docs/ARCHITECTURE.md`).
//! No RocksDB, no actors, no state, no idempotency: whatever those cost the
//! engine is absent here, so this responder is the ceiling of *any* engine
//! that answers after an fsync on this machine and disk. The load tests
//! measure it in the same run as the engine and the plain do-nothing
//! responder: the gap between the two responders is what the fsync alone
//! costs, whatever the engine does.
//!
//! The log is the cheapest durable write found on this machine, so that
//! the ceiling is a generous one: a file of [`RING_BYTES`] written full of
//! zeros (and synced) at the start, then overwritten in place as a ring.
//! Overwriting blocks the file already has leaves its size and its block
//! map alone, so each `fdatasync` flushes the data and no file-system
//! metadata; an append (what RocksDB's write-ahead log, and so the engine,
//! does) also commits the file's new size through the journal. An A/B of
//! the two ("Tried and dropped" in `loadtests/PERFORMANCE-notes.md`): the
//! ring made 14-24 % more durable answers at 256 in flight, the same at 64.
//! A real log could not wrap without a checkpoint; a responder that keeps
//! no state needs none.
//!
//! Lighter than the engine's doors in more than state, as a ceiling should
//! be: no authentication, no limits on what it logs, and (over NATS) a
//! plain queue subscription instead of the micro-service endpoints, and
//! fixed event bytes instead of events encoded from the log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

/// Requests waiting for the writer at most; past it [`GroupLog::submit`]
/// refuses (the load generators keep at most a few hundred in flight).
pub const QUEUE_REQUESTS_MAX: usize = 65_536;
/// Earns made durable by one write and `fdatasync` at most: the engine's
/// own bound on a write batch (`commit_batch_events_max`, an event per
/// earn). The first request of a group is always taken, whatever it holds.
pub const GROUP_EARNS_MAX: usize = 16_384;
/// Bytes one group writes at most (past them the rest waits for the next
/// group), well inside the ring.
pub const GROUP_BYTES_MAX: usize = 16 << 20;
/// Size of the ring the log overwrites: the engine's memtable size, after
/// which its own log moves to a new file.
pub const RING_BYTES: u64 = 64 << 20;

/// Why a request was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("{QUEUE_REQUESTS_MAX} requests are already waiting for the log")]
    Full,
    #[error("the log's writer stopped (it could not write or sync its file)")]
    Stopped,
}

/// One request waiting for the writer.
struct Pending<T> {
    /// What the log keeps of it (its body and answer).
    bytes: Vec<u8>,
    /// Earns it carries (a batch carries many), for [`GROUP_EARNS_MAX`].
    earns: usize,
    /// Handed back once `bytes` are durable.
    token: T,
}

/// A group-commit log on a thread of its own. `T` is what the writer hands
/// back once a request's bytes are durable (a reply to send, a channel to
/// wake).
pub struct GroupLog<T> {
    queue: mpsc::SyncSender<Pending<T>>,
}

// By hand: a derive would ask `T: Clone`, and tokens are not cloned.
impl<T> Clone for GroupLog<T> {
    fn clone(&self) -> Self {
        GroupLog {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static> GroupLog<T> {
    /// Starts the writer on a new thread, logging into a ring of
    /// [`RING_BYTES`] in `dir` (created if missing). `durable` is called on
    /// the writer's thread with each group's tokens, in submission order,
    /// and the earns they carry, after its `fdatasync` returned. If a write or sync fails the writer
    /// says so and stops: that group is never answered, and later requests
    /// are refused with [`SubmitError::Stopped`].
    pub fn start(
        dir: &Path,
        durable: impl FnMut(Vec<T>, usize) + Send + 'static,
    ) -> std::io::Result<GroupLog<T>> {
        Self::start_with_ring(dir, RING_BYTES, durable)
    }

    /// [`GroupLog::start`] with a ring of `ring_bytes` (tests use a small
    /// one).
    pub fn start_with_ring(
        dir: &Path,
        ring_bytes: u64,
        mut durable: impl FnMut(Vec<T>, usize) + Send + 'static,
    ) -> std::io::Result<GroupLog<T>> {
        std::fs::create_dir_all(dir)?;
        let mut file = Ring::create(dir, ring_bytes)?;
        let (queue, requests) = mpsc::sync_channel::<Pending<T>>(QUEUE_REQUESTS_MAX);
        std::thread::Builder::new()
            .name("null-commit".into())
            .spawn(move || {
                let mut buffer = Vec::new();
                let mut tokens = Vec::new();
                // What did not fit the last group opens the next.
                let mut carried: Option<Pending<T>> = None;
                // Blocks for the first request of a group, then takes what
                // else is queued, as the engine's commit thread does.
                while let Some(first) = carried.take().or_else(|| requests.recv().ok()) {
                    let mut earns = 0;
                    let mut next = Some(first);
                    while let Some(pending) = next {
                        let fits = tokens.is_empty()
                            || (earns + pending.earns <= GROUP_EARNS_MAX
                                && buffer.len() + pending.bytes.len() < GROUP_BYTES_MAX);
                        if !fits {
                            carried = Some(pending);
                            break;
                        }
                        frame(&mut buffer, &pending.bytes);
                        earns += pending.earns;
                        tokens.push(pending.token);
                        next = requests.try_recv().ok();
                    }
                    if let Err(err) = file.write_durably(&buffer) {
                        // Nothing is answered that was not made durable.
                        // A benchmark's helper: its one message goes to
                        // stderr, beside the load script's own.
                        eprintln!("null-commit: cannot write its log, stopping: {err}");
                        return;
                    }
                    buffer.clear();
                    durable(std::mem::take(&mut tokens), earns);
                }
            })?;
        Ok(GroupLog { queue })
    }

    /// Queues `bytes` (of a request carrying `earns` earns) to be made
    /// durable; `token` comes back through the `durable` callback once
    /// they are.
    pub fn submit(&self, bytes: Vec<u8>, earns: usize, token: T) -> Result<(), SubmitError> {
        self.queue
            .try_send(Pending {
                bytes,
                earns,
                token,
            })
            .map_err(|err| match err {
                mpsc::TrySendError::Full(_) => SubmitError::Full,
                mpsc::TrySendError::Disconnected(_) => SubmitError::Stopped,
            })
    }
}

/// One record: its length (4 bytes, little-endian) and its bytes.
fn frame(buffer: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a request is far under 4 GiB");
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(bytes);
}

/// The ring file, and where the next write goes.
struct Ring {
    file: File,
    size_bytes: u64,
    offset_bytes: u64,
}

impl Ring {
    /// Writes the whole ring full of zeros and syncs it, so that every
    /// later write overwrites blocks the file already has.
    fn create(dir: &Path, size_bytes: u64) -> std::io::Result<Ring> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join("ring.log"))?;
        let zeros = vec![0u8; 1 << 20];
        let mut written_bytes = 0;
        while written_bytes < size_bytes {
            let chunk = (size_bytes - written_bytes).min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..chunk])?;
            written_bytes += chunk as u64;
        }
        file.sync_all()?;
        Ok(Ring {
            file,
            size_bytes,
            offset_bytes: 0,
        })
    }

    /// Writes `bytes` in one write at the ring's next place (from the
    /// start again when they would pass its end) and syncs the data
    /// before returning.
    fn write_durably(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let len = bytes.len() as u64;
        if len > self.size_bytes {
            return Err(std::io::Error::other("a group larger than the ring"));
        }
        if self.offset_bytes + len > self.size_bytes {
            self.offset_bytes = 0;
        }
        self.file.write_all_at(bytes, self.offset_bytes)?;
        self.file.sync_data()?;
        self.offset_bytes += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Small enough that a test writes little, large enough for its
    /// records.
    const TEST_RING_BYTES: u64 = 1 << 20;

    /// The records at the start of the ring, up to the first zero length
    /// (the rest is the ring's zeros).
    fn records(dir: &Path) -> Vec<String> {
        let bytes = std::fs::read(dir.join("ring.log")).unwrap();
        assert_eq!(
            bytes.len() as u64,
            TEST_RING_BYTES,
            "the ring keeps its size"
        );
        let mut records = Vec::new();
        let mut at = 0;
        while bytes[at..at + 4] != [0, 0, 0, 0] {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            records.push(String::from_utf8(bytes[at + 4..at + 4 + len].to_vec()).unwrap());
            at += 4 + len;
        }
        records
    }

    #[test]
    fn answers_after_the_bytes_are_in_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().to_owned();
        let (done, answered) = mpsc::channel();
        let log =
            GroupLog::start_with_ring(dir.path(), TEST_RING_BYTES, move |tokens: Vec<u32>, _| {
                // Each answered request is in the file when it is answered.
                let written = records(&ring);
                for token in tokens {
                    assert!(written.contains(&format!("request {token}")));
                    done.send(token).unwrap();
                }
            })
            .unwrap();
        for n in 0..100u32 {
            log.submit(format!("request {n}").into_bytes(), 1, n)
                .unwrap();
        }
        let got: Vec<u32> = (0..100)
            .map(|_| answered.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        let written = records(dir.path());
        assert_eq!(written.len(), 100);
        assert_eq!(written[0], "request 0");
        assert_eq!(written[99], "request 99");
    }

    #[test]
    fn a_group_holds_at_most_the_engines_earns() {
        let dir = tempfile::tempdir().unwrap();
        let (hold, held) = mpsc::channel::<()>();
        let (groups_tx, groups) = mpsc::channel();
        let log = GroupLog::start_with_ring(
            dir.path(),
            TEST_RING_BYTES,
            move |tokens: Vec<usize>, earns| {
                // The first group waits until everything else is queued.
                let _ = held.recv();
                groups_tx.send((tokens, earns)).unwrap();
            },
        )
        .unwrap();
        log.submit(b"first".to_vec(), 1, 0).unwrap();
        // Three batches of half the bound each: two fit one group.
        for n in 1..=3 {
            log.submit(b"batch".to_vec(), GROUP_EARNS_MAX / 2, n)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        drop(hold);
        let wait = || groups.recv_timeout(Duration::from_secs(10)).unwrap();
        let mut seen = vec![wait()];
        while seen.iter().map(|(group, _)| group.len()).sum::<usize>() < 4 {
            seen.push(wait());
        }
        let tokens: Vec<usize> = seen.iter().flat_map(|(group, _)| group.clone()).collect();
        assert_eq!(tokens, vec![0, 1, 2, 3], "in order, none lost");
        assert!(
            seen.iter().all(|(group, earns)| {
                let submitted: usize = group
                    .iter()
                    .map(|&n| if n == 0 { 1 } else { GROUP_EARNS_MAX / 2 })
                    .sum();
                // The callback is told the earns its group carries.
                *earns == submitted && (submitted <= GROUP_EARNS_MAX || group.len() == 1)
            }),
            "{seen:?}"
        );
    }

    #[test]
    fn a_full_queue_refuses_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        // A writer held in its first callback cannot take more: the queue
        // fills, and the request past it is refused at once.
        let (hold, held) = mpsc::channel::<()>();
        let log = GroupLog::start_with_ring(dir.path(), TEST_RING_BYTES, move |_: Vec<()>, _| {
            let _ = held.recv();
        })
        .unwrap();
        let mut refused = None;
        // Before it is held, the writer may take a whole group and the
        // first request of the next (carried over): past those and a full
        // queue, the next request must be refused.
        for _ in 0..QUEUE_REQUESTS_MAX + GROUP_EARNS_MAX + 2 {
            if let Err(err) = log.submit(b"more".to_vec(), 1, ()) {
                refused = Some(err);
                break;
            }
        }
        assert_eq!(refused, Some(SubmitError::Full));
        drop(hold);
    }
}
