//! The `redis` backend: keys are plain redis strings in the URL's database.
//!
//! Watch prefers keyspace notifications: on the first `watch` the client
//! makes sure `notify-keyspace-events` includes `K` (keyspace channel), `g`
//! (DEL, RENAME, ...), `$` (string commands) and `x` (expiry), adding the
//! missing flags with `CONFIG SET` and keeping the server's others. Each
//! notification names a key; the watcher then reads the key and reports its
//! value at that moment (`Put`) or its absence (`Delete`), so a watcher always
//! converges on the latest state, though two quick writes may both be reported
//! with the second value. Notifications sent while the pub/sub connection is
//! down are lost; after a reconnect (which re-enables notifications, as a
//! restarted server forgets them) the watcher re-reads the prefix, reports a
//! `Delete` for each key it knew that vanished and a `Put` for every key
//! present, so it converges on the server's state.
//!
//! Where `CONFIG` is not allowed (managed redis, renamed command) the watcher
//! polls instead: every `poll_interval` (default 500 ms, clamped to
//! [`crate::watch::MIN_POLL_INTERVAL`]..=[`crate::watch::MAX_POLL_INTERVAL`]) it
//! scans the prefix, reads all values (MGET) and reports the differences.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig, ErrorKind, RedisError};
use tokio::sync::{mpsc, Mutex, OnceCell};

use crate::watch::{self, OutageLog, StoreLifetime};
use crate::{MetadataError, MetadataStore, WatchEvent};

const BACKEND: &str = "redis";
/// Keyspace-notification flags the notification watcher needs.
const NEEDED_FLAGS: [char; 4] = ['K', 'g', '$', 'x'];
/// SCAN batch size.
const SCAN_COUNT: usize = 1000;

/// How a [`RedisMetadata`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisWatchMode {
    /// Keyspace notifications, enabled with CONFIG SET if needed; polling
    /// when the server refuses.
    Auto,
    /// Always poll.
    Poll,
}

/// Timeouts and watch mode of a [`RedisMetadata`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub watch_mode: RedisWatchMode,
    pub poll_interval: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(10),
            watch_mode: RedisWatchMode::Auto,
            poll_interval: watch::DEFAULT_POLL_INTERVAL,
        }
    }
}

fn redis_error(e: RedisError) -> MetadataError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped() {
        MetadataError::Unreachable {
            backend: BACKEND,
            message: e.to_string(),
        }
    } else {
        MetadataError::Backend {
            backend: BACKEND,
            message: e.to_string(),
        }
    }
}

/// The connection layer, shared by the store and its watcher tasks: one
/// multiplexed connection, re-established after a failure.
#[derive(Debug, Clone)]
struct Conn {
    client: redis::Client,
    db: i64,
    config: Arc<(Duration, Duration)>,
    cached: Arc<Mutex<Option<MultiplexedConnection>>>,
}

impl Conn {
    async fn get(&self) -> Result<MultiplexedConnection, MetadataError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let (connect, response) = *self.config;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(connect)
            .set_response_timeout(response);
        // The redis crate's connection timeout does not cover the handshake
        // (AUTH, SELECT); bound the whole thing.
        let conn = tokio::time::timeout(
            connect + response,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        .map_err(|_| MetadataError::Unreachable {
            backend: BACKEND,
            message: format!("no answer from redis within {:?}", connect + response),
        })?
        .map_err(redis_error)?;
        *cached = Some(conn.clone());
        Ok(conn)
    }

