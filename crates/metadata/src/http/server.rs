//! The HTTP metadata server: an in-memory table behind the reference's
//! `/metadata` protocol (see [`crate::http`]).
//!
//! [`MetadataService::router`] gives an `axum::Router` that other servers (the
//! store master's `--enable_http_metadata_server`) mount on their own port;
//! [`MetadataServer`] runs it standalone (`mooncake metadata-server`).
//!
//! Invariants: the table's revision grows by one on every successful PUT or
//! DELETE; each key remembers the revision of its last PUT; the table is
//! behind one mutex, held only for map operations (never across I/O).
//! Bounds: one value is at most [`TableCaps::max_value_bytes`] (a larger
//! declared `Content-Length` is answered 413 before the body is read, and the
//! connection closed); the table holds at most `max_entries` keys and
//! `max_total_bytes` of values (a PUT beyond them is answered 507 and changes
//! nothing). With a credential, an unsigned or wrongly signed request is
//! answered 401 and changes nothing. Error bodies of these are JSON.
//!
//! Keys, as the reference's servers treat them: a key is trimmed of
//! surrounding whitespace, and a missing or blank key is answered 400 (JSON)
//! for every method, so nothing is ever stored under `""`. With
//! [`MetadataService::rpc_meta_write_once`] (the reference's standalone
//! server's rule), a key containing `rpc_meta` that is present may only be
//! re-published with the identical value; another value is answered 400.
//!
//! The protocol itself is [`MetadataService::apply`] (no sockets); the axum
//! handlers here and the Python module's `KVBootstrapServer` are shells
//! around it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, OriginalUri, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mooncake_security::http::HttpVerifier;
use mooncake_security::{AuthMode, SecurityError};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::serve::{self, HttpLimits};
use super::{ListedKey, Listing, NOT_FOUND_BODY};

/// Largest value a PUT may carry. Segment descriptors are a few KiB to a few
/// MiB; the bound keeps one client from exhausting the server's memory.
pub const MAX_VALUE_BYTES: usize = 64 << 20;

/// How much the table may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableCaps {
    /// Largest single value.
    pub max_value_bytes: usize,
    /// Most keys held at once.
    pub max_entries: usize,
    /// Most value bytes held at once.
    pub max_total_bytes: u64,
}

impl Default for TableCaps {
    fn default() -> Self {
        Self {
            max_value_bytes: MAX_VALUE_BYTES,
            max_entries: 100_000,
            max_total_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    revision: u64,
    total_bytes: u64,
    entries: BTreeMap<String, (u64, Bytes)>,
}

/// The state behind the `/metadata` routes; cheap to clone (shared table).
#[derive(Debug, Clone)]
pub struct MetadataService {
    table: Arc<Mutex<Table>>,
    verifier: Arc<HttpVerifier>,
    caps: TableCaps,
    rpc_meta_write_once: bool,
}

/// One answer of the protocol core ([`MetadataService::apply`]), before it
/// becomes an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
}

impl Answer {
    fn text(status: StatusCode, body: &'static str) -> Self {
        Self {
            status: status.as_u16(),
            body: Bytes::from_static(body.as_bytes()),
            content_type: "text/plain; charset=utf-8",
        }
    }

    /// A JSON error: `{"error": "...", "status": N}`.
    fn error(status: StatusCode, message: &str) -> Self {
        let doc = serde_json::json!({"error": message, "status": status.as_u16()});
        Self {
            status: status.as_u16(),
            body: Bytes::from(doc.to_string()),
            content_type: "application/json",
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response()
    }
}

impl Default for MetadataService {
    fn default() -> Self {
        Self::with_auth(AuthMode::Insecure, TableCaps::default())
    }
}

/// A JSON error answer: `{"error": "...", "status": N}`.
fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({"error": message.into(), "status": status.as_u16()})),
    )
        .into_response()
}

/// 413 for a value over the cap; the connection is closed after it, since
/// the rest of the body will not be read.
fn too_large(max: usize) -> Response {
    let mut r = json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("value larger than {max} bytes"),
    );
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// Refuse a request whose declared body is over the cap before reading it.
async fn check_declared_length(
    State(max): State<usize>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(max);
    }
    next.run(req).await
}

