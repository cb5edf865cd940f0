//! The HTTP shell around [`LiveCluster`]: OpenAI-compatible endpoints and
//! the disaggregated request flow of vLLM's proxy for its Mooncake
//! connector.
//!
//! Per request (`POST /v1/completions`, `POST /v1/chat/completions`):
//! 1. parse the body (400 on malformed JSON or a missing prompt), estimate
//!    its shape ([`crate::prompt`]);
//! 2. route it with the policy on the live cluster (503 `overloaded_error`
//!    on a rejection);
//! 3. POST it to the prefill instance with `max_tokens: 1`, `stream: false`
//!    and `kv_transfer_params: {"do_remote_decode": true, ...}`; if the
//!    instance cannot be reached it is marked unhealthy for the backoff and
//!    the request is re-routed among the others (nothing was computed, so
//!    the retry is safe); a non-2xx answer is passed through;
//! 4. POST the original body to the decode instance with the
//!    `kv_transfer_params` the prefill answer returned, and stream its answer
//!    back unchanged (SSE passthrough) or return its JSON.
//!
//! The routing state lives behind one mutex that is never held across an
//! await. A ticket guard ([`flow`]) ends every admitted request in the cluster
//! exactly once, also when the client disconnects mid-way (the handler
//! future is dropped) or a stream breaks.

mod flow;

use flow::{content_type, passthrough};
pub use flow::{decode_body, prefill_body};

use crate::cluster::{LiveCluster, Role};
use crate::config::{ConfigError, RouterConfig};
use crate::error::ApiError;
use crate::metrics::{InstanceLabels, Metrics};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mooncake_conductor::policy::Policy;
use parking_lot::Mutex;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Largest request body accepted (long-context prompts are a few MiB).
pub const MAX_BODY_BYTES: usize = 64 << 20;

struct Core {
    cluster: LiveCluster,
    policy: Box<dyn Policy>,
}

struct AppState {
    cfg: RouterConfig,
    core: Mutex<Core>,
    client: reqwest::Client,
    metrics: Metrics,
    start: Instant,
    next_id: AtomicU64,
}

impl AppState {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn mark_unhealthy(&self, role: Role, i: usize) {
        let now = self.now();
        self.core.lock().cluster.mark_unhealthy(role, i, now);
    }
}

/// The live router: configuration, routing state, metrics.
#[derive(Clone)]
pub struct RouterService {
    st: Arc<AppState>,
}

impl RouterService {
    /// Validates `cfg` and builds the router (no sockets yet).
    pub fn new(cfg: RouterConfig) -> Result<Self, ConfigError> {
        let cluster_cfg = cfg.cluster_config()?;
        let cluster = LiveCluster::new(
            cluster_cfg,
            cfg.prefill_urls().len(),
            cfg.decode_urls().len(),
        );
        let policy = cfg.policy.build(cfg.seed);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs_f64(cfg.connect_timeout_secs))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ConfigError::Invalid {
                key: "http client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            st: Arc::new(AppState {
                cfg,
                core: Mutex::new(Core { cluster, policy }),
                client,
                metrics: Metrics::default(),
                start: Instant::now(),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration in effect.
    pub fn config(&self) -> &RouterConfig {
        &self.st.cfg
    }

    /// The router's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.st.metrics
    }

    /// Reads the routing state.
    pub fn with_cluster<R>(&self, f: impl FnOnce(&LiveCluster) -> R) -> R {
        f(&self.st.core.lock().cluster)
    }

    /// The routes, ready to serve.
    pub fn app(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/completions", post(flow::completions))
            .route("/v1/chat/completions", post(flow::chat_completions))
            .route("/v1/models", get(models))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.st.clone())
    }

    /// Per-instance routing state as JSON (`GET /status`).
    pub fn status_json(&self) -> serde_json::Value {
        let (p, d) = {
            let core = self.st.core.lock();
            (
                core.cluster.status(Role::Prefill),
                core.cluster.status(Role::Decode),
            )
        };
        let cfg = &self.st.cfg;
        let prefill: Vec<_> = cfg
            .prefill_urls()
            .iter()
            .zip(&p)
            .map(|(url, s)| {
                json!({
                    "url": url, "healthy": s.healthy, "in_flight": s.in_flight,
                    "routed": s.routed, "queue_s": s.load_s, "speed_factor": s.speed,
                    "prefix_blocks_queried": s.cache.queried_blocks,
                    "prefix_blocks_hit": s.cache.hit_blocks,
                })
            })
            .collect();
        let decode: Vec<_> = cfg
            .decode_urls()
            .iter()
            .zip(&d)
            .map(|(url, s)| {
                json!({
                    "url": url, "healthy": s.healthy, "in_flight": s.in_flight,
                    "routed": s.routed, "mean_decode_s": s.load_s,
                })
            })
            .collect();
        json!({
            "policy": cfg.policy.as_str(),
            "mode": cfg.mode,
            "admission": cfg.admission.as_str(),
            "slo": {"ttft_s": cfg.slo_ttft, "tbt_s": cfg.slo_tbt},
            "prefill": prefill,
            "decode": decode,
        })
    }

    /// The Prometheus exposition text.
    pub fn render_metrics(&self) -> String {
        let (p, d) = {
            let core = self.st.core.lock();
            (
                core.cluster.status(Role::Prefill),
                core.cluster.status(Role::Decode),
            )
        };
        self.st.metrics.render(
            InstanceLabels {
                prefill: self.st.cfg.prefill_urls(),
                decode: self.st.cfg.decode_urls(),
            },
            &p,
            &d,
        )
    }
}

/// A server running on a background task; stops on [`Server::shutdown`] or
/// when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Serves `app` on `listener` with graceful shutdown.
    pub fn spawn(listener: TcpListener, app: axum::Router) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, waits for the task.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    let candidates: Vec<String> = {
        let core = st.core.lock();
        let c = &core.cluster;
        let healthy = |role, urls: &[String]| {
            urls.iter()
                .enumerate()
                .filter(|&(i, _)| c.is_healthy(role, i))
                .map(|(_, u)| u.clone())
                .collect::<Vec<_>>()
        };
        let mut v = healthy(Role::Decode, st.cfg.decode_urls());
        v.extend(healthy(Role::Prefill, st.cfg.prefill_urls()));
        v
    };
    let mut errors = Vec::new();
    for url in candidates {
        let r = st
            .client
            .get(format!("{url}/v1/models"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                let ct = content_type(&resp);
                let status = resp.status();
                match resp.bytes().await {
                    Ok(b) => return passthrough(status, ct, Body::from(b)),
                    Err(e) => errors.push(format!("{url}: {e}")),
                }
            }
            Ok(resp) => errors.push(format!("{url}: HTTP {}", resp.status())),
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    ApiError::bad_gateway(format!(
        "no instance listed its models: {}",
        errors.join("; ")
    ))
    .into_response()
}

async fn status(State(st): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    axum::Json(RouterService { st }.status_json())
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let (p, d) = {
        let core = st.core.lock();
        let c = &core.cluster;
        let count = |role| (0..c.len(role)).filter(|&i| c.is_healthy(role, i)).count();
        (count(Role::Prefill), count(Role::Decode))
    };
    let ok = p > 0 && d > 0;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "prefill_healthy": p,
        "decode_healthy": d,
        "policy": st.cfg.policy.as_str(),
    });
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let text = RouterService { st }.render_metrics();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}
