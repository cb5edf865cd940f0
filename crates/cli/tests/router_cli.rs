//! `mooncake router` in front of `mooncake fake-engine` processes: the
//! disaggregated flow (completions and chat, streamed and not), prefix-aware
//! routing observed through the engines' `/stats`, SLO rejections (503),
//! malformed bodies (400), a killed prefill engine (re-routed), a killed
//! decode engine (502), and the Prometheus counters.

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// A `mooncake` server child (killed on drop) and the URL of its READY line.
struct Proc {
    _proc: mooncake_testkit::Proc,
    url: String,
}

/// Starts `mooncake ARGS` and waits (bounded) for its READY line.
fn spawn(args: &[&str]) -> Proc {
    spawn_env(args, &[])
}

/// [`spawn`] with extra environment variables.
fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mooncake"));
    cmd.args(args)
        .envs(env.iter().copied())
        .env("MOONCAKE_LOG", "warn");
    let mut proc = mooncake_testkit::Proc::spawn(cmd);
    let url = proc.ready(Duration::from_secs(60)).str("url").to_string();
    Proc { _proc: proc, url }
}

fn engine(role: &str, time_scale: &str) -> Proc {
    spawn(&[
        "fake-engine",
        "--role",
        role,
        "--time-scale",
        time_scale,
        "--port",
        "0",
    ])
}