/// Why a PUT changed nothing.
enum PutRefused {
    /// A `rpc_meta` key re-published with another value.
    Conflict(&'static str),
    /// A table cap.
    Full(&'static str),
}

#[derive(Debug, Deserialize)]
struct MetadataQuery {
    key: Option<String>,
    prefix: Option<String>,
}

impl MetadataService {
    /// A service over an empty table that authenticates nobody (as the
    /// reference's server); see [`MetadataService::with_auth`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A service over an empty table that requires signed requests when
    /// `auth` holds a credential, within `caps`.
    pub fn with_auth(auth: AuthMode, caps: TableCaps) -> Self {
        Self {
            table: Arc::default(),
            verifier: Arc::new(HttpVerifier::new(auth)),
            caps,
            rpc_meta_write_once: false,
        }
    }

    /// With `on`, a present key containing `rpc_meta` may only be
    /// re-published with the identical value (the reference's standalone
    /// server: two processes claiming one RPC endpoint is a configuration
    /// error, not an update). Off (the default), every PUT overwrites.
    pub fn rpc_meta_write_once(mut self, on: bool) -> Self {
        self.rpc_meta_write_once = on;
        self
    }

    /// The `/metadata` protocol without sockets or authentication: `method`
    /// with the raw `key` / `prefix` query values and the request body.
    pub fn apply(
        &self,
        method: &str,
        key: Option<&str>,
        prefix: Option<&str>,
        body: Bytes,
    ) -> Answer {
        if let (None, Some(prefix), "GET") = (key, prefix, method) {
            let doc = serde_json::to_vec(&self.listing(prefix)).unwrap_or_default();
            return Answer {
                status: 200,
                body: Bytes::from(doc),
                content_type: "application/json",
            };
        }
        let key = key.unwrap_or("").trim();
        if key.is_empty() {
            return Answer::error(StatusCode::BAD_REQUEST, "metadata key is required");
        }
        match method {
            "GET" => match self.get(key) {
                Some(v) => Answer {
                    status: 200,
                    body: v,
                    content_type: "application/octet-stream",
                },
                None => Answer::text(StatusCode::NOT_FOUND, NOT_FOUND_BODY),
            },
            "PUT" => match self.put(key.to_string(), body) {
                Ok(()) => Answer::text(StatusCode::OK, "metadata updated"),
                Err(PutRefused::Conflict(why)) => Answer::error(StatusCode::BAD_REQUEST, why),
                Err(PutRefused::Full(why)) => Answer::error(StatusCode::INSUFFICIENT_STORAGE, why),
            },
            "DELETE" => match self.delete(key) {
                true => Answer::text(StatusCode::OK, "metadata deleted"),
                false => Answer::text(StatusCode::NOT_FOUND, NOT_FOUND_BODY),
            },
            _ => Answer::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        }
    }

    /// Every key and value held, sorted by key.
    pub fn entries(&self) -> Vec<(String, Bytes)> {
        let t = self.table.lock();
        t.entries
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    /// The table's revision (grows by one per successful PUT or DELETE).
    pub fn revision(&self) -> u64 {
        self.table.lock().revision
    }

    /// Check a request's signature; `Some` is the refusal to send.
    fn refusal(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Response> {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let sig = headers
            .get(mooncake_security::http::HEADER)
            .and_then(|v| v.to_str().ok());
        match self.verifier.verify(
            method.as_str(),
            path,
            sig,
            body,
            mooncake_security::http::now_ms(),
        ) {
            Ok(_) => None,
            Err(e) => {
                if !matches!(e, SecurityError::CredentialRequired) {
                    tracing::warn!(%method, path, error = %e, "refused metadata request");
                }
                Some(json_error(StatusCode::UNAUTHORIZED, e.to_string()))
            }
        }
    }

    /// The routes `/metadata` and `/health`, ready to serve or to merge into a
    /// larger router.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/metadata",
                get(handle_get).put(handle_put).delete(handle_delete),
            )
            .route("/health", get(|| async { "OK" }))
            .layer(DefaultBodyLimit::max(self.caps.max_value_bytes))
            .layer(middleware::from_fn_with_state(
                self.caps.max_value_bytes,
                check_declared_length,
            ))
            .with_state(self.clone())
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.table.lock().entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        self.table.lock().entries.get(key).map(|(_, v)| v.clone())
    }

    /// Store `value`; `Err` says why not (nothing changed).
    fn put(&self, key: String, value: Bytes) -> Result<(), PutRefused> {
        let mut t = self.table.lock();
        let old = t.entries.get(&key).map(|(_, v)| v);
        if let (true, Some(old)) = (self.rpc_meta_write_once && key.contains("rpc_meta"), old) {
            if *old != value {
                return Err(PutRefused::Conflict(
                    "rpc_meta key already published with another value",
                ));
            }
        }
        let old = old.map(|v| v.len() as u64);
        if old.is_none() && t.entries.len() >= self.caps.max_entries {
            return Err(PutRefused::Full("metadata table full (too many keys)"));
        }
        let total = t.total_bytes - old.unwrap_or(0) + value.len() as u64;
        if total > self.caps.max_total_bytes {
            return Err(PutRefused::Full("metadata table full (too many bytes)"));
        }
        t.total_bytes = total;
        t.revision += 1;
        let rev = t.revision;
        t.entries.insert(key, (rev, value));
        Ok(())
    }

    fn delete(&self, key: &str) -> bool {
        let mut t = self.table.lock();
        let removed = t.entries.remove(key);
        if let Some((_, v)) = &removed {
            t.revision += 1;
            t.total_bytes -= v.len() as u64;
        }
        removed.is_some()
    }

    /// Bytes of values held.
    pub fn total_bytes(&self) -> u64 {
        self.table.lock().total_bytes
    }

    fn listing(&self, prefix: &str) -> Listing {
        let t = self.table.lock();
        Listing {
            revision: t.revision,
            keys: t
                .entries
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (rev, _))| ListedKey {
                    key: k.clone(),
                    revision: *rev,
                })
                .collect(),
        }
    }
}

