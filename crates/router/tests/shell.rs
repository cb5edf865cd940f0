//! The HTTP shell in-process: requests end in the routing state exactly
//! once even when the client walks away mid-stream, and misbehaving
//! backends (invalid JSON, error statuses) are answered without panics.

use axum::http::StatusCode;
use axum::routing::post;
use mooncake_router::config::RouterConfig;
use mooncake_router::fake_engine::{EngineRole, FakeEngine, FakeEngineConfig};
use mooncake_router::server::{RouterService, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn serve(app: axum::Router) -> Server {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::spawn(l, app).unwrap()
}

async fn engine(role: EngineRole, time_scale: f64) -> Server {
    let e = FakeEngine::new(FakeEngineConfig {
        role,
        time_scale,
        ..FakeEngineConfig::default()
    })
    .unwrap();
    serve(e.app()).await
}

fn router(prefill: &Server, decode: &Server) -> RouterService {
    RouterService::new(RouterConfig {
        prefill: vec![prefill.url()],
        decode: vec![decode.url()],
        port: 0,
        ..RouterConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_ends_the_request() {
    let p = engine(EngineRole::Prefill, 0.0).await;
    // Real-time decode: 2000 tokens take tens of seconds.
    let d = engine(EngineRole::Decode, 1.0).await;
    let svc = router(&p, &d);
    let r = serve(svc.app()).await;
    let mut resp = reqwest::Client::new()
        .post(format!("{}/v1/completions", r.url()))
        .json(&json!({"model": "m", "prompt": "hi", "max_tokens": 2000, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let first = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .expect("first chunk in time")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(svc.with_cluster(|c| c.in_flight()), 1);
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.with_cluster(|c| c.in_flight()) != 0 {
        assert!(Instant::now() < deadline, "the abandoned stream is ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An abandoned decode does not count as a measured decode time.
    let st = svc.with_cluster(|c| c.status(mooncake_router::cluster::Role::Decode));
    assert_eq!(st[0].load_s, 0.0);
}

/// `POST /v1/completions` on `router`: status and JSON body.
async fn complete(client: &reqwest::Client, router: &Server, body: &Value) -> (u16, Value) {
    let resp = client
        .post(format!("{}/v1/completions", router.url()))
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_backends_get_clear_answers() {
    let garbage = serve(axum::Router::new().route(
        "/v1/completions",
        post(|| async { (StatusCode::OK, "this is not json") }),
    ))
    .await;
    let refusing = serve(axum::Router::new().route(
        "/v1/completions",
        post(|| async {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"error": {"message": "model not found"}})),
            )
        }),
    ))
    .await;
    let d = engine(EngineRole::Decode, 0.0).await;
    let body = json!({"model": "m", "prompt": "hi", "max_tokens": 2});
    let client = reqwest::Client::new();

    let svc = router(&garbage, &d);
    let r = serve(svc.app()).await;
    let (status, v) = complete(&client, &r, &body).await;
    assert_eq!(status, 502);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON"),
        "{v}"
    );
    assert_eq!(svc.with_cluster(|c| c.in_flight()), 0);

    // A backend's own error status is passed through unchanged.
    let svc = router(&refusing, &d);
    let r = serve(svc.app()).await;
    let (status, v) = complete(&client, &r, &body).await;
    assert_eq!(status, 422);
    assert_eq!(v["error"]["message"], "model not found");
    assert_eq!(svc.with_cluster(|c| c.in_flight()), 0);
    assert!(svc
        .render_metrics()
        .contains("mooncake_router_requests_total{outcome=\"backend_status\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_and_request_id_reach_both_legs() {
    let pe = FakeEngine::new(FakeEngineConfig {
        time_scale: 0.0,
        ..FakeEngineConfig::default()
    })
    .unwrap();
    let de = FakeEngine::new(FakeEngineConfig {
        role: EngineRole::Decode,
        time_scale: 0.0,
        ..FakeEngineConfig::default()
    })
    .unwrap();
    let (p, d) = (serve(pe.app()).await, serve(de.app()).await);
    let svc = router(&p, &d);
    let r = serve(svc.app()).await;
    let client = reqwest::Client::new();
    let send = |id: Option<&'static str>| {
        let mut req = client
            .post(format!("{}/v1/completions", r.url()))
            .bearer_auth("secret")
            .json(&json!({"model": "m", "prompt": "hi", "max_tokens": 1}));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    assert_eq!(send(Some("req-42")).await.unwrap().status().as_u16(), 200);
    for e in [&pe, &de] {
        let s = e.stats();
        assert_eq!(s.authorized, 1);
        assert_eq!(s.last_request_id.as_deref(), Some("req-42"));
    }
    // Without one, both legs share a generated id.
    assert_eq!(send(None).await.unwrap().status().as_u16(), 200);
    let (a, b) = (pe.stats().last_request_id, de.stats().last_request_id);
    assert!(
        a.as_deref().is_some_and(|id| id.starts_with("router-")),
        "{a:?}"
    );
    assert_eq!(a, b);
}
