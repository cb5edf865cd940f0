//! Bounds a server keeps on what clients can make it hold: connections (per
//! listener and per peer address), bytes of frames in flight (per
//! connection and per server), and time a connection may sit idle.
//!
//! Invariants: a permit is released exactly once, when dropped, so a
//! connection task that ends in any way (error, panic unwinding, abort)
//! gives back what it held; a reservation larger than the whole budget is
//! refused at once, never waited for.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::SecurityError;

/// Caps on concurrent connections for one listener.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_peer: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnectionLimiter>,
    peer: IpAddr,
}

impl ConnectionLimiter {
    /// At most `max_total` connections, at most `max_per_peer` from one address.
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_peer,
            state: Mutex::new((0, HashMap::new())),
        })
    }

    /// Admit a connection from `peer`, or say which cap it hit.
    pub fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Result<ConnPermit, SecurityError> {
        let mut st = self.state.lock();
        if st.0 >= self.max_total {
            return Err(SecurityError::TooManyConnections("listener limit"));
        }
        let n = st.1.entry(peer).or_insert(0);
        if *n >= self.max_per_peer {
            return Err(SecurityError::TooManyConnections("per-peer limit"));
        }
        *n += 1;
        st.0 += 1;
        Ok(ConnPermit {
            limiter: self.clone(),
            peer,
        })
    }

    /// Connections currently admitted.
    pub fn active(&self) -> usize {
        self.state.lock().0
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut st = self.limiter.state.lock();
        st.0 -= 1;
        if let Some(n) = st.1.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&self.peer);
            }
        }
    }
}

/// A budget of bytes (frames being received or buffered) shared by the
/// connections of one server.
#[derive(Debug)]
pub struct ByteBudget {
    max: u64,
    used: AtomicU64,
}

/// Bytes reserved from a [`ByteBudget`]; dropping it returns them.
#[derive(Debug)]
pub struct BytePermit {
    budget: Arc<ByteBudget>,
    bytes: u64,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicU64::new(0),
        })
    }

    /// Reserve `bytes` if they fit now.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<BytePermit> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(bytes).filter(|n| *n <= self.max)?;
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(BytePermit {
                        budget: self.clone(),
                        bytes,
                    })
                }
                Err(seen) => cur = seen,
            }
        }
    }

    /// Reserve `bytes`, waiting up to `wait` for others to release them
    /// (polling every millisecond); refused at once if `bytes` exceeds the
    /// whole budget.
    pub async fn reserve(self: &Arc<Self>, bytes: u64, wait: Duration) -> Option<BytePermit> {
        if bytes > self.max {
            return None;
        }
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = self.try_reserve(bytes) {
                return Some(p);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget's size.
    pub fn max(&self) -> u64 {
        self.max
    }
}

impl BytePermit {
    /// Bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A stream that fails with `TimedOut` when neither a read nor a write has
/// made progress for `idle` (a silent or stalled peer is closed; one that
/// trickles bytes is bounded by the protocol's own frame/header timeout).
#[derive(Debug)]
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    /// Wrap `inner`; the clock starts now.
    pub fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn progressed(&mut self) {
        let at = Instant::now() + self.idle;
        self.timer.as_mut().reset(at);
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.check(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.check(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn connection_caps_per_listener_and_peer() {
        let l = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert!(matches!(
            l.try_acquire(a),
            Err(SecurityError::TooManyConnections("per-peer limit"))
        ));
        let _p3 = l.try_acquire(b).unwrap();
        assert!(matches!(
            l.try_acquire(b),
            Err(SecurityError::TooManyConnections("listener limit"))
        ));
        drop(p1);
        assert_eq!(l.active(), 2);
        let _p4 = l.try_acquire(a).unwrap();
    }

    #[tokio::test]
    async fn byte_budget_reserves_and_returns() {
        let b = ByteBudget::new(100);
        let p = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(50).is_none());
        assert!(b.reserve(101, Duration::from_secs(1)).await.is_none());
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            b2.reserve(50, Duration::from_secs(5))
                .await
                .map(|p| p.bytes())
        });
        tokio::task::yield_now().await;
        drop(p);
        assert_eq!(waiter.await.unwrap(), Some(50));
        assert_eq!(b.used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_stream_times_out_and_active_one_does_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut s = IdleTimeout::new(a, Duration::from_secs(10));
        let writer = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                b.write_all(b"x").await.unwrap();
            }
            b
        });
        let mut buf = [0u8; 1];
        for _ in 0..3 {
            s.read_exact(&mut buf).await.unwrap();
        }
        let _b = writer.await.unwrap();
        let e = s.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
