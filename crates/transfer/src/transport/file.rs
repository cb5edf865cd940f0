//! The `file` transport: a local file or block device registered as a segment of
//! its own, read and written through io_uring (`O_DIRECT` where aligned).
//!
//! Model. [`FileTransport::register_file`] opens a file (created and sized if asked)
//! under a segment name and returns the [`SegmentDescriptor`] to publish for it: one
//! buffer at address 0 of the registered length, so a request's `target_offset` is
//! the file offset, and a `transports.file` extension ([`FileSegmentDesc`]) naming the
//! path. Any engine on the same host (equal `host_id`) with `file` enabled can then
//! `open_segment(name)` and READ (file → local memory) or WRITE (local memory → file)
//! it; engines on other hosts have no route to it.
//!
//! Invariants:
//! - Every access is checked against the size the file was registered with, by the
//!   executing side, against the file it actually opened: nothing outside
//!   `[0, length)` is read or written, and a refused request touches nothing.
//! - `execute` returns (or its future is dropped) only after the kernel is done with
//!   the local memory: a dropped future waits for its in-flight operation in `Drop`.
//!
//! Layout: `file/ring.rs` (io_uring workers), `file/backing.rs` (opening, `O_DIRECT`
//! detection, aligned bounce buffers), `file/error.rs` ([`FileError`]).

mod backing;
mod error;
mod ring;

#[cfg(test)]
mod core_tests;

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub use backing::DIRECT_ALIGN;
pub use error::FileError;

use self::backing::BackingFile;
use self::ring::{Dir, IoRequest, RingPool};
use super::{SharedTransport, Slice, Transport, TransportContext};
use crate::descriptor::{BufferDesc, SegmentDescriptor};
use crate::{Opcode, Protocol, TransferError};

/// Key of the descriptor extension (`transports.file`).
pub const EXTENSION: &str = "file";

/// io_uring workers (threads, one ring each) per transport.
const WORKERS: usize = 2;
/// Entries per ring: pieces in flight per worker.
const RING_DEPTH: u32 = 64;

/// What a file segment's descriptor carries under `transports.file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSegmentDesc {
    /// Absolute path of the file or block device.
    pub path: PathBuf,
    /// Registered size in bytes.
    pub length: u64,
}

/// Build the file transport for an engine.
pub fn build(ctx: &TransportContext) -> Result<SharedTransport, TransferError> {
    Ok(build_typed(ctx)?)
}

/// Build it with its concrete type (the engine keeps it for file-segment
/// registration, `TransferEngine::register_file_segment`).
pub fn build_typed(ctx: &TransportContext) -> Result<Arc<FileTransport>, TransferError> {
    Ok(Arc::new(FileTransport::new(ctx.host_id.clone())?))
}

/// The file transport (see the module docs).
pub struct FileTransport {
    host_id: String,
    pool: RingPool,
    /// Files registered by this engine, by segment name.
    registered: Mutex<HashMap<String, Arc<BackingFile>>>,
    /// Files of other engines' segments opened for execution, by (name, epoch).
    opened: Mutex<HashMap<String, (u64, Arc<BackingFile>)>>,
}

