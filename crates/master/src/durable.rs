//! Making the op-log durable before anything is acknowledged: [`Durability`] sequences the
//! effects the state machine journals ([`super::oplog`]) into a [`LogSink`] with group
//! commit, and the server holds each reply until the ops it produced are durable.
//!
//! * Ordering: ops are submitted under the state lock, in the order they happened; one
//!   writer task drains everything queued into a single sink append (one fsync, or one
//!   etcd transaction), so the log order is the state order and concurrent puts share the
//!   cost of the write.
//! * Compaction: after `snapshot_interval_ops` ops the shell queues a snapshot (the whole
//!   state as ops, [`super::state::MasterState::snapshot_ops`]) in the same queue; the sink
//!   replaces its log with it, so recovery reads a bounded amount.
//! * Failure is fatal to serving: once an append fails (disk error, or under HA the leader
//!   lost its lease so the guarded etcd transaction was refused) every waiter gets an
//!   error, the connection is closed without the reply, and the master stops serving.
//!   Nothing that was not written is ever acknowledged.
//!
//! [`FileSink`] (`--snapshot_dir`) keeps `snapshot` + `oplog.<generation>` in a directory;
//! the etcd sink lives in [`super::ha`].

use super::oplog::LogOp;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("op-log i/o on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("op-log is corrupt: {0}")]
    Corrupt(String),
    /// Under HA: the guarded write was refused because another master leads now.
    #[error("fenced: this master no longer holds the leadership")]
    Fenced,
    #[error("op-log backend: {0}")]
    Backend(String),
}

/// Where the op-log lives.
#[async_trait::async_trait]
pub trait LogSink: Send + Sync + 'static {
    /// Every op needed to rebuild the state: the last snapshot, then the log after it.
    async fn load(&self) -> Result<Vec<LogOp>, SinkError>;
    /// Append ops durably (returns only once they would survive a crash).
    async fn append(&self, ops: &[LogOp]) -> Result<(), SinkError>;
    /// Replace snapshot + log with `state` (everything appended so far is in it).
    async fn compact(&self, state: &[LogOp]) -> Result<(), SinkError>;
    /// Human-readable location, for logs.
    fn describe(&self) -> String;
}

enum Item {
    Ops(Vec<LogOp>),
    Snapshot(Vec<LogOp>),
}

#[derive(Default)]
struct Queue {
    items: Vec<Item>,
    /// Ops submitted so far (the ticket of the last one).
    submitted: u64,
}

/// The sequencer between the state machine and a [`LogSink`]. Cheap to share (`Arc`).
pub struct Durability {
    sink: Arc<dyn LogSink>,
    queue: parking_lot::Mutex<Queue>,
    wake: Notify,
    durable: watch::Sender<u64>,
    failed: AtomicBool,
    since_snapshot: AtomicU64,
    /// Ops appended, batches written, snapshots written (metrics).
    pub appended_ops: AtomicU64,
    pub batches: AtomicU64,
    pub snapshots: AtomicU64,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durability")
            .field("sink", &self.sink.describe())
            .field("durable", &*self.durable.borrow())
            .finish()
    }
}

