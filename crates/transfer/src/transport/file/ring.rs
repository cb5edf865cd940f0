//! io_uring workers: each owns one ring and one thread, takes whole requests from a
//! channel, splits them into pieces (buffered head, direct middle, buffered tail;
//! bounce buffers where the memory is not aligned), keeps up to `depth` pieces in
//! flight, resubmits short transfers, and reports each request once, after every one
//! of its pieces has been reaped.
//!
//! Safety invariants (the reason the `unsafe` blocks below hold):
//! - memory: a request's `[addr, addr+len)` is caller memory that stays valid until its
//!   completion callback runs (the engine guarantees this: sources lie in registered
//!   buffers, which are not unregistered while batches use them). The callback runs
//!   only after the last piece's CQE is reaped, so the kernel never touches the memory
//!   after the caller learns the request finished — also on failure.
//! - bounce buffers live in the piece slab until their CQE is reaped.
//! - file descriptors: each in-flight piece's request holds an `Arc<BackingFile>`.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, types, IoUring};

use super::backing::{AlignedBuf, BackingFile, DIRECT_ALIGN};
use super::error::FileError;

/// Largest piece handed to the kernel in one operation.
pub const MAX_PIECE: usize = 4 << 20;

/// Direction of a file I/O request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// File → memory.
    Read,
    /// Memory → file.
    Write,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Read => "read",
            Dir::Write => "write",
        }
    }
}

/// One request: move `len` bytes between memory at `addr` and the file at `offset`.
/// The range must already be checked against the file's registered size.
pub struct IoRequest {
    pub file: Arc<BackingFile>,
    pub dir: Dir,
    pub offset: u64,
    pub addr: usize,
    pub len: usize,
}

/// Called once per request with its outcome.
pub type Completion = Box<dyn FnOnce(Result<(), FileError>) + Send>;

struct Job {
    req: IoRequest,
    done: Completion,
}

/// A pool of io_uring workers; requests are spread round-robin.
pub struct RingPool {
    senders: Vec<mpsc::Sender<Job>>,
    /// One eventfd per worker: written after each send, so a worker blocked in
    /// the ring waiting for completions also wakes for new work.
    wakers: Vec<Arc<OwnedFd>>,
    next: AtomicUsize,
    threads: Vec<JoinHandle<()>>,
}

impl RingPool {
    /// Start `workers` threads, each with a ring of `depth` entries.
    pub fn new(workers: usize, depth: u32) -> Result<Self, FileError> {
        let mut senders = Vec::new();
        let mut wakers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            // Set the ring up here, so a kernel without io_uring is a typed error now.
            let ring = IoUring::new(depth.max(4)).map_err(FileError::Ring)?;
            // SAFETY: eventfd has no memory-safety preconditions.
            let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if raw < 0 {
                return Err(FileError::Ring(io::Error::last_os_error()));
            }
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            let waker = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
            let (tx, rx) = mpsc::channel();
            let worker_waker = waker.clone();
            let handle = std::thread::Builder::new()
                .name(format!("mc-uring-{i}"))
                .spawn(move || Worker::new(ring, rx, worker_waker).run())
                .map_err(FileError::Ring)?;
            senders.push(tx);
            wakers.push(waker);
            threads.push(handle);
        }
        Ok(Self {
            senders,
            wakers,
            next: AtomicUsize::new(0),
            threads,
        })
    }

    /// Queue a request; `done` runs on a worker thread when it has finished.
    pub fn submit(&self, req: IoRequest, done: Completion) {
        if req.len == 0 {
            return done(Ok(()));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        if let Err(mpsc::SendError(job)) = self.senders[i].send(Job { req, done }) {
            return (job.done)(Err(FileError::Shutdown));
        }
        wake(&self.wakers[i]);
    }

    /// Run one request and wait for it (blocking; not for async contexts).
    #[cfg(test)]
    pub fn run_blocking(&self, req: IoRequest) -> Result<(), FileError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            req,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(FileError::Shutdown))
    }
}

