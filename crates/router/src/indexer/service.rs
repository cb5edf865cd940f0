//! The indexer's HTTP shell, in the shape of the Mooncake Conductor indexer
//! API: `POST /register` (subscribe to a publisher's KV events),
//! `POST /unregister`, `POST /query` (prefix hits of token ids) and
//! `POST /query_by_hash` (of precomputed block hashes), plus `GET /status`.
//!
//! Owns the registrations (one subscriber task per instance and rank) and
//! the shared [`PrefixIndex`]. Hits are reported in tokens: `longest_matched`
//! over every medium and rank, one entry per medium (`GPU`, `CPU`, ...) and
//! `DP` per rank, grouped by tenant then instance. Hashes are vLLM's chained
//! block hashes (integer form, see [`crate::kv_events::hash`]), not the
//! Conductor's XXH3 scheme: they are what vLLM publishes, so no tokens need
//! to be recomputed on the way in.

use super::PrefixIndex;
use crate::error::ApiError;
use crate::kv_events::hash::{BlockHasher, HashAlgo};
use crate::kv_events::zmq::{subscribe, StreamSource};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most token ids / hashes one query may carry.
pub const MAX_QUERY_ITEMS: usize = 1 << 20;

/// `POST /register` body.
#[derive(Debug, Clone, Deserialize)]
pub struct Register {
    /// ZMQ PUB endpoint of the publisher.
    pub endpoint: String,
    /// ZMQ ROUTER replay endpoint.
    #[serde(default)]
    pub replay_endpoint: Option<String>,
    /// Publisher type (`vLLM`, `SGLang`).
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// Model served.
    #[serde(default)]
    pub modelname: String,
    /// LoRA adapter (empty: base model).
    #[serde(default)]
    pub lora_name: Option<String>,
    /// Tenant.
    #[serde(default = "default_tenant")]
    pub tenant_id: String,
    /// Router-facing instance identity.
    pub instance_id: String,
    /// Tokens per KV block.
    pub block_size: u32,
    /// Data-parallel rank of this publisher.
    #[serde(default)]
    pub dp_rank: u32,
}

fn default_type() -> String {
    "vLLM".into()
}

fn default_tenant() -> String {
    "default".into()
}

#[derive(Debug, Deserialize)]
struct Unregister {
    instance_id: String,
    #[serde(default = "default_tenant")]
    tenant_id: String,
    #[serde(default)]
    dp_rank: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Query {
    #[serde(default)]
    model: String,
    #[serde(default)]
    lora_name: Option<String>,
    #[serde(default)]
    token_ids: Option<Vec<u32>>,
    #[serde(default)]
    seq_hashes: Option<Vec<u64>>,
    #[serde(default)]
    block_hash: Option<Vec<u64>>,
    #[serde(default = "default_tenant")]
    tenant_id: String,
    #[serde(default)]
    instance_id: Option<String>,
    block_size: u32,
}

struct Reg {
    meta: Register,
    task: tokio::task::JoinHandle<()>,
}

/// The indexer service (see the module docs).
pub struct IndexerService {
    index: Arc<Mutex<PrefixIndex>>,
    regs: Mutex<BTreeMap<(String, u32), Reg>>,
    algo: HashAlgo,
    seed: String,
}

impl Drop for IndexerService {
    fn drop(&mut self) {
        for r in self.regs.lock().values() {
            r.task.abort();
        }
    }
}

impl IndexerService {
    /// A service hashing token queries with `algo` / `seed`; root blocks of
    /// `check_block_size` tokens are checked against the engines' hashes.
    pub fn new(algo: HashAlgo, seed: &str, check_block_size: u32) -> Arc<Self> {
        let check = BlockHasher::new(algo, check_block_size, seed);
        Arc::new(Self {
            index: Arc::new(Mutex::new(PrefixIndex::new(Some(check)))),
            regs: Mutex::new(BTreeMap::new()),
            algo,
            seed: seed.to_string(),
        })
    }

    /// The shared index.
    pub fn index(&self) -> &Arc<Mutex<PrefixIndex>> {
        &self.index
    }

    /// Subscribes to a publisher (replacing a registration of the same
    /// instance and rank). Must run inside a tokio runtime.
    pub fn register(&self, r: Register) -> Result<(), String> {
        for ep in std::iter::once(&r.endpoint).chain(r.replay_endpoint.as_ref()) {
            if !ep.starts_with("tcp://") {
                return Err(format!("endpoint `{ep}` must be tcp://host:port"));
            }
        }
        if r.instance_id.is_empty() {
            return Err("instance_id must not be empty".into());
        }
        if r.block_size == 0 {
            return Err("block_size must be positive".into());
        }
        let key = (r.instance_id.clone(), r.dp_rank);
        let task = tokio::spawn(subscribe(
            StreamSource {
                instance: r.instance_id.clone(),
                dp_rank: r.dp_rank,
                endpoint: r.endpoint.clone(),
                replay: r.replay_endpoint.clone(),
            },
            self.index.clone(),
        ));
        if let Some(old) = self.regs.lock().insert(key, Reg { meta: r, task }) {
            old.task.abort();
        }
        Ok(())
    }

    /// Stops and forgets the streams of `instance` (one rank, or all).
    pub fn unregister(&self, instance: &str, dp_rank: Option<u32>) -> Vec<(String, u32)> {
        let mut regs = self.regs.lock();
        let keys: Vec<(String, u32)> = regs
            .keys()
            .filter(|(i, d)| i == instance && dp_rank.is_none_or(|x| x == *d))
            .cloned()
            .collect();
        for k in &keys {
            if let Some(r) = regs.remove(k) {
                r.task.abort();
            }
        }
        drop(regs);
        self.index.lock().remove(instance, dp_rank);
        keys
    }

