//! The cluster credential across real processes: a `mooncake segment` with
//! a token refuses initiators (`mooncake bench transfer --mode initiator`)
//! without it or with a wrong one, and serves the one holding it;
//! `mooncake up` without a credential generates one into a private 0600
//! file, announces it on its READY line, and `mooncake client` processes
//! given that file store and read back values. Each child is killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "security-cli-test-token-0123456789";
const CREDENTIAL_VARS: [&str; 3] = [
    "MC_CLUSTER_TOKEN",
    "MC_ADMIN_TOKEN",
    "MOONCAKE_CLUSTER_TOKEN_FILE",
];

fn mooncake() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mooncake"));
    for v in CREDENTIAL_VARS {
        c.env_remove(v);
    }
    c.env("MOONCAKE_LOG", "warn");
    c
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawn and return the first stdout line matching `pick` (bounded: 60 s).
fn spawn_ready(cmd: &mut Command, pick: fn(&str) -> bool) -> (Killed, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn mooncake");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if pick(&line) {
                let _ = tx.send(line);
            }
        }
    });
    let child = Killed(child);
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ready line within 60 s");
    (child, line)
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
    let (_seg, line) = spawn_ready(
        mooncake().args([
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
        ]),
        |l| l.starts_with('{'),
    );
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let segment = ready["segment"].as_str().unwrap().to_string();

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
    let (mut up, line) = spawn_ready(
        mooncake()
            .args(["up", "--rpc-port", "0", "--metadata-port", "0"])
            .args(["--metrics-port", "0", "--segment-size", "64MiB", "--quiet"]),
        |l| l.starts_with("READY "),
    );
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {line:?}"))
            .to_string()
    };
    let (master, metadata, token_file) =
        (field("master="), field("metadata="), field("token_file="));
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
    // SAFETY: plain syscall on our own child's pid.
    unsafe {
        libc::kill(up.0.id() as i32, libc::SIGTERM);
    }
    for _ in 0..200 {
        if up.0.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up.0.try_wait().unwrap().is_some(), "up stopped on SIGTERM");
    assert!(!std::path::Path::new(&token_file).exists());
}
