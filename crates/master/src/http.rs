//! The master's HTTP endpoints: `/metrics` (Prometheus), `/health` (JSON: role, term,
//! serving), `/role`, `/leader`, a small status page
//! at `/`, and JSON admin views `/api/summary`, `/api/segments`, `/api/clients`,
//! `/api/keys?prefix=P&limit=N`.

use super::server::Shared;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use mooncake_telemetry::{Kind, TextWriter};
use serde::Deserialize;
use std::fmt::Write;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Routes of the master's HTTP port.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/health", get(health))
        .route("/role", get(role))
        .route("/leader", get(leader))
        .route("/metrics", get(metrics))
        .route("/api/summary", get(summary))
        .route("/api/segments", get(segments))
        .route("/api/clients", get(clients))
        .route("/api/keys", get(keys))
        .with_state(shared)
}

/// Serve `router` on `l` until `stop` flips.
pub async fn serve(l: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let r = axum::serve(l, router)
        .with_graceful_shutdown(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "http server stopped");
    }
}

/// A lone master answers `OK` (as the reference); an HA master
/// `{"status":"OK","role":"leader|standby","serving":..,"term":..}`.
async fn health(State(s): State<Arc<Shared>>) -> axum::response::Response {
    if !s.role.ha {
        return "OK".into_response();
    }
    Json(serde_json::json!({
        "status": "OK",
        "role": s.role_name(),
        "serving": s.serving(),
        "term": s.role.term(),
    }))
    .into_response()
}

/// `leader`, `standby` or `single` (plain text, like the reference's `/role`).
async fn role(State(s): State<Arc<Shared>>) -> &'static str {
    s.role_name()
}

/// The leader's RPC address as this master knows it (404 when unknown).
async fn leader(State(s): State<Arc<Shared>>) -> axum::response::Response {
    let l = if !s.role.ha {
        None
    } else {
        s.role.leader.lock().clone()
    };
    match l {
        Some(a) => a.into_response(),
        None if !s.role.ha => "single master (no election)".into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, "no known leader").into_response(),
    }
}

/// HA and op-log series appended to `/metrics`.
fn ha_metrics(s: &Shared) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut o = TextWriter::new();
    let mut line = |name: &str, kind: Kind, help: &str, v: u64| {
        o.single(name, kind, help, v);
    };
    line(
        "mooncake_master_serving",
        Kind::Gauge,
        "1 while this master serves (leader or single).",
        u64::from(s.serving()),
    );
    line(
        "mooncake_master_term",
        Kind::Gauge,
        "Fencing term this master last led under.",
        s.role.term(),
    );
    line(
        "mooncake_master_elections_won_total",
        Kind::Counter,
        "Elections this master won.",
        s.role.elections_won.load(Relaxed),
    );
    line(
        "mooncake_master_leadership_lost_total",
        Kind::Counter,
        "Leaderships this master lost or gave up (failovers).",
        s.role.leadership_lost.load(Relaxed),
    );
    if let Some(l) = s.log.read().as_ref() {
        line(
            "mooncake_master_oplog_ops_total",
            Kind::Counter,
            "Ops appended to the durable op-log.",
            l.appended_ops.load(Relaxed),
        );
        line(
            "mooncake_master_oplog_batches_total",
            Kind::Counter,
            "Group-committed op-log writes.",
            l.batches.load(Relaxed),
        );
        line(
            "mooncake_master_oplog_snapshots_total",
            Kind::Counter,
            "Snapshots (compactions) written.",
            l.snapshots.load(Relaxed),
        );
        line(
            "mooncake_master_oplog_length",
            Kind::Gauge,
            "Ops in the log since the last snapshot.",
            l.since_snapshot(),
        );
    }
    o.finish()
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let (summary, segs, stats) = {
        let st = s.state.lock();
        (st.summary(), st.segment_views(), st.stats().clone())
    };
    let mut body = s.metrics.render(&summary, &segs, &stats);
    body.push_str(&ha_metrics(&s));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn summary(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let st = s.state.lock();
    Json(serde_json::json!({
        "summary": st.summary(),
        "stats": st.stats(),
        "uptime_s": s.started.elapsed().as_secs(),
    }))
}

async fn segments(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    Json(s.state.lock().segment_views())
}

async fn clients(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    Json(s.state.lock().client_views())
}

#[derive(Debug, Deserialize)]
struct KeysQuery {
    prefix: Option<String>,
    limit: Option<usize>,
}

async fn keys(State(s): State<Arc<Shared>>, Query(q): Query<KeysQuery>) -> impl IntoResponse {
    let limit = q.limit.unwrap_or(1000).min(100_000);
    Json(
        s.state
            .lock()
            .key_views(q.prefix.as_deref().unwrap_or(""), limit),
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn status_page(State(s): State<Arc<Shared>>) -> Html<String> {
    let (sum, segs, clients) = {
        let st = s.state.lock();
        (st.summary(), st.segment_views(), st.client_views().len())
    };
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Mooncake master</title>\
         <style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}\
         th{background:#eee}</style></head><body><h1>Mooncake master</h1>",
    );
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let _ = write!(
        h,
        "<p>uptime {} s · {} objects · {} pending puts · {:.3} / {:.3} GiB used · {} segments · \
         {} clients · {} leased</p>",
        s.started.elapsed().as_secs(),
        sum.objects,
        sum.pending_puts,
        gib(sum.bytes_used),
        gib(sum.bytes_total),
        sum.segments,
        clients,
        sum.active_leases
    );
    h.push_str("<table><tr><th>segment</th><th>size GiB</th><th>used GiB</th><th>used %</th></tr>");
    for sg in &segs {
        let pct = if sg.size > 0 {
            100.0 * sg.used as f64 / sg.size as f64
        } else {
            0.0
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{pct:.1}</td></tr>",
            esc(&sg.name),
            gib(sg.size),
            gib(sg.used)
        );
    }
    h.push_str(
        "</table><p><a href=\"/metrics\">/metrics</a> · <a href=\"/api/segments\">segments</a> · \
        <a href=\"/api/clients\">clients</a> · <a href=\"/api/keys\">keys</a></p></body></html>",
    );
    Html(h)
}
