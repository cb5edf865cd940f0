//! GPU checks (real CUDA; each test skips with a message where the driver or
//! a device is missing, as on CI). Run on a GPU machine by
//! `scripts/gpu-check.sh`: pointer classification, registration rules, tcp
//! staging device ↔ device with mixed host/device batches, and CUDA IPC
//! between two processes — every result checked byte for byte. Device bytes
//! are only ever moved by the copy engine here: a CPU access to device
//! memory would fault, so passing also shows none happened.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use mooncake_transfer::cuda::{self, CopyEngine, DeviceBuf, PointerKind};
use mooncake_transfer::{Opcode, Protocol, TransferEngine, TransferRequest};

fn gpu() -> Option<&'static dyn CopyEngine> {
    match cuda::engine() {
        Ok(e) if !e.is_standin() => Some(e),
        Ok(_) => None,
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

fn upload(e: &dyn CopyEngine, d: &DeviceBuf, off: usize, data: &[u8]) {
    e.copy(
        d.addr() + off,
        data.as_ptr() as usize,
        data.len(),
        d.device(),
    )
    .unwrap();
}

fn download(e: &dyn CopyEngine, d: &DeviceBuf, off: usize, len: usize) -> Vec<u8> {
    let out = vec![0u8; len];
    e.copy(out.as_ptr() as usize, d.addr() + off, len, d.device())
        .unwrap();
    out
}

async fn register_dev(engine: &TransferEngine, d: &DeviceBuf, declared: &str) {
    // SAFETY: d lives until the test unregisters it.
    unsafe { engine.register_memory(d.addr(), d.len(), declared).await }.unwrap();
}

#[test]
fn classify_and_registration_rules() {
    let Some(e) = gpu() else { return };
    eprintln!("{}", e.describe());
    let dev = e.alloc_device(1 << 20, 0).unwrap();
    let pinned = e.alloc_pinned(1 << 20, 0).unwrap();
    let host = vec![0u8; 1 << 20];
    assert_eq!(e.classify(dev.addr()), PointerKind::Device(0));
    assert_eq!(e.classify(dev.addr() + 4096), PointerKind::Device(0));
    assert_eq!(e.classify(pinned.ptr() as usize), PointerKind::PinnedHost);
    assert_eq!(e.classify(host.as_ptr() as usize), PointerKind::Host);
    // The pointer decides: device memory declared "cpu" is recorded as cuda:0.
    assert_eq!(
        cuda::resolve_location("cpu", dev.addr(), 1 << 20).unwrap(),
        "cuda:0"
    );
    assert_eq!(
        cuda::resolve_location("*", dev.addr(), 4096).unwrap(),
        "cuda:0"
    );
    // Host memory declared as device, or a range past the allocation: refused.
    assert!(cuda::resolve_location("cuda:0", host.as_ptr() as usize, 4096).is_err());
    assert!(cuda::resolve_location("cuda:0", pinned.ptr() as usize, 4096).is_err());
    assert!(cuda::resolve_location("cuda:0", dev.addr(), (1 << 20) + 1).is_err());
    assert_eq!(
        cuda::resolve_location("cpu:0", host.as_ptr() as usize, 4096).unwrap(),
        "cpu:0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_staging_device_to_device_and_mixed_batches() {
    let Some(e) = gpu() else { return };
    let a = engine("embedded", &[Protocol::Tcp], None).await;
    let b = engine("embedded", &[Protocol::Tcp], None).await;
    let len = (64 << 20) + 12345;
    let a_dev = e.alloc_device(len, 0).unwrap();
    let b_dev = e.alloc_device(len, 0).unwrap();
    let back = e.alloc_device(len, 0).unwrap();
    let data = random_bytes(11, len);
    upload(e, &a_dev, 0, &data);
    register_dev(&a, &a_dev, "cpu").await; // the pointer says cuda:0
    register_dev(&a, &back, "cuda:0").await;
    register_dev(&b, &b_dev, "cuda:0").await;
    assert!(a
        .local_descriptor()
        .buffers
        .iter()
        .all(|x| x.name == "cuda:0"));
    let a_host = a.allocate_managed_buffer(len).await.unwrap();
    let b_host = b.allocate_managed_buffer(len).await.unwrap();
    let hdata = random_bytes(12, len);
    a_host.write_at(0, &hdata);
    let q = len / 4;
    // What the batch below reads from the remote host buffer (a range no
    // request of that batch writes).
    b_host.write_at(3 * q, &hdata[3 * q..4 * q]);
    let tb = a.open_segment(b.segment_name()).await.unwrap();
    let r = |opcode, source, target_offset, length| TransferRequest {
        opcode,
        source,
        target: tb.clone(),
        target_offset,
        length,
    };
    let t0 = Instant::now();
    a.transfer(&[r(Opcode::Write, a_dev.addr(), b_dev.addr() as u64, len)])
        .await
        .unwrap();
    eprintln!(
        "tcp staging: {len} bytes device → remote device in {:?}",
        t0.elapsed()
    );
    assert!(
        download(e, &b_dev, 0, len) == data,
        "device → device over tcp"
    );
    a.transfer(&[r(Opcode::Read, back.addr(), b_dev.addr() as u64, len)])
        .await
        .unwrap();
    assert!(
        download(e, &back, 0, len) == data,
        "device ← remote device over tcp"
    );
    // One batch mixing host and device on both ends (disjoint ranges).
    a.transfer(&[
        r(Opcode::Write, a_host.addr(), b_dev.addr() as u64, q),
        r(
            Opcode::Write,
            a_dev.addr() + q,
            b_host.addr() as u64 + q as u64,
            q,
        ),
        r(
            Opcode::Read,
            a_host.addr() + 2 * q,
            b_dev.addr() as u64 + 2 * q as u64,
            q,
        ),
        r(
            Opcode::Read,
            back.addr() + 3 * q,
            b_host.addr() as u64 + 3 * q as u64,
            q,
        ),
    ])
    .await
    .unwrap();
    assert!(
        download(e, &b_dev, 0, q) == hdata[..q],
        "host → remote device"
    );
    let mut got = vec![0u8; q];
    b_host.read_at(q, &mut got);
    assert!(got == data[q..2 * q], "device → remote host");
    a_host.read_at(2 * q, &mut got);
    assert!(got == data[2 * q..3 * q], "host ← remote device");
    assert!(
        download(e, &back, 3 * q, q) == hdata[3 * q..4 * q],
        "device ← remote host"
    );
    // Own segment: device ↔ device and device ↔ host through the copy engine.
    let own = a.open_segment(a.segment_name()).await.unwrap();
    // (The batch above rewrote part of a_host: compare with what it holds now.)
    let mut now = vec![0u8; len];
    a_host.read_at(0, &mut now);
    a.transfer(&[TransferRequest {
        opcode: Opcode::Write,
        source: a_host.addr(),
        target: own,
        target_offset: back.addr() as u64,
        length: len,
    }])
    .await
    .unwrap();
    assert!(download(e, &back, 0, len) == now, "local host → device");
    for (eng, d) in [(&a, &a_dev), (&a, &back), (&b, &b_dev)] {
        eng.unregister_memory(d.addr()).await.unwrap();
    }
    a.shutdown().await;
    b.shutdown().await;
}

const CHILD_ENV: &str = "MC_GPU_IPC_CHILD";
const IPC_LEN: usize = (32 << 20) + 777;

/// The other process of `cuda_ipc_between_processes` (does nothing unless
/// started by it): serves one device buffer until its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_child_role() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let e = gpu().expect("child needs CUDA");
    let eng = engine("P2PHANDSHAKE", &[Protocol::Shm, Protocol::Tcp], None).await;
    let dev = e.alloc_device(IPC_LEN, 0).unwrap();
    upload(e, &dev, 0, &random_bytes(21, IPC_LEN));
    register_dev(&eng, &dev, "cuda:0").await;
    println!("READY {} {}", eng.segment_name(), dev.addr());
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .unwrap();
    // Report what the parent wrote, for it to check.
    let got = download(e, &dev, 0, IPC_LEN);
    println!("CHILD_SUM {}", got.iter().map(|&x| x as u64).sum::<u64>());
    eng.unregister_memory(dev.addr()).await.unwrap();
    eng.shutdown().await;
}

/// The child's stdout from `what` on, in the first line containing it (the
/// child's harness prints "test ipc_child_role ... " without a newline, so a
/// marker may come mid-line).
fn marker(child: &mut mooncake_testkit::Proc, what: &str) -> String {
    let line = child.line_where(Duration::from_secs(60), what, |l| l.contains(what));
    line[line.find(what).unwrap()..].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_ipc_between_processes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let Some(e) = gpu() else { return };
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "ipc_child_role",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    let mut child = mooncake_testkit::Proc::spawn_with_stdin(cmd);
    let ready = marker(&mut child, "READY ");
    let mut parts = ready.split_whitespace().skip(1);
    let segment = parts.next().unwrap().to_string();
    let remote: u64 = parts.next().unwrap().parse().unwrap();

    // Only shm enabled here: the transfer must go through CUDA IPC (no tcp).
    let eng = engine("P2PHANDSHAKE", &[Protocol::Shm], None).await;
    let local = e.alloc_device(IPC_LEN, 0).unwrap();
    register_dev(&eng, &local, "cuda:0").await;
    let peer = eng.open_segment(&segment).await.unwrap();
    let ext = &peer.descriptor().transports["shm"]["cuda_ipc"];
    assert!(ext.as_array().is_some_and(|a| a.len() == 1), "{ext}");
    let r = |opcode| TransferRequest {
        opcode,
        source: local.addr(),
        target: peer.clone(),
        target_offset: remote,
        length: IPC_LEN,
    };
    eng.transfer(&[r(Opcode::Read)]).await.unwrap();
    assert!(
        download(e, &local, 0, IPC_LEN) == random_bytes(21, IPC_LEN),
        "read over CUDA IPC"
    );
    let mine = random_bytes(22, IPC_LEN);
    upload(e, &local, 0, &mine);
    let t0 = Instant::now();
    eng.transfer(&[r(Opcode::Write)]).await.unwrap();
    eprintln!("CUDA IPC: {IPC_LEN} bytes written in {:?}", t0.elapsed());
    drop(child.stdin());
    let sum = marker(&mut child, "CHILD_SUM ");
    let want: u64 = mine.iter().map(|&x| x as u64).sum();
    assert_eq!(sum, format!("CHILD_SUM {want}"), "the child saw our bytes");
    eng.unregister_memory(local.addr()).await.unwrap();
    eng.shutdown().await;
}