    /// Run `f` on the connection; a connection-level failure drops the cached
    /// connection so the next call reconnects.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, MetadataError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let conn = self.get().await?;
        match f(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.cached.lock().await = None;
                }
                Err(redis_error(e))
            }
        }
    }

    async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        self.run(|mut c| async move { c.get(key).await }).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, MetadataError> {
        let pattern = format!("{}*", escape_glob(prefix));
        let mut keys = self
            .run(|mut c| async move {
                let mut cursor: u64 = 0;
                let mut keys = Vec::new();
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        return Ok(keys);
                    }
                    cursor = next;
                }
            })
            .await?;
        // SCAN may return a key more than once.
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Every key under `prefix` with its value.
    async fn snapshot(&self, prefix: &str) -> Result<BTreeMap<String, Vec<u8>>, MetadataError> {
        let keys = self.list(prefix).await?;
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(SCAN_COUNT) {
            let values: Vec<Option<Vec<u8>>> = self
                .run(|mut c| async move { redis::cmd("MGET").arg(chunk).query_async(&mut c).await })
                .await?;
            out.extend(
                chunk
                    .iter()
                    .zip(values)
                    .filter_map(|(k, v)| v.map(|v| (k.clone(), v))),
            );
        }
        Ok(out)
    }

    /// Make sure keyspace notifications cover what the watcher needs; false
    /// when the server does not let us read or change its configuration.
    async fn enable_notifications(&self) -> Result<bool, MetadataError> {
        let current: Result<Vec<String>, MetadataError> = self
            .run(|mut c| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("notify-keyspace-events")
                    .query_async(&mut c)
                    .await
            })
            .await;
        let current = match current {
            Ok(v) => v.get(1).cloned().unwrap_or_default(),
            Err(MetadataError::Unreachable { backend, message }) => {
                return Err(MetadataError::Unreachable { backend, message })
            }
            Err(e) => {
                tracing::info!(error = %e, "redis CONFIG GET refused; watching by polling");
                return Ok(false);
            }
        };
        let Some(flags) = missing_notification_flags(&current) else {
            return Ok(true);
        };
        let flags_ref = &flags;
        let set: Result<(), MetadataError> = self
            .run(|mut c| async move {
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("notify-keyspace-events")
                    .arg(flags_ref)
                    .query_async(&mut c)
                    .await
            })
            .await;
        match set {
            Ok(()) => {
                tracing::info!(flags, "enabled redis keyspace notifications");
                Ok(true)
            }
            Err(MetadataError::Unreachable { backend, message }) => {
                Err(MetadataError::Unreachable { backend, message })
            }
            Err(e) => {
                tracing::info!(error = %e, "redis CONFIG SET refused; watching by polling");
                Ok(false)
            }
        }
    }
}

/// The `notify-keyspace-events` value to set so that `current` covers
/// [`NEEDED_FLAGS`], or `None` when it already does. `A` stands for
/// `g$lshzxet` (and more in newer servers).
fn missing_notification_flags(current: &str) -> Option<String> {
    let covered = |f: char| current.contains(f) || (f != 'K' && current.contains('A'));
    if NEEDED_FLAGS.iter().all(|f| covered(*f)) {
        return None;
    }
    let mut flags = current.to_string();
    flags.extend(NEEDED_FLAGS.iter().filter(|f| !covered(**f)));
    Some(flags)
}

/// Escape redis glob metacharacters so `prefix` matches literally.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The redis metadata backend. Cheap to clone; watchers stop when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct RedisMetadata {
    conn: Conn,
    opts: Arc<RedisOptions>,
    /// Whether keyspace notifications are usable (decided on first watch).
    notifications: Arc<OnceCell<bool>>,
    lifetime: Arc<StoreLifetime>,
}

impl RedisMetadata {
    /// Connect to `url` (`redis://[user:pass@]host:port[/db]`) with default options.
    pub async fn connect(url: &str) -> Result<Self, MetadataError> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Connect with explicit options; fails with `Unreachable` if the server
    /// does not answer a PING in time.
    pub async fn connect_with(url: &str, opts: RedisOptions) -> Result<Self, MetadataError> {
        let client = redis::Client::open(url)
            .map_err(|e| MetadataError::InvalidConnectionString(url.to_string(), e.to_string()))?;
        let db = client.get_connection_info().redis.db;
        let this = Self {
            conn: Conn {
                client,
                db,
                config: Arc::new((opts.connect_timeout, opts.response_timeout)),
                cached: Arc::new(Mutex::new(None)),
            },
            notifications: Arc::new(OnceCell::new()),
            opts: Arc::new(RedisOptions {
                poll_interval: watch::clamp_poll_interval(opts.poll_interval),
                ..opts
            }),
            lifetime: Arc::new(StoreLifetime::new()),
        };
        this.conn
            .run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await?;
        Ok(this)
    }

