//! Device memory through the engine on machines without a GPU: the host
//! stand-in copy engine (a test double of the copy engine only; its "device
//! memory" is host memory declared `cuda:0`) drives the same staging, shm and
//! local code paths as CUDA does. This proves the plumbing — chunking,
//! double buffering, routing, mixed batches, byte-for-byte results — not the
//! GPU; `tests/gpu.rs` and `scripts/gpu-check.sh` do that on a GPU.

mod common;

use common::*;
use mooncake_transfer::cuda::{self, staging};
use mooncake_transfer::{Opcode, Protocol, TransferEngine, TransferRequest};

fn standin() {
    assert!(
        cuda::install_host_standin(),
        "another copy engine was chosen first"
    );
}

/// A "device" buffer (host memory the stand-in treats as cuda:0).
struct Dev(Vec<u8>);

impl Dev {
    fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

async fn register(e: &TransferEngine, d: &Dev, location: &str) {
    // SAFETY: the Vec lives until the test unregisters it (end of test).
    unsafe { e.register_memory(d.addr(), d.0.len(), location).await }.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_pipeline_chunks_and_double_buffers() {
    standin();
    let c = staging::CHUNK;
    for (i, len) in [1, c - 1, c, c + 1, 3 * c + 17].into_iter().enumerate() {
        let src = random_bytes(i as u64, len);
        let dst = vec![0u8; len];
        let (mut a, mut b) = tokio::io::duplex(64 << 10);
        let (s, d) = (src.as_ptr() as usize, dst.as_ptr() as usize);
        let send = tokio::spawn(async move {
            staging::device_to_writer(&mut a, s, len, 0).await.unwrap();
        });
        staging::reader_to_device(&mut b, d, len, 0).await.unwrap();
        send.await.unwrap();
        assert!(dst == src, "len {len}: bytes differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_memory_over_tcp_shm_and_local() {
    standin();
    let a = engine("embedded", &[Protocol::Tcp], None).await;
    let b = engine("embedded", &[Protocol::Tcp], None).await;
    let len = 3 * staging::CHUNK + 4097;
    let a_dev = Dev(random_bytes(1, len));
    let b_dev = Dev(vec![0u8; len]);
    register(&a, &a_dev, "cuda:0").await;
    register(&b, &b_dev, "cuda:0").await;
    let a_host = a.allocate_managed_buffer(len).await.unwrap();
    let b_host = b.allocate_managed_buffer(len).await.unwrap();
    let host_data = random_bytes(2, len);
    a_host.write_at(0, &host_data);

    // The registration recorded the device; the descriptor publishes it.
    let desc = a.local_descriptor();
    let d = desc
        .buffers
        .iter()
        .find(|x| x.addr == a_dev.addr() as u64)
        .unwrap();
    assert_eq!(d.name, "cuda:0");

    // tcp: device → remote device, and a mixed batch (host → device, device → host).
    let tb = a.open_segment(b.segment_name()).await.unwrap();
    let wr = |opcode, source, target_offset, length| TransferRequest {
        opcode,
        source,
        target: tb.clone(),
        target_offset,
        length,
    };
    a.transfer(&[wr(Opcode::Write, a_dev.addr(), b_dev.addr() as u64, len)])
        .await
        .unwrap();
    assert!(b_dev.0 == a_dev.0, "device → device over tcp");
    let half = len / 2;
    a.transfer(&[
        wr(Opcode::Write, a_host.addr(), b_dev.addr() as u64, half),
        wr(
            Opcode::Write,
            a_dev.addr() + half,
            b_host.addr() as u64 + half as u64,
            len - half,
        ),
    ])
    .await
    .unwrap();
    assert!(b_dev.0[..half] == host_data[..half], "host → device");
    let mut got = vec![0u8; len - half];
    b_host.read_at(half, &mut got);
    assert!(got == a_dev.0[half..], "device → host");
    // Read back into local device memory.
    let back = Dev(vec![0u8; len]);
    register(&a, &back, "cuda:0").await;
    a.transfer(&[wr(Opcode::Read, back.addr(), b_dev.addr() as u64, len)])
        .await
        .unwrap();
    assert!(back.0 == b_dev.0, "device ← remote device");

    // Local segment: device ↔ host through the copy engine.
    let own = a.open_segment(a.segment_name()).await.unwrap();
    a.transfer(&[TransferRequest {
        opcode: Opcode::Write,
        source: a_dev.addr(),
        target: own.clone(),
        target_offset: a_host.addr() as u64,
        length: len,
    }])
    .await
    .unwrap();
    let mut got = vec![0u8; len];
    a_host.read_at(0, &mut got);
    assert!(got == a_dev.0, "local device → host");

    for (e, d) in [(&a, &a_dev), (&a, &back), (&b, &b_dev)] {
        e.unregister_memory(d.addr()).await.unwrap();
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_peer_with_local_device_memory() {
    standin();
    let a = engine("embedded", &[Protocol::Shm, Protocol::Tcp], None).await;
    let b = engine("embedded", &[Protocol::Shm, Protocol::Tcp], None).await;
    let len = 2 << 20;
    let dev = Dev(random_bytes(3, len));
    register(&a, &dev, "cuda:0").await;
    let remote = b.allocate_managed_buffer(len).await.unwrap();
    let tb = a.open_segment(b.segment_name()).await.unwrap();
    a.transfer(&[TransferRequest {
        opcode: Opcode::Write,
        source: dev.addr(),
        target: tb.clone(),
        target_offset: remote.addr() as u64,
        length: len,
    }])
    .await
    .unwrap();
    let mut got = vec![0u8; len];
    remote.read_at(0, &mut got);
    assert!(got == dev.0);
    // A remote device buffer has no memfd and the stand-in no IPC: tcp stages it.
    let rdev = Dev(vec![0u8; len]);
    register(&b, &rdev, "cuda:0").await;
    let tb = a.open_segment(b.segment_name()).await.unwrap();
    a.transfer(&[TransferRequest {
        opcode: Opcode::Write,
        source: dev.addr(),
        target: tb,
        target_offset: rdev.addr() as u64,
        length: len,
    }])
    .await
    .unwrap();
    assert!(rdev.0 == dev.0);
    a.unregister_memory(dev.addr()).await.unwrap();
    b.unregister_memory(rdev.addr()).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}
