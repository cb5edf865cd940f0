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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ListedKey, Listing, NOT_FOUND_BODY};

/// Largest value a PUT may carry. Segment descriptors are a few KiB to a few
/// MiB; the bound keeps one client from exhausting the server's memory.
pub const MAX_VALUE_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
struct Table {
    revision: u64,
    entries: BTreeMap<String, (u64, Bytes)>,
}

/// The state behind the `/metadata` routes; cheap to clone (shared table).
#[derive(Debug, Clone, Default)]
pub struct MetadataService {
    table: Arc<Mutex<Table>>,
}

#[derive(Debug, Deserialize)]
struct MetadataQuery {
    key: Option<String>,
    prefix: Option<String>,
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

fn missing_key() -> Response {
    text(StatusCode::BAD_REQUEST, "missing key parameter")
}

impl MetadataService {
    /// A service over an empty table.
    pub fn new() -> Self {
        Self::default()
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
            .layer(DefaultBodyLimit::max(MAX_VALUE_BYTES))
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

    fn put(&self, key: String, value: Bytes) {
        let mut t = self.table.lock();
        t.revision += 1;
        let rev = t.revision;
        t.entries.insert(key, (rev, value));
    }

    fn delete(&self, key: &str) -> bool {
        let mut t = self.table.lock();
        let existed = t.entries.remove(key).is_some();
        if existed {
            t.revision += 1;
        }
        existed
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

#[tracing::instrument(level = "debug", skip(svc))]
async fn handle_get(
    State(svc): State<MetadataService>,
    Query(q): Query<MetadataQuery>,
) -> Response {
    match (q.key, q.prefix) {
        (Some(key), _) => match svc.get(&key) {
            Some(v) => ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response(),
            None => text(StatusCode::NOT_FOUND, NOT_FOUND_BODY),
        },
        (None, Some(prefix)) => Json(svc.listing(&prefix)).into_response(),
        (None, None) => missing_key(),
    }
}

#[tracing::instrument(level = "debug", skip(svc, body), fields(len = body.len()))]
async fn handle_put(
    State(svc): State<MetadataService>,
    Query(q): Query<MetadataQuery>,
    body: Bytes,
) -> Response {
    let Some(key) = q.key else {
        return missing_key();
    };
    svc.put(key, body);
    text(StatusCode::OK, "metadata updated")
}

#[tracing::instrument(level = "debug", skip(svc))]
async fn handle_delete(
    State(svc): State<MetadataService>,
    Query(q): Query<MetadataQuery>,
) -> Response {
    let Some(key) = q.key else {
        return missing_key();
    };
    if svc.delete(&key) {
        text(StatusCode::OK, "metadata deleted")
    } else {
        text(StatusCode::NOT_FOUND, NOT_FOUND_BODY)
    }
}

/// A running standalone metadata server. Dropping it stops the server (without
/// waiting); [`MetadataServer::shutdown`] stops it gracefully and waits.
#[derive(Debug)]
pub struct MetadataServer {
    local_addr: SocketAddr,
    service: MetadataService,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl MetadataServer {
    /// Bind `addr` (port 0 picks a free port) and serve a fresh table.
    pub async fn bind(addr: impl ToSocketAddrs) -> std::io::Result<Self> {
        Self::bind_with(addr, MetadataService::new()).await
    }

    /// Bind `addr` and serve `service`'s table.
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        service: MetadataService,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let app = service.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
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
            let _ = tx.send(());
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