#[tracing::instrument(level = "debug", skip(svc, headers))]
async fn handle_get(
    State(svc): State<MetadataService>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(q): Query<MetadataQuery>,
) -> Response {
    if let Some(r) = svc.refusal(&method, &uri, &headers, b"") {
        return r;
    }
    svc.apply("GET", q.key.as_deref(), q.prefix.as_deref(), Bytes::new())
        .into_response()
}

#[tracing::instrument(level = "debug", skip(svc, headers, body))]
async fn handle_put(
    State(svc): State<MetadataService>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(q): Query<MetadataQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return too_large(svc.caps.max_value_bytes)
        }
        Err(e) => return json_error(e.status(), e.body_text()),
    };
    if let Some(r) = svc.refusal(&method, &uri, &headers, &body) {
        return r;
    }
    svc.apply("PUT", q.key.as_deref(), q.prefix.as_deref(), body)
        .into_response()
}

#[tracing::instrument(level = "debug", skip(svc, headers))]
async fn handle_delete(
    State(svc): State<MetadataService>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(q): Query<MetadataQuery>,
) -> Response {
    if let Some(r) = svc.refusal(&method, &uri, &headers, b"") {
        return r;
    }
    svc.apply(
        "DELETE",
        q.key.as_deref(),
        q.prefix.as_deref(),
        Bytes::new(),
    )
    .into_response()
}

/// A running standalone metadata server. Dropping it stops the server (without
/// waiting); [`MetadataServer::shutdown`] stops it gracefully and waits.
#[derive(Debug)]
pub struct MetadataServer {
    local_addr: SocketAddr,
    service: MetadataService,
    shutdown: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl MetadataServer {
    /// Bind `addr` (port 0 picks a free port) and serve a fresh table.
    pub async fn bind(addr: impl ToSocketAddrs) -> std::io::Result<Self> {
        Self::bind_with(addr, MetadataService::new()).await
    }

    /// Bind `addr` and serve `service`'s table within the default
    /// [`HttpLimits`].
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        service: MetadataService,
    ) -> std::io::Result<Self> {
        Self::bind_with_limits(addr, service, HttpLimits::default()).await
    }

    /// Bind `addr` and serve `service`'s table within `limits`.
    pub async fn bind_with_limits(
        addr: impl ToSocketAddrs,
        service: MetadataService,
        limits: HttpLimits,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(false);
        let app = service.router();
        let task = tokio::spawn(serve::serve(listener, app, limits, rx));
        tracing::info!(%local_addr, "metadata server listening");
        Ok(Self {
            local_addr,
            service,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The connection string clients pass to [`crate::connect`].
    pub fn url(&self) -> String {
        format!("http://{}/metadata", self.local_addr)
    }

    /// The table being served.
    pub fn service(&self) -> &MetadataService {
        &self.service
    }

    /// Stop accepting connections, let in-flight requests finish, and wait.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
