//! Memory per object in the master: fills a [`MasterState`] with N one-replica objects
//! (default 1,000,000; `cargo run --release -p mooncake-master --example master_memory -- N`)
//! and reports heap bytes (counting allocator) and RSS growth per object.

use mooncake_master::MasterConfig;
use mooncake_master::{MasterState, SystemClock};
use mooncake_store_protocol::{ClientId, ReplicateConfig, SegmentDesc};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` came from `System.alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` came from `System` with layout `l`; the caller upholds `new`'s rules.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut st = MasterState::new(MasterConfig::default(), Arc::new(SystemClock));
    st.mount_segment(
        ClientId(1),
        &SegmentDesc {
            name: "127.0.0.1:12345".into(),
            base_addr: 1 << 40,
            size: 1 << 42, // 4 TiB of address space; nothing is touched
            protocol: "tcp".into(),
            location: String::new(),
        },
    )
    .unwrap();
    let heap0 = LIVE.load(Ordering::Relaxed);
    let rss0 = mooncake_master::metrics::rss_bytes().unwrap_or(0);
    let t0 = std::time::Instant::now();
    let rc = ReplicateConfig::default();
    for i in 0..n {
        // A typical KV-cache key: model prefix + 16 hex digits of a block hash.
        let key = format!("llama3-70b/{i:016x}");
        st.put_start(&key, 64 << 10, &rc, false).unwrap();
        st.put_end(&key).unwrap();
    }
    let dt = t0.elapsed();
    let heap = LIVE.load(Ordering::Relaxed) - heap0;
    let rss = mooncake_master::metrics::rss_bytes().unwrap_or(0) - rss0;
    println!(
        "{n} objects (27-byte keys, 1 replica, 64 KiB each) in {:.2} s ({:.0} puts/s)",
        dt.as_secs_f64(),
        n as f64 / dt.as_secs_f64()
    );
    println!(
        "heap: {:.1} MiB = {:.0} bytes/object;  RSS growth: {:.1} MiB = {:.0} bytes/object",
        heap as f64 / (1 << 20) as f64,
        heap as f64 / n as f64,
        rss as f64 / (1 << 20) as f64,
        rss as f64 / n as f64
    );
    st.check_invariants().unwrap();
}
