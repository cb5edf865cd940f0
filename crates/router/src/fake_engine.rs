//! A fake LLM engine: OpenAI-compatible endpoints with latencies from the
//! conductor's cost model, for tests and demos on machines without a GPU
//! (the one mock this project allows; it stands in for vLLM / SGLang).
//!
//! Owns: its own prefix cache (a conductor LRU [`BlockCache`] over the same
//! block hashes the router computes, [`crate::prompt`]), a FIFO prefill stage
//! (one prefill at a time, `prefill_s(uncached | cached)` of the cost model),
//! decode steps paced by `decode_step_s(batch, context)` with the batch being
//! the requests decoding concurrently, every time multiplied by
//! `time_scale` (0 = instant). It speaks the disaggregation protocol of
//! vLLM's Mooncake connector just enough for the router: a request with
//! `kv_transfer_params.do_remote_decode` is answered with
//! `kv_transfer_params` naming this engine; a request carrying
//! `kv_transfer_params.do_remote_prefill` skips prefill (the KV "arrives"
//! after the cost model's transfer time) and is counted as `remote_kv`.
//!
//! With [`FakeEngineConfig::kv_events`] set it behaves like vLLM with
//! `--kv-events-config`: blocks are the engine's token blocks (token-id
//! prompts as given, text through [`prompt::toy_tokens`]) hashed as vLLM
//! hashes them, and every change of its bounded prefix cache is published
//! over ZMQ in vLLM's wire format ([`crate::kv_events`]): `BlockStored` when
//! a prefill caches new blocks, `BlockRemoved` for the blocks evicted to
//! make room, `AllBlocksCleared` on `POST /reset_prefix_cache`.
//!
//! `GET /stats` reports counters (requests, local prefills, remote-KV
//! requests, prompt blocks queried / hit in its cache, tokens generated) so
//! tests can observe where prefixes were cached.

use crate::error::ApiError;
use crate::indexer::DEFAULT_MEDIUM;
use crate::kv_events::hash::{BlockHasher, HashAlgo};
use crate::kv_events::wire::{KvEvent, KvEventBatch};
use crate::kv_events::zmq::{Faults, Publisher};
use crate::prompt::{self, BlockScheme, Endpoint, PromptShape, CHARS_PER_TOKEN};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use mooncake_conductor::cache::{new_cache, BlockCache, InsertOutcome, PolicyKind};
use mooncake_conductor::cost::{CostConfig, CostConfigError, CostModel};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Most tokens one request generates (a fake engine must not be made to
/// loop for hours by one `max_tokens`).
pub const MAX_OUTPUT_TOKENS: u32 = 1 << 16;

/// What the engine is deployed as (reported in `/stats`; both roles serve
/// every request kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineRole {
    /// A prefill instance.
    Prefill,
    /// A decode instance.
    Decode,
}

impl FromStr for EngineRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "prefill" => Ok(EngineRole::Prefill),
            "decode" => Ok(EngineRole::Decode),
            _ => Err(format!("unknown role `{s}` (expected prefill or decode)")),
        }
    }
}

impl fmt::Display for EngineRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineRole::Prefill => "prefill",
            EngineRole::Decode => "decode",
        })
    }
}

/// Settings of a fake engine.
#[derive(Debug, Clone)]
pub struct FakeEngineConfig {
    /// Deployment role.
    pub role: EngineRole,
    /// Multiplier on every modelled latency (0 = respond at once).
    pub time_scale: f64,
    /// Characters per prefix block (must match the router's).
    pub block_chars: usize,
    /// Model name served.
    pub model: String,
    /// Tokens its prefix cache holds.
    pub cache_tokens: u64,
    /// Output tokens when a request gives no `max_tokens`.
    pub default_max_tokens: u32,
    /// Cost model of the modelled hardware.
    pub cost: CostConfig,
    /// Publish KV-cache events (vLLM's format) and cut blocks as vLLM does.
    pub kv_events: Option<KvEventsConfig>,
}

