//! The file or block device behind a file segment, opened twice: once buffered
//! (any offset, any buffer) and once with `O_DIRECT` (bypasses the page cache, needs
//! offsets, lengths and buffer addresses aligned to [`DIRECT_ALIGN`]).
//!
//! Invariants: `len` is the registered size and never exceeds the size of the file
//! or device; both descriptors stay open as long as the `BackingFile` lives, and the
//! ring keeps an `Arc<BackingFile>` for every operation it has in flight.
//!
//! `O_DIRECT` is not available everywhere (tmpfs refuses the open with `EINVAL`; some
//! filesystems accept the open and refuse the I/O). Both cases are detected, here at
//! open time by a probe read and later by the ring on the first refused operation,
//! and the segment then uses buffered I/O only: slower, never wrong.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::FileError;

/// Alignment of offsets, lengths and buffer addresses for `O_DIRECT` I/O. 4 KiB covers
/// 512-byte and 4 KiB logical sectors and equals the page size, so a buffered head or
/// tail never shares a page-cache page with a direct middle of the same request.
pub const DIRECT_ALIGN: usize = 4096;

/// An open backing file with its registered size.
#[derive(Debug)]
pub struct BackingFile {
    path: PathBuf,
    len: u64,
    buffered: File,
    direct: Option<File>,
    direct_ok: AtomicBool,
}

impl BackingFile {
    /// Open `path` as a segment of `len` bytes. With `create`, a missing regular file
    /// is created and a shorter one extended (sparse) to `len`; otherwise the file or
    /// device must already hold `len` bytes. `len: None` takes the current size.
    pub fn open(path: &Path, len: Option<u64>, create: bool) -> Result<Self, FileError> {
        let open_err = |source| FileError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(open_err)?;
        // Seeking to the end gives the size of regular files and block devices alike.
        let mut actual = buffered.seek(SeekFrom::End(0)).map_err(open_err)?;
        let registered = len.unwrap_or(actual);
        if actual < registered && create && buffered.metadata().map_err(open_err)?.is_file() {
            buffered.set_len(registered).map_err(open_err)?;
            actual = registered;
        }
        if actual < registered {
            return Err(FileError::TooSmall {
                path: path.to_path_buf(),
                actual,
                registered,
            });
        }
        let direct = open_direct(path, registered);
        if direct.is_none() {
            tracing::info!(path = %path.display(), "O_DIRECT unavailable here; file segment uses buffered I/O");
        }
        Ok(Self {
            path: path.to_path_buf(),
            len: registered,
            direct_ok: AtomicBool::new(direct.is_some()),
            buffered,
            direct,
        })
    }

    /// Registered size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Path the segment was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether aligned pieces go through `O_DIRECT`.
    pub fn direct_enabled(&self) -> bool {
        self.direct.is_some() && self.direct_ok.load(Ordering::Relaxed)
    }

    /// Stop using `O_DIRECT` (the kernel refused an aligned direct operation).
    pub fn disable_direct(&self) {
        if self.direct_ok.swap(false, Ordering::Relaxed) {
            tracing::warn!(path = %self.path.display(), "O_DIRECT refused at run time; falling back to buffered I/O");
        }
    }

    /// Descriptor for buffered I/O.
    pub fn buffered_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.buffered.as_raw_fd()
    }

    /// Descriptor for direct I/O, when enabled.
    pub fn direct_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.direct
            .as_ref()
            .filter(|_| self.direct_enabled())
            .map(|f| f.as_raw_fd())
    }

    /// Flush written data to stable storage.
    pub fn sync(&self) -> Result<(), FileError> {
        self.buffered.sync_data().map_err(|source| FileError::Io {
            op: "fsync",
            offset: 0,
            source,
        })
    }
}

/// Open `path` with `O_DIRECT` and prove with one aligned read that the filesystem
/// accepts direct I/O; `None` where it does not.
fn open_direct(path: &Path, len: u64) -> Option<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    if len >= DIRECT_ALIGN as u64 {
        let mut probe = AlignedBuf::new(DIRECT_ALIGN);
        if let Err(e) = file.read_at(probe.as_mut_slice(), 0) {
            tracing::debug!(path = %path.display(), error = %e, "O_DIRECT probe read refused");
            return None;
        }
    }
    Some(file)
}

/// A heap buffer aligned to [`DIRECT_ALIGN`], for bouncing pieces whose memory
/// address is not aligned.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (`len` > 0).
    pub fn new(len: usize) -> Self {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (len.max(1)) and a power-of-two alignment.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, len }
    }

    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len.max(1), DIRECT_ALIGN)
            .expect("bounce buffer size overflows a Layout")
    }

    /// Start of the buffer.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The buffer as a slice.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr points to len initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}
