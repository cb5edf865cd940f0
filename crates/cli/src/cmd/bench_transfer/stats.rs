//! Throughput and latency bookkeeping of a bench run: per-batch latencies merged
//! from all threads, percentiles by nearest rank, GB/s in 10^9 bytes per second.

use std::time::Duration;

use serde::Serialize;

/// What one bench thread measured.
#[derive(Debug, Default)]
pub struct ThreadStats {
    pub bytes: u64,
    pub batches: u64,
    pub failed_batches: u64,
    /// Per-batch latencies in microseconds.
    pub latencies_us: Vec<u64>,
}

impl ThreadStats {
    pub fn record(&mut self, bytes: u64, latency: Duration) {
        self.bytes += bytes;
        self.batches += 1;
        self.latencies_us.push(latency.as_micros() as u64);
    }
}

/// The JSON report (`--json`) and the source of the human summary.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub protocol: String,
    pub op: String,
    pub mode: String,
    pub block_size: usize,
    pub batch_size: usize,
    pub threads: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub throughput_gbps: f64,
    pub batches: u64,
    pub failed_batches: u64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
    /// File protocol only: whether aligned I/O bypassed the page cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_io: Option<bool>,
    /// Where the buffers live (`cpu`, `cuda:0`).
    pub location: String,
    /// `--location cuda:N`: the device's copy bandwidths, same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda: Option<super::gpu::CudaBaseline>,
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100); 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Merge thread results into the totals of a report.
pub fn merge(threads: Vec<ThreadStats>) -> (u64, u64, u64, Vec<u64>) {
    let mut bytes = 0;
    let mut batches = 0;
    let mut failed = 0;
    let mut lat = Vec::new();
    for t in threads {
        bytes += t.bytes;
        batches += t.batches;
        failed += t.failed_batches;
        lat.extend(t.latencies_us);
    }
    lat.sort_unstable();
    (bytes, batches, failed, lat)
}

/// GB/s (10^9 bytes per second).
pub fn gbps(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / seconds / 1e9
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn merging_and_rates() {
        let mut a = ThreadStats::default();
        a.record(1000, Duration::from_micros(30));
        let mut b = ThreadStats::default();
        b.record(3000, Duration::from_micros(10));
        let (bytes, batches, failed, lat) = merge(vec![a, b]);
        assert_eq!((bytes, batches, failed), (4000, 2, 0));
        assert_eq!(lat, vec![10, 30]);
        assert!((gbps(2_000_000_000, 2.0) - 1.0).abs() < 1e-9);
    }
}
