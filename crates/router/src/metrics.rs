//! The router's Prometheus metrics (written with `mooncake-telemetry`'s
//! text exposition writer, no registry): requests by outcome, rejections by reason, requests routed
//! and in flight per instance, instance health, predicted prefill queues,
//! approximate prefix-cache hits, and a histogram of measured TTFT.
//!
//! Counters only grow; the per-instance gauges are read from the
//! [`LiveCluster`](crate::cluster::LiveCluster) at scrape time, so they
//! cannot drift from the routing state.

use crate::cluster::InstanceStatus;
use mooncake_telemetry::{Kind, TextWriter};
use parking_lot::Mutex;
use std::collections::BTreeMap;

/// Upper bounds (seconds) of the TTFT histogram buckets.
pub const TTFT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Served (the decode instance answered 2xx).
    Ok,
    /// Rejected by the scheduler (503).
    Rejected,
    /// Malformed request (400).
    BadRequest,
    /// A backend was unreachable or answered nonsense (502).
    BackendError,
    /// A backend answered with an error status, passed through.
    BackendStatus,
    /// No healthy instance (503).
    Unavailable,
}

impl Outcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::BadRequest => "bad_request",
            Outcome::BackendError => "backend_error",
            Outcome::BackendStatus => "backend_status",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// A per-instance series: name, type, help, value.
type Series = (&'static str, Kind, &'static str, fn(&InstanceStatus) -> f64);

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<Outcome, u64>,
    rejections: BTreeMap<&'static str, u64>,
    /// Observations per bucket alone (not cumulative).
    ttft_buckets: [u64; TTFT_BUCKETS.len()],
    ttft_count: u64,
    ttft_sum: f64,
    fetches: u64,
    retries: u64,
}

