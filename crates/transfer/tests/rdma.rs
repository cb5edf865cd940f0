//! The rdma transport against a real RDMA device (Soft-RoCE in the VM of
//! `scripts/rdma-test.sh`). Without a device every test prints why and passes.
//!
//! One binary, several scenarios per VM boot:
//! - loopback between two engines, both ways, byte for byte: odd sizes,
//!   unaligned offsets, multi-slice requests, a batch of thousands of slices;
//! - out-of-range remote addresses refused (by the engine, and by the NIC for
//!   a forged descriptor), after which the endpoint still works;
//! - a peer process killed mid-batch: the batch fails within its timeout, and
//!   the restarted peer is reachable again;
//! - `two_nodes` (run by the script with `--nodes 2`): node 1 writes and reads
//!   node 0's buffer across the virtual link.
//!
//! The peer process is this binary re-executed (`rdma_peer_process`, ignored
//! unless `MC_RDMA_TEST_PEER` is set).
#![cfg(feature = "rdma")]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_testkit::Proc;
use mooncake_transfer::transport::rdma::{device_names, RdmaTransport};
use mooncake_transfer::transport::Slice;
use mooncake_transfer::{
    ManagedBuffer, Opcode, Protocol, SegmentHandle, TransferEngine, TransferEngineConfig,
    TransferError, TransferRequest, TransferStatus,
};
use rand::{RngCore, SeedableRng};

fn have_device() -> bool {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("MOONCAKE_LOG"))
        .with_writer(std::io::stderr)
        .try_init();
    let names = device_names();
    if names.is_empty() {
        eprintln!("SKIP: no RDMA device (run scripts/rdma-test.sh for the Soft-RoCE VM)");
        return false;
    }
    true
}

/// The address RPC listens on: the RDMA NIC's address in the VM.
fn host() -> String {
    std::env::var("RXE_IP").unwrap_or_else(|_| "127.0.0.1".into())
}

