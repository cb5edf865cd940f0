//! Shared helpers for the multi-process tests: spawn `mooncake segment`
//! children (killed on drop), start initiator engines, random data.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mooncake_transfer::{
    ManagedBuffer, Opcode, Protocol, SegmentHandle, TransferEngine, TransferEngineConfig,
    TransferRequest,
};
use rand::{RngCore, SeedableRng};

/// `<workspace>/target/debug/mooncake`, built by `cargo build -p mooncake-cli`
/// (or `$MOONCAKE_BIN` when set).
pub fn mooncake_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MOONCAKE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/mooncake");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p mooncake-cli` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// What `mooncake segment` prints when ready.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Ready {
    pub segment: String,
    pub rpc_port: u16,
    pub buffer_addr: u64,
    pub buffer_len: u64,
}

/// A `mooncake segment` child process; SIGKILLed on drop.
pub struct SegmentProc {
    pub child: Child,
    pub ready: Ready,
}

impl SegmentProc {
    /// Spawn `mooncake segment <args>` and wait (bounded) for its ready line.
    pub fn spawn(args: &[&str]) -> SegmentProc {
        let mut child = Command::new(mooncake_bin())
            .arg("segment")
            .args(args)
            .env("MOONCAKE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mooncake segment");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("mooncake segment did not become ready within 30 s");
            }
        };
        let ready: Ready = match serde_json::from_str(line.trim()) {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("bad ready line {line:?} ({e}); child exited: {status:?}");
            }
        };
        SegmentProc { child, ready }
    }

    /// Spawn a P2P-handshake segment on a free loopback port.
    pub fn p2p(size: &str, extra: &[&str]) -> SegmentProc {
        let mut args = vec![
            "--local-hostname",
            "127.0.0.1:0",
            "--metadata",
            "P2PHANDSHAKE",
            "--size",
            size,
        ];
        args.extend_from_slice(extra);
        SegmentProc::spawn(&args)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SegmentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An initiator engine.
pub async fn engine(
    metadata: &str,
    protocols: &[Protocol],
    token: Option<&str>,
) -> Arc<TransferEngine> {
    TransferEngine::start(TransferEngineConfig {
        local_hostname: "127.0.0.1:0".into(),
        metadata_server: metadata.into(),
        protocols: protocols.to_vec(),
        cluster_token: token.map(str::to_string),
        transfer_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .expect("engine starts")
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn req(
    opcode: Opcode,
    local: &ManagedBuffer,
    local_off: usize,
    target: &SegmentHandle,
    remote_addr: u64,
    len: usize,
) -> TransferRequest {
    TransferRequest {
        opcode,
        source: local.addr() + local_off,
        target: target.clone(),
        target_offset: remote_addr,
        length: len,
    }
}

/// Read `len` bytes at `remote_addr` of `target` back through a fresh
/// scratch buffer (used to verify remote memory).
pub async fn read_back(
    engine: &TransferEngine,
    target: &SegmentHandle,
    remote_addr: u64,
    len: usize,
) -> Vec<u8> {
    let scratch = engine
        .allocate_managed_buffer(len.max(1))
        .await
        .expect("scratch");
    engine
        .transfer(&[req(Opcode::Read, &scratch, 0, target, remote_addr, len)])
        .await
        .expect("read back");
    let mut out = vec![0u8; len];
    scratch.read_at(0, &mut out);
    out
}
