//! Shared helpers for the multi-process tests: spawn `mooncake segment`
//! children (killed on drop), start initiator engines, random data.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mooncake_testkit::Proc;
use mooncake_transfer::{
    ManagedBuffer, Opcode, Protocol, SegmentHandle, TransferEngine, TransferEngineConfig,
    TransferRequest,
};

/// What `mooncake segment` announces in its READY line.
#[derive(Debug, Clone)]
pub struct Ready {
    pub segment: String,
    pub rpc_port: u16,
    pub buffer_addr: u64,
    pub buffer_len: u64,
}

/// A `mooncake segment` child process (a `mooncake_testkit::Proc`: killed
/// with its process group on drop).
pub struct SegmentProc {
    pub proc: Proc,
    pub ready: Ready,
}

impl SegmentProc {
    /// Spawn `mooncake segment <args>` and wait (bounded) for its READY line.
    pub fn spawn(args: &[&str]) -> SegmentProc {
        let mut all = vec!["segment"];
        all.extend_from_slice(args);
        let mut proc = Proc::mooncake(&all);
        let r = proc.ready(Duration::from_secs(30));
        let ready = Ready {
            segment: r.str("segment").to_string(),
            rpc_port: r.u64("rpc_port") as u16,
            buffer_addr: r.u64("buffer_addr"),
            buffer_len: r.u64("buffer_len"),
        };
        SegmentProc { proc, ready }
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
        self.proc.kill9();
    }

    pub fn is_alive(&mut self) -> bool {
        self.proc.is_alive()
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

/// Deterministic test bytes (see `mooncake_testkit::pattern`).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    mooncake_testkit::pattern(len, seed)
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
