//! The `http://` backend: a client of our metadata server or the reference's.
//!
//! Watch over HTTP polls: every `poll_interval` (default 500 ms, clamped to
//! [`crate::watch::MIN_POLL_INTERVAL`]..=[`crate::watch::MAX_POLL_INTERVAL`]) the
//! watcher fetches the prefix listing (key + revision of last write), fetches
//! the values of keys whose revision changed and reports keys that vanished.
//! A key written twice between two polls yields one `Put` with its latest value.
//! `list` and `watch` need our server's listing extension; against the
//! reference's server they fail with [`MetadataError::Unsupported`], which
//! callers (the transfer engine) treat as "no change notifications".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use tokio::sync::mpsc;

use mooncake_security::http as http_auth;
use mooncake_security::Credential;

use super::Listing;
use crate::watch::{self, StoreLifetime};
use crate::{MetadataError, MetadataStore, WatchEvent};

const BACKEND: &str = "http";

/// Timeouts and polling of an [`HttpMetadata`] client.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Bound on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Bound on one whole request (connect + send + answer).
    pub request_timeout: Duration,
    /// Interval between two polls of a watcher.
    pub poll_interval: Duration,
    /// Signs every request when set (servers started with a credential
    /// require it; the reference's server ignores the header). The default
    /// is the credential of the environment (`MC_CLUSTER_TOKEN`,
    /// `MOONCAKE_CLUSTER_TOKEN_FILE`), if any.
    pub credential: Option<Credential>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            poll_interval: watch::DEFAULT_POLL_INTERVAL,
            credential: Credential::from_env().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring the environment's cluster credential");
                None
            }),
        }
    }
}

/// The request layer, shared by the store and its watcher tasks.
#[derive(Debug, Clone)]
struct Api {
    http: reqwest::Client,
    url: Url,
    credential: Option<Credential>,
}

pub(crate) fn reqwest_error(backend: &'static str, e: reqwest::Error) -> MetadataError {
    if e.is_connect() || e.is_timeout() {
        MetadataError::Unreachable {
            backend,
            message: e.to_string(),
        }
    } else {
        MetadataError::Backend {
            backend,
            message: e.to_string(),
        }
    }
}

async fn status_error(resp: reqwest::Response) -> MetadataError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    MetadataError::Backend {
        backend: BACKEND,
        message: format!("HTTP {status}: {}", body.trim()),
    }
}

/// Send a request built by `make`, once more on a fresh connection if the
/// first attempt failed on the way out (typically a pooled keep-alive
/// connection the server closed meanwhile, e.g. across a server restart).
/// Only for idempotent requests; timeouts and refused connections are final.
pub(crate) async fn send_idempotent(
    backend: &'static str,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, MetadataError> {
    match make().send().await {
        Ok(r) => Ok(r),
        Err(e) if e.is_request() && !e.is_connect() && !e.is_timeout() => {
            tracing::debug!(error = %e, "request failed on a reused connection; retrying once");
            make().send().await.map_err(|e| reqwest_error(backend, e))
        }
        Err(e) => Err(reqwest_error(backend, e)),
    }
}

