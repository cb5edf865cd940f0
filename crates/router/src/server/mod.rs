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
use crate::indexer::service::{IndexerService, Register};
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
    /// How prompts are cut into blocks (engine token blocks with events).
    scheme: crate::prompt::BlockScheme,
    /// KV tokens one decode instance holds (larger requests never fit).
    decode_capacity_tokens: u64,
    /// The event-built prefix index and its HTTP API (with `kv_events`).
    indexer: Option<Arc<IndexerService>>,
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
        let decode_capacity_tokens = cluster_cfg.decode_capacity_tokens;
        let mut cluster = LiveCluster::new(
            cluster_cfg,
            cfg.prefill_urls().len(),
            cfg.decode_urls().len(),
        );
        let runtime = tokio::runtime::Handle::try_current().is_ok();
        let indexer = if cfg.events_enabled() {
            if !runtime {
                return Err(ConfigError::Invalid {
                    key: "kv_events".into(),
                    message: "the router must be built inside a tokio runtime".into(),
                });
            }
            let algo = cfg.hash_algo.parse().unwrap_or_default();
            let ix = IndexerService::new(algo, &cfg.hash_seed, cfg.block_size);
            for (i, ep) in cfg.kv_events.iter().enumerate() {
                if ep.is_empty() {
                    continue;
                }
                let reg = Register {
                    endpoint: ep.clone(),
                    replay_endpoint: cfg.kv_replay.get(i).filter(|r| !r.is_empty()).cloned(),
                    kind: "vLLM".into(),
                    modelname: String::new(),
                    lora_name: None,
                    tenant_id: "default".into(),
                    instance_id: cfg.prefill_urls()[i].clone(),
                    block_size: cfg.block_size,
                    dp_rank: 0,
                };
                ix.register(reg).map_err(|message| ConfigError::Invalid {
                    key: "kv_events".into(),
                    message,
                })?;
            }
            cluster.set_index(ix.index().clone(), cfg.prefill_urls().to_vec());
            Some(ix)
        } else {
            None
        };
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
        let svc = Self {
            st: Arc::new(AppState {
                scheme: cfg.block_scheme(),
                decode_capacity_tokens,
                indexer,
                cfg,
                core: Mutex::new(Core { cluster, policy }),
                client,
                metrics: Metrics::default(),
                start: Instant::now(),
                next_id: AtomicU64::new(0),
            }),
        };
        if runtime && svc.st.cfg.probe_secs > 0.0 {
            tokio::spawn(probe_loop(Arc::downgrade(&svc.st)));
        }
        Ok(svc)
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

    /// The routes, ready to serve (with `kv_events`, also the indexer's:
    /// `/register`, `/unregister`, `/query`, `/query_by_hash`).
    pub fn app(&self) -> axum::Router {
        let extra = match &self.st.indexer {
            Some(ix) => ix.routes(),
            None => axum::Router::new(),
        };
        axum::Router::new()
            .route("/v1/completions", post(flow::completions))
            .route("/v1/chat/completions", post(flow::chat_completions))
            .route("/v1/models", get(models))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.st.clone())
            .merge(extra)
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
                let mut v = json!({
                    "url": url, "healthy": s.healthy, "in_flight": s.in_flight,
                    "routed": s.routed, "queue_s": s.load_s, "speed_factor": s.speed,
                    "prefix_source": if s.exact { "events" } else { "believed" },
                    "prefix_blocks_queried": s.cache.queried_blocks,
                    "prefix_blocks_hit": s.cache.hit_blocks,
                });
                if let Some(ix) = &self.st.indexer {
                    let ix = ix.index().lock();
                    if ix.has_instance(url) {
                        v["event_blocks"] = json!(ix.instance_blocks(url));
                        v["event_streams"] = json!(ix.stream_stats(url));
                    }
                }
                v
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
        let mut text = self.st.metrics.render(
            InstanceLabels {
                prefill: self.st.cfg.prefill_urls(),
                decode: self.st.cfg.decode_urls(),
            },
            &p,
            &d,
        );
        if let Some(ix) = &self.st.indexer {
            render_event_metrics(&mut text, &ix.index().lock(), self.st.cfg.prefill_urls());
        }
        text
    }
}

/// Per-instance KV-event stream counters in Prometheus text.
fn render_event_metrics(out: &mut String, ix: &crate::indexer::PrefixIndex, urls: &[String]) {
    use mooncake_telemetry::Kind;
    type Field = fn(&crate::indexer::StreamStats) -> u64;
    let counters: [(&str, &str, Field); 6] = [
        ("batches", "KV-event batches applied", |s| s.batches),
        ("gaps_replayed", "sequence gaps closed by replay", |s| {
            s.gaps_replayed
        }),
        (
            "batches_lost",
            "KV-event batches lost (not replayable)",
            |s| s.batches_lost,
        ),
        ("restarts", "publisher restarts seen (index cleared)", |s| {
            s.restarts
        }),
        (
            "decode_errors",
            "KV-event payloads that did not decode",
            |s| s.decode_errors,
        ),
        (
            "hash_mismatches",
            "root blocks whose hash differs from the router's",
            |s| s.hash_mismatches,
        ),
    ];
    let mut w = mooncake_telemetry::TextWriter::new();
    let name = "mooncake_router_kv_event_blocks";
    w.family(
        name,
        Kind::Gauge,
        "Blocks an instance holds per its KV events.",
    );
    for u in urls.iter().filter(|u| ix.has_instance(u)) {
        w.sample(name, &[("instance", u)], ix.instance_blocks(u));
    }
    for (name, help, f) in counters {
        let name = format!("mooncake_router_kv_event_{name}_total");
        w.family(&name, Kind::Counter, &format!("{help}."));
        for u in urls.iter().filter(|u| ix.has_instance(u)) {
            let v: u64 = ix.stream_stats(u).values().map(f).sum();
            w.sample(&name, &[("instance", u)], v);
        }
    }
    out.push_str(w.as_str());
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

/// Probes the instances in a failure backoff (`GET /health`) every
/// `probe_secs`: one that answers is routable again at once, one that does
/// not has its backoff renewed, so `/health` follows the engines by itself.
async fn probe_loop(st: std::sync::Weak<AppState>) {
    loop {
        let Some(s) = st.upgrade() else { return };
        let period = Duration::from_secs_f64(s.cfg.probe_secs);
        let down: Vec<(Role, usize, String)> = {
            let now = s.now();
            let mut core = s.core.lock();
            core.cluster.advance(now);
            let c = &core.cluster;
            let mut v = Vec::new();
            for (role, urls) in [
                (Role::Prefill, s.cfg.prefill_urls()),
                (Role::Decode, s.cfg.decode_urls()),
            ] {
                for (i, u) in urls.iter().enumerate() {
                    if !c.is_healthy(role, i) {
                        v.push((role, i, u.clone()));
                    }
                }
            }
            v
        };
        for (role, i, url) in down {
            let ok = s
                .client
                .get(format!("{url}/health"))
                .timeout(period.max(Duration::from_millis(200)))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let now = s.now();
            let mut core = s.core.lock();
            if ok {
                tracing::info!(role = role.as_str(), instance = %url, "health probe answered; routable again");
                core.cluster.mark_healthy(role, i);
            } else {
                core.cluster.mark_unhealthy(role, i, now);
            }
        }
        drop(s);
        tokio::time::sleep(period).await;
    }
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let (p, d) = {
        let now = st.now();
        let mut core = st.core.lock();
        core.cluster.advance(now);
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
