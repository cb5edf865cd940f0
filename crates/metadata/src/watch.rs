//! Plumbing shared by the backends' watchers: the signal that ends every watcher
//! task when its store is dropped, the bounds on polling intervals, and the pure
//! snapshot diff that polling watchers turn into events.
//!
//! Invariant: a watcher task never outlives both its receiver and its store; it
//! ends at the first of `Receiver` dropped or [`StoreLifetime`] dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::WatchEvent;

/// Capacity of every watch channel; a slow receiver applies back-pressure to
/// its own watcher task only.
pub(crate) const WATCH_CHANNEL_CAPACITY: usize = 1024;

/// Shortest polling interval accepted by polling watchers.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest polling interval accepted by polling watchers.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Default interval of polling watchers (HTTP, redis without notifications).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Clamp a requested polling interval into `[MIN_POLL_INTERVAL, MAX_POLL_INTERVAL]`.
pub fn clamp_poll_interval(d: Duration) -> Duration {
    d.clamp(MIN_POLL_INTERVAL, MAX_POLL_INTERVAL)
}

/// Held by a store; dropping it tells all of that store's watcher tasks to stop.
#[derive(Debug)]
pub(crate) struct StoreLifetime(watch::Sender<()>);

impl StoreLifetime {
    pub(crate) fn new() -> Self {
        Self(watch::channel(()).0)
    }

    /// A handle a watcher task awaits with [`Stop::stopped`].
    pub(crate) fn stop_signal(&self) -> Stop {
        Stop(self.0.subscribe())
    }
}

/// The watcher-side half of [`StoreLifetime`].
#[derive(Debug)]
pub(crate) struct Stop(watch::Receiver<()>);

impl Stop {
    /// Resolves when the store is dropped or `tx`'s receiver is gone.
    pub(crate) async fn stopped(&mut self, tx: &mpsc::Sender<WatchEvent>) {
        tokio::select! {
            _ = async { while self.0.changed().await.is_ok() {} } => {}
            _ = tx.closed() => {}
        }
    }
}

/// Keys that changed between two snapshots of a prefix.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotDiff {
    /// Keys new in `new` or whose version differs, sorted.
    pub changed: Vec<String>,
    /// Keys in `old` that are gone from `new`, sorted.
    pub deleted: Vec<String>,
}

/// Compare two snapshots `key -> version` (a revision or the value itself).
pub(crate) fn diff_snapshots<V: PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> SnapshotDiff {
    SnapshotDiff {
        changed: new
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect(),
        deleted: old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect(),
    }
}

/// Rate-limits the "watch poll failed" log so a dead server is not logged
/// once per interval forever: logs the first failure of each outage.
#[derive(Debug, Default)]
pub(crate) struct OutageLog {
    failing: bool,
}

impl OutageLog {
    pub(crate) fn failed(&mut self, backend: &str, prefix: &str, err: &dyn std::fmt::Display) {
        if !self.failing {
            tracing::warn!(backend, prefix, error = %err, "metadata watch lost its server; retrying");
        }
        self.failing = true;
    }

    pub(crate) fn ok(&mut self, backend: &str, prefix: &str) {
        if self.failing {
            tracing::info!(backend, prefix, "metadata watch reconnected");
        }
        self.failing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(k, r)| (k.to_string(), *r)).collect()
    }

    #[test]
    fn diff_reports_new_changed_and_deleted_keys() {
        let old = snap(&[("a", 1), ("b", 2), ("c", 3)]);
        let new = snap(&[("a", 1), ("b", 5), ("d", 6)]);
        assert_eq!(
            diff_snapshots(&old, &new),
            SnapshotDiff {
                changed: vec!["b".into(), "d".into()],
                deleted: vec!["c".into()],
            }
        );
        assert_eq!(diff_snapshots(&new, &new), SnapshotDiff::default());
    }

    #[test]
    fn poll_interval_is_bounded() {
        assert_eq!(clamp_poll_interval(Duration::ZERO), MIN_POLL_INTERVAL);
        assert_eq!(
            clamp_poll_interval(Duration::from_secs(3600)),
            MAX_POLL_INTERVAL
        );
        assert_eq!(
            clamp_poll_interval(DEFAULT_POLL_INTERVAL),
            DEFAULT_POLL_INTERVAL
        );
    }

    #[tokio::test]
    async fn stop_fires_when_store_or_receiver_is_dropped() {
        let life = StoreLifetime::new();
        let (tx, _rx) = mpsc::channel(1);
        let mut stop = life.stop_signal();
        drop(life);
        stop.stopped(&tx).await;

        let life = StoreLifetime::new();
        let (tx, rx) = mpsc::channel(1);
        let mut stop = life.stop_signal();
        drop(rx);
        stop.stopped(&tx).await;
    }
}
