//! `mooncake up` with its own storage node, driven by `mooncake client`
//! processes from a terminal's point of view; then SIGTERM stops it cleanly.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use mooncake_testkit::{mooncake_bin, Proc};

/// The cluster credential file `up` generated (its READY line's `token_file`).
static TOKEN_FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn client(master: &str, metadata: &str, args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>) {
    let mut child = Command::new(mooncake_bin())
        .envs(TOKEN_FILE.get().map(|f| ("MOONCAKE_CLUSTER_TOKEN_FILE", f)))
        .args(["client", "--master", master, "--metadata", metadata])
        .args(args)
        .env("MOONCAKE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), out.stdout)
}

#[test]
fn up_serves_terminal_clients_and_stops_on_sigterm() {
    let mut up = Proc::mooncake(&[
        "up",
        "--rpc-port",
        "0",
        "--metadata-port",
        "0",
        "--metrics-port",
        "0",
        "--segment-size",
        "64MiB",
    ]);
    let ready = up.ready(Duration::from_secs(60));
    TOKEN_FILE.set(ready.str("token_file").to_string()).unwrap();
    let banner = up.stdout_seen().join("\n");
    let (master, metadata, status) = (
        ready.str("master"),
        ready.str("metadata"),
        ready.str("status"),
    );
    let (master, metadata, status) = (master.to_string(), metadata.to_string(), status.to_string());
    assert!(
        banner.contains(&master) && banner.contains("MooncakeDistributedStore"),
        "{banner}"
    );

    let value: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    assert!(client(&master, &metadata, &["put", "blob", "-"], Some(&value)).0);
    let (ok, got) = client(&master, &metadata, &["get", "blob"], None);
    assert!(ok && got == value);
    // A second put of the same key fails; --upsert replaces.
    assert!(!client(&master, &metadata, &["put", "blob", "-"], Some(b"x")).0);
    assert!(
        client(
            &master,
            &metadata,
            &["put", "blob", "-", "--upsert"],
            Some(b"small")
        )
        .0
    );
    assert_eq!(
        client(&master, &metadata, &["get", "blob"], None).1,
        b"small"
    );
    let (ok, listing) = client(
        &master,
        &metadata,
        &["ls", "--http", &status, "--prefix", "bl"],
        None,
    );
    assert!(ok);
    assert_eq!(String::from_utf8(listing).unwrap().trim(), "blob\t5");
    assert!(client(&master, &metadata, &["rm", "blob", "--force"], None).0);
    assert!(
        !client(&master, &metadata, &["get", "blob"], None).0,
        "removed key is gone"
    );

    // SIGTERM: clean shutdown, exit status 0, within a bounded time.
    let st = up
        .terminate(Duration::from_secs(20))
        .expect("mooncake up stops on SIGTERM");
    assert!(st.success(), "mooncake up exited with {st}");
}
