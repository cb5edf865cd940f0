//! The cluster credential across real processes: a `mooncake segment` with
//! a token refuses initiators (`mooncake bench transfer --mode initiator`)
//! without it or with a wrong one, and serves the one holding it;
//! `mooncake up` without a credential generates one into a private 0600
//! file, announces it on its READY line, and `mooncake client` processes
//! given that file store and read back values. Each child is killed on drop.

use mooncake_testkit::Proc;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "security-cli-test-token-0123456789";
const CREDENTIAL_VARS: [&str; 3] = [
    "MC_CLUSTER_TOKEN",
    "MC_ADMIN_TOKEN",
    "MOONCAKE_CLUSTER_TOKEN_FILE",
];

/// `mooncake` with no credential in its environment (tests add what they mean).
fn mooncake() -> Command {
    let mut c = Proc::mooncake_command(&[]);
    for v in CREDENTIAL_VARS {
        c.env_remove(v);
    }
    c
}

fn initiator(segment: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = mooncake();
    c.args(["bench", "transfer", "--json", "--mode", "initiator"])
        .args(["--metadata", "P2PHANDSHAKE", "--segment-id", segment])
        .args([
            "--duration",
            "200ms",
            "--block-size",
            "4KiB",
            "--batch-size",
            "4",
        ])
        .args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run mooncake bench transfer")
}

#[test]
fn segment_serves_only_initiators_holding_the_token() {
    let mut cmd = mooncake();
    cmd.args([
        "segment",
        "--local-hostname",
        "127.0.0.1:0",
        "--metadata",
        "P2PHANDSHAKE",
        "--size",
        "1MiB",
        "--protocol",
        "tcp",
        "--cluster-token",
        TOKEN,
    ]);
    let mut seg = Proc::spawn(cmd);
    let ready = seg.ready(Duration::from_secs(60));
    let segment = ready.str("segment").to_string();

    let none = initiator(&segment, &["--insecure"], &[]);
    assert!(!none.status.success(), "no credential must be refused");
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("credential"), "{err}");

    let wrong = initiator(
        &segment,
        &["--cluster-token", "not-the-cluster-token-0123456789"],
        &[],
    );
    assert!(!wrong.status.success(), "a wrong token must be refused");

    let right = initiator(&segment, &[], &[("MC_CLUSTER_TOKEN", TOKEN)]);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    let out = String::from_utf8(right.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn up_generates_a_private_credential_that_clients_use() {
    let mut cmd = mooncake();
    cmd.args(["up", "--rpc-port", "0", "--metadata-port", "0"])
        .args(["--metrics-port", "0", "--segment-size", "64MiB", "--quiet"]);
    let mut up = Proc::spawn(cmd);
    let ready = up.ready(Duration::from_secs(60));
    let field = |name: &str| ready.str(name).to_string();
    let (master, metadata, token_file) = (field("master"), field("metadata"), field("token_file"));
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{token_file}");

    let client = |args: &[&str], stdin: &[u8]| {
        let mut c = mooncake()
            .args(["client", "--master", &master, "--metadata", &metadata])
            .args(args)
            .env("MOONCAKE_CLUSTER_TOKEN_FILE", &token_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin).unwrap();
        c.wait_with_output().unwrap()
    };
    let put = client(&["put", "k", "-"], b"with the credential");
    assert!(put.status.success());
    let get = client(&["get", "k"], b"");
    assert!(get.status.success());
    assert_eq!(get.stdout, b"with the credential");

    // SIGTERM: `up` stops and removes the file it generated.
    assert!(
        up.terminate(Duration::from_secs(10)).is_some(),
        "up stopped on SIGTERM"
    );
    assert!(!std::path::Path::new(&token_file).exists());
}
