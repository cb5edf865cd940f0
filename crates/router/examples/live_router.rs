//! A live router in front of three fake engines, all in one process:
//! multi-turn chats whose growing histories share prefixes, routed by the
//! `mooncake` policy. The first turns spread over both prefill instances
//! (load); later turns follow their conversation's cached history, which
//! shows in the engines' prefix-cache hits.
//!
//! Run: `cargo run -p mooncake-router --example live_router`

use mooncake_router::config::RouterConfig;
use mooncake_router::fake_engine::{EngineRole, FakeEngine, FakeEngineConfig};
use mooncake_router::server::{RouterService, Server};
use serde_json::{json, Value};

async fn serve(app: axum::Router) -> anyhow::Result<Server> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(Server::spawn(l, app)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut engines = Vec::new();
    let mut stats = Vec::new();
    for role in [EngineRole::Prefill, EngineRole::Prefill, EngineRole::Decode] {
        let e = FakeEngine::new(FakeEngineConfig {
            role,
            time_scale: 0.01,
            ..FakeEngineConfig::default()
        })?;
        stats.push(e.clone());
        engines.push(serve(e.app()).await?);
    }
    let svc = RouterService::new(RouterConfig {
        prefill: vec![engines[0].url(), engines[1].url()],
        decode: vec![engines[2].url()],
        port: 0,
        ..RouterConfig::default()
    })?;
    let router = serve(svc.app()).await?;
    println!(
        "router {} → prefill {} {}, decode {}",
        router.url(),
        engines[0].url(),
        engines[1].url(),
        engines[2].url()
    );

    let client = reqwest::Client::new();
    let mut histories: Vec<Vec<Value>> = (0..3)
        .map(|c| vec![json!({"role": "system", "content": format!("You are assistant #{c}. ").repeat(300)})])
        .collect();
    // The turns of all conversations are sent together, so load matters too.
    for turn in 0..3 {
        let mut calls = Vec::new();
        for history in histories.iter_mut() {
            history.push(json!({"role": "user", "content": format!("Turn {turn}: tell me more. ").repeat(100)}));
            let req = client
                .post(format!("{}/v1/chat/completions", router.url()))
                .json(&json!({"model": "m", "messages": history, "max_tokens": 8}));
            calls.push(tokio::spawn(async move {
                req.send().await?.json::<Value>().await
            }));
        }
        for (c, call) in calls.into_iter().enumerate() {
            let v = call.await??;
            let answer = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
            histories[c].push(json!({"role": "assistant", "content": answer}));
        }
        let routed: Vec<String> = (0..2)
            .map(|i| format!("prefill {i}: {} prefills so far", stats[i].stats().prefills))
            .collect();
        println!("after turn {turn}: {}", routed.join(", "));
    }
    for (i, e) in stats.iter().enumerate().take(2) {
        let s = e.stats();
        println!(
            "prefill {i}: {} prefills, {} of {} prompt blocks hit its cache",
            s.prefills, s.blocks_hit, s.blocks_queried
        );
    }
    let metrics = svc.render_metrics();
    for line in metrics.lines().filter(|l| {
        l.starts_with("mooncake_router_requests_total{outcome=\"ok\"}")
            || l.starts_with("mooncake_router_prefix_fetches_total")
            || l.starts_with("mooncake_router_ttft_seconds_count")
    }) {
        println!("{line}");
    }
    Ok(())
}
