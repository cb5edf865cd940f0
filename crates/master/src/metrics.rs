//! Prometheus metrics of the master: per-RPC counters and latency histograms (lock-free
//! atomics, recorded by the server on every request), rendered together with gauges read
//! from the state machine at scrape time. Text exposition format 0.0.4, written with
//! `mooncake-telemetry`'s writer (no registry crate needed for this small, fixed set).

use crate::state::Stats;
use crate::views::{SegmentView, Summary};
use mooncake_store_protocol::Request;
use mooncake_telemetry::{Kind, TextWriter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
    250e-3, 500e-3, 1.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct OpMetrics {
    errors: AtomicU64,
    latency: Histogram,
}

/// Counters the server records per request.
#[derive(Debug)]
pub struct Metrics {
    ops: Vec<OpMetrics>,
    malformed_frames: AtomicU64,
    connections: AtomicU64,
    connections_open: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ops: Request::NAMES
                .iter()
                .map(|_| OpMetrics::default())
                .collect(),
            malformed_frames: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Record one handled request (`op` = [`Request::index`]).
    pub fn record(&self, op: usize, elapsed: Duration, ok: bool) {
        if let Some(m) = self.ops.get(op) {
            m.latency.observe(elapsed);
            if !ok {
                m.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Count a frame that did not decode or was too large.
    pub fn malformed(&self) {
        self.malformed_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection opened.
    pub fn conn_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed.
    pub fn conn_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests of kind `op` handled so far.
    pub fn op_count(&self, op: &str) -> u64 {
        Request::NAMES
            .iter()
            .position(|n| *n == op)
            .map(|i| self.ops[i].latency.count())
            .unwrap_or(0)
    }

    /// Render everything in the Prometheus text format.
    pub fn render(&self, summary: &Summary, segments: &[SegmentView], stats: &Stats) -> String {
        let mut o = TextWriter::with_capacity(16 << 10);
        let gauge = |o: &mut TextWriter, name: &str, help: &str, v: f64| {
            o.gauge(name, help, v);
        };
        gauge(
            &mut o,
            "mooncake_master_objects",
            "Visible objects.",
            summary.objects as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_pending_puts",
            "Puts started and not ended.",
            summary.pending_puts as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_bytes_used",
            "Allocated bytes in all segments.",
            summary.bytes_used as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_bytes_total",
            "Capacity of all segments.",
            summary.bytes_total as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_segments",
            "Mounted segments.",
            summary.segments as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_clients",
            "Live clients.",
            summary.clients as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_active_leases",
            "Objects with an unexpired lease.",
            summary.active_leases as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_soft_pinned_objects",
            "Objects with an unexpired soft pin.",
            summary.soft_pinned as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_hard_pinned_objects",
            "Hard-pinned objects (never evicted).",
            summary.hard_pinned as f64,
        );
        gauge(
            &mut o,
            "mooncake_master_connections_open",
            "Open RPC connections.",
            self.connections_open.load(Ordering::Relaxed) as f64,
        );
        if let Some(rss) = rss_bytes() {
            gauge(
                &mut o,
                "mooncake_master_rss_bytes",
                "Resident set size of the master process.",
                rss as f64,
            );
        }
        for (name, help, f) in [
            (
                "mooncake_master_segment_bytes_used",
                "Allocated bytes per segment.",
                (|s: &SegmentView| s.used) as fn(&SegmentView) -> u64,
            ),
            (
                "mooncake_master_segment_bytes_total",
                "Capacity per segment.",
                |s: &SegmentView| s.size,
            ),
        ] {
            o.family(name, Kind::Gauge, help);
            for s in segments {
                o.sample(name, &[("segment", &s.name)], f(s));
            }
        }
        let counter = |o: &mut TextWriter, name: &str, help: &str, v: u64| {
            o.counter(name, help, v);
        };
        counter(
            &mut o,
            "mooncake_master_evicted_objects_total",
            "Objects evicted.",
            stats.evicted_objects,
        );
        counter(
            &mut o,
            "mooncake_master_evicted_bytes_total",
            "Bytes evicted.",
            stats.evicted_bytes,
        );
        counter(
            &mut o,
            "mooncake_master_eviction_rounds_total",
            "Watermark-triggered eviction rounds.",
            stats.eviction_rounds,
        );
        counter(
            &mut o,
            "mooncake_master_expired_puts_total",
            "Reservations released by timeout.",
            stats.expired_puts,
        );
        counter(
            &mut o,
            "mooncake_master_dead_clients_total",
            "Clients declared dead.",
            stats.dead_clients,
        );
        counter(
            &mut o,
            "mooncake_master_leases_granted_total",
            "Leases granted by gets.",
            stats.leases_granted,
        );
        counter(
            &mut o,
            "mooncake_master_objects_lost_total",
            "Objects lost with their last replica.",
            stats.objects_lost,
        );
        counter(
            &mut o,
            "mooncake_master_put_no_space_total",
            "Puts refused for lack of space.",
            stats.put_no_space,
        );
        counter(
            &mut o,
            "mooncake_master_malformed_frames_total",
            "Request frames that did not decode.",
            self.malformed_frames.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "mooncake_master_connections_total",
            "RPC connections accepted.",
            self.connections.load(Ordering::Relaxed),
        );

        let name = "mooncake_master_rpc_total";
        o.family(name, Kind::Counter, "Requests handled, by op.");
        for (i, n) in Request::NAMES.iter().enumerate() {
            o.sample(name, &[("op", n)], self.ops[i].latency.count());
        }
        let name = "mooncake_master_rpc_errors_total";
        o.family(
            name,
            Kind::Counter,
            "Requests answered with an error, by op.",
        );
        for (i, n) in Request::NAMES.iter().enumerate() {
            let errors = self.ops[i].errors.load(Ordering::Relaxed);
            o.sample(name, &[("op", n)], errors);
        }
        let name = "mooncake_master_rpc_duration_seconds";
        o.family(name, Kind::Histogram, "Time the master spent on a request.");
        for (i, n) in Request::NAMES.iter().enumerate() {
            let h = &self.ops[i].latency;
            o.histogram(
                name,
                &[("op", n)],
                &LATENCY_BUCKETS,
                h.buckets.iter().map(|b| b.load(Ordering::Relaxed)),
                h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                h.count(),
            );
        }
        o.finish()
    }
}

/// Resident set size of this process (Linux), bytes.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // Page size is 4 KiB on every Linux target this runs on (x86_64, aarch64 default).
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histogram_cumulatively() {
        let m = Metrics::default();
        let op = Request::Ping.index();
        m.record(op, Duration::from_micros(5), true);
        m.record(op, Duration::from_micros(300), false);
        m.record(op, Duration::from_secs(3), true);
        let text = m.render(&Summary::default(), &[], &Stats::default());
        assert!(text.contains("mooncake_master_rpc_total{op=\"ping\"} 3"));
        assert!(text.contains("mooncake_master_rpc_errors_total{op=\"ping\"} 1"));
        assert!(text
            .contains("mooncake_master_rpc_duration_seconds_bucket{op=\"ping\",le=\"0.00001\"} 1"));
        assert!(text
            .contains("mooncake_master_rpc_duration_seconds_bucket{op=\"ping\",le=\"0.0005\"} 2"));
        assert!(
            text.contains("mooncake_master_rpc_duration_seconds_bucket{op=\"ping\",le=\"+Inf\"} 3")
        );
        assert_eq!(m.op_count("ping"), 3);
    }
}
