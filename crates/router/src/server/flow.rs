//! One request's way through the router: parse, route, the prefill leg
//! (re-routed while instances are unreachable), the decode leg (or the single
//! leg of colocated mode), and the relay of the answer (SSE passthrough).
//!
//! Owns the request's lifetime in the routing state: a [`TicketGuard`] ends
//! every admitted request exactly once — finished when the answer was
//! relayed, aborted on any error path, a dropped handler future (client
//! gone) or a broken stream.

use super::{AppState, Core};
use crate::cluster::{Role, RouteError, Routed};
use crate::config::ServeMode;
use crate::error::ApiError;
use crate::metrics::Outcome;
use crate::prompt::{self, Endpoint};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mooncake_conductor::policy::RequestInfo;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Ends an admitted request in the cluster exactly once: aborted unless
/// [`TicketGuard::finish`] ran (dropped handler, broken stream, error path).
struct TicketGuard {
    st: Arc<AppState>,
    ticket: u64,
    armed: bool,
}

impl TicketGuard {
    fn prefill_done(&self) {
        let now = self.st.now();
        self.st.core.lock().cluster.prefill_done(self.ticket, now);
    }

    fn finish(mut self, completed: bool) {
        self.armed = false;
        let now = self.st.now();
        self.st
            .core
            .lock()
            .cluster
            .finish(self.ticket, now, completed);
    }
}

impl Drop for TicketGuard {
    fn drop(&mut self) {
        if self.armed {
            let now = self.st.now();
            self.st.core.lock().cluster.abort(self.ticket, now);
        }
    }
}

/// A failed request: the metric outcome and the answer.
struct Failure {
    outcome: Outcome,
    response: Response,
}

impl From<(Outcome, ApiError)> for Failure {
    fn from((outcome, e): (Outcome, ApiError)) -> Self {
        Self {
            outcome,
            response: e.into_response(),
        }
    }
}

type BodyResult = Result<Bytes, axum::extract::rejection::BytesRejection>;

pub(super) async fn completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: BodyResult,
) -> Response {
    handle(st, Endpoint::Completions, headers, body).await
}

pub(super) async fn chat_completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: BodyResult,
) -> Response {
    handle(st, Endpoint::ChatCompletions, headers, body).await
}

/// A body that could not be read, as an OpenAI-style error (413 over the
/// size limit, else 400).
fn body_rejection(st: &AppState, r: axum::extract::rejection::BytesRejection) -> Response {
    let outcome = Outcome::BadRequest;
    st.metrics.request(outcome);
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::too_large(format!(
            "request body over the limit of {} bytes",
            super::MAX_BODY_BYTES
        ))
        .into_response();
    }
    ApiError::bad_request(format!("cannot read the request body: {r}")).into_response()
}

/// Client headers carried to both legs: `Authorization` (engines started
/// with an API key) and `X-Request-Id` (one id for both legs, as vLLM's
/// proxy sends; generated when the client gave none).
#[derive(Debug, Clone)]
struct Carried {
    authorization: Option<HeaderValue>,
    request_id: HeaderValue,
}

impl Carried {
    fn new(headers: &HeaderMap, id: u64) -> Self {
        let request_id = headers
            .get("x-request-id")
            .cloned()
            .or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                HeaderValue::from_str(&format!("router-{nanos:x}-{id}")).ok()
            })
            .unwrap_or(HeaderValue::from_static("router"));
        Self {
            authorization: headers.get(header::AUTHORIZATION).cloned(),
            request_id,
        }
    }

    fn apply(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(a) = &self.authorization {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        req.header("x-request-id", self.request_id.clone())
    }
}

async fn handle(st: Arc<AppState>, ep: Endpoint, headers: HeaderMap, body: BodyResult) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_rejection(&st, r),
    };
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let carried = Carried::new(&headers, id);
    let span = tracing::info_span!(
        "request",
        id,
        endpoint = ep.label(),
        prefill = tracing::field::Empty,
        decode = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let res = forward(st.clone(), ep, body, id, &carried, span.clone())
        .instrument(span.clone())
        .await;
    let (outcome, response) = match res {
        Ok(r) => (Outcome::Ok, r),
        Err(f) => (f.outcome, f.response),
    };
    span.record("outcome", outcome.as_str());
    st.metrics.request(outcome);
    response
}