impl Durability {
    /// A sequencer over `sink`; call [`Durability::spawn_writer`] to start writing.
    pub fn new(sink: Arc<dyn LogSink>) -> Arc<Self> {
        Arc::new(Durability {
            sink,
            queue: parking_lot::Mutex::new(Queue::default()),
            wake: Notify::new(),
            durable: watch::channel(0).0,
            failed: AtomicBool::new(false),
            since_snapshot: AtomicU64::new(0),
            appended_ops: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
        })
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<dyn LogSink> {
        &self.sink
    }

    /// Queue `ops` (call under the state lock, right after the change). Returns the
    /// ticket to [`wait`](Self::wait) for, or `None` when there is nothing to wait for.
    pub fn submit(&self, ops: Vec<LogOp>) -> Option<u64> {
        if ops.is_empty() {
            return None;
        }
        let n = ops.len() as u64;
        let t = {
            let mut q = self.queue.lock();
            q.items.push(Item::Ops(ops));
            q.submitted += n;
            q.submitted
        };
        self.since_snapshot.fetch_add(n, Ordering::Relaxed);
        self.wake.notify_one();
        Some(t)
    }

    /// Queue a snapshot of the whole state (taken under the state lock, so it covers
    /// exactly the ops submitted before it).
    pub fn submit_snapshot(&self, state: Vec<LogOp>) {
        self.queue.lock().items.push(Item::Snapshot(state));
        self.since_snapshot.store(0, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Ops submitted since the last snapshot was queued.
    pub fn since_snapshot(&self) -> u64 {
        self.since_snapshot.load(Ordering::Relaxed)
    }

    /// Whether a write failed (the master must stop serving).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Stop acknowledging: every current and later waiter gets an error (a leader
    /// stepping down; its queued ops are never written).
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.durable.send_modify(|_| {});
    }

    /// Wait until the ops up to `ticket` are durable.
    pub async fn wait(&self, ticket: u64) -> Result<(), mooncake_store_protocol::ErrorCode> {
        let mut rx = self.durable.subscribe();
        loop {
            if *rx.borrow_and_update() >= ticket {
                return Ok(());
            }
            if self.failed() {
                return Err(mooncake_store_protocol::ErrorCode::NotDurable);
            }
            if rx.changed().await.is_err() {
                return Err(mooncake_store_protocol::ErrorCode::NotDurable);
            }
        }
    }

    /// Start the writer task; it ends at the first failed write (after waking every
    /// waiter) or when `stop` flips.
    pub fn spawn_writer(
        self: &Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let (items, upto) = {
                    let mut q = this.queue.lock();
                    (std::mem::take(&mut q.items), q.submitted)
                };
                if items.is_empty() {
                    tokio::select! {
                        _ = this.wake.notified() => continue,
                        _ = stop.changed() => return,
                    }
                }
                if let Err(e) = this.write(items).await {
                    tracing::error!(error = %e, sink = %this.sink.describe(), "op-log write failed; this master stops serving");
                    this.failed.store(true, Ordering::Release);
                    // Wake waiters so they see the failure.
                    this.durable.send_modify(|_| {});
                    return;
                }
                this.durable.send_replace(upto);
            }
        })
    }

    async fn write(&self, items: Vec<Item>) -> Result<(), SinkError> {
        // Consecutive op batches go out as one append.
        let mut batch: Vec<LogOp> = Vec::new();
        for item in items {
            match item {
                Item::Ops(ops) => batch.extend(ops),
                Item::Snapshot(state) => {
                    self.flush(&mut batch).await?;
                    self.sink.compact(&state).await?;
                    self.snapshots.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.flush(&mut batch).await
    }

    async fn flush(&self, batch: &mut Vec<LogOp>) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.sink.append(batch).await?;
        self.appended_ops
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        batch.clear();
        Ok(())
    }
}

// ------------------------------------------------------------------------------ records

/// Encode a batch of ops as one record: `u32 LE len | u64 LE fnv64(payload) | payload`.
pub fn encode_record(ops: &[LogOp]) -> Vec<u8> {
    let payload = bincode::serialize(ops).expect("encode to memory");
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&fnv64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decode consecutive records; stops at the first torn or corrupt one and returns the
/// ops before it and the byte length of the valid prefix.
pub fn decode_records(buf: &[u8]) -> (Vec<LogOp>, usize) {
    let mut ops = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 12 {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
        let sum = u64::from_le_bytes(buf[at + 4..at + 12].try_into().expect("8"));
        let Some(payload) = buf.get(at + 12..at + 12 + len) else {
            break;
        };
        if fnv64(payload) != sum {
            break;
        }
        let Ok(batch) = decode_ops(payload) else {
            break;
        };
        ops.extend(batch);
        at += 12 + len;
    }
    (ops, at)
}

fn decode_ops(payload: &[u8]) -> Result<Vec<LogOp>, SinkError> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(payload.len() as u64 * 4 + 1024)
        .deserialize(payload)
        .map_err(|e| SinkError::Corrupt(e.to_string()))
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

// ------------------------------------------------------------------------------ file

/// Run blocking file I/O from the writer task: `block_in_place` on a multi-threaded
/// runtime (other tasks move to other workers), inline on a current-thread one.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The op-log in a local directory (`--snapshot_dir`): `snapshot` (generation number +
/// records) and `oplog.<generation>` (records appended and fdatasync'ed per batch).
/// Compaction writes `snapshot.tmp`, fsyncs, renames it over `snapshot` (atomic), starts
/// `oplog.<generation+1>` and deletes the old log: a crash at any point leaves either
/// the old snapshot with its complete log, or the new snapshot with its (possibly empty)
/// log. A torn record at the end of the log (a crash mid-append, never acknowledged) is
/// cut off at load.
pub struct FileSink {
    dir: PathBuf,
    inner: tokio::sync::Mutex<FileState>,
}

struct FileState {
    generation: u64,
    log: Option<std::fs::File>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl FileSink {
    /// Use `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(FileSink {
            dir: dir.to_path_buf(),
            inner: tokio::sync::Mutex::new(FileState {
                generation: 0,
                log: None,
            }),
        })
    }

    fn log_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("oplog.{generation}"))
    }

    fn open_log(&self, generation: u64) -> Result<std::fs::File, SinkError> {
        let p = self.log_path(generation);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))
    }

    fn sync_dir(&self) -> Result<(), SinkError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }
}