    /// Whether watchers use keyspace notifications (`false`: polling).
    pub async fn uses_notifications(&self) -> Result<bool, MetadataError> {
        if self.opts.watch_mode == RedisWatchMode::Poll {
            return Ok(false);
        }
        self.notifications
            .get_or_try_init(|| self.conn.enable_notifications())
            .await
            .copied()
    }
}

#[async_trait::async_trait]
impl MetadataStore for RedisMetadata {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        self.conn.get_value(key).await
    }

    #[tracing::instrument(level = "debug", skip(self, value), fields(len = value.len()))]
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        self.conn
            .run(|mut c| async move { c.set(key, value).await })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete(&self, key: &str) -> Result<(), MetadataError> {
        self.conn
            .run(|mut c| async move { c.del::<_, ()>(key).await })
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn list(&self, prefix: &str) -> Result<Vec<String>, MetadataError> {
        self.conn.list(prefix).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, MetadataError> {
        let (tx, rx) = mpsc::channel(watch::WATCH_CHANNEL_CAPACITY);
        let mut stop = self.lifetime.stop_signal();
        let conn = self.conn.clone();
        let prefix = prefix.to_string();
        if self.uses_notifications().await? {
            // Subscribed before returning: every later change is notified.
            let sub = subscribe(&conn, &prefix, self.opts.connect_timeout).await?;
            let interval = self.opts.poll_interval;
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.stopped(&tx) => {}
                    _ = notification_loop(conn, prefix, sub, interval, &tx) => {}
                }
            });
        } else {
            let known = conn.snapshot(&prefix).await?;
            let interval = self.opts.poll_interval;
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.stopped(&tx) => {}
                    _ = poll_loop(conn, prefix, known, interval, &tx) => {}
                }
            });
        }
        Ok(rx)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}

fn channel_prefix(db: i64) -> String {
    format!("__keyspace@{db}__:")
}

async fn subscribe(
    conn: &Conn,
    prefix: &str,
    timeout: Duration,
) -> Result<redis::aio::PubSub, MetadataError> {
    let pattern = format!("{}{}*", channel_prefix(conn.db), escape_glob(prefix));
    tokio::time::timeout(timeout * 2, async {
        let mut pubsub = conn.client.get_async_pubsub().await?;
        pubsub.psubscribe(&pattern).await?;
        Ok::<_, RedisError>(pubsub)
    })
    .await
    .map_err(|_| MetadataError::Unreachable {
        backend: BACKEND,
        message: "redis did not confirm the subscription in time".into(),
    })?
    .map_err(redis_error)
}

/// What a keyspace notification means for a watcher.
#[derive(Debug, PartialEq, Eq)]
enum Notified {
    /// The key is gone.
    Gone,
    /// The key may have a new value: read it.
    Changed,
}

fn classify(event: &str) -> Notified {
    match event {
        "del" | "expired" | "evicted" | "rename_from" | "unlink" => Notified::Gone,
        _ => Notified::Changed,
    }
}