fn config(metadata: &str, hostname: &str) -> TransferEngineConfig {
    TransferEngineConfig {
        local_hostname: hostname.into(),
        metadata_server: metadata.into(),
        protocols: vec![Protocol::Rdma],
        slice_size: 64 << 10,
        transfer_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

fn fill(buf: &ManagedBuffer, seed: u64) {
    // SAFETY: the buffer is ours and idle.
    let s = unsafe { std::slice::from_raw_parts_mut(buf.addr() as *mut u8, buf.len()) };
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(s);
}

fn bytes(buf: &ManagedBuffer, off: usize, len: usize) -> Vec<u8> {
    // SAFETY: in bounds; no transfer touches it while we read.
    unsafe { std::slice::from_raw_parts((buf.addr() + off) as *const u8, len).to_vec() }
}

fn req(op: Opcode, src: usize, target: &SegmentHandle, dst: u64, len: usize) -> TransferRequest {
    TransferRequest {
        opcode: op,
        source: src,
        target: target.clone(),
        target_offset: dst,
        length: len,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_both_ways_byte_for_byte() {
    if !have_device() {
        return;
    }
    let a = TransferEngine::start(config("embedded", &host()))
        .await
        .unwrap();
    let b = TransferEngine::start(config("embedded", &host()))
        .await
        .unwrap();
    let la = a.allocate_managed_buffer(8 << 20).await.unwrap();
    let rb = b.allocate_managed_buffer(8 << 20).await.unwrap();
    fill(&la, 1);
    fill(&rb, 2);
    let d = b.local_descriptor();
    assert!(
        d.buffers[0].rkey.len() == 1 && d.transports.contains_key("rdma"),
        "descriptor publishes rkeys and devices: {d:?}"
    );
    let peer = a.open_segment(b.segment_name()).await.unwrap();
    let base = rb.addr() as u64;

    // Odd sizes at unaligned offsets, single- and multi-slice (64 KiB slices).
    let cases = [
        (1usize, 3usize, 1usize),
        (7, 4093, 13),
        (65_537, 100_001, 200_003),
        ((3 << 20) + 7, 1_000_003, 4_000_001),
    ];
    for (len, src_off, dst_off) in cases {
        a.transfer(&[req(
            Opcode::Write,
            la.addr() + src_off,
            &peer,
            base + dst_off as u64,
            len,
        )])
        .await
        .unwrap();
        assert_eq!(
            bytes(&rb, dst_off, len),
            bytes(&la, src_off, len),
            "write of {len} bytes"
        );
        // Read another range back the other way.
        let (r_src, r_dst) = (dst_off + len / 2, src_off + 11);
        a.transfer(&[req(
            Opcode::Read,
            la.addr() + r_dst,
            &peer,
            base + r_src as u64,
            len / 2 + 1,
        )])
        .await
        .unwrap();
        assert_eq!(
            bytes(&la, r_dst, len / 2 + 1),
            bytes(&rb, r_src, len / 2 + 1),
            "read of {} bytes",
            len / 2 + 1
        );
    }

    // A batch of 3000 requests (3000 work requests: more than MC_MAX_WR per QP).
    fill(&la, 3);
    let n = 3000;
    let reqs: Vec<_> = (0..n)
        .map(|i| {
            req(
                Opcode::Write,
                la.addr() + i * 997,
                &peer,
                base + (i * 1999) as u64 + 5,
                997,
            )
        })
        .collect();
    let t = Instant::now();
    a.transfer(&reqs).await.unwrap();
    eprintln!("{n} writes of 997 B in {:?}", t.elapsed());
    for i in (0..n).step_by(7) {
        assert_eq!(
            bytes(&rb, i * 1999 + 5, 997),
            bytes(&la, i * 997, 997),
            "req {i}"
        );
    }
    let reqs: Vec<_> = (0..n)
        .map(|i| {
            req(
                Opcode::Read,
                la.addr() + (4 << 20) + i * 333,
                &peer,
                base + (i * 2011) as u64,
                333,
            )
        })
        .collect();
    a.transfer(&reqs).await.unwrap();
    for i in (0..n).step_by(5) {
        assert_eq!(
            bytes(&la, (4 << 20) + i * 333, 333),
            bytes(&rb, i * 2011, 333),
            "read {i}"
        );
    }
    drop((la, rb));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_refused_and_endpoint_recovers() {
    if !have_device() {
        return;
    }
    let a = TransferEngine::start(config("embedded", &host()))
        .await
        .unwrap();
    let b = TransferEngine::start(config("embedded", &host()))
        .await
        .unwrap();
    let la = a.allocate_managed_buffer(1 << 20).await.unwrap();
    let rb = b.allocate_managed_buffer(1 << 20).await.unwrap();
    fill(&la, 4);
    let before = bytes(&rb, 0, 1 << 20);
    let peer = a.open_segment(b.segment_name()).await.unwrap();
    let base = rb.addr() as u64;
    // The engine refuses from the descriptor: nothing changes.
    let e = a
        .transfer(&[req(
            Opcode::Write,
            la.addr(),
            &peer,
            base + (1 << 20) - 100,
            200,
        )])
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert_eq!(bytes(&rb, 0, 1 << 20), before);

    // A forged descriptor claiming a larger buffer: the peer's NIC refuses the
    // rkey outside the real MR (a READ, so a broken NIC could not corrupt).
    let t = a.transport(Protocol::Rdma).unwrap();
    let rdma = t.as_any().downcast_ref::<RdmaTransport>().unwrap();
    let mut forged = (*peer.descriptor()).clone();
    forged.buffers[0].length *= 4;
    let forged = Arc::new(forged);
    let slice = Slice {
        opcode: Opcode::Read,
        local_addr: la.addr(),
        remote_addr: base + (1 << 20) + 4096,
        len: 4096,
        attempt: 0,
    };
    let e = tokio::time::timeout(Duration::from_secs(20), t.execute(&forged, &slice))
        .await
        .expect("refusal within 20 s")
        .unwrap_err();
    assert!(
        matches!(e, TransferError::OutOfRange { .. }),
        "NIC refusal is a permanent OutOfRange: {e}"
    );
    assert!(!rdma.nic_names().is_empty());
    // The endpoint reconnects and in-range transfers work again.
    a.transfer(&[req(Opcode::Write, la.addr(), &peer, base + 10, 4096)])
        .await
        .unwrap();
    assert_eq!(bytes(&rb, 10, 4096), bytes(&la, 0, 4096));
    drop((la, rb));
    a.shutdown().await;
    b.shutdown().await;
}

/// Two NICs (the one device opened twice: Soft-RoCE here cannot give two
/// paths between hosts), slices spread over both; NIC 1 fails mid-batch and
/// the batch completes on NIC 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nics_one_fails_mid_batch() {
    if !have_device() {
        return;
    }
    let dev = device_names()[0].clone();
    let mut cfg = config("embedded", &host());
    cfg.rdma_devices = vec![dev.clone(), dev];
    let a = TransferEngine::start(cfg.clone()).await.unwrap();
    let b = TransferEngine::start(cfg).await.unwrap();
    assert_eq!(b.local_descriptor().buffers.len(), 0);
    let la = a.allocate_managed_buffer(16 << 20).await.unwrap();
    let rb = b.allocate_managed_buffer(16 << 20).await.unwrap();
    assert_eq!(
        b.local_descriptor().buffers[0].rkey.len(),
        2,
        "one rkey per NIC"
    );
    fill(&la, 7);
    let peer = a.open_segment(b.segment_name()).await.unwrap();
    let t = a.transport(Protocol::Rdma).unwrap();
    let rdma = t.as_any().downcast_ref::<RdmaTransport>().unwrap();
    assert_eq!(rdma.nic_names().len(), 2);
    let base = rb.addr() as u64;
    let n = 64;
    let reqs: Vec<_> = (0..n)
        .map(|i| {
            req(
                Opcode::Write,
                la.addr() + i * (256 << 10),
                &peer,
                base + (i * (256 << 10)) as u64,
                256 << 10,
            )
        })
        .collect();
    let batch = a.allocate_batch(n).unwrap();
    a.submit(batch, &reqs).unwrap();
    // Fail NIC 1 while slices assigned to it are still to run.
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until && rdma.nic_counters()[1].0 < 8 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let at_fail = rdma.nic_counters();
    rdma.fail_nic(1, Duration::from_secs(60));
    let st = a.wait(batch).await.unwrap();
    let after = rdma.nic_counters();
    eprintln!("per-NIC (posted, errors): at the failure {at_fail:?}, after {after:?}");
    assert!(at_fail[1].0 > 0, "NIC 1 carried slices before it failed");
    // 256 slices alternate between the NICs: NIC 0 took over part of NIC 1's.
    assert!(
        after[0].0 > 128 && after[1].0 < 128,
        "slices of the failed NIC moved to the other one"
    );
    assert!(
        st.iter().all(|s| *s == TransferStatus::Completed),
        "every request completed on the remaining NIC: {st:?}"
    );
    assert_eq!(bytes(&rb, 0, 16 << 20), bytes(&la, 0, 16 << 20));
    a.free_batch(batch).unwrap();
    drop((la, rb));
    a.shutdown().await;
    b.shutdown().await;
}

/// A peer in its own process (this binary re-executed; killed on drop).
struct Peer {
    _proc: Proc,
    segment: String,
    addr: u64,
}

impl Peer {
    fn spawn(port: u16, len: usize) -> Peer {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "rdma_peer_process", "--ignored", "--nocapture"])
            .env("MC_RDMA_TEST_PEER", format!("{}:{port}", host()))
            .env("MC_RDMA_TEST_PEER_LEN", len.to_string());
        let mut proc = Proc::spawn(cmd);
        // The child's harness may print "test rdma_peer_process ... " first,
        // without a newline: the marker can come mid-line.
        let line = proc.line_where(Duration::from_secs(60), "PEER_READY", |l| {
            l.contains("PEER_READY ")
        });
        let rest = &line[line.find("PEER_READY ").unwrap() + "PEER_READY ".len()..];
        let (segment, addr) = rest.split_once(' ').unwrap();
        Peer {
            _proc: proc,
            segment: segment.into(),
            addr: addr.trim().parse().unwrap(),
        }
    }
}

/// Body of the peer process; a no-op in normal runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the rdma tests"]
async fn rdma_peer_process() {
    let Ok(hostname) = std::env::var("MC_RDMA_TEST_PEER") else {
        return;
    };
    let len: usize = std::env::var("MC_RDMA_TEST_PEER_LEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20);
    let e = TransferEngine::start(config("P2PHANDSHAKE", &hostname))
        .await
        .unwrap();
    let buf = e.allocate_managed_buffer(len).await.unwrap();
    println!("PEER_READY {} {}", e.segment_name(), buf.addr());
    // Serve until killed, or until the done file appears (two-node runs).
    let done = std::env::var("MC_RDMA_TEST_DONE_FILE").ok();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if done
            .as_ref()
            .is_some_and(|f| std::path::Path::new(f).exists())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(buf);
    e.shutdown().await;
}

fn free_port() -> u16 {
    mooncake_testkit::net::free_port_on(&host()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_killed_mid_batch_then_restarted() {
    if !have_device() {
        return;
    }
    let port = free_port();
    let mut cfg = config("P2PHANDSHAKE", &host());
    cfg.transfer_timeout = Duration::from_secs(8);
    cfg.slice_size = 256 << 10;
    let a = TransferEngine::start(cfg.clone()).await.unwrap();
    let len = 64 << 20;
    let la = a.allocate_managed_buffer(len).await.unwrap();
    fill(&la, 5);
    let peer = Peer::spawn(port, len);
    let target = a.open_segment(&peer.segment).await.unwrap();
    // Warm up the endpoint, then a long batch (64 × 1 MiB, seconds on Soft-RoCE).
    a.transfer(&[req(Opcode::Write, la.addr(), &target, peer.addr, 4096)])
        .await
        .unwrap();
    let batch = a.allocate_batch(64).unwrap();
    let reqs: Vec<_> = (0..64)
        .map(|i| {
            req(
                Opcode::Write,
                la.addr() + (i << 20),
                &target,
                peer.addr + (i << 20) as u64,
                1 << 20,
            )
        })
        .collect();
    let started = Instant::now();
    a.submit(batch, &reqs).unwrap();
    // Kill mid-batch: the batch takes seconds on Soft-RoCE.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(peer);
    let killed_at = started.elapsed();
    let st = tokio::time::timeout(Duration::from_secs(30), a.wait(batch))
        .await
        .expect("batch ends within its timeout")
        .unwrap();
    let failed = st
        .iter()
        .filter(|s| !matches!(s, TransferStatus::Completed))
        .count();
    eprintln!(
        "killed at {killed_at:?}; batch ended at {:?}; {failed} of 64 failed",
        started.elapsed()
    );
    assert!(
        failed > 0,
        "a batch whose peer died mid-way cannot fully succeed"
    );
    assert!(
        started.elapsed() < killed_at + cfg.transfer_timeout + Duration::from_secs(5),
        "the batch ended within its timeout"
    );
    a.free_batch(batch).unwrap();

    // The restarted peer (same segment name, new epoch and buffer) is reachable.
    let peer = Peer::spawn(port, len);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = async {
            let target = a.open_segment(&peer.segment).await?;
            let addr = target.descriptor().buffers[0].addr;
            a.transfer(&[req(Opcode::Write, la.addr(), &target, addr + 3, 100_000)])
                .await?;
            a.transfer(&[req(
                Opcode::Read,
                la.addr() + (8 << 20),
                &target,
                addr + 3,
                100_000,
            )])
            .await
        }
        .await;
        match r {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restarted peer not reachable yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("restarted peer unreachable: {e}"),
        }
    }
    assert_eq!(bytes(&la, 8 << 20, 100_000), bytes(&la, 0, 100_000));
    drop(peer);
    drop(la);
    a.shutdown().await;
}

/// `--nodes 2`: node 0 serves (`rdma_peer_process` on `$RXE_IP:17777`),
/// node 1 runs this. Skips unless `RXE_PEER_IP` is set and this is node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes() {
    let (Ok(peer_ip), Ok("1")) = (
        std::env::var("RXE_PEER_IP"),
        std::env::var("RXE_NODE").as_deref(),
    ) else {
        eprintln!("SKIP: two_nodes runs on node 1 of `rxe-vm/run.sh --nodes 2`");
        return;
    };
    if !have_device() {
        return;
    }
    let a = TransferEngine::start(config("P2PHANDSHAKE", &host()))
        .await
        .unwrap();
    let la = a.allocate_managed_buffer(16 << 20).await.unwrap();
    fill(&la, 6);
    // Tell node 0 to stop when this test ends, passed or not.
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            if let Ok(f) = std::env::var("MC_RDMA_TEST_DONE_FILE") {
                let _ = std::fs::write(f, b"done");
            }
        }
    }
    let _done = Done;
    let name = format!("{peer_ip}:17777");
    // Wait until node 0 serves a buffer (a throwaway engine each try, so the
    // engine under test fetches the final descriptor).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = TransferEngine::start(config("P2PHANDSHAKE", &host()))
            .await
            .unwrap();
        let ready = match probe.open_segment(&name).await {
            Ok(t) => !t.descriptor().buffers.is_empty(),
            Err(e) => {
                eprintln!("waiting for node 0: {e}");
                false
            }
        };
        probe.shutdown().await;
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "node 0 did not serve a buffer");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let target = a.open_segment(&name).await.unwrap();
    let base = target.descriptor().buffers[0].addr;
    for (len, src, dst) in [
        (1usize, 1usize, 7u64),
        (4_000_037, 13, 1_000_001),
        (65_536, 4096, 0),
    ] {
        a.transfer(&[req(
            Opcode::Write,
            la.addr() + src,
            &target,
            base + dst,
            len,
        )])
        .await
        .unwrap();
        a.transfer(&[req(
            Opcode::Read,
            la.addr() + (8 << 20),
            &target,
            base + dst,
            len,
        )])
        .await
        .unwrap();
        assert_eq!(
            bytes(&la, 8 << 20, len),
            bytes(&la, src, len),
            "{len} bytes"
        );
    }
    let reqs: Vec<_> = (0..2000)
        .map(|i| {
            req(
                Opcode::Write,
                la.addr() + i * 1001,
                &target,
                base + (i * 3001) as u64,
                1001,
            )
        })
        .collect();
    a.transfer(&reqs).await.unwrap();
    let reqs: Vec<_> = (0..2000)
        .map(|i| {
            req(
                Opcode::Read,
                la.addr() + (8 << 20) + i * 1001,
                &target,
                base + (i * 3001) as u64,
                1001,
            )
        })
        .collect();
    a.transfer(&reqs).await.unwrap();
    assert_eq!(bytes(&la, 8 << 20, 2000 * 1001), bytes(&la, 0, 2000 * 1001));
    drop(la);
    a.shutdown().await;
}