/// Where and how a fake engine publishes its KV-cache events.
#[derive(Debug, Clone)]
pub struct KvEventsConfig {
    /// ZMQ PUB endpoint to bind (`tcp://127.0.0.1:5557`).
    pub endpoint: String,
    /// ZMQ ROUTER replay endpoint to bind.
    pub replay_endpoint: Option<String>,
    /// Tokens per KV block (vLLM's `--block-size`).
    pub block_size: u32,
    /// vLLM's `--prefix-caching-hash-algo`.
    pub hash_algo: HashAlgo,
    /// The `NONE_HASH` seed (`PYTHONHASHSEED`, or vLLM's default).
    pub hash_seed: String,
    /// Data-parallel rank stamped on batches.
    pub dp_rank: u32,
}

impl Default for FakeEngineConfig {
    fn default() -> Self {
        Self {
            role: EngineRole::Prefill,
            time_scale: 0.01,
            block_chars: prompt::DEFAULT_BLOCK_CHARS,
            model: "fake-llama3-70b".into(),
            cache_tokens: 1_000_000,
            default_max_tokens: 16,
            cost: CostConfig::default(),
            kv_events: None,
        }
    }
}

/// Counters served at `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Deployment role.
    pub role: String,
    /// Generation requests received (valid ones).
    pub requests: u64,
    /// Requests whose prompt this engine prefilled itself.
    pub prefills: u64,
    /// Requests that came with remote KV (`do_remote_prefill`).
    pub remote_kv: u64,
    /// Prompt blocks looked up in its cache by local prefills.
    pub blocks_queried: u64,
    /// Of those, blocks found cached (leading run).
    pub blocks_hit: u64,
    /// Output tokens produced.
    pub tokens_generated: u64,
    /// Streaming requests.
    pub streams: u64,
    /// Requests refused as malformed.
    pub bad_requests: u64,
    /// Requests that carried an `Authorization` header.
    pub authorized: u64,
    /// The `X-Request-Id` of the last request that had one.
    pub last_request_id: Option<String>,
    /// Blocks in its prefix cache now.
    #[serde(default)]
    pub cached_blocks: u64,
}

struct EngineState {
    cfg: FakeEngineConfig,
    scheme: BlockScheme,
    block_tokens: u64,
    publisher: Mutex<Option<Publisher>>,
    cost: CostModel,
    engine_id: String,
    cache: Mutex<Box<dyn BlockCache>>,
    prefill_stage: tokio::sync::Mutex<()>,
    decoding: AtomicU64,
    decoding_ctx: AtomicU64,
    stats: Mutex<EngineStats>,
    next_id: AtomicU64,
}

/// A fake engine (see the module docs).
#[derive(Clone)]
pub struct FakeEngine {
    st: Arc<EngineState>,
}

impl FakeEngine {
    /// Builds an engine; the cost config is validated.
    pub fn new(cfg: FakeEngineConfig) -> Result<Self, CostConfigError> {
        let cost = CostModel::new(cfg.cost.clone())?;
        let (scheme, block_tokens) = match &cfg.kv_events {
            Some(k) => (
                BlockScheme::Tokens(BlockHasher::new(k.hash_algo, k.block_size, &k.hash_seed)),
                k.block_size.max(1) as u64,
            ),
            None => (
                BlockScheme::Chars(cfg.block_chars),
                (cfg.block_chars / CHARS_PER_TOKEN).max(1) as u64,
            ),
        };
        let blocks = (cfg.cache_tokens / block_tokens).max(1) as usize;
        static ENGINES: AtomicU64 = AtomicU64::new(0);
        let engine_id = format!(
            "fake-{}-{}-{}",
            cfg.role,
            std::process::id(),
            ENGINES.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Self {
            st: Arc::new(EngineState {
                stats: Mutex::new(EngineStats {
                    role: cfg.role.to_string(),
                    ..EngineStats::default()
                }),
                cache: Mutex::new(new_cache(PolicyKind::Lru, blocks)),
                cfg,
                scheme,
                block_tokens,
                publisher: Mutex::new(None),
                cost,
                engine_id,
                prefill_stage: tokio::sync::Mutex::new(()),
                decoding: AtomicU64::new(0),
                decoding_ctx: AtomicU64::new(0),
                next_id: AtomicU64::new(0),
            }),
        })
    }

