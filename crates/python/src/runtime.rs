//! The one tokio runtime every Python-facing object of this module runs on.
//!
//! Python threads never run async code themselves: a blocking binding
//! releases the GIL and `block_on`s its future here, so many Python threads
//! can have operations in flight at once while the engine's and the store
//! client's background tasks (servers, heartbeats) keep running between
//! calls. Worker count: `MOONCAKE_PY_RUNTIME_THREADS` (default: CPU count,
//! at least 2).

use std::future::Future;
use std::sync::OnceLock;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared runtime, built on first use.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let threads = std::env::var("MOONCAKE_PY_RUNTIME_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
                    .max(2)
            });
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("mooncake-py")
            .enable_all()
            .build()
            .expect("cannot build the tokio runtime for the mooncake module")
    })
}

/// Run `fut` to completion on the shared runtime with the GIL released.
pub fn block_on<F>(py: Python<'_>, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    py.allow_threads(|| runtime().block_on(fut))
}