impl Drop for RingPool {
    fn drop(&mut self) {
        // Closing the channels lets each worker finish what it holds and exit.
        self.senders.clear();
        for w in &self.wakers {
            wake(w);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Bump a worker's eventfd (its armed read completes and the worker wakes).
fn wake(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local to a valid eventfd; a failure
    // (counter saturated) still leaves the worker woken.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// `user_data` of the eventfd read (piece indices are far smaller).
const WAKE_TOKEN: u64 = u64::MAX;

/// A piece of a request, in flight or waiting for a ring slot.
struct Piece {
    job: usize,
    direct: bool,
    file_off: u64,
    mem: *mut u8,
    len: usize,
    /// Bytes transferred so far (short reads/writes are resubmitted from here).
    done: usize,
    /// Aligned staging buffer when `mem` is not aligned for O_DIRECT.
    bounce: Option<AlignedBuf>,
}

struct JobState {
    job: Job,
    pieces_left: usize,
    error: Option<FileError>,
}

struct Worker {
    ring: IoUring,
    rx: mpsc::Receiver<Job>,
    waker: Arc<OwnedFd>,
    /// Target of the armed eventfd read; leaked, so it outlives any read the
    /// kernel may still hold when the ring is torn down.
    wake_buf: &'static mut u64,
    wake_armed: bool,
    depth: usize,
    jobs: Vec<Option<JobState>>,
    free_jobs: Vec<usize>,
    pieces: Vec<Option<Piece>>,
    free_pieces: Vec<usize>,
    waiting: VecDeque<usize>,
    in_flight: usize,
}

impl Worker {
    fn new(ring: IoUring, rx: mpsc::Receiver<Job>, waker: Arc<OwnedFd>) -> Self {
        // One slot stays free for re-arming the eventfd read.
        let depth = ring.params().sq_entries() as usize - 1;
        Self {
            ring,
            rx,
            waker,
            wake_buf: Box::leak(Box::new(0u64)),
            wake_armed: false,
            depth,
            jobs: Vec::new(),
            free_jobs: Vec::new(),
            pieces: Vec::new(),
            free_pieces: Vec::new(),
            waiting: VecDeque::new(),
            in_flight: 0,
        }
    }

    fn run(mut self) {
        let mut open = true;
        loop {
            // Take everything queued, but do not hoard far beyond the ring's depth.
            while open && self.waiting.len() < 4 * self.depth {
                match self.rx.try_recv() {
                    Ok(job) => self.accept(job),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            if !open && self.in_flight == 0 && self.waiting.is_empty() {
                return;
            }
            self.push_waiting();
            self.arm_wake();
            // Sleeps until a piece completes or a submitter bumps the eventfd.
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    // The ring itself is broken: nothing in flight will complete.
                    // Leak the in-flight state (memory stays untouched by us) and
                    // fail the caller's work rather than hang.
                    tracing::error!(error = %e, "io_uring submit failed; file worker stops");
                    self.abandon(e);
                    return;
                }
            }
            self.reap();
        }
    }

    /// Keep one read on the eventfd pending, so new work wakes `submit_and_wait`.
    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(types::Fd(self.waker.as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(WAKE_TOKEN);
        // SAFETY: `wake_buf` is leaked (lives forever) and the eventfd is kept open
        // by `self.waker` and the pool; a free SQ slot is reserved for this entry.
        if unsafe { self.ring.submission().push(&entry) }.is_ok() {
            self.wake_armed = true;
        }
    }

    fn accept(&mut self, job: Job) {
        let slot = match self.free_jobs.pop() {
            Some(s) => s,
            None => {
                self.jobs.push(None);
                self.jobs.len() - 1
            }
        };
        let pieces = split(&job.req);
        self.jobs[slot] = Some(JobState {
            job,
            pieces_left: pieces.len(),
            error: None,
        });
        for mut p in pieces {
            p.job = slot;
            let idx = match self.free_pieces.pop() {
                Some(i) => i,
                None => {
                    self.pieces.push(None);
                    self.pieces.len() - 1
                }
            };
            self.pieces[idx] = Some(p);
            self.waiting.push_back(idx);
        }
    }

    fn push_waiting(&mut self) {
        while self.in_flight < self.depth {
            let Some(idx) = self.waiting.pop_front() else {
                break;
            };
            let piece = self.pieces[idx].as_mut().expect("waiting piece exists");
            let state = self.jobs[piece.job].as_mut().expect("piece's job exists");
            if state.error.is_some() {
                // Request already failed: do not start more of it.
                self.finish_piece(idx, None);
                continue;
            }
            let file = &state.job.req.file;
            let fd = match (piece.direct, file.direct_fd()) {
                (true, Some(fd)) => fd,
                _ => {
                    piece.direct = false;
                    file.buffered_fd()
                }
            };
            let base = match piece.bounce.as_mut() {
                Some(b) => b.as_mut_ptr(),
                None => piece.mem,
            };
            // SAFETY: `base` points into either the caller's memory (valid for the
            // request's whole range until its completion runs, see the module docs) or
            // the piece's own bounce buffer; `done < len`, so the pointer stays inside.
            let ptr = unsafe { base.add(piece.done) };
            let remaining = (piece.len - piece.done) as u32;
            let off = piece.file_off + piece.done as u64;
            let entry = match state.job.req.dir {
                Dir::Read => opcode::Read::new(types::Fd(fd), ptr, remaining)
                    .offset(off)
                    .build(),
                Dir::Write => opcode::Write::new(types::Fd(fd), ptr, remaining)
                    .offset(off)
                    .build(),
            }
            .user_data(idx as u64);
            // SAFETY: the buffer and fd stay valid until this entry's CQE is reaped
            // (module invariants); in_flight < depth, so the queue has room.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_err() {
                self.waiting.push_front(idx);
                break;
            }
            self.in_flight += 1;
        }
    }

    fn reap(&mut self) {
        let cqes: Vec<(usize, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        for (idx, res) in cqes {
            if idx as u64 == WAKE_TOKEN {
                self.wake_armed = false;
                continue;
            }
            self.in_flight -= 1;
            self.complete(idx, res);
        }
    }

    fn complete(&mut self, idx: usize, res: i32) {
        let piece = self.pieces[idx].as_mut().expect("completed piece exists");
        let job = piece.job;
        let req = &self.jobs[job].as_ref().expect("piece's job exists").job.req;
        let off = piece.file_off + piece.done as u64;
        if res < 0 {
            let errno = -res;
            if errno == libc::EINTR || errno == libc::EAGAIN {
                self.waiting.push_back(idx);
            } else if errno == libc::EINVAL && piece.direct {
                // The filesystem refused this direct operation: buffered from now on.
                req.file.disable_direct();
                piece.direct = false;
                self.waiting.push_back(idx);
            } else {
                let err = FileError::Io {
                    op: req.dir.name(),
                    offset: off,
                    source: io::Error::from_raw_os_error(errno),
                };
                self.finish_piece(idx, Some(err));
            }
            return;
        }
        if res == 0 {
            // No progress on a non-empty range: the file shrank under us.
            self.finish_piece(idx, Some(FileError::UnexpectedEof { offset: off }));
            return;
        }
        piece.done += res as usize;
        if piece.done < piece.len {
            self.waiting.push_back(idx);
            return;
        }
        if let (Dir::Read, Some(b)) = (req.dir, piece.bounce.as_mut()) {
            // SAFETY: the bounce buffer holds `len` bytes just read; `mem` is caller
            // memory valid for `len` bytes (module invariants); they do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(b.as_mut_ptr(), piece.mem, piece.len) };
        }
        self.finish_piece(idx, None);
    }

    fn finish_piece(&mut self, idx: usize, err: Option<FileError>) {
        let piece = self.pieces[idx].take().expect("finished piece exists");
        self.free_pieces.push(idx);
        let state = self.jobs[piece.job].as_mut().expect("piece's job exists");
        if state.error.is_none() {
            state.error = err;
        }
        state.pieces_left -= 1;
        if state.pieces_left == 0 {
            let state = self.jobs[piece.job].take().expect("job exists");
            self.free_jobs.push(piece.job);
            (state.job.done)(match state.error {
                None => Ok(()),
                Some(e) => Err(e),
            });
        }
    }

    fn abandon(&mut self, e: io::Error) {
        for state in self.jobs.drain(..).flatten() {
            (state.job.done)(Err(FileError::Ring(io::Error::new(
                e.kind(),
                e.to_string(),
            ))));
        }
        // Pieces in flight may still be used by the kernel: leak them (and their
        // bounce buffers) instead of freeing memory the kernel may write.
        std::mem::forget(std::mem::take(&mut self.pieces));
        while let Ok(job) = self.rx.try_recv() {
            (job.done)(Err(FileError::Shutdown));
        }
    }
}

/// Split a request into pieces: unaligned head and tail buffered, the aligned middle
/// direct (bounced when the memory is not aligned), everything at most [`MAX_PIECE`].
fn split(req: &IoRequest) -> Vec<Piece> {
    let a = DIRECT_ALIGN as u64;
    let start = req.offset;
    let end = req.offset + req.len as u64;
    let (head_end, tail_start) = if req.file.direct_enabled() {
        let head_end = start.div_ceil(a).saturating_mul(a).min(end);
        let tail_start = (end / a * a).max(head_end);
        (head_end, tail_start)
    } else {
        (end, end)
    };
    let mut pieces = Vec::new();
    let mut push = |from: u64, to: u64, direct: bool| {
        let mut at = from;
        while at < to {
            let len = ((to - at) as usize).min(MAX_PIECE);
            let mem_off = (at - start) as usize;
            let mem = (req.addr + mem_off) as *mut u8;
            let bounce = if direct && !(mem as usize).is_multiple_of(DIRECT_ALIGN) {
                let mut b = AlignedBuf::new(len);
                if req.dir == Dir::Write {
                    // SAFETY: `mem` is caller memory valid for `len` bytes (module
                    // invariants); the fresh bounce buffer holds `len` bytes.
                    unsafe { std::ptr::copy_nonoverlapping(mem, b.as_mut_ptr(), len) };
                }
                Some(b)
            } else {
                None
            };
            pieces.push(Piece {
                job: 0,
                direct,
                file_off: at,
                mem,
                len,
                done: 0,
                bounce,
            });
            at += len as u64;
        }
    };
    push(start, head_end, false);
    push(head_end, tail_start, true);
    push(tail_start, end, false);
    pieces
}