/// The body sent to the prefill instance (vLLM's disaggregated proxy).
pub fn prefill_body(original: &Value) -> Value {
    let mut b = original.clone();
    if let Some(o) = b.as_object_mut() {
        o.insert("max_tokens".into(), json!(1));
        if o.contains_key("max_completion_tokens") {
            o.insert("max_completion_tokens".into(), json!(1));
        }
        o.insert("stream".into(), json!(false));
        o.remove("stream_options");
        o.insert(
            "kv_transfer_params".into(),
            json!({
                "do_remote_decode": true,
                "do_remote_prefill": false,
                "remote_engine_id": null,
                "remote_block_ids": null,
                "remote_host": null,
                "remote_port": null,
            }),
        );
    }
    b
}

/// The body sent to the decode instance: the original plus the prefill
/// answer's `kv_transfer_params`, when it returned any.
pub fn decode_body(original: &Value, prefill_answer: &Value) -> Value {
    let mut b = original.clone();
    if let (Some(o), Some(kv)) = (b.as_object_mut(), prefill_answer.get("kv_transfer_params")) {
        if !kv.is_null() {
            o.insert("kv_transfer_params".into(), kv.clone());
        }
    }
    b
}

pub(super) fn passthrough(
    status: reqwest::StatusCode,
    ct: Option<HeaderValue>,
    body: Body,
) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        ct.unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

pub(super) fn content_type(resp: &reqwest::Response) -> Option<HeaderValue> {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
}

/// A backend failed mid-request: ends the request, marks the instance
/// unhealthy for the backoff, logs, and returns the 502 to answer.
fn backend_failed(
    st: &AppState,
    guard: TicketGuard,
    role: Role,
    i: usize,
    what: &str,
    e: &reqwest::Error,
) -> Failure {
    drop(guard);
    st.mark_unhealthy(role, i);
    let urls = match role {
        Role::Prefill => st.cfg.prefill_urls(),
        Role::Decode => st.cfg.decode_urls(),
    };
    let url = urls.get(i).map_or("?", String::as_str);
    tracing::warn!(role = role.as_str(), instance = %url, error = %e, "instance {what}; marked unhealthy");
    let msg = format!("{} instance {url} {what}: {e}", role.as_str());
    (Outcome::BackendError, ApiError::bad_gateway(msg)).into()
}

/// Routes and sends the first leg (the prefill leg, or the whole request
/// when colocated), re-routing while instances are unreachable. Returns the
/// instance's 2xx answer; an error status is passed through.
async fn first_leg(
    st: &Arc<AppState>,
    ep: Endpoint,
    body: &Value,
    info: &RequestInfo<'_>,
    carried: &Carried,
    deadline: Instant,
) -> Result<(TicketGuard, Routed, FirstAnswer), Failure> {
    let colocated = st.cfg.mode == ServeMode::Colocated;
    let mut excluded: Vec<usize> = Vec::new();
    let mut last_error = String::new();
    loop {
        let routed = {
            let now = st.now();
            let mut core = st.core.lock();
            let Core { cluster, policy } = &mut *core;
            cluster.route(policy.as_mut(), info, now, &excluded)
        };
        let routed = match routed {
            Ok(r) => r,
            Err(RouteError::Rejected(reason)) => {
                st.metrics.rejection(reason.as_str());
                let msg = format!(
                    "request rejected by the `{}` scheduler ({}): the cluster cannot meet the \
                     SLOs (TTFT {} s, TBT {} s) for it now; retry later",
                    st.cfg.policy,
                    reason.as_str(),
                    st.cfg.slo_ttft,
                    st.cfg.slo_tbt
                );
                return Err((Outcome::Rejected, ApiError::overloaded(msg)).into());
            }
            Err(RouteError::BadPlacement(bad)) => {
                tracing::error!(%bad, "scheduling policy bug; request refused");
                let msg = format!("internal scheduler error: {bad}");
                return Err((Outcome::Unavailable, ApiError::internal(msg)).into());
            }
            Err(RouteError::NoPrefill) if !excluded.is_empty() => {
                return Err((
                    Outcome::BackendError,
                    ApiError::bad_gateway(format!(
                        "no {} could be reached: {last_error}",
                        if colocated {
                            "worker"
                        } else {
                            "prefill instance"
                        }
                    )),
                )
                    .into());
            }
            Err(e) => {
                return Err((Outcome::Unavailable, ApiError::unavailable(e.to_string())).into())
            }
        };
        let guard = TicketGuard {
            st: st.clone(),
            ticket: routed.ticket,
            armed: true,
        };
        if routed.fetch_from.is_some() {
            st.metrics.fetch_planned();
        }
        let url = &st.cfg.prefill_urls()[routed.prefill];
        tracing::Span::current().record("prefill", url.as_str());
        tracing::debug!(
            prefill = %url,
            decode = %st.cfg.decode_urls()[routed.decode],
            predicted_ttft_s = routed.predicted_ttft_s,
            cached_blocks = routed.cached_blocks,
            "routed"
        );
        let mut req = carried.apply(st.client.post(format!("{url}{}", ep.path())).json(body));
        if !colocated {
            // Bounded: one token. A colocated answer may stream for long.
            req = req.timeout(Duration::from_secs_f64(st.cfg.prefill_timeout_secs));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let failure =
                    backend_failed(st, guard, Role::Prefill, routed.prefill, "failed", &e);
                // Nothing ran there (connect), or it was a prefill leg: a
                // prefill only computes KV, so repeating it elsewhere is safe.
                if (e.is_connect() || !colocated) && Instant::now() < deadline {
                    st.metrics.retry();
                    excluded.push(routed.prefill);
                    last_error = format!("{url}: {e}");
                    continue;
                }
                return Err(failure);
            }
        };
        if !resp.status().is_success() {
            return Err(backend_status(resp).await);
        }
        if colocated {
            return Ok((guard, routed, FirstAnswer::Response(resp)));
        }
        // The prefill leg's answer is one small JSON: read it here, so an
        // engine dying before it is complete is retried like one that could
        // not be reached.
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let failure =
                    backend_failed(st, guard, Role::Prefill, routed.prefill, "broke off", &e);
                if Instant::now() < deadline {
                    st.metrics.retry();
                    excluded.push(routed.prefill);
                    last_error = format!("{url}: {e}");
                    continue;
                }
                return Err(failure);
            }
        };
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::from((
                Outcome::BackendError,
                ApiError::bad_gateway(format!("prefill instance {url} answered invalid JSON: {e}")),
            ))
        })?;
        guard.prefill_done();
        return Ok((guard, routed, FirstAnswer::Json(answer)));
    }
}

