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
//! The log is the cheapest durable write this machine offers, so that the
//! ceiling is a generous one: a file of [`LOG_BYTES_MAX`] written full of
//! zeros (and synced) at the start, then overwritten in place as a ring.
//! Overwriting blocks the file already has leaves its size and its block
//! map alone, so each `fdatasync` flushes the data and no file-system
//! metadata; an append (what RocksDB's write-ahead log, and so the engine,
//! does) also commits the file's new size through the journal. An A/B of
//! the two is in `loadtests/PERFORMANCE-notes.md`. A real log could not
//! wrap without a checkpoint; a responder that keeps no state needs none.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

/// Requests waiting for the writer at most; past it [`GroupLog::submit`]
/// refuses (the load generators keep at most a few hundred in flight).
pub const QUEUE_MAX: usize = 65_536;
/// Requests made durable by one write and `fdatasync` at most: the
/// engine's own bound on a commit batch.
pub const BATCH_MAX: usize = 4_096;
/// Size of the ring the log overwrites (the engine's memtable size, after
/// which its own log moves to a new file).
pub const LOG_BYTES_MAX: u64 = 64 << 20;

/// Why a request was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// [`QUEUE_MAX`] requests are already waiting.
    Full,
    /// The writer stopped (it could not write or sync its file).
    Stopped,
}

/// A group-commit log on a thread of its own. `T` is what the writer hands
/// back once a request's bytes are durable (a reply to send, a channel to
/// wake).
pub struct GroupLog<T> {
    queue: mpsc::SyncSender<(Vec<u8>, T)>,
}

impl<T> Clone for GroupLog<T> {
    fn clone(&self) -> Self {
        GroupLog {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static> GroupLog<T> {
    /// Starts the writer on a new thread, logging into `dir` (created if
    /// missing). `durable` is called on the writer's thread with each
    /// batch's tokens, in submission order, after its `fdatasync` returned.
    pub fn start(
        dir: &Path,
        mut durable: impl FnMut(Vec<T>) + Send + 'static,
    ) -> std::io::Result<GroupLog<T>> {
        std::fs::create_dir_all(dir)?;
        let mut file = LogFile::create(dir)?;
        let (queue, requests) = mpsc::sync_channel::<(Vec<u8>, T)>(QUEUE_MAX);
        std::thread::Builder::new()
            .name("null-commit".into())
            .spawn(move || {
                let mut buffer = Vec::new();
                let mut tokens = Vec::with_capacity(BATCH_MAX);
                // Blocks for the first request of a batch, then takes what
                // else is queued, as the engine's commit thread does.
                while let Ok(first) = requests.recv() {
                    let mut next = Some(first);
                    while let Some((bytes, token)) = next {
                        frame(&mut buffer, &bytes);
                        tokens.push(token);
                        next = if tokens.len() < BATCH_MAX {
                            requests.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    if let Err(err) = file.append_durably(&buffer) {
                        // Nothing is answered that was not made durable.
                        eprintln!("null-commit: cannot write its log: {err}");
                        return;
                    }
                    buffer.clear();
                    durable(std::mem::replace(
                        &mut tokens,
                        Vec::with_capacity(BATCH_MAX),
                    ));
                }
            })?;
        Ok(GroupLog { queue })
    }

    /// Queues `bytes` to be made durable; `token` comes back through the
    /// `durable` callback once they are.
    pub fn submit(&self, bytes: Vec<u8>, token: T) -> Result<(), SubmitError> {
        self.queue
            .try_send((bytes, token))
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
struct LogFile {
    file: File,
    at: u64,
}

impl LogFile {
    /// Writes the whole ring full of zeros and syncs it, so that every
    /// later write overwrites blocks the file already has.
    fn create(dir: &Path) -> std::io::Result<LogFile> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join("ring.log"))?;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..LOG_BYTES_MAX / zeros.len() as u64 {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        Ok(LogFile { file, at: 0 })
    }

    /// Writes `bytes` in one write at the ring's next place (from the
    /// start again when they would pass its end) and syncs the data
    /// before returning.
    fn append_durably(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let len = bytes.len() as u64;
        if len > LOG_BYTES_MAX {
            return Err(std::io::Error::other("a group larger than the ring"));
        }
        if self.at + len > LOG_BYTES_MAX {
            self.at = 0;
        }
        self.file.write_all_at(bytes, self.at)?;
        self.file.sync_data()?;
        self.at += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_after_the_bytes_are_in_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (done, answered) = mpsc::channel();
        let log = GroupLog::start(dir.path(), move |tokens: Vec<u32>| {
            for token in tokens {
                done.send(token).unwrap();
            }
        })
        .unwrap();
        for n in 0..100u32 {
            log.submit(format!("request {n}").into_bytes(), n).unwrap();
        }
        let got: Vec<u32> = (0..100)
            .map(|_| answered.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        // Every answered request is in the file, framed, in order.
        let bytes = std::fs::read(dir.path().join("ring.log")).unwrap();
        assert_eq!(bytes.len() as u64, LOG_BYTES_MAX, "the ring keeps its size");
        let mut records = Vec::new();
        let mut at = 0;
        // Records up to the first zero length: the rest is the ring's zeros.
        while bytes[at..at + 4] != [0, 0, 0, 0] {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            records.push(String::from_utf8(bytes[at + 4..at + 4 + len].to_vec()).unwrap());
            at += 4 + len;
        }
        assert_eq!(records.len(), 100);
        assert_eq!(records[0], "request 0");
        assert_eq!(records[99], "request 99");
    }

    #[test]
    fn a_full_queue_refuses_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        // A writer held in its first callback cannot take more: the queue
        // fills, and the request past it is refused at once.
        let (hold, held) = mpsc::channel::<()>();
        let log = GroupLog::start(dir.path(), move |_: Vec<()>| {
            let _ = held.recv();
        })
        .unwrap();
        log.submit(b"first".to_vec(), ()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut refused = None;
        for _ in 0..=QUEUE_MAX + BATCH_MAX {
            if let Err(err) = log.submit(b"more".to_vec(), ()) {
                refused = Some(err);
                break;
            }
        }
        assert_eq!(refused, Some(SubmitError::Full));
        drop(hold);
    }
}