    /// Binds the KV-event sockets ([`FakeEngineConfig::kv_events`]; a no-op
    /// without it). Events are published from then on.
    pub async fn start_events(&self) -> Result<(), String> {
        let Some(k) = &self.st.cfg.kv_events else {
            return Ok(());
        };
        let p = Publisher::bind(&k.endpoint, k.replay_endpoint.as_deref(), "").await?;
        *self.st.publisher.lock() = Some(p);
        Ok(())
    }

    /// Stops publishing and frees the event ports (an engine going down).
    pub async fn stop_events(&self) {
        let p = self.st.publisher.lock().take();
        if let Some(p) = p {
            p.close().await;
        }
    }

    /// Test faults for the batches published from now on.
    pub fn set_event_faults(&self, f: Faults) {
        if let Some(p) = self.st.publisher.lock().as_ref() {
            p.set_faults(f);
        }
    }

    /// Empties the prefix cache (`AllBlocksCleared` is published).
    pub fn reset_prefix_cache(&self) {
        self.st.reset_prefix_cache();
    }

    /// The counters now.
    pub fn stats(&self) -> EngineStats {
        self.st.snapshot()
    }

    /// The routes, ready to serve.
    pub fn app(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            .route("/health", get(|| async { "OK" }))
            .route("/stats", get(stats))
            .route(
                "/reset_prefix_cache",
                post(|State(st): State<Arc<EngineState>>| async move {
                    st.reset_prefix_cache();
                    "OK"
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(
                crate::server::MAX_BODY_BYTES,
            ))
            .with_state(self.st.clone())
    }
}

impl EngineState {
    fn scaled(&self, seconds: f64) -> Duration {
        let s = seconds * self.cfg.time_scale;
        if s.is_finite() && s > 0.0 {
            Duration::from_secs_f64(s.min(3600.0))
        } else {
            Duration::ZERO
        }
    }

    fn publish(&self, events: Vec<KvEvent>) {
        if events.is_empty() {
            return;
        }
        if let Some(p) = self.publisher.lock().as_ref() {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            p.publish(KvEventBatch {
                ts,
                events,
                data_parallel_rank: self.cfg.kv_events.as_ref().map(|k| k.dp_rank),
            });
        }
    }

    fn snapshot(&self) -> EngineStats {
        let blocks = self.cache.lock().len() as u64;
        let mut s = self.stats.lock().clone();
        s.cached_blocks = blocks;
        s
    }

    fn reset_prefix_cache(&self) {
        let cap = self.cache.lock().capacity_blocks();
        *self.cache.lock() = new_cache(PolicyKind::Lru, cap);
        self.publish(vec![KvEvent::AllBlocksCleared]);
    }

    /// The cache change of one prefill as vLLM reports it: blocks evicted,
    /// then the newly cached blocks with their parent and tokens.
    fn cache_events(
        &self,
        shape: &PromptShape,
        tokens: &[u32],
        hit: usize,
        out: InsertOutcome,
    ) -> Vec<KvEvent> {
        let mut ev = Vec::new();
        if !out.evicted.is_empty() {
            ev.push(KvEvent::BlockRemoved {
                block_hashes: out.evicted,
                medium: Some(DEFAULT_MEDIUM.into()),
            });
        }
        let end = out.resident_prefix.min(shape.blocks.len());
        if hit < end {
            let bs = self.block_tokens as usize;
            ev.push(KvEvent::BlockStored {
                block_hashes: shape.blocks[hit..end].to_vec(),
                parent_block_hash: hit.checked_sub(1).map(|i| shape.blocks[i]),
                token_ids: tokens.get(hit * bs..end * bs).unwrap_or_default().to_vec(),
                block_size: bs as u32,
                lora_id: None,
                medium: Some(DEFAULT_MEDIUM.into()),
                lora_name: None,
            });
        }
        ev
    }

    /// Prefills locally (FIFO stage) or waits for the remote KV.
    async fn prefill(&self, shape: &PromptShape, tokens: &[u32], remote_kv: bool) {
        let input = shape.input_tokens as u64;
        if remote_kv {
            self.stats.lock().remote_kv += 1;
            sleep(self.scaled(self.cost.transfer_tokens_s(input))).await;
            return;
        }
        let hit = {
            let mut c = self.cache.lock();
            let hit = c.touch(&shape.blocks);
            let out = c.insert(&shape.blocks);
            if self.cfg.kv_events.is_some() {
                // Published under the cache lock: events leave in the order
                // the cache changed.
                self.publish(self.cache_events(shape, tokens, hit, out));
            }
            hit
        };
        {
            let mut s = self.stats.lock();
            s.prefills += 1;
            s.blocks_queried += shape.blocks.len() as u64;
            s.blocks_hit += hit as u64;
        }
        let bt = self.block_tokens;
        let cached = (hit as u64 * bt).min(input.saturating_sub(1));
        let d = self.scaled(self.cost.prefill_s(input - cached, cached));
        let _stage = self.prefill_stage.lock().await;
        sleep(d).await;
    }

    /// One decode step's duration with the current batch.
    fn step(&self) -> Duration {
        let batch = self.decoding.load(Ordering::Relaxed).max(1);
        let ctx = self.decoding_ctx.load(Ordering::Relaxed);
        self.scaled(self.cost.decode_step_s(batch, ctx))
    }
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Membership in the decode batch; leaves it on drop (also when a client
/// drops a stream).
struct Decoding {
    st: Arc<EngineState>,
    ctx: u64,
}

impl Decoding {
    fn join(st: &Arc<EngineState>, ctx: u64) -> Self {
        st.decoding.fetch_add(1, Ordering::Relaxed);
        st.decoding_ctx.fetch_add(ctx, Ordering::Relaxed);
        Self {
            st: st.clone(),
            ctx,
        }
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        self.st.decoding.fetch_sub(1, Ordering::Relaxed);
        self.st.decoding_ctx.fetch_sub(self.ctx, Ordering::Relaxed);
    }
}

fn token(i: u32) -> String {
    format!(" tok{i}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn completions(
    State(st): State<Arc<EngineState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(st, Endpoint::Completions, headers, body).await
}

async fn chat_completions(
    State(st): State<Arc<EngineState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(st, Endpoint::ChatCompletions, headers, body).await
}

struct Reply {
    ep: Endpoint,
    id: String,
    model: String,
    created: u64,
}

impl Reply {
    fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool) -> Value {
        match self.ep {
            Endpoint::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null,
                             "finish_reason": finish}],
            }),
            Endpoint::ChatCompletions => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                })
            }
        }
    }

    fn full(&self, text: &str, prompt_tokens: u32, completion_tokens: u32) -> Value {
        let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens as u64 + completion_tokens as u64});
        match self.ep {
            Endpoint::Completions => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "length"}],
                "usage": usage,
            }),
            Endpoint::ChatCompletions => json!({
                "id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length"}],
                "usage": usage,
            }),
        }
    }
}