/// What the first leg returns: the worker's answer to relay (colocated),
/// or the prefill leg's JSON.
enum FirstAnswer {
    Response(reqwest::Response),
    Json(Value),
}

/// A backend's error answer, passed through unchanged.
async fn backend_status(resp: reqwest::Response) -> Failure {
    let status = resp.status();
    let ct = content_type(&resp);
    let bytes = resp.bytes().await.unwrap_or_default();
    Failure {
        outcome: Outcome::BackendStatus,
        response: passthrough(status, ct, Body::from(bytes)),
    }
}

/// The final answer (decode's, or the worker's when colocated): streamed
/// through, or read and returned.
struct FinalLeg {
    resp: reqwest::Response,
    guard: TicketGuard,
    role: Role,
    instance: usize,
    stream: bool,
    t0: Instant,
}

async fn relay(
    st: &Arc<AppState>,
    leg: FinalLeg,
    span: tracing::Span,
) -> Result<Response, Failure> {
    let FinalLeg {
        resp,
        guard,
        role,
        instance,
        stream,
        t0,
    } = leg;
    if !resp.status().is_success() {
        return Err(backend_status(resp).await);
    }
    let status = resp.status();
    let ct = content_type(&resp);
    if stream {
        let ct = ct.or(Some(HeaderValue::from_static("text/event-stream")));
        let body = stream_through(st.clone(), resp, guard, t0, span);
        let mut r = passthrough(status, ct, body);
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(r);
    }
    match resp.bytes().await {
        Ok(bytes) => {
            guard.finish(true);
            Ok(passthrough(status, ct, Body::from(bytes)))
        }
        Err(e) => Err(backend_failed(st, guard, role, instance, "broke off", &e)),
    }
}

