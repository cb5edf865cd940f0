//! `mooncake metadata-server` as a real process: it prints its address, serves
//! the reference's protocol to our client, and exits cleanly on SIGTERM.

use std::process::Command;
use std::time::Duration;

use mooncake_testkit::Proc;

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
    let status = child
        .terminate(Duration::from_secs(30))
        .expect("exits on SIGTERM");
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

/// Start `mooncake metadata-server` with `extra` flags; returns it and the
/// connection string of its READY line.
fn start(extra: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mooncake"));
    cmd.args(["metadata-server", "--port", "0"])
        .args(extra)
        .env_remove("MC_CLUSTER_TOKEN")
        .env_remove("MOONCAKE_CLUSTER_TOKEN_FILE");
    let mut child = Proc::spawn(cmd);
    let url = child
        .ready(Duration::from_secs(60))
        .str("metadata")
        .to_string();
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