fn flag(v: Option<&Value>, key: &str) -> bool {
    v.and_then(|k| k.get(key)).and_then(Value::as_bool) == Some(true)
}

async fn generate(st: Arc<EngineState>, ep: Endpoint, headers: HeaderMap, body: Bytes) -> Response {
    let bad = |st: &EngineState, m: String| {
        st.stats.lock().bad_requests += 1;
        ApiError::bad_request(m).into_response()
    };
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(&st, format!("invalid JSON body: {e}")),
    };
    let shape = match prompt::shape_with(ep, &req, &st.scheme, st.cfg.default_max_tokens) {
        Ok(s) => s,
        Err(e) => return bad(&st, e.to_string()),
    };
    let tokens = match (&st.scheme, prompt::prompt_text(ep, &req)) {
        (BlockScheme::Tokens(_), Ok(text)) => prompt::prompt_tokens(ep, &req, &text),
        _ => Vec::new(),
    };
    let kv = req.get("kv_transfer_params");
    let remote_kv = flag(kv, "do_remote_prefill");
    let prefill_leg = flag(kv, "do_remote_decode");
    {
        let mut s = st.stats.lock();
        s.requests += 1;
        s.streams += u64::from(shape.stream);
        s.authorized += u64::from(headers.contains_key(header::AUTHORIZATION));
        if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
            s.last_request_id = Some(id.to_string());
        }
    }
    st.prefill(&shape, &tokens, remote_kv).await;
    let n = shape.output_tokens.min(MAX_OUTPUT_TOKENS);
    let reply = Reply {
        ep,
        id: format!(
            "{}-{}",
            st.engine_id,
            st.next_id.fetch_add(1, Ordering::Relaxed)
        ),
        model: req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&st.cfg.model)
            .to_string(),
        created: unix_now(),
    };
    let decoding = Decoding::join(&st, shape.input_tokens as u64 + n as u64 / 2);
    if shape.stream {
        return stream_reply(st, reply, n, decoding);
    }
    // Absolute deadlines: the timer's granularity averages out over tokens.
    let start = Instant::now();
    let mut at = Duration::ZERO;
    for _ in 0..n {
        at += st.step();
    }
    tokio::time::sleep_until(start + at).await;
    drop(decoding);
    st.stats.lock().tokens_generated += n as u64;
    let text: String = (0..n).map(token).collect();
    let mut out = reply.full(&text, shape.input_tokens, n);
    if prefill_leg {
        out["kv_transfer_params"] = json!({
            "do_remote_prefill": true,
            "do_remote_decode": false,
            "remote_engine_id": st.engine_id,
            "remote_block_ids": (0..shape.blocks.len()).collect::<Vec<_>>(),
            "remote_host": "127.0.0.1",
            "remote_port": 0,
        });
    }
    Json(out).into_response()
}

