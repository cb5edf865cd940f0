//! Typed errors of the `file` transport.

use std::io;
use std::path::PathBuf;

/// What can go wrong when a file or block device serves as a segment.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Opening, creating or sizing the backing file failed.
    #[error("file segment {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The backing file or device is smaller than the size it is registered with.
    #[error("file segment {path} holds {actual} bytes, less than the registered {registered}")]
    TooSmall {
        path: PathBuf,
        actual: u64,
        registered: u64,
    },
    /// A request reaches outside the registered size; nothing was read or written.
    #[error("range at offset {offset} of {len} bytes is outside the file segment of {size} bytes")]
    OutOfRange { offset: u64, len: usize, size: u64 },
    /// No file segment of that name is registered here.
    #[error("unknown file segment {0:?}")]
    UnknownSegment(String),
    /// A file segment of that name is already registered.
    #[error("file segment {0:?} is already registered")]
    AlreadyRegistered(String),
    /// The kernel refused to set up an io_uring instance.
    #[error("io_uring setup failed: {0}")]
    Ring(#[source] io::Error),
    /// A read or write failed in the kernel.
    #[error("{op} at file offset {offset}: {source}")]
    Io {
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The file ended before the requested range (it was truncated behind our back).
    #[error("unexpected end of file at offset {offset}")]
    UnexpectedEof { offset: u64 },
    /// The transport is shutting down and accepts no more work.
    #[error("file transport is shut down")]
    Shutdown,
}
