//! `mooncake up` with its own storage node, driven by `mooncake client`
//! processes from a terminal's point of view; then SIGTERM stops it cleanly.

mod cluster_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_common::{mooncake_bin, Proc};

fn client(master: &str, metadata: &str, args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>) {
    let mut child = Command::new(mooncake_bin())
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
    let mut child = Command::new(mooncake_bin())
        .args([
            "up",
            "--rpc-port",
            "0",
            "--metadata-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .args(["--segment-size", "64MiB"])
        .env("MOONCAKE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut up = Proc {
        child,
        name: "up".into(),
    };
    let mut banner = String::new();
    let mut ready = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("READY ") {
            ready = Some(line);
            break;
        }
        banner.push_str(&line);
        banner.push('\n');
    }
    let ready = ready.expect("READY line");
    let field = |n: &str| {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(n))
            .unwrap()
            .to_string()
    };
    let (master, metadata, status) = (field("master="), field("metadata="), field("status="));
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
    let pid = up.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    loop {
        if let Some(st) = up.child.try_wait().unwrap() {
            assert!(st.success(), "mooncake up exited with {st}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mooncake up ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
