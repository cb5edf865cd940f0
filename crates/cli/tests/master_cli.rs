//! `mooncake master` as a real process, started with the reference's flag spellings: it
//! answers RPCs, serves /health and /metrics, runs the embedded metadata server, and exits
//! cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the child on drop so a failing test leaves no server behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn master_process_with_reference_flags() {
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_mooncake"))
            .args([
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
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mooncake master"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut rpc, mut http, mut md) = (None, None, None);
    while rpc.is_none() || http.is_none() || md.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("master announces its addresses");
        let t = line.trim();
        if let Some(a) = t.strip_prefix("mooncake master: rpc ") {
            rpc = Some(a.to_string());
        } else if let Some(a) = t.strip_prefix("metrics   http://") {
            http = Some(a.split('/').next().unwrap().to_string());
        } else if let Some(a) = t.strip_prefix("metadata  ") {
            md = Some(a.to_string());
        }
    }
    let (rpc, http, md) = (rpc.unwrap(), http.unwrap(), md.unwrap());

    let c = mooncake_store::MasterClient::connect(&rpc).await.unwrap();
    c.ping().await.unwrap();
    assert!(!c.exists("nothing").await.unwrap());

    let health = http_get(&http, "/health");
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    assert!(health.ends_with("OK"), "{health}");
    let metrics = http_get(&http, "/metrics");
    assert!(metrics.contains("mooncake_master_objects 0"), "{metrics}");
    assert!(
        metrics.contains("mooncake_master_rpc_total{op=\"exists\"} 1"),
        "{metrics}"
    );

    let store = mooncake_metadata::connect(&md).await.unwrap();
    store.put("mooncake/ram/x", b"v").await.unwrap();
    assert_eq!(
        store.get("mooncake/ram/x").await.unwrap(),
        Some(b"v".to_vec())
    );

    // SIGTERM: clean exit.
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "master did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
