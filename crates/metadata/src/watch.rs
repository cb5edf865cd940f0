//! Plumbing shared by the backends' watchers: the signal that ends every watcher
//! task when its store is dropped, the bounds on polling intervals, and the pure
//! snapshot diff that polling watchers turn into events.
//!
//! Invariant: a watcher task never outlives both its receiver and its store; it
//! ends at the first of `Receiver` dropped or `StoreLifetime` dropped.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::{MetadataError, WatchEvent};

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

/// The polling watcher shared by the backends that cannot push changes.
///
/// Every `interval`: take a `snapshot` of the prefix (`key -> version`, where
/// the version is a revision or the value itself), and for each key whose
/// version changed ask `value` for its current value, then send `Put`s and
/// `Delete`s. A key written twice between two polls yields one `Put` with its
/// latest value. Returns when the receiver is gone.
pub(crate) async fn poll_loop<V, S, SF, G, GF>(
    backend: &'static str,
    prefix: &str,
    mut known: BTreeMap<String, V>,
    interval: Duration,
    tx: &mpsc::Sender<WatchEvent>,
    mut snapshot: S,
    mut value: G,
) where
    V: PartialEq + Clone,
    S: FnMut() -> SF,
    SF: Future<Output = Result<BTreeMap<String, V>, MetadataError>>,
    G: FnMut(String, V) -> GF,
    GF: Future<Output = Result<Option<Vec<u8>>, MetadataError>>,
{
    let mut outage = OutageLog::default();
    loop {
        tokio::time::sleep(interval).await;
        let current = match snapshot().await {
            Ok(s) => {
                outage.ok(backend, prefix);
                s
            }
            Err(e) => {
                outage.failed(backend, prefix, &e);
                continue;
            }
        };
        let diff = diff_snapshots(&known, &current);
        for key in diff.changed {
            let version = current[&key].clone();
            let event = match value(key.clone(), version.clone()).await {
                Ok(Some(value)) => {
                    known.insert(key.clone(), version);
                    WatchEvent::Put { key, value }
                }
                // Deleted since the snapshot: report the delete only if the
                // watcher had seen the key (the next poll will not list it).
                Ok(None) if known.remove(&key).is_some() => WatchEvent::Delete { key },
                Ok(None) => continue,
                Err(e) => {
                    // Forget the key so the next poll retries it.
                    outage.failed(backend, prefix, &e);
                    known.remove(&key);
                    continue;
                }
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        for key in diff.deleted {
            known.remove(&key);
            if tx.send(WatchEvent::Delete { key }).await.is_err() {
                return;
            }
        }
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

    /// The polling core against scripted snapshots, no server: new, changed,
    /// vanished and failed keys, in paused (virtual) time.
    #[tokio::test(start_paused = true)]
    async fn poll_loop_turns_snapshots_into_events() {
        use std::sync::{Arc, Mutex};
        let script = Arc::new(Mutex::new(vec![
            Err(MetadataError::Unsupported("scripted outage")),
            Ok(snap(&[("k/a", 1), ("k/b", 1)])),
            Ok(snap(&[("k/a", 2), ("k/b", 1), ("k/c", 3)])),
            Ok(snap(&[("k/c", 3)])),
        ]));
        // Value of k/c fails once, then is readable: it must still be reported.
        let failed_c = Arc::new(Mutex::new(false));
        let (tx, mut rx) = mpsc::channel(16);
        let known = snap(&[("k/b", 1)]);
        let task = tokio::spawn(async move {
            // As in the backends: the loop runs until the receiver is gone.
            let stop = tx.clone();
            let poll = poll_loop(
                "test",
                "k/",
                known,
                MIN_POLL_INTERVAL,
                &tx,
                || {
                    let next = {
                        let mut s = script.lock().unwrap();
                        (!s.is_empty()).then(|| s.remove(0))
                    };
                    async move { next.unwrap_or_else(|| Ok(snap(&[("k/c", 3)]))) }
                },
                |key, rev| {
                    let fail =
                        key == "k/c" && !std::mem::replace(&mut *failed_c.lock().unwrap(), true);
                    async move {
                        if fail {
                            Err(MetadataError::Unsupported("scripted failure"))
                        } else {
                            Ok(Some(format!("{key}@{rev}").into_bytes()))
                        }
                    }
                },
            );
            tokio::select! {
                _ = stop.closed() => {}
                _ = poll => {}
            }
        });
        let put = |k: &str, v: &str| WatchEvent::Put {
            key: k.into(),
            value: v.as_bytes().to_vec(),
        };
        let want = [
            put("k/a", "k/a@1"),
            // Third snapshot: k/a changed; k/c is new but its read fails.
            put("k/a", "k/a@2"),
            // Fourth: k/c retried and reported, then k/a and k/b are gone.
            put("k/c", "k/c@3"),
            WatchEvent::Delete { key: "k/a".into() },
            WatchEvent::Delete { key: "k/b".into() },
        ];
        for w in want {
            assert_eq!(rx.recv().await.unwrap(), w);
        }
        drop(rx);
        task.await.unwrap();
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