/// Router-wide counters (cheap to share behind an `Arc`).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The instances to label per-instance series with.
#[derive(Debug, Clone, Copy)]
pub struct InstanceLabels<'a> {
    /// Prefill URLs, in configured order.
    pub prefill: &'a [String],
    /// Decode URLs.
    pub decode: &'a [String],
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, outcome: Outcome) {
        *self.inner.lock().requests.entry(outcome).or_default() += 1;
    }

    /// Counts a scheduler rejection by reason (`ttft-slo`, ...).
    pub fn rejection(&self, reason: &'static str) {
        *self.inner.lock().rejections.entry(reason).or_default() += 1;
    }

    /// Counts a placement that planned a remote-prefix fetch.
    pub fn fetch_planned(&self) {
        self.inner.lock().fetches += 1;
    }

    /// Counts a re-route after a prefill instance could not be reached.
    pub fn retry(&self) {
        self.inner.lock().retries += 1;
    }

    /// Records a measured TTFT.
    pub fn ttft(&self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let mut g = self.inner.lock();
        if let Some(k) = TTFT_BUCKETS.iter().position(|&le| seconds <= le) {
            g.ttft_buckets[k] += 1;
        }
        g.ttft_count += 1;
        g.ttft_sum += seconds;
    }

    /// Requests counted with `outcome` so far.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.inner
            .lock()
            .requests
            .get(&outcome)
            .copied()
            .unwrap_or(0)
    }

    /// The exposition text, with per-instance series from `prefill` /
    /// `decode` status (same order as `labels`).
    pub fn render(
        &self,
        labels: InstanceLabels<'_>,
        prefill: &[InstanceStatus],
        decode: &[InstanceStatus],
    ) -> String {
        let g = self.inner.lock();
        let mut w = TextWriter::new();
        let name = "mooncake_router_requests_total";
        w.family(name, Kind::Counter, "Requests by outcome.");
        for o in [
            Outcome::Ok,
            Outcome::Rejected,
            Outcome::BadRequest,
            Outcome::BackendError,
            Outcome::BackendStatus,
            Outcome::Unavailable,
        ] {
            let n = g.requests.get(&o).copied().unwrap_or(0);
            w.sample(name, &[("outcome", o.as_str())], n);
        }
        let name = "mooncake_router_rejections_total";
        w.family(name, Kind::Counter, "Scheduler rejections by reason.");
        for (reason, n) in &g.rejections {
            w.sample(name, &[("reason", reason)], *n);
        }
        w.counter(
            "mooncake_router_prefix_fetches_total",
            "Placements that planned to reuse a prefix held by another prefill instance.",
            g.fetches,
        );
        w.counter(
            "mooncake_router_prefill_retries_total",
            "Re-routes after a prefill instance was unreachable.",
            g.retries,
        );

        let series: [Series; 4] = [
            (
                "mooncake_router_routed_total",
                Kind::Counter,
                "Requests routed to the instance.",
                |st| st.routed as f64,
            ),
            (
                "mooncake_router_in_flight",
                Kind::Gauge,
                "Requests in flight at the instance.",
                |st| st.in_flight as f64,
            ),
            (
                "mooncake_router_instance_healthy",
                Kind::Gauge,
                "1 unless the instance is in a failure backoff.",
                |st| u8::from(st.healthy) as f64,
            ),
            (
                "mooncake_router_instance_load_seconds",
                Kind::Gauge,
                "Prefill: predicted queue; decode: recent mean decode time.",
                |st| st.load_s,
            ),
        ];
        for (name, kind, help, f) in series {
            w.family(name, kind, help);
            for (role, urls, st) in [
                ("prefill", labels.prefill, prefill),
                ("decode", labels.decode, decode),
            ] {
                for (url, st) in urls.iter().zip(st) {
                    w.sample(name, &[("role", role), ("instance", url)], f(st));
                }
            }
        }
        let name = "mooncake_router_prefix_blocks_total";
        w.family(
            name,
            Kind::Counter,
            "Prompt blocks queried / believed cached at the chosen prefill instance.",
        );
        for (url, st) in labels.prefill.iter().zip(prefill) {
            let queried = st.cache.queried_blocks;
            w.sample(name, &[("instance", url), ("kind", "queried")], queried);
            w.sample(
                name,
                &[("instance", url), ("kind", "hit")],
                st.cache.hit_blocks,
            );
        }

        let name = "mooncake_router_prefill_speed_factor";
        w.family(
            name,
            Kind::Gauge,
            "Learnt measured / cost-model prefill time per prefill instance.",
        );
        for (url, st) in labels.prefill.iter().zip(prefill) {
            w.sample(name, &[("instance", url)], st.speed);
        }
        let name = "mooncake_router_ttft_seconds";
        w.family(
            name,
            Kind::Histogram,
            "Measured time to first token (streams: first decode chunk; otherwise: prefill answer).",
        );
        w.histogram(
            name,
            &[],
            &TTFT_BUCKETS,
            g.ttft_buckets,
            g.ttft_sum,
            g.ttft_count,
        );
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooncake_conductor::cache::CacheStats;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.request(Outcome::Ok);
        m.request(Outcome::Ok);
        m.request(Outcome::Rejected);
        m.rejection("ttft-slo");
        m.ttft(0.02);
        m.ttft(3.0);
        m.ttft(f64::NAN);
        let st = InstanceStatus {
            in_flight: 2,
            routed: 5,
            healthy: false,
            load_s: 0.5,
            cache: CacheStats::default(),
            speed: 0.25,
            exact: false,
        };
        let urls = vec!["http://a\"b".to_string()];
        let text = m.render(
            InstanceLabels {
                prefill: &urls,
                decode: &urls,
            },
            &[st],
            &[st],
        );
        assert!(text.contains("mooncake_router_requests_total{outcome=\"ok\"} 2"));
        assert!(text.contains("mooncake_router_rejections_total{reason=\"ttft-slo\"} 1"));
        assert!(text.contains(
            "mooncake_router_routed_total{role=\"prefill\",instance=\"http://a\\\"b\"} 5"
        ));
        assert!(text.contains(
            "mooncake_router_instance_healthy{role=\"decode\",instance=\"http://a\\\"b\"} 0"
        ));
        assert!(text.contains("mooncake_router_ttft_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("mooncake_router_ttft_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("mooncake_router_ttft_seconds_count 2"));
        assert!(
            text.contains("mooncake_router_prefill_speed_factor{instance=\"http://a\\\"b\"} 0.25")
        );
        assert_eq!(m.requests(Outcome::Ok), 2);
    }
}
