//! The `etcd` backend: etcd v3 through its JSON gateway ([`client`]), plus the
//! lease and transaction helpers the store's high availability uses ([`lease`]).
//!
//! Watch uses etcd's own watch stream (`POST <prefix>/watch`, newline-separated
//! JSON answers). `watch` returns only after etcd confirmed the watch, so every
//! later change is reported. When the stream breaks, the watcher reconnects
//! (backoff 100 ms doubling to 2 s) with `start_revision` just past the last
//! event it delivered, so no change is lost or repeated across reconnects,
//! unless etcd compacted those revisions meanwhile (then it resumes at the
//! compaction point and logs a warning).

pub mod client;
pub mod lease;
pub mod txn;

pub use client::{prefix_range_end, EtcdClient, EtcdOptions};
pub use lease::{Lease, LeaseKeeper, PutIfAbsent};
pub use txn::{KvInfo, TxnOp};

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::http::client::reqwest_error;
use crate::watch::{self, OutageLog, StoreLifetime};
use crate::{MetadataError, MetadataStore, WatchEvent};
use client::{b64, de_i64, gateway_error, prefix_range, Header, KeyValue, BACKEND};

/// Longest line accepted from a watch stream (one event batch); bounds memory
/// if a server misbehaves. etcd's default request limit is 1.5 MiB per value.
const MAX_WATCH_LINE: usize = 256 << 20;
/// Bound on opening a watch stream and receiving etcd's confirmation.
const WATCH_CONFIRM_DEADLINE: Duration = Duration::from_secs(10);

/// The etcd metadata backend. Cheap to clone; watchers stop when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct EtcdMetadata {
    client: EtcdClient,
    lifetime: Arc<StoreLifetime>,
}

impl EtcdMetadata {
    /// Connect to the cluster at `endpoints` (`host:port`), default timeouts.
    pub async fn connect(endpoints: &[String]) -> Result<Self, MetadataError> {
        Self::connect_with(endpoints, EtcdOptions::default()).await
    }

    /// Connect with explicit timeouts.
    pub async fn connect_with(
        endpoints: &[String],
        opts: EtcdOptions,
    ) -> Result<Self, MetadataError> {
        Ok(Self {
            client: EtcdClient::connect(endpoints, opts).await?,
            lifetime: Arc::new(StoreLifetime::new()),
        })
    }

    /// The underlying client (for leases and transactions).
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }
}

fn utf8_key(kv: &KeyValue) -> Result<String, MetadataError> {
    let bytes = kv.key_bytes()?;
    String::from_utf8(bytes).map_err(|e| MetadataError::Malformed {
        key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        message: "etcd key is not UTF-8".into(),
    })
}

#[async_trait::async_trait]
impl MetadataStore for EtcdMetadata {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        self.client.get(key.as_bytes()).await
    }

    #[tracing::instrument(level = "debug", skip(self, value), fields(len = value.len()))]
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        self.client.put(key.as_bytes(), value, None).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete(&self, key: &str) -> Result<(), MetadataError> {
        self.client.delete(key.as_bytes(), None).await.map(drop)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn list(&self, prefix: &str) -> Result<Vec<String>, MetadataError> {
        let (key, end) = prefix_range(prefix.as_bytes());
        let resp = self.client.range(&key, Some(&end), true).await?;
        let mut keys = Vec::with_capacity(resp.kvs.len());
        for kv in &resp.kvs {
            match utf8_key(kv) {
                Ok(k) => keys.push(k),
                // Another writer's binary key under our prefix: not ours to list.
                Err(e) => tracing::warn!(error = %e, "skipping non-UTF-8 etcd key"),
            }
        }
        Ok(keys)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, MetadataError> {
        let stream = WatchStream::open(&self.client, prefix.as_bytes(), None).await?;
        let (tx, rx) = mpsc::channel(watch::WATCH_CHANNEL_CAPACITY);
        let mut stop = self.lifetime.stop_signal();
        let client = self.client.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.stopped(&tx) => {}
                _ = watch_loop(client, prefix, stream, &tx) => {}
            }
        });
        Ok(rx)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}

#[derive(Debug, Default, Deserialize)]
struct WatchAnswer {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "de_i64")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Default, Deserialize)]
struct Event {
    /// `"DELETE"`, or absent for a put (proto3 omits the zero enum value).
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    kv: KeyValue,
}

#[derive(Debug, Deserialize)]
struct WatchLine {
    result: Option<WatchAnswer>,
    error: Option<Value>,
}

/// One open watch stream, positioned after its `created` answer.
struct WatchStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// The revision the next event will have at least.
    next_revision: i64,
}

impl WatchStream {
    /// Open a watch on every key under `prefix`, from `start_revision` (or
    /// from now), and wait for etcd to confirm it. Bounded in time: a server
    /// that accepts the connection but never confirms must not hang `watch()`.
    async fn open(
        client: &EtcdClient,
        prefix: &[u8],
        start_revision: Option<i64>,
    ) -> Result<Self, MetadataError> {
        tokio::time::timeout(
            WATCH_CONFIRM_DEADLINE,
            Self::open_unbounded(client, prefix, start_revision),
        )
        .await
        .map_err(|_| MetadataError::Unreachable {
            backend: BACKEND,
            message: format!("etcd did not confirm the watch within {WATCH_CONFIRM_DEADLINE:?}"),
        })?
    }

