//! A small etcd v3 client over etcd's JSON gRPC gateway (plain HTTP/1.1 +
//! JSON, base64 keys and values): no protoc, no gRPC stack.
//!
//! The gateway's path prefix depends on the server version: `/v3` (3.4+; 3.4
//! also serves `/v3beta`), `/v3beta` (3.3), `/v3alpha` (3.2). The first request
//! probes them in that order and remembers the first that is not a 404.
//!
//! Endpoints are tried in order, starting from the last one that answered; a
//! request moves on to the next endpoint only when the connection could not be
//! established (so a request is never sent twice). 64-bit integers arrive as
//! JSON strings and are parsed as such.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::http::client::reqwest_error;
use crate::MetadataError;

pub(crate) const BACKEND: &str = "etcd";

/// Gateway prefixes, newest first.
const API_PREFIXES: [&str; 3] = ["/v3", "/v3beta", "/v3alpha"];

/// Timeouts of an [`EtcdClient`].
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Bound on establishing a TCP connection to one endpoint.
    pub connect_timeout: Duration,
    /// Bound on one unary request (not on watch streams).
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Client of an etcd cluster. Cheap to clone (shared connection pool).
#[derive(Debug, Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last.
    current: AtomicUsize,
    api_prefix: OnceCell<&'static str>,
    request_timeout: Duration,
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn malformed(message: impl Into<String>) -> MetadataError {
    MetadataError::Backend {
        backend: BACKEND,
        message: message.into(),
    }
}

pub(crate) fn unb64(s: &str) -> Result<Vec<u8>, MetadataError> {
    B64.decode(s)
        .map_err(|e| malformed(format!("bad base64 from etcd: {e}")))
}

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's `range_end`): the prefix with its last byte below 0xff incremented
/// and what follows dropped; `[0]` (the whole keyspace) when there is none.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// `(key, range_end)` selecting every key under `prefix`. etcd refuses an empty
/// key, so the empty prefix becomes `["\0", "\0")`, etcd's "all keys".
pub(crate) fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.to_vec(), prefix_range_end(prefix))
    }
}

/// Accepts an integer given as a JSON string (the gateway's int64) or number.
pub(crate) fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        S(String),
        N(i64),
    }
    match Int::deserialize(d)? {
        Int::N(n) => Ok(n),
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "de_i64")]
    pub revision: i64,
}

/// A key-value pair as the gateway sends it (base64 fields).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeyValue {
    #[serde(default)]
    pub key: String,
    /// Absent for an empty value.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default, deserialize_with = "de_i64")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub create_revision: i64,
}

impl KeyValue {
    pub(crate) fn key_bytes(&self) -> Result<Vec<u8>, MetadataError> {
        unb64(&self.key)
    }
    pub(crate) fn value_bytes(&self) -> Result<Vec<u8>, MetadataError> {
        self.value.as_deref().map_or(Ok(Vec::new()), unb64)
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

impl EtcdClient {
    /// A client of the cluster at `endpoints` (`host:port`, tried in order);
    /// does no I/O.
    pub fn new(endpoints: &[String], opts: EtcdOptions) -> Result<Self, MetadataError> {
        if endpoints.is_empty() {
            return Err(MetadataError::InvalidConnectionString(
                String::new(),
                "no etcd endpoint".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| reqwest_error(BACKEND, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints: endpoints.to_vec(),
                current: AtomicUsize::new(0),
                api_prefix: OnceCell::new(),
                request_timeout: opts.request_timeout,
            }),
        })
    }

    /// Connect and detect the gateway prefix; fails with `Unreachable` when no
    /// endpoint accepts a connection.
    pub async fn connect(endpoints: &[String], opts: EtcdOptions) -> Result<Self, MetadataError> {
        let this = Self::new(endpoints, opts)?;
        this.api_prefix().await?;
        Ok(this)
    }

    /// The endpoints, in the order they are tried.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The detected gateway prefix (`/v3`, `/v3beta` or `/v3alpha`).
    pub async fn api_prefix(&self) -> Result<&'static str, MetadataError> {
        self.inner
            .api_prefix
            .get_or_try_init(|| async {
                for prefix in API_PREFIXES {
                    let path = format!("{prefix}/kv/range");
                    let resp = self
                        .send(&path, &json!({ "key": b64(&[0]) }), false)
                        .await?;
                    if resp.status() != StatusCode::NOT_FOUND {
                        tracing::debug!(prefix, "etcd gateway prefix detected");
                        return Ok(prefix);
                    }
                }
                Err(malformed(format!(
                    "no etcd v3 JSON gateway at {} (tried {API_PREFIXES:?})",
                    self.inner.endpoints.join(",")
                )))
            })
            .await
            .copied()
    }

    /// POST `body` to `path` (prefix included) on the first endpoint that
    /// accepts a connection. `streaming` requests get no overall timeout.
    pub(crate) async fn send(
        &self,
        path: &str,
        body: &Value,
        streaming: bool,
    ) -> Result<reqwest::Response, MetadataError> {
        let n = self.inner.endpoints.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last_err = String::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let url = format!("http://{}{path}", self.inner.endpoints[idx]);
            let make = || {
                let req = self.inner.http.post(&url).json(body);
                if streaming {
                    req
                } else {
                    req.timeout(self.inner.request_timeout)
                }
            };
            let first = match make().send().await {
                // A pooled connection closed by the server (restart): once more
                // on a fresh one. See `put_if_absent` for what that means there.
                Err(e) if e.is_request() && !e.is_connect() && !e.is_timeout() => {
                    tracing::debug!(error = %e, "etcd request failed on a reused connection; retrying once");
                    make().send().await
                }
                other => other,
            };
            match first {
                Ok(resp) => {
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(e) if e.is_connect() => {
                    tracing::debug!(endpoint = %self.inner.endpoints[idx], error = %e, "etcd endpoint refused");
                    last_err = e.to_string();
                }
                Err(e) => return Err(reqwest_error(BACKEND, e)),
            }
        }
        Err(MetadataError::Unreachable {
            backend: BACKEND,
            message: format!(
                "no endpoint of {} accepted a connection: {last_err}",
                self.inner.endpoints.join(",")
            ),
        })
    }

    /// A unary call: POST to `<prefix><path>` and decode the JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
    ) -> Result<T, MetadataError> {
        let prefix = self.api_prefix().await?;
        let resp = self.send(&format!("{prefix}{path}"), &body, false).await?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| reqwest_error(BACKEND, e))?;
        if !status.is_success() {
            return Err(gateway_error(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| malformed(format!("unexpected answer to {path}: {e}")))
    }

    /// Values of keys in `[key, range_end)` (or just `key` when `range_end`
    /// is `None`), sorted by key.
    pub(crate) async fn range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
        keys_only: bool,
    ) -> Result<RangeResponse, MetadataError> {
        let mut body = json!({ "key": b64(key), "keys_only": keys_only });
        if let Some(end) = range_end {
            body["range_end"] = json!(b64(end));
        }
        self.call("/kv/range", body).await
    }