    /// The routes (`/register`, `/unregister`, `/query`, `/query_by_hash`,
    /// `/status`), to serve alone or merge into the router's.
    pub fn routes(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/register", post(register))
            .route("/unregister", post(unregister))
            .route("/query", post(query))
            .route("/query_by_hash", post(query))
            .with_state(self.clone())
    }

    /// Per-instance state: registration and stream counters.
    pub fn status_json(&self) -> Value {
        let regs = self.regs.lock();
        let ix = self.index.lock();
        let instances: Vec<Value> = ix
            .instances()
            .into_iter()
            .map(|i| {
                let reg: Vec<Value> = regs
                    .values()
                    .filter(|r| r.meta.instance_id == i)
                    .map(|r| {
                        json!({"endpoint": r.meta.endpoint, "replay_endpoint": r.meta.replay_endpoint,
                               "dp_rank": r.meta.dp_rank, "block_size": r.meta.block_size,
                               "model": r.meta.modelname, "tenant_id": r.meta.tenant_id})
                    })
                    .collect();
                json!({"instance_id": i, "blocks": ix.instance_blocks(&i),
                       "streams": ix.stream_stats(&i), "registrations": reg})
            })
            .collect();
        json!({"hash_algo": self.algo.as_str(), "blocks": ix.len(), "instances": instances})
    }

    fn answer(&self, q: Query) -> Result<Value, ApiError> {
        let n = q
            .token_ids
            .as_ref()
            .map(Vec::len)
            .or(q.seq_hashes.as_ref().map(Vec::len))
            .or(q.block_hash.as_ref().map(Vec::len))
            .unwrap_or(0);
        if n > MAX_QUERY_ITEMS {
            return Err(ApiError::bad_request(format!(
                "query too long ({n} items, at most {MAX_QUERY_ITEMS})"
            )));
        }
        if q.block_size == 0 {
            return Err(ApiError::bad_request("block_size must be positive"));
        }
        let hashes = match (q.token_ids, q.seq_hashes.or(q.block_hash)) {
            (Some(t), _) => BlockHasher::new(self.algo, q.block_size, &self.seed).hashes(&t),
            (None, Some(h)) => h,
            (None, None) => {
                return Err(ApiError::bad_request(
                    "one of `token_ids`, `seq_hashes` is required",
                ))
            }
        };
        let regs = self.regs.lock();
        let ix = self.index.lock();
        let bs = q.block_size as usize;
        let mut per_instance = Map::new();
        for inst in ix.instances() {
            if q.instance_id.as_ref().is_some_and(|i| *i != inst) {
                continue;
            }
            // Registered metadata must agree with the query's scope (an
            // instance indexed without a registration, as in the router,
            // matches any model).
            let metas: Vec<&Register> = regs
                .values()
                .filter(|r| r.meta.instance_id == inst)
                .map(|r| &r.meta)
                .collect();
            let in_scope = metas.is_empty()
                || metas.iter().any(|m| {
                    m.tenant_id == q.tenant_id
                        && m.block_size == q.block_size
                        && (m.modelname.is_empty() || q.model.is_empty() || m.modelname == q.model)
                        && m.lora_name.as_deref().unwrap_or("")
                            == q.lora_name.as_deref().unwrap_or("")
                });
            if !in_scope {
                continue;
            }
            let m = ix.query(&inst, &hashes);
            let mut o = Map::new();
            o.insert("longest_matched".into(), json!(m.longest * bs));
            for (medium, blocks) in &m.media {
                o.insert(medium.clone(), json!(blocks * bs));
            }
            let dp: Map<String, Value> =
                m.dp.iter()
                    .map(|(r, b)| (r.to_string(), json!(b * bs)))
                    .collect();
            o.insert("DP".into(), Value::Object(dp));
            per_instance.insert(inst, Value::Object(o));
        }
        Ok(json!({ q.tenant_id: per_instance }))
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

async fn register(State(s): State<Arc<IndexerService>>, body: axum::body::Bytes) -> Response {
    let r: Register = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let id = r.instance_id.clone();
    match s.register(r) {
        Ok(()) => {
            Json(json!({"status": "registered successfully", "instance_id": id})).into_response()
        }
        Err(e) => ApiError::bad_request(e).into_response(),
    }
}

async fn unregister(State(s): State<Arc<IndexerService>>, body: axum::body::Bytes) -> Response {
    let u: Unregister = match parse(&body) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let removed: Vec<String> = s
        .unregister(&u.instance_id, u.dp_rank)
        .into_iter()
        .map(|(i, d)| format!("{i}|{}|{d}", u.tenant_id))
        .collect();
    Json(json!({"status": "unregistered successfully", "removed_instances": removed}))
        .into_response()
}

async fn query(State(s): State<Arc<IndexerService>>, body: axum::body::Bytes) -> Response {
    match parse::<Query>(&body).and_then(|q| s.answer(q)) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The standalone indexer's app: the routes plus `GET /status` and
/// `GET /health`.
pub fn standalone_app(s: &Arc<IndexerService>) -> axum::Router {
    let st = s.clone();
    s.routes()
        .route(
            "/status",
            get(move || {
                let st = st.clone();
                async move { Json(st.status_json()) }
            }),
        )
        .route("/health", get(|| async { "OK" }))
}