    async fn open_unbounded(
        client: &EtcdClient,
        prefix: &[u8],
        start_revision: Option<i64>,
    ) -> Result<Self, MetadataError> {
        let (key, end) = prefix_range(prefix);
        let mut create = json!({ "key": b64(&key), "range_end": b64(&end) });
        if let Some(rev) = start_revision {
            create["start_revision"] = json!(rev.to_string());
        }
        let api = client.api_prefix().await?;
        let resp = client
            .send(
                &format!("{api}/watch"),
                &json!({ "create_request": create }),
                true,
            )
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(gateway_error(status, &body));
        }
        let mut stream = Self {
            resp,
            buf: Vec::new(),
            next_revision: start_revision.unwrap_or(0),
        };
        match stream.next_answer().await? {
            Some(a) if a.created && !a.canceled => {
                if start_revision.is_none() {
                    stream.next_revision = a.header.revision + 1;
                }
                Ok(stream)
            }
            Some(a) => Err(MetadataError::Backend {
                backend: BACKEND,
                message: format!(
                    "watch not created (canceled={}, compact_revision={}): {}",
                    a.canceled, a.compact_revision, a.cancel_reason
                ),
            }),
            None => Err(MetadataError::Backend {
                backend: BACKEND,
                message: "watch stream ended before it was created".into(),
            }),
        }
    }

    /// The next answer on the stream; `None` when the stream ended.
    async fn next_answer(&mut self) -> Result<Option<WatchAnswer>, MetadataError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed: WatchLine =
                    serde_json::from_slice(&line).map_err(|e| MetadataError::Backend {
                        backend: BACKEND,
                        message: format!("bad watch answer: {e}"),
                    })?;
                return match (parsed.result, parsed.error) {
                    (_, Some(err)) => Err(MetadataError::Backend {
                        backend: BACKEND,
                        message: format!("watch failed: {err}"),
                    }),
                    (Some(a), None) => Ok(Some(a)),
                    (None, None) => continue,
                };
            }
            if self.buf.len() > MAX_WATCH_LINE {
                return Err(MetadataError::Backend {
                    backend: BACKEND,
                    message: format!("watch answer longer than {MAX_WATCH_LINE} bytes"),
                });
            }
            match self
                .resp
                .chunk()
                .await
                .map_err(|e| reqwest_error(BACKEND, e))?
            {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                // A final answer without a trailing newline still counts.
                None if !self.buf.iter().all(u8::is_ascii_whitespace) => self.buf.push(b'\n'),
                None => return Ok(None),
            }
        }
    }
}

/// Deliver events from `stream`, reconnecting when it breaks; returns when
/// the receiver is gone.
async fn watch_loop(
    client: EtcdClient,
    prefix: String,
    mut stream: WatchStream,
    tx: &mpsc::Sender<WatchEvent>,
) {
    let mut outage = OutageLog::default();
    loop {
        let broken = match stream.next_answer().await {
            Ok(Some(a)) if a.canceled => {
                if a.compact_revision > 0 {
                    tracing::warn!(
                        prefix,
                        compact_revision = a.compact_revision,
                        "etcd compacted revisions this watch had not seen; resuming at the compaction point"
                    );
                    stream.next_revision = a.compact_revision;
                }
                Some(MetadataError::Backend {
                    backend: BACKEND,
                    message: format!("watch canceled: {}", a.cancel_reason),
                })
            }
            Ok(Some(a)) => {
                for ev in a.events {
                    let rev = ev.kv.mod_revision;
                    let Some(event) = to_event(&ev) else { continue };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                    stream.next_revision = stream.next_revision.max(rev + 1);
                }
                None
            }
            Ok(None) => Some(MetadataError::Unreachable {
                backend: BACKEND,
                message: "watch stream closed".into(),
            }),
            Err(e) => Some(e),
        };
        let Some(err) = broken else { continue };
        outage.failed(BACKEND, &prefix, &err);
        let mut backoff = Duration::from_millis(100);
        stream = loop {
            tokio::time::sleep(backoff).await;
            let from = stream.next_revision;
            match WatchStream::open(&client, prefix.as_bytes(), Some(from)).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::debug!(prefix, error = %e, "etcd watch reconnect failed");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        outage.ok(BACKEND, &prefix);
    }
}

fn to_event(ev: &Event) -> Option<WatchEvent> {
    let key = match utf8_key(&ev.kv) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "skipping watch event on a non-UTF-8 etcd key");
            return None;
        }
    };
    match ev.kind.as_deref() {
        Some("DELETE") => Some(WatchEvent::Delete { key }),
        None | Some("PUT") => match ev.kv.value_bytes() {
            Ok(value) => Some(WatchEvent::Put { key, value }),
            Err(e) => {
                tracing::warn!(key, error = %e, "skipping malformed etcd watch event");
                None
            }
        },
        Some(other) => {
            tracing::warn!(key, kind = other, "unknown etcd event type");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_decode_to_events() {
        let line: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"revision":"3"},"events":[
                {"kv":{"key":"Zm9vMQ==","mod_revision":"2","value":"YmFy"}},
                {"type":"DELETE","kv":{"key":"Zm9vMQ==","mod_revision":"3"}}]}}"#,
        )
        .unwrap();
        let a = line.result.unwrap();
        let events: Vec<_> = a.events.iter().filter_map(to_event).collect();
        assert_eq!(
            events,
            vec![
                WatchEvent::Put {
                    key: "foo1".into(),
                    value: b"bar".to_vec()
                },
                WatchEvent::Delete { key: "foo1".into() }
            ]
        );
    }
}
