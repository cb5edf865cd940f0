//! `mooncake metadata-server` as a real process: it prints its address, serves
//! the reference's protocol to our client, and exits cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
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

#[tokio::test]
async fn serves_metadata_and_stops_on_sigterm() {
    let (mut child, url) = start(&["--host", "127.0.0.1"]);
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metadata"),
        "{url}"
    );

    let store = mooncake_metadata::connect(&url).await.unwrap();
    assert_eq!(store.get("mooncake/ram/x").await.unwrap(), None);
    store.put("mooncake/ram/x", b"{\"v\":1}").await.unwrap();
    assert_eq!(
        store.get("mooncake/ram/x").await.unwrap(),
        Some(b"{\"v\":1}".to_vec())
    );
    assert_eq!(
        store.list("mooncake/").await.unwrap(),
        vec!["mooncake/ram/x"]
    );

    // SIGTERM: a clean exit with status 0.
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(status.success(), "{status:?}");
    let after = store.get("mooncake/ram/x").await;
    assert!(
        matches!(
            after,
            Err(mooncake_metadata::MetadataError::Unreachable { .. })
        ),
        "{after:?}"
    );
}

/// Start `mooncake metadata-server` with `extra` flags; returns the guard and
/// the announced connection string.
fn start(extra: &[&str]) -> (Guard, String) {
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_mooncake"))
            .args(["metadata-server", "--port", "0"])
            .args(extra)
            .env_remove("MC_CLUSTER_TOKEN")
            .env_remove("MOONCAKE_CLUSTER_TOKEN_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mooncake metadata-server"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("metadata-server announces its address");
        if let Some(url) = line.strip_prefix("metadata connection string: ") {
            break url.to_string();
        }
    };
    (child, url)
}

#[tokio::test]
async fn with_a_token_only_signed_requests_are_served() {
    use mooncake_metadata::http::client::{HttpMetadata, HttpOptions};
    use mooncake_metadata::MetadataStore;
    let token = "cli-test-token-0123456789abcdef";
    let (_child, url) = start(&["--cluster-token", token]);
    // Binds loopback by default.
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let with = |credential| {
        HttpMetadata::new(
            url.parse().unwrap(),
            HttpOptions {
                credential,
                ..HttpOptions::default()
            },
        )
        .unwrap()
    };
    let member = with(Some(
        mooncake_security::Credential::from_token(token).unwrap(),
    ));
    member.put("mooncake/ram/n", b"{}").await.unwrap();
    let outsider = with(None);
    let e = outsider.put("mooncake/ram/n", b"forged").await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    assert!(outsider.delete("mooncake/ram/n").await.is_err());
    assert_eq!(member.get("mooncake/ram/n").await.unwrap().unwrap(), b"{}");
}