fn router(prefill: &[&Proc], decode: &[&Proc], extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec!["router".into(), "--port".into(), "0".into()];
    for p in prefill {
        args.extend(["--prefill".into(), p.url.clone()]);
    }
    for d in decode {
        args.extend(["--decode".into(), d.url.clone()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn(&refs)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn send(url: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .expect("router answers")
}

async fn post(url: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = send(url, path, body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post_stream(url: &str, path: &str, body: &Value) -> (u16, String, String) {
    let r = send(url, path, body).await;
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

async fn get_json(url: &str, path: &str) -> Value {
    client()
        .get(format!("{url}{path}"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

async fn metrics(url: &str) -> String {
    client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap()
}

/// The value of the first metric line starting with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric `{prefix}` in:\n{text}"))
}

fn sse_data(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_streams_caches_and_counts() {
    let p0 = engine("prefill", "0.01");
    let p1 = engine("prefill", "0.01");
    let d = engine("decode", "0.01");
    let r = router(&[&p0, &p1], &[&d], &["--policy", "mooncake"]);
    let url = r.url.as_str();
    let mut ok = 0;

    // Completions, not streamed.
    let (s, v) = post(
        url,
        "/v1/completions",
        &json!({"model": "m", "prompt": "hello", "max_tokens": 5}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], " tok0 tok1 tok2 tok3 tok4");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    ok += 1;
    // Completions, streamed: SSE passed through chunk by chunk.
    let (s, ct, body) = post_stream(
        url,
        "/v1/completions",
        &json!({"model": "m", "prompt": "hello again", "max_tokens": 4, "stream": true}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let data = sse_data(&body);
    assert_eq!(data.last(), Some(&"[DONE]"));
    assert_eq!(data.len(), 4 + 2, "{body}");
    ok += 1;
    // Chat, both ways.
    let chat =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
    let (s, v) = post(url, "/v1/chat/completions", &chat).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], " tok0 tok1 tok2");
    ok += 1;
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    let (s, _, body) = post_stream(url, "/v1/chat/completions", &chat_stream).await;
    assert_eq!(s, 200);
    let first: Value = serde_json::from_str(sse_data(&body)[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(sse_data(&body).last(), Some(&"[DONE]"));
    ok += 1;

    // Shared long prefix (8 blocks of 2048 chars): after the first request,
    // the others follow it to the instance that holds it.
    let prefix = "The quick brown fox jumps over the lazy dog. ".repeat(400);
    let ask = |q: &str| json!({"model": "m", "prompt": format!("{prefix}{q}"), "max_tokens": 2});
    let before = [
        get_json(&p0.url, "/stats").await,
        get_json(&p1.url, "/stats").await,
    ];
    let (s, _) = post(url, "/v1/completions", &ask("first question")).await;
    assert_eq!(s, 200);
    ok += 1;
    let mid = [
        get_json(&p0.url, "/stats").await,
        get_json(&p1.url, "/stats").await,
    ];
    let grew = |a: &Value, b: &Value, k: &str| b[k].as_u64().unwrap() - a[k].as_u64().unwrap();
    let holder = if grew(&before[0], &mid[0], "prefills") == 1 {
        0
    } else {
        1
    };
    assert_eq!(grew(&before[holder], &mid[holder], "prefills"), 1);
    for q in ["second question", "third question", "fourth question"] {
        let (s, _) = post(url, "/v1/completions", &ask(q)).await;
        assert_eq!(s, 200);
        ok += 1;
    }
    let after = [
        get_json(&p0.url, "/stats").await,
        get_json(&p1.url, "/stats").await,
    ];
    assert_eq!(
        grew(&mid[holder], &after[holder], "prefills"),
        3,
        "{after:?}"
    );
    assert_eq!(
        grew(&mid[1 - holder], &after[1 - holder], "prefills"),
        0,
        "{after:?}"
    );
    let blocks = (prefix.chars().count() / 2048) as u64;
    assert!(blocks >= 8);
    assert!(
        grew(&mid[holder], &after[holder], "blocks_hit") >= 3 * blocks,
        "the prefix was cached where the router sent it: {after:?}"
    );
    // The decode engine got every request with the prefill's KV handle.
    let ds = get_json(&d.url, "/stats").await;
    assert_eq!(ds["remote_kv"], ok);
    assert_eq!(ds["prefills"], 0);

    // Malformed and incomplete bodies: 400, nothing forwarded.
    let raw = client()
        .post(format!("{url}/v1/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let v: Value = raw.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], 400);
    let (s, v) = post(
        url,
        "/v1/chat/completions",
        &json!({"model": "m", "prompt": "x"}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    assert_eq!(get_json(&d.url, "/stats").await["requests"], ok);

    // Models and health.
    let models = get_json(url, "/v1/models").await;
    assert_eq!(models["data"][0]["id"], "fake-llama3-70b");
    assert_eq!(get_json(url, "/health").await["status"], "ok");

    // Counters.
    let m = metrics(url).await;
    assert_eq!(
        metric(&m, "mooncake_router_requests_total{outcome=\"ok\"}"),
        ok as f64
    );
    assert_eq!(
        metric(
            &m,
            "mooncake_router_requests_total{outcome=\"bad_request\"}"
        ),
        2.0
    );
    let routed = |i: usize, u: &str| {
        metric(
            &m,
            &format!(
                "mooncake_router_routed_total{{role=\"{}\",instance=\"{u}\"}}",
                if i < 2 { "prefill" } else { "decode" }
            ),
        )
    };
    assert_eq!(routed(0, &p0.url) + routed(1, &p1.url), ok as f64);
    assert_eq!(routed(2, &d.url), ok as f64);
    assert_eq!(metric(&m, "mooncake_router_ttft_seconds_count"), ok as f64);
    // The engines run at 1/100 of the cost model's time: the holder's learnt
    // speed factor moved well below 1.
    let holder_url = if holder == 0 { &p0.url } else { &p1.url };
    let speed = metric(
        &m,
        &format!("mooncake_router_prefill_speed_factor{{instance=\"{holder_url}\"}}"),
    );
    assert!(speed < 0.9, "{speed}");
    assert_eq!(
        metric(
            &m,
            &format!(
                "mooncake_router_in_flight{{role=\"decode\",instance=\"{}\"}}",
                d.url
            )
        ),
        0.0
    );

    // Per-instance state as JSON.
    let status = get_json(url, "/status").await;
    assert_eq!(status["policy"], "mooncake");
    assert_eq!(status["mode"], "disaggregated");
    let routed_p: u64 = (0..2)
        .map(|i| status["prefill"][i]["routed"].as_u64().unwrap())
        .sum();
    assert_eq!(routed_p, ok as u64);
    assert!(
        status["prefill"][holder]["prefix_blocks_hit"]
            .as_u64()
            .unwrap()
            >= 3 * blocks
    );
    assert_eq!(status["decode"][0]["in_flight"], 0);

    // Every policy by name serves through the same engines.
    for policy in [
        "dynamo",
        "sglang",
        "cache-aware",
        "round-robin",
        "load-only",
        "least-loaded",
        "random",
        "mooncake-local",
    ] {
        let r2 = router(&[&p0, &p1], &[&d], &["--policy", policy]);
        let (s, v) = post(
            &r2.url,
            "/v1/completions",
            &json!({"model": "m", "prompt": "x", "max_tokens": 1}),
        )
        .await;
        assert_eq!(s, 200, "{policy}: {v}");
    }
    // And with either admission control after the policy.
    for admission in ["early", "predictive"] {
        let r2 = router(&[&p0, &p1], &[&d], &["--admission", admission]);
        let (s, v) = post(
            &r2.url,
            "/v1/completions",
            &json!({"model": "m", "prompt": "x", "max_tokens": 1}),
        )
        .await;
        assert_eq!(s, 200, "{admission}: {v}");
        assert_eq!(get_json(&r2.url, "/status").await["admission"], admission);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_with_503_when_the_slo_cannot_be_met() {
    // Real-time engine (time scale 1) so a long prefill stays in flight.
    let p = engine("prefill", "1");
    let d = engine("decode", "0.01");
    // TBT: no decode step is ever 1 ms → every request is rejected.
    let r = router(&[&p], &[&d], &["--slo-tbt", "0.001"]);
    let (s, v) = post(
        &r.url,
        "/v1/completions",
        &json!({"model": "m", "prompt": "x", "max_tokens": 3}),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert_eq!(v["error"]["code"], 503);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("tbt-slo"),
        "{v}"
    );
    let m = metrics(&r.url).await;
    assert_eq!(
        metric(&m, "mooncake_router_rejections_total{reason=\"tbt-slo\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "mooncake_router_requests_total{outcome=\"rejected\"}"),
        1.0
    );
    assert_eq!(get_json(&p.url, "/stats").await["requests"], 0);
    drop(r);

    // TTFT: a 32k-token prompt keeps the only prefill instance busy for
    // ~4.5 s (within the 5 s SLO, so it is admitted); while it is in flight
    // a second one (8k tokens, ~1 s of prefill) would queue behind it past
    // the SLO.
    let r = router(&[&p], &[&d], &["--slo-ttft", "5"]);
    let long = json!({"model": "m", "prompt": "y".repeat(128 * 1024), "max_tokens": 1});
    let url = r.url.clone();
    let first = tokio::spawn(async move { post(&url, "/v1/completions", &long).await });
    let in_flight = format!(
        "mooncake_router_in_flight{{role=\"prefill\",instance=\"{}\"}}",
        p.url
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&metrics(&r.url).await, &in_flight) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the first request reaches prefill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, v) = post(
        &r.url,
        "/v1/completions",
        &json!({"model": "m", "prompt": "z".repeat(32 * 1024), "max_tokens": 1}),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ttft-slo"),
        "{v}"
    );
    // The first request was served.
    let (s, v) = first.await.unwrap();
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backends_are_skipped_or_reported() {
    let p0 = engine("prefill", "0.01");
    let p1 = engine("prefill", "0.01");
    let d = engine("decode", "0.01");
    let r = router(
        &[&p0, &p1],
        &[&d],
        &["--policy", "round-robin", "--backoff-secs", "60"],
    );
    let url = r.url.clone();
    let body = json!({"model": "m", "prompt": "hello", "max_tokens": 2});
    for _ in 0..2 {
        assert_eq!(post(&url, "/v1/completions", &body).await.0, 200);
    }
    let dead = p0.url.clone();
    drop(p0);
    // Every request is still served: the dead instance is re-routed around
    // once, then skipped for the backoff.
    for _ in 0..6 {
        let (s, v) = post(&url, "/v1/completions", &body).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!(get_json(&p1.url, "/stats").await["prefills"], 1 + 6);
    let m = metrics(&url).await;
    assert_eq!(metric(&m, "mooncake_router_prefill_retries_total"), 1.0);
    assert_eq!(
        metric(
            &m,
            &format!("mooncake_router_instance_healthy{{role=\"prefill\",instance=\"{dead}\"}}")
        ),
        0.0
    );
    assert_eq!(
        metric(&m, "mooncake_router_requests_total{outcome=\"ok\"}"),
        8.0
    );

    // A dead decode instance: 502 with a clear message, then unhealthy.
    let dead_decode = d.url.clone();
    drop(d);
    let (s, v) = post(&url, "/v1/completions", &body).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["type"], "backend_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("decode instance") && msg.contains(&dead_decode),
        "{msg}"
    );
    let h = client().get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(h.status().as_u16(), 503);
    let (s, v) = post(&url, "/v1/completions", &body).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["type"], "service_unavailable_error");
    let m = metrics(&url).await;
    assert_eq!(
        metric(
            &m,
            "mooncake_router_requests_total{outcome=\"backend_error\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "mooncake_router_requests_total{outcome=\"unavailable\"}"
        ),
        1.0
    );
    // Nothing is left in flight after the failures.
    assert_eq!(
        metric(
            &m,
            &format!(
                "mooncake_router_in_flight{{role=\"prefill\",instance=\"{}\"}}",
                p1.url
            )
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colocated_workers_get_one_leg_and_keep_their_prefixes() {
    let w0 = engine("decode", "0.01");
    let w1 = engine("decode", "0.01");
    let args = [
        "router",
        "--port",
        "0",
        "--mode",
        "colocated",
        "--worker",
        &w0.url,
        "--worker",
        &w1.url,
    ];
    let r = spawn(&args);
    let prefix = "Colocated engines keep their own prefix caches. ".repeat(400);
    let ask = |q: &str, stream: bool| json!({"model": "m", "prompt": format!("{prefix}{q}"), "max_tokens": 3, "stream": stream});
    let (s, v) = post(&r.url, "/v1/completions", &ask("one", false)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], " tok0 tok1 tok2");
    let (s, _, body) = post_stream(&r.url, "/v1/completions", &ask("two", true)).await;
    assert_eq!(s, 200);
    assert_eq!(sse_data(&body).last(), Some(&"[DONE]"));
    let (s, _) = post(&r.url, "/v1/completions", &ask("three", false)).await;
    assert_eq!(s, 200);
    let st = [
        get_json(&w0.url, "/stats").await,
        get_json(&w1.url, "/stats").await,
    ];
    let holder = if st[0]["requests"] == 3 { 0 } else { 1 };
    // One leg per request, all on the engine holding the prefix, which
    // prefilled them itself (no KV handoff) and hit its cache.
    assert_eq!(st[holder]["requests"], 3, "{st:?}");
    assert_eq!(st[1 - holder]["requests"], 0, "{st:?}");
    assert_eq!(st[holder]["prefills"], 3);
    assert_eq!(st[holder]["remote_kv"], 0);
    assert!(
        st[holder]["blocks_hit"].as_u64().unwrap() >= 2 * 9,
        "{st:?}"
    );
    let m = metrics(&r.url).await;
    assert_eq!(
        metric(&m, "mooncake_router_requests_total{outcome=\"ok\"}"),
        3.0
    );
    // Nothing left in flight on either side once streams end.
    let in_flight = format!(
        "mooncake_router_in_flight{{role=\"decode\",instance=\"{}\"}}",
        st_url(holder, &w0, &w1)
    );
    assert_eq!(metric(&m, &in_flight), 0.0);
    // Mixing modes is a clear startup error.
    let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .args([
            "router",
            "--mode",
            "colocated",
            "--worker",
            &w0.url,
            "--prefill",
            &w1.url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prefill") && err.contains("not used"), "{err}");
}

fn st_url<'a>(i: usize, a: &'a Proc, b: &'a Proc) -> &'a str {
    if i == 0 {
        &a.url
    } else {
        &b.url
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_env_and_flags_layer() {
    let p = engine("prefill", "0");
    let d = engine("decode", "0");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router.toml");
    std::fs::write(
        &file,
        format!(
            "prefill = [\"{}\"]\ndecode = [\"{}\"]\npolicy = \"dynamo\"\nport = 0\n\n[hardware]\ntflops_per_gpu = 989.0\n",
            p.url, d.url
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let policy_of = |r: &Proc| {
        let url = r.url.clone();
        async move { get_json(&url, "/health").await["policy"].clone() }
    };
    let r = spawn(&["router", "--config", path]);
    assert_eq!(policy_of(&r).await, "dynamo");
    let (s, v) = post(
        &r.url,
        "/v1/completions",
        &json!({"model": "m", "prompt": "x", "max_tokens": 1}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r = spawn_env(
        &["router", "--config", path],
        &[("MOONCAKE_ROUTER_POLICY", "sglang")],
    );
    assert_eq!(policy_of(&r).await, "sglang");
    let r = spawn_env(
        &["router", "--config", path, "--policy", "cache-aware"],
        &[("MOONCAKE_ROUTER_POLICY", "sglang")],
    );
    assert_eq!(policy_of(&r).await, "cache-aware");
    // Bad values are clear startup errors.
    for (args, env, needle) in [
        (
            vec!["router", "--config", path, "--policy", "fastest"],
            vec![],
            "unknown policy",
        ),
        (
            vec!["router", "--config", path],
            vec![("MOONCAKE_ROUTER_SLO_TTFT", "-1")],
            "slo_ttft",
        ),
        (
            vec!["router", "--prefill", "http://a", "--decode", "x"],
            vec![],
            "not an http(s) URL",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
            .args(&args)
            .envs(env)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn bench_router_reports_overhead_and_decision_rate() {
    let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .args([
            "bench",
            "router",
            "--requests",
            "30",
            "--decisions",
            "2000",
            "--json",
        ])
        .env("MOONCAKE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for path in ["direct", "direct_pd", "router"] {
        let p50 = v[path]["p50_us"].as_f64().unwrap();
        assert!(
            p50 > 0.0 && p50 <= v[path]["p99_us"].as_f64().unwrap(),
            "{v}"
        );
    }
    assert!(v["decisions_per_s"].as_f64().unwrap() > 0.0);
    // Deterministic (no clock involved): the bench load stays within the SLOs.
    assert_eq!(v["decisions_accepted"], 2000);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_events_flow_to_the_router_and_a_standalone_indexer() {
    let (pp, rp) = (free_port(), free_port());
    let (pub_ep, rep_ep) = (
        format!("tcp://127.0.0.1:{pp}"),
        format!("tcp://127.0.0.1:{rp}"),
    );
    let p = spawn(&[
        "fake-engine",
        "--role",
        "prefill",
        "--time-scale",
        "0",
        "--port",
        "0",
        "--kv-events",
        &pub_ep,
        "--kv-replay",
        &rep_ep,
        "--block-size",
        "16",
    ]);
    let d = engine("decode", "0");
    let r = router(
        &[&p],
        &[&d],
        &[
            "--kv-events",
            &pub_ep,
            "--kv-replay",
            &rep_ep,
            "--block-size",
            "16",
        ],
    );
    let reg = json!({"endpoint": pub_ep, "replay_endpoint": rep_ep, "type": "vLLM",
                     "modelname": "m", "instance_id": "p0", "block_size": 16, "dp_rank": 0})
    .to_string();
    let ix = spawn(&["indexer", "--port", "0", "--register", &reg]);

    // 64 token ids: 4 full vLLM blocks, indexed by both subscribers.
    let ids: Vec<u32> = (1..=64).collect();
    let (st, _) = post(
        &r.url,
        "/v1/completions",
        &json!({"model": "m", "prompt": ids, "max_tokens": 2}),
    )
    .await;
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = get_json(&r.url, "/status").await;
        let (_, q) = post(
            &ix.url,
            "/query",
            &json!({"model": "m", "token_ids": ids, "block_size": 16}),
        )
        .await;
        if s["prefill"][0]["event_blocks"] == 4 && q["default"]["p0"]["longest_matched"] == 64 {
            assert_eq!(s["prefill"][0]["prefix_source"], "events");
            break;
        }
        assert!(Instant::now() < deadline, "events indexed: {s} {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, u) = post(&ix.url, "/unregister", &json!({"instance_id": "p0"})).await;
    assert_eq!(
        (st, u["removed_instances"][0].as_str()),
        (200, Some("p0|default|0"))
    );
    // Bad registrations are 400s with a JSON error.
    let (st, e) = post(
        &ix.url,
        "/register",
        &json!({"endpoint": "ipc://x", "instance_id": "a", "block_size": 16}),
    )
    .await;
    assert_eq!(st, 400, "{e}");
}