fn stream_reply(st: Arc<EngineState>, reply: Reply, n: u32, decoding: Decoding) -> Response {
    struct S {
        st: Arc<EngineState>,
        reply: Reply,
        i: u32,
        n: u32,
        start: Instant,
        at: Duration,
        done: bool,
        _decoding: Decoding,
    }
    let s = S {
        st,
        reply,
        i: 0,
        n,
        start: Instant::now(),
        at: Duration::ZERO,
        done: false,
        _decoding: decoding,
    };
    let stream = futures::stream::unfold(s, |mut s| async move {
        if s.done {
            return None;
        }
        let frame = if s.i < s.n {
            s.at += s.st.step();
            tokio::time::sleep_until(s.start + s.at).await;
            let t = token(s.i);
            let v = s.reply.chunk(Some(&t), None, s.i == 0);
            s.i += 1;
            s.st.stats.lock().tokens_generated += 1;
            format!("data: {v}\n\n")
        } else {
            s.done = true;
            let v = s.reply.chunk(None, Some("length"), s.n == 0);
            format!("data: {v}\n\ndata: [DONE]\n\n")
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(frame)), s))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

async fn models(State(st): State<Arc<EngineState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": st.cfg.model, "object": "model", "created": unix_now(),
                  "owned_by": "mooncake-fake-engine"}],
    }))
}

async fn stats(State(st): State<Arc<EngineState>>) -> Json<EngineStats> {
    Json(st.snapshot())
}