impl std::fmt::Debug for FileTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTransport")
            .field(
                "registered",
                &self.registered.lock().keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl FileTransport {
    /// A transport whose file segments are reachable from engines with `host_id`.
    pub fn new(host_id: String) -> Result<Self, FileError> {
        Ok(Self {
            host_id,
            pool: RingPool::new(WORKERS, RING_DEPTH)?,
            registered: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashMap::new()),
        })
    }

    /// Open `path` as the file segment `name` of `len` bytes (`None`: the file's
    /// current size). With `create`, a missing file is created and a short one
    /// extended. Returns the descriptor to publish under `mooncake/ram/<name>`;
    /// its `epoch` is random, so peers notice a re-registration.
    pub fn register_file(
        &self,
        name: &str,
        path: &Path,
        len: Option<u64>,
        create: bool,
    ) -> Result<SegmentDescriptor, FileError> {
        let mut registered = self.registered.lock();
        if registered.contains_key(name) {
            return Err(FileError::AlreadyRegistered(name.to_string()));
        }
        let path = std::path::absolute(path).map_err(|source| FileError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let file = Arc::new(BackingFile::open(&path, len, create)?);
        let desc = self.descriptor(name, &file);
        registered.insert(name.to_string(), file);
        tracing::info!(segment = name, path = %path.display(), len = desc.buffers[0].length, "file segment registered");
        Ok(desc)
    }

    /// Forget the file segment `name` (in-flight operations finish first: they
    /// hold the file open).
    pub fn unregister_file(&self, name: &str) -> Result<(), FileError> {
        self.registered
            .lock()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| FileError::UnknownSegment(name.to_string()))
    }

    /// Names of the file segments registered here.
    pub fn registered_files(&self) -> Vec<String> {
        let mut v: Vec<_> = self.registered.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether aligned I/O on the registered segment `name` bypasses the page cache.
    pub fn direct_io(&self, name: &str) -> Option<bool> {
        self.registered.lock().get(name).map(|f| f.direct_enabled())
    }

    /// Flush the registered segment `name` to stable storage.
    pub fn sync(&self, name: &str) -> Result<(), FileError> {
        let file = self
            .registered
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| FileError::UnknownSegment(name.to_string()))?;
        file.sync()
    }

    fn descriptor(&self, name: &str, file: &BackingFile) -> SegmentDescriptor {
        let ext = FileSegmentDesc {
            path: file.path().to_path_buf(),
            length: file.len(),
        };
        SegmentDescriptor {
            name: name.to_string(),
            protocol: Protocol::File.as_str().to_string(),
            rpc_host: String::new(),
            rpc_port: 0,
            host_id: self.host_id.clone(),
            pid: std::process::id(),
            epoch: rand::random(),
            version: 1,
            buffers: vec![BufferDesc {
                name: format!("file:{}", file.path().display()),
                addr: 0,
                length: file.len(),
                lkey: Vec::new(),
                rkey: Vec::new(),
                shm: None,
            }],
            transports: [(
                EXTENSION.to_string(),
                serde_json::to_value(ext).expect("file extension serialises"),
            )]
            .into_iter()
            .collect(),
        }
    }

    /// The open file behind `peer`: ours if registered here with the same path,
    /// else opened (and cached per epoch) from the descriptor's path and length.
    fn backing_for(&self, peer: &SegmentDescriptor) -> Result<Arc<BackingFile>, FileError> {
        let ext =
            file_extension(peer).ok_or_else(|| FileError::UnknownSegment(peer.name.clone()))?;
        if let Some(f) = self.registered.lock().get(&peer.name) {
            if f.path() == ext.path && f.len() == ext.length {
                return Ok(f.clone());
            }
        }
        let mut opened = self.opened.lock();
        if let Some((epoch, f)) = opened.get(&peer.name) {
            if *epoch == peer.epoch && f.path() == ext.path && f.len() == ext.length {
                return Ok(f.clone());
            }
        }
        let f = Arc::new(BackingFile::open(&ext.path, Some(ext.length), false)?);
        opened.insert(peer.name.clone(), (peer.epoch, f.clone()));
        Ok(f)
    }

    /// Run one request against an open file, waiting asynchronously.
    async fn run(&self, file: Arc<BackingFile>, slice: &Slice) -> Result<(), FileError> {
        check_bounds(file.len(), slice.remote_addr, slice.len)?;
        let dir = match slice.opcode {
            Opcode::Read => Dir::Read,
            Opcode::Write => Dir::Write,
        };
        let waiter = InFlight::new();
        // Set when the completion runs — or is dropped unrun (worker gone), so a
        // cancelled caller never waits forever.
        let signal = FinishOnDrop(waiter.state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pool.submit(
            IoRequest {
                file,
                dir,
                offset: slice.remote_addr,
                addr: slice.local_addr,
                len: slice.len,
            },
            Box::new(move |r| {
                let _ = tx.send(r);
                drop(signal);
            }),
        );
        let r = rx.await.unwrap_or(Err(FileError::Shutdown));
        waiter.state.finish();
        r
    }
}

/// Refuse `[offset, offset+len)` unless it lies inside `[0, size)`.
fn check_bounds(size: u64, offset: u64, len: usize) -> Result<(), FileError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(FileError::OutOfRange { offset, len, size }),
    }
}

fn file_extension(peer: &SegmentDescriptor) -> Option<FileSegmentDesc> {
    serde_json::from_value(peer.transports.get(EXTENSION)?.clone()).ok()
}

/// Blocks in `Drop` until the in-flight operation completed, so a cancelled
/// `execute` never leaves the kernel writing into memory the engine released.
struct InFlight {
    state: Arc<DoneFlag>,
}

#[derive(Default)]
struct DoneFlag {
    done: Mutex<bool>,
    cv: Condvar,
}

impl DoneFlag {
    fn finish(&self) {
        *self.done.lock() = true;
        self.cv.notify_all();
    }
}

struct FinishOnDrop(Arc<DoneFlag>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

impl InFlight {
    fn new() -> Self {
        Self {
            state: Arc::new(DoneFlag::default()),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut done = self.state.done.lock();
        while !*done {
            self.state.cv.wait(&mut done);
        }
    }
}

#[async_trait::async_trait]
impl Transport for FileTransport {
    fn protocol(&self) -> Protocol {
        Protocol::File
    }

    fn can_reach(&self, peer: &SegmentDescriptor, remote_addr: u64, len: usize) -> bool {
        peer.host_id == self.host_id
            && file_extension(peer)
                .is_some_and(|e| check_bounds(e.length, remote_addr, len).is_ok())
    }

    async fn execute(
        &self,
        peer: &Arc<SegmentDescriptor>,
        slice: &Slice,
    ) -> Result<(), TransferError> {
        let file = self.backing_for(peer)?;
        let span = tracing::trace_span!("file_io", segment = %peer.name, op = ?slice.opcode, offset = slice.remote_addr, len = slice.len);
        Ok(self.run(file, slice).instrument(span).await?)
    }

    fn forget_peer(&self, segment: &str) {
        self.opened.lock().remove(segment);
    }

    async fn shutdown(&self) {
        self.opened.lock().clear();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl From<FileError> for TransferError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::OutOfRange { offset, len, size } => TransferError::OutOfRange {
                addr: offset,
                len: len as u64,
                buffer_addr: 0,
                buffer_len: size,
            },
            FileError::UnknownSegment(s) => TransferError::UnknownSegment(s),
            FileError::Io { source, .. } | FileError::Open { source, .. } => {
                TransferError::Io(source)
            }
            FileError::UnexpectedEof { offset } => TransferError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file ended before offset {offset}"),
            )),
            FileError::Ring(_) | FileError::Shutdown => TransferError::TransportUnavailable {
                protocol: Protocol::File,
                reason: e.to_string(),
            },
            other => TransferError::InvalidConfig(other.to_string()),
        }
    }
}