async fn forward(
    st: Arc<AppState>,
    ep: Endpoint,
    body: Bytes,
    id: u64,
    carried: &Carried,
    span: tracing::Span,
) -> Result<Response, Failure> {
    let t0 = Instant::now();
    let bad = |m: String| Failure::from((Outcome::BadRequest, ApiError::bad_request(m)));
    let json: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    let shape = prompt::shape_with(ep, &json, &st.scheme, st.cfg.default_max_tokens)
        .map_err(|e| bad(e.to_string()))?;
    impossible(&st, &shape).map_err(bad)?;
    let info = RequestInfo {
        id,
        input_tokens: shape.input_tokens,
        output_tokens: shape.output_tokens,
        blocks: &shape.blocks,
    };
    let deadline = t0 + Duration::from_secs_f64(st.cfg.prefill_timeout_secs);
    if st.cfg.mode == ServeMode::Colocated {
        let (guard, routed, first) = first_leg(&st, ep, &json, &info, carried, deadline).await?;
        let FirstAnswer::Response(resp) = first else {
            return Err(internal("colocated leg without a response"));
        };
        let leg = FinalLeg {
            resp,
            guard,
            role: Role::Prefill,
            instance: routed.prefill,
            stream: shape.stream,
            t0,
        };
        return relay(&st, leg, span).await;
    }
    let (guard, routed, first) =
        first_leg(&st, ep, &prefill_body(&json), &info, carried, deadline).await?;
    let FirstAnswer::Json(answer) = first else {
        return Err(internal("prefill leg without an answer"));
    };
    if !shape.stream {
        st.metrics.ttft(t0.elapsed().as_secs_f64());
    }
    let url = &st.cfg.decode_urls()[routed.decode];
    span.record("decode", url.as_str());
    let sent = carried
        .apply(st.client.post(format!("{url}{}", ep.path())))
        .json(&decode_body(&json, &answer))
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Err(backend_failed(
                &st,
                guard,
                Role::Decode,
                routed.decode,
                "failed",
                &e,
            ))
        }
    };
    let leg = FinalLeg {
        resp,
        guard,
        role: Role::Decode,
        instance: routed.decode,
        stream: shape.stream,
        t0,
    };
    relay(&st, leg, span).await
}

/// A router bug, answered instead of panicking.
fn internal(what: &str) -> Failure {
    Failure::from((
        Outcome::BackendError,
        ApiError::bad_gateway(format!("internal: {what}")),
    ))
}

/// A request no instance can ever serve: over the model's context length
/// (`max_model_len`), or needing more KV than a decode instance holds. It
/// gets a 400 (not a 503 "retry later").
fn impossible(st: &AppState, shape: &prompt::PromptShape) -> Result<(), String> {
    let need = shape.input_tokens as u64 + shape.output_tokens as u64;
    let max_len = st.cfg.max_model_len;
    if max_len > 0 && need > max_len {
        return Err(format!(
            "this model's maximum context length is {max_len} tokens; the request needs {need} \
             ({} in the prompt, {} in the completion)",
            shape.input_tokens, shape.output_tokens
        ));
    }
    let cap = st.decode_capacity_tokens;
    if need > cap {
        return Err(format!(
            "the request needs {need} tokens of KV cache ({} in the prompt, {} in the \
             completion), more than one instance holds ({cap}): reduce max_tokens",
            shape.input_tokens, shape.output_tokens
        ));
    }
    Ok(())
}

/// Copies the decode answer's chunks to the client as they arrive; the
/// request ends in the cluster when the stream ends, breaks, or the client
/// goes away.
fn stream_through(
    st: Arc<AppState>,
    mut resp: reqwest::Response,
    guard: TicketGuard,
    t0: Instant,
    span: tracing::Span,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(
        async move {
            let mut first = true;
            let completed = loop {
                let next = tokio::select! {
                    // The client left: stop now (dropping the answer closes
                    // the backend connection, so the engine aborts too).
                    _ = tx.closed() => break false,
                    next = resp.chunk() => next,
                };
                match next {
                    Ok(Some(chunk)) => {
                        if first {
                            // Colocated: the first token means prefill is over.
                            guard.prefill_done();
                            st.metrics.ttft(t0.elapsed().as_secs_f64());
                            first = false;
                        }
                        if tx.send(Ok(chunk)).await.is_err() {
                            tracing::debug!("client went away mid-stream");
                            break false;
                        }
                    }
                    Ok(None) => break true,
                    Err(e) => {
                        tracing::warn!(error = %e, "decode stream broke off");
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                        break false;
                    }
                }
            };
            guard.finish(completed);
        }
        .instrument(span),
    );
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_and_decode_bodies_follow_the_vllm_proxy() {
        let orig = json!({"model": "m", "prompt": "hi", "max_tokens": 50, "stream": true,
                          "stream_options": {"include_usage": true}, "max_completion_tokens": 9});
        let p = prefill_body(&orig);
        assert_eq!(p["max_tokens"], 1);
        assert_eq!(p["max_completion_tokens"], 1);
        assert_eq!(p["stream"], false);
        assert!(p.get("stream_options").is_none());
        assert_eq!(p["kv_transfer_params"]["do_remote_decode"], true);
        let answer =
            json!({"kv_transfer_params": {"remote_engine_id": "e1", "do_remote_prefill": true}});
        let d = decode_body(&orig, &answer);
        assert_eq!(d["max_tokens"], 50);
        assert_eq!(d["stream"], true);
        assert_eq!(d["kv_transfer_params"]["remote_engine_id"], "e1");
        let none = decode_body(&orig, &json!({"kv_transfer_params": null}));
        assert!(none.get("kv_transfer_params").is_none());
    }
}