/// Deliver keyspace notifications as events; resubscribe (and re-enable
/// notifications, which a restarted server forgets) when the pub/sub
/// connection drops. Returns when the receiver is gone.
async fn notification_loop(
    conn: Conn,
    prefix: String,
    sub: redis::aio::PubSub,
    poll_interval: Duration,
    tx: &mpsc::Sender<WatchEvent>,
) {
    let chan_prefix = channel_prefix(conn.db);
    // Keys under the prefix as far as this watcher knows, to report the ones
    // that vanished while it was disconnected.
    let mut present: BTreeSet<String> = conn
        .list(&prefix)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut messages = sub.into_on_message();
    let mut outage = OutageLog::default();
    loop {
        while let Some(msg) = messages.next().await {
            let Some(key) = msg.get_channel_name().strip_prefix(chan_prefix.as_str()) else {
                continue;
            };
            let Ok(event) = msg.get_payload::<String>() else {
                continue;
            };
            let ev = match classify(&event) {
                Notified::Gone => WatchEvent::Delete {
                    key: key.to_string(),
                },
                Notified::Changed => match conn.get_value(key).await {
                    Ok(Some(value)) => WatchEvent::Put {
                        key: key.to_string(),
                        value,
                    },
                    Ok(None) => WatchEvent::Delete {
                        key: key.to_string(),
                    },
                    Err(e) => {
                        // Not a string (another application's key) or server gone.
                        tracing::debug!(key, error = %e, "cannot read notified redis key");
                        continue;
                    }
                },
            };
            match &ev {
                WatchEvent::Put { key, .. } => present.insert(key.clone()),
                WatchEvent::Delete { key } => present.remove(key),
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        let closed = RedisError::from((ErrorKind::IoError, "pub/sub connection closed"));
        outage.failed(BACKEND, &prefix, &closed);

        // Reconnect: notifications on, subscribed, then a snapshot to report
        // what changed while we were away.
        let mut backoff = Duration::from_millis(100);
        let (sub, now) = loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            match conn.enable_notifications().await {
                Ok(true) => {}
                Ok(false) => {
                    // The server no longer lets us configure it: poll instead.
                    let Ok(now) = conn.snapshot(&prefix).await else {
                        continue;
                    };
                    if resync(&mut present, &now, tx).await.is_err() {
                        return;
                    }
                    return poll_loop(conn, prefix, now, poll_interval, tx).await;
                }
                Err(e) => {
                    outage.failed(BACKEND, &prefix, &e);
                    continue;
                }
            }
            let sub = match subscribe(&conn, &prefix, Duration::from_secs(2)).await {
                Ok(s) => s,
                Err(e) => {
                    outage.failed(BACKEND, &prefix, &e);
                    continue;
                }
            };
            match conn.snapshot(&prefix).await {
                Ok(now) => break (sub, now),
                Err(e) => outage.failed(BACKEND, &prefix, &e),
            }
        };
        outage.ok(BACKEND, &prefix);
        if resync(&mut present, &now, tx).await.is_err() {
            return;
        }
        messages = sub.into_on_message();
    }
}

/// After a gap: `Delete` for known keys that are gone, `Put` for every key
/// present now (their values may have changed unseen).
async fn resync(
    present: &mut BTreeSet<String>,
    now: &BTreeMap<String, Vec<u8>>,
    tx: &mpsc::Sender<WatchEvent>,
) -> Result<(), ()> {
    for key in present.iter().filter(|k| !now.contains_key(*k)) {
        let key = key.clone();
        tx.send(WatchEvent::Delete { key }).await.map_err(drop)?;
    }
    *present = now.keys().cloned().collect();
    for (key, value) in now {
        let ev = WatchEvent::Put {
            key: key.clone(),
            value: value.clone(),
        };
        tx.send(ev).await.map_err(drop)?;
    }
    Ok(())
}

/// Poll the prefix (SCAN + MGET), comparing values; returns when the
/// receiver is gone.
async fn poll_loop(
    conn: Conn,
    prefix: String,
    known: BTreeMap<String, Vec<u8>>,
    interval: Duration,
    tx: &mpsc::Sender<WatchEvent>,
) {
    watch::poll_loop(
        BACKEND,
        &prefix,
        known,
        interval,
        tx,
        || {
            let (conn, prefix) = (conn.clone(), prefix.clone());
            async move { conn.snapshot(&prefix).await }
        },
        // The snapshot already holds the value.
        |_key, value| async move { Ok(Some(value)) },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_flags_are_merged_not_replaced() {
        assert_eq!(missing_notification_flags(""), Some("Kg$x".into()));
        assert_eq!(missing_notification_flags("Ex"), Some("ExKg$".into()));
        assert_eq!(missing_notification_flags("KA"), None);
        assert_eq!(missing_notification_flags("AE"), Some("AEK".into()));
        assert_eq!(missing_notification_flags("Kg$x"), None);
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(escape_glob("mooncake/ram/"), "mooncake/ram/");
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn notifications_classify() {
        assert_eq!(classify("set"), Notified::Changed);
        assert_eq!(classify("rename_to"), Notified::Changed);
        assert_eq!(classify("del"), Notified::Gone);
        assert_eq!(classify("expired"), Notified::Gone);
    }
}