#[async_trait::async_trait]
impl LogSink for FileSink {
    async fn load(&self) -> Result<Vec<LogOp>, SinkError> {
        let mut st = self.inner.lock().await;
        let snap = self.dir.join("snapshot");
        let mut ops = Vec::new();
        let mut generation = 0;
        match std::fs::File::open(&snap) {
            Ok(mut f) => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).map_err(io_err(&snap))?;
                if buf.len() < 8 {
                    return Err(SinkError::Corrupt(format!(
                        "{} is truncated",
                        snap.display()
                    )));
                }
                generation = u64::from_le_bytes(buf[..8].try_into().expect("8"));
                let (snap_ops, valid) = decode_records(&buf[8..]);
                if valid != buf.len() - 8 {
                    // The snapshot was fsync'ed before its rename: damage is not a torn
                    // write, so refuse rather than serve a partial index.
                    return Err(SinkError::Corrupt(format!(
                        "{} has a bad record at byte {}",
                        snap.display(),
                        valid + 8
                    )));
                }
                ops = snap_ops;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&snap)(e)),
        }
        let logp = self.log_path(generation);
        match std::fs::read(&logp) {
            Ok(buf) => {
                let (log_ops, valid) = decode_records(&buf);
                if valid < buf.len() {
                    tracing::warn!(path = %logp.display(), valid, len = buf.len(), "cutting a torn record off the op-log tail");
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&logp)
                        .map_err(io_err(&logp))?;
                    f.set_len(valid as u64).map_err(io_err(&logp))?;
                    f.sync_all().map_err(io_err(&logp))?;
                }
                ops.extend(log_ops);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&logp)(e)),
        }
        st.generation = generation;
        st.log = Some(self.open_log(generation)?);
        Ok(ops)
    }

    async fn append(&self, ops: &[LogOp]) -> Result<(), SinkError> {
        let rec = encode_record(ops);
        let mut st = self.inner.lock().await;
        if st.log.is_none() {
            st.log = Some(self.open_log(st.generation)?);
        }
        let path = self.log_path(st.generation);
        let f = st.log.as_mut().expect("opened");
        // Small synchronous write + fdatasync: tokio's blocking pool would add a thread
        // hop per batch for no gain (the writer task is the only one here).
        blocking(|| {
            f.write_all(&rec)?;
            f.sync_data()
        })
        .map_err(io_err(&path))
    }

    async fn compact(&self, state: &[LogOp]) -> Result<(), SinkError> {
        let mut st = self.inner.lock().await;
        let next = st.generation + 1;
        let tmp = self.dir.join("snapshot.tmp");
        let fin = self.dir.join("snapshot");
        let mut buf = next.to_le_bytes().to_vec();
        for chunk in state.chunks(4096) {
            buf.extend(encode_record(chunk));
        }
        blocking(|| -> Result<(), SinkError> {
            let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&buf).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            // Start the new log before the snapshot names it, so it always exists.
            let nl = self.open_log(next)?;
            nl.sync_all().map_err(io_err(&self.log_path(next)))?;
            std::fs::rename(&tmp, &fin).map_err(io_err(&fin))?;
            self.sync_dir()?;
            Ok(())
        })?;
        let old = self.log_path(st.generation);
        st.generation = next;
        st.log = Some(self.open_log(next)?);
        let _ = std::fs::remove_file(old);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("dir {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooncake_store_protocol::{ClientId, SegmentDesc};

    fn mount(n: &str) -> LogOp {
        LogOp::Mount {
            client: ClientId(1),
            segment: SegmentDesc {
                name: n.into(),
                base_addr: 0,
                size: 1 << 20,
                protocol: "tcp".into(),
                location: String::new(),
            },
        }
    }

    #[test]
    fn records_survive_and_torn_tails_are_cut() {
        let a = encode_record(&[mount("a")]);
        let b = encode_record(&[mount("b"), LogOp::Remove { key: "k".into() }]);
        let mut buf = [a.clone(), b.clone()].concat();
        assert_eq!(decode_records(&buf).0.len(), 3);
        buf.truncate(buf.len() - 1);
        let (ops, valid) = decode_records(&buf);
        assert_eq!((ops.len(), valid), (1, a.len()));
        let mut bad = [a.clone(), b].concat();
        let n = bad.len();
        bad[n - 2] ^= 1;
        assert_eq!(decode_records(&bad).1, a.len());
        assert_eq!(decode_records(&[1, 2, 3]).0.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_sink_appends_compacts_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSink::open(dir.path()).unwrap();
        assert!(s.load().await.unwrap().is_empty());
        s.append(&[mount("a")]).await.unwrap();
        s.append(&[mount("b")]).await.unwrap();
        s.compact(&[mount("a"), mount("b")]).await.unwrap();
        s.append(&[LogOp::Unmount { name: "a".into() }])
            .await
            .unwrap();
        drop(s);
        // A torn append after the last good one.
        let log = dir.path().join("oplog.1");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&encode_record(&[mount("c")])[..7]).unwrap();
        drop(f);
        let s = FileSink::open(dir.path()).unwrap();
        let ops = s.load().await.unwrap();
        assert_eq!(
            ops,
            vec![mount("a"), mount("b"), LogOp::Unmount { name: "a".into() }]
        );
        assert!(!dir.path().join("oplog.0").exists());
        // Appends after the cut land after the last good record.
        s.append(&[mount("d")]).await.unwrap();
        let s2 = FileSink::open(dir.path()).unwrap();
        assert_eq!(s2.load().await.unwrap().len(), 4);
    }
}