    /// The value of `key`, or `None`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MetadataError> {
        match self.range(key, None, false).await?.kvs.first() {
            Some(kv) => Ok(Some(kv.value_bytes()?)),
            None => Ok(None),
        }
    }

    /// Store `value` under `key`, attached to `lease` when given (the key
    /// vanishes when the lease expires).
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<(), MetadataError> {
        let mut body = json!({ "key": b64(key), "value": b64(value) });
        if let Some(id) = lease {
            body["lease"] = json!(id.to_string());
        }
        self.call::<Value>("/kv/put", body).await.map(drop)
    }

    /// Delete `key` (or `[key, range_end)`); returns how many keys were deleted.
    pub async fn delete(&self, key: &[u8], range_end: Option<&[u8]>) -> Result<i64, MetadataError> {
        #[derive(Deserialize)]
        struct Resp {
            #[serde(default, deserialize_with = "de_i64")]
            deleted: i64,
        }
        let mut body = json!({ "key": b64(key) });
        if let Some(end) = range_end {
            body["range_end"] = json!(b64(end));
        }
        Ok(self.call::<Resp>("/kv/deleterange", body).await?.deleted)
    }
}

/// Turn a gateway error answer (`{"error", "message", "code"}`) into a typed error.
pub(crate) fn gateway_error(status: StatusCode, body: &[u8]) -> MetadataError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("error"))
                .and_then(|m| m.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    // gRPC code 14 (UNAVAILABLE) surfaces as 503: the cluster has no leader.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        MetadataError::Unreachable {
            backend: BACKEND,
            message,
        }
    } else {
        malformed(format!("HTTP {status}: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_of_prefixes() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_range(b""), (vec![0], vec![0]));
        assert_eq!(prefix_range(b"k/"), (b"k/".to_vec(), b"k0".to_vec()));
    }

    #[test]
    fn gateway_json_decodes() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"revision":"7"},"kvs":[{"key":"Zm9v","mod_revision":"5"},
                {"key":"YmFy","value":"YmF6","mod_revision":6}],"count":"2"}"#,
        )
        .unwrap();
        assert_eq!(r.kvs[0].key_bytes().unwrap(), b"foo");
        assert_eq!(r.kvs[0].value_bytes().unwrap(), b"");
        assert_eq!(r.kvs[1].value_bytes().unwrap(), b"baz");
        assert_eq!(r.kvs[1].mod_revision, 6);
        assert!(serde_json::from_str::<Header>(r#"{"revision":"x"}"#).is_err());
    }

    #[test]
    fn gateway_errors_are_typed() {
        let e = gateway_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
        );
        assert!(
            matches!(e, MetadataError::Backend { ref message, .. } if message.contains("key is not provided"))
        );
        assert!(matches!(
            gateway_error(StatusCode::SERVICE_UNAVAILABLE, b"no leader"),
            MetadataError::Unreachable { .. }
        ));
    }
}
