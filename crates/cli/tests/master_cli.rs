//! `mooncake master` as a real process, started with the reference's flag spellings: it
//! answers RPCs, serves /health and /metrics, runs the embedded metadata server, and exits
//! cleanly on SIGTERM.

use std::process::Command;
use std::time::Duration;

use mooncake_testkit::Proc;

fn http_get(addr: &str, path: &str) -> String {
    let (status, body) = mooncake_testkit::http::get(addr, path).unwrap();
    format!("{status}\n{body}")
}

#[tokio::test]
async fn master_process_with_reference_flags() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mooncake"));
    cmd.args([
        "master",
        "--rpc_address=127.0.0.1",
        "--rpc_port=0",
        "--metrics_host=127.0.0.1",
        "--metrics_port=0",
        "--enable_http_metadata_server=true",
        "--http_metadata_server_host=127.0.0.1",
        "--http_metadata_server_port=0",
        "--eviction_high_watermark_ratio=0.9",
        "--eviction_ratio=0.05",
        "--default_kv_lease_ttl=5000",
        "--default_kv_soft_pin_ttl=1800000",
        "--allow_evict_soft_pinned_objects",
        "--client_ttl=10",
        "--allocation_strategy=free_ratio_first",
        "--enable_gc=false",
    ]);
    let mut child = Proc::spawn(cmd);
    let ready = child.ready(Duration::from_secs(60));
    let (rpc, http, md) = (ready.str("rpc"), ready.str("http"), ready.str("metadata"));
    // The human-readable announcement stays on stderr.
    assert!(
        child
            .stderr()
            .contains(&format!("mooncake master: rpc {rpc}")),
        "{}",
        child.stderr()
    );

    let c = mooncake_store::MasterClient::connect(rpc).await.unwrap();
    c.ping().await.unwrap();
    assert!(!c.exists("nothing").await.unwrap());

    let health = http_get(http, "/health");
    assert!(health.starts_with("200\n"), "{health}");
    assert!(health.ends_with("OK"), "{health}");
    let metrics = http_get(http, "/metrics");
    assert!(metrics.contains("mooncake_master_objects 0"), "{metrics}");
    assert!(
        metrics.contains("mooncake_master_rpc_total{op=\"exists\"} 1"),
        "{metrics}"
    );

    let store = mooncake_metadata::connect(md).await.unwrap();
    store.put("mooncake/ram/x", b"v").await.unwrap();
    assert_eq!(
        store.get("mooncake/ram/x").await.unwrap(),
        Some(b"v".to_vec())
    );

    // SIGTERM: clean exit.
    let status = child
        .terminate(Duration::from_secs(20))
        .expect("master exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .args([
            "master",
            "--allocation_strategy=bogus",
            "--metrics_port=0",
            "--rpc_port=0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allocation_strategy"));
}
