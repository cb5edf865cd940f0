//! A user's mistake gets one clear line from the real `mooncake` binary, naming the thing, and a
//! non-zero exit: a missing key, a port already taken (with the flag that moves it), a bad flag
//! value. `mooncake client` prints no logs unless `-v`.

use mooncake_testkit::Proc;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn mooncake(args: &[&str]) -> Output {
    mooncake_env(args, &[])
}

fn mooncake_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mooncake"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MOONCAKE_LOG")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run mooncake")
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn missing_key_is_one_line_and_client_logs_are_quiet() {
    let mut up = Proc::mooncake(&[
        "up",
        "--rpc-port=0",
        "--metadata-port=0",
        "--metrics-port=0",
        "--segment-size=16MiB",
        "--quiet",
    ]);
    let ready = up.ready(Duration::from_secs(60));
    let (master, metadata) = (ready.str("master"), ready.str("metadata"));
    // `up` generated the cluster credential; clients read it from this file.
    let token_env = [("MOONCAKE_CLUSTER_TOKEN_FILE", ready.str("token_file"))];
    let conn = ["--master", master, "--metadata", metadata];

    let get = |extra: &[&str]| {
        let mut a = vec!["client"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&conn);
        a.extend_from_slice(&["get", "nokey"]);
        mooncake_env(&a, &token_env)
    };
    let o = get(&[]);
    assert!(!o.status.success(), "a missing key fails");
    assert_eq!(
        stderr_lines(&o),
        ["error: key 'nokey' not found"],
        "one line naming the key, no logs, no backtrace"
    );
    // `-v` brings the logs back (and the same last line).
    let o = get(&["-v"]);
    let lines = stderr_lines(&o);
    assert!(!o.status.success());
    assert!(
        lines.len() > 1 && lines.iter().any(|l| l.contains("INFO")),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap(), "error: key 'nokey' not found");
}

#[test]
fn up_on_a_taken_port_names_the_port_and_the_flag() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let o = mooncake(&[
        "up",
        "--rpc-port",
        &port,
        "--metadata-port=0",
        "--metrics-port=0",
        "--segment-size=0",
    ]);
    assert!(!o.status.success(), "a taken port fails");
    let lines = stderr_lines(&o);
    let last = lines.last().expect("an error line");
    assert!(
        last.starts_with("error: ")
            && last.contains(&format!("port {port}"))
            && last.contains("--rpc-port"),
        "{lines:?}"
    );
    let all = lines.join("\n");
    assert!(
        !all.contains("backtrace") && !all.contains("panicked"),
        "{all}"
    );
}

#[test]
fn bad_flag_values_are_one_clear_message() {
    let o = mooncake(&["segment", "--size", "12XB"]);
    assert_eq!(o.status.code(), Some(2), "clap's usage error code");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("'12XB'") && err.contains("--size"), "{err}");
    assert!(err.contains("unknown unit"), "says what is wrong: {err}");

    let o = mooncake(&["bench", "store", "--duration", "5 fortnights"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--duration"));
}