impl Api {
    /// A request to `url`, signed when this client has a credential.
    fn request(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<&bytes::Bytes>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method.clone(), url.clone());
        if let Some(cred) = &self.credential {
            let path = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_string(),
            };
            let sig = http_auth::sign(
                cred,
                method.as_str(),
                &path,
                body.map(|b| &b[..]).unwrap_or(b""),
                http_auth::now_ms(),
            );
            req = req.header(http_auth::HEADER, sig);
        }
        if let Some(b) = body {
            req = req.body(b.clone());
        }
        req
    }

    fn with_query(&self, name: &str, value: &str) -> Url {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair(name, value);
        url
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        let url = self.with_query("key", key);
        let resp =
            send_idempotent(BACKEND, || self.request(reqwest::Method::GET, &url, None)).await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(
                resp.bytes()
                    .await
                    .map_err(|e| reqwest_error(BACKEND, e))?
                    .to_vec(),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(resp).await),
        }
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        let url = self.with_query("key", key);
        let body = bytes::Bytes::copy_from_slice(value);
        let resp = send_idempotent(BACKEND, || {
            self.request(reqwest::Method::PUT, &url, Some(&body))
        })
        .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(resp).await)
        }
    }

    async fn delete(&self, key: &str) -> Result<(), MetadataError> {
        let url = self.with_query("key", key);
        let resp = send_idempotent(BACKEND, || {
            self.request(reqwest::Method::DELETE, &url, None)
        })
        .await?;
        // The server answers 404 for an absent key; deleting one is no error here.
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error(resp).await)
        }
    }

    async fn listing(&self, prefix: &str) -> Result<Listing, MetadataError> {
        let url = self.with_query("prefix", prefix);
        let resp =
            send_idempotent(BACKEND, || self.request(reqwest::Method::GET, &url, None)).await?;
        // The reference's server has no listing: it answers a query without
        // `key` with a client error (or a non-JSON body). That is a missing
        // feature of the server, not a failure, so callers can degrade.
        if resp.status().is_client_error() {
            return Err(MetadataError::Unsupported(
                "http listing (server without ?prefix=)",
            ));
        }
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let body = resp.bytes().await.map_err(|e| reqwest_error(BACKEND, e))?;
        serde_json::from_slice(&body)
            .map_err(|_| MetadataError::Unsupported("http listing (server without ?prefix=)"))
    }

    async fn snapshot(&self, prefix: &str) -> Result<BTreeMap<String, u64>, MetadataError> {
        Ok(self
            .listing(prefix)
            .await?
            .keys
            .into_iter()
            .map(|k| (k.key, k.revision))
            .collect())
    }
}

/// Client of an HTTP metadata server. Cheap to clone; clones share watchers'
/// lifetime (they stop when the last clone is dropped).
#[derive(Debug, Clone)]
pub struct HttpMetadata {
    api: Api,
    poll_interval: Duration,
    lifetime: Arc<StoreLifetime>,
}

impl HttpMetadata {
    /// A client of the `/metadata` endpoint at `url`; does no I/O.
    pub fn new(url: Url, opts: HttpOptions) -> Result<Self, MetadataError> {
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| reqwest_error(BACKEND, e))?;
        Ok(Self {
            api: Api {
                http,
                url,
                credential: opts.credential,
            },
            poll_interval: watch::clamp_poll_interval(opts.poll_interval),
            lifetime: Arc::new(StoreLifetime::new()),
        })
    }

    /// Connect to `url` and check the server answers (any HTTP status counts:
    /// the reference's server has no health endpoint).
    pub async fn connect(url: Url, opts: HttpOptions) -> Result<Self, MetadataError> {
        let this = Self::new(url, opts)?;
        this.api
            .get("mooncake/__connect_probe__")
            .await
            .or_else(|e| match e {
                MetadataError::Backend { .. } => Ok(None),
                e => Err(e),
            })?;
        Ok(this)
    }

    /// The `/metadata` endpoint this client talks to.
    pub fn url(&self) -> &Url {
        &self.api.url
    }
}

#[async_trait::async_trait]
impl MetadataStore for HttpMetadata {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        self.api.get(key).await
    }

    #[tracing::instrument(level = "debug", skip(self, value), fields(len = value.len()))]
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        self.api.put(key, value).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete(&self, key: &str) -> Result<(), MetadataError> {
        self.api.delete(key).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn list(&self, prefix: &str) -> Result<Vec<String>, MetadataError> {
        Ok(self
            .api
            .listing(prefix)
            .await?
            .keys
            .into_iter()
            .map(|k| k.key)
            .collect())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, MetadataError> {
        // The first snapshot is taken before returning, so every change made
        // after `watch` returns is reported.
        let known = self.api.snapshot(prefix).await?;
        let (tx, rx) = mpsc::channel(watch::WATCH_CHANNEL_CAPACITY);
        let mut stop = self.lifetime.stop_signal();
        let api = self.api.clone();
        let interval = self.poll_interval;
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.stopped(&tx) => {}
                _ = watch::poll_loop(
                    BACKEND,
                    &prefix,
                    known,
                    interval,
                    &tx,
                    || {
                        let (api, prefix) = (api.clone(), prefix.clone());
                        async move { api.snapshot(&prefix).await }
                    },
                    |key, _revision| {
                        let api = api.clone();
                        async move { api.get(&key).await }
                    },
                ) => {}
            }
        });
        Ok(rx)
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}
