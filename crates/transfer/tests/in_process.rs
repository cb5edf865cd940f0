//! One process, embedded metadata: local-segment memcpy, the batch API and
//! its errors, raw registered memory, descriptor refresh through the watch,
//! blocking helpers, transports that are not available, and a poisoned shm
//! descriptor (refused; tcp used instead).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mooncake_transfer::{
    Opcode, Protocol, TransferEngine, TransferEngineConfig, TransferError, TransferStatus,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_segment_is_a_checked_memcpy() {
    let e = engine("embedded", &[Protocol::Tcp], None).await;
    let own = e.open_segment(e.segment_name()).await.unwrap();
    let a = e.allocate_managed_buffer(3 << 20).await.unwrap();
    let b = e.allocate_managed_buffer(3 << 20).await.unwrap();
    let data = random_bytes(5, 3 << 20);
    a.write_at(0, &data);
    let n = (3 << 20) - 9;
    e.transfer(&[req(Opcode::Write, &a, 9, &own, b.addr() as u64 + 1, n)])
        .await
        .unwrap();
    let mut got = vec![0u8; n];
    b.read_at(1, &mut got);
    assert!(got == data[9..9 + n]);
    // Reads the other way; out of range refused.
    a.fill(0, 3 << 20, 0);
    e.transfer(&[req(Opcode::Read, &a, 0, &own, b.addr() as u64 + 1, n)])
        .await
        .unwrap();
    a.read_at(0, &mut got);
    assert!(got == data[9..9 + n]);
    let err = e
        .transfer(&[req(
            Opcode::Write,
            &a,
            0,
            &own,
            b.addr() as u64 + (3 << 20) - 1,
            2,
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::OutOfRange { .. }), "{err:?}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_api_errors_and_statuses() {
    let e = engine("embedded", &[Protocol::Tcp], None).await;
    let peer = engine("embedded", &[Protocol::Tcp], None).await;
    let target = e.open_segment(peer.segment_name()).await.unwrap();
    let remote = peer.allocate_managed_buffer(1 << 20).await.unwrap();
    let local = e.allocate_managed_buffer(1 << 20).await.unwrap();
    let batch = e.allocate_batch(2).unwrap();
    let ok = req(
        Opcode::Write,
        &local,
        0,
        &target,
        remote.addr() as u64,
        1 << 20,
    );
    let empty = req(Opcode::Read, &local, 0, &target, remote.addr() as u64, 0);
    assert!(matches!(
        e.submit(batch, &[ok.clone(), ok.clone(), ok.clone()]),
        Err(TransferError::BatchFull { .. })
    ));
    e.submit(batch, &[ok, empty]).unwrap();
    let st = e.wait(batch).await.unwrap();
    assert_eq!(
        st,
        vec![TransferStatus::Completed, TransferStatus::Completed]
    );
    assert!(matches!(
        e.status(batch, 2),
        Err(TransferError::InvalidIndex { .. })
    ));
    e.free_batch(batch).unwrap();
    assert!(matches!(
        e.status(batch, 0),
        Err(TransferError::UnknownBatch(_))
    ));
    assert!(matches!(
        e.free_batch(batch),
        Err(TransferError::UnknownBatch(_))
    ));
    e.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_registered_memory_and_unregister() {
    let e = engine("embedded", &[Protocol::Tcp], None).await;
    let peer = engine("embedded", &[Protocol::Tcp], None).await;
    let mut memory = vec![0u8; 64 << 10];
    let addr = memory.as_mut_ptr() as usize;
    // SAFETY: `memory` outlives the registration (unregistered below).
    unsafe {
        peer.register_memory(addr, memory.len(), "cpu:0")
            .await
            .unwrap()
    };
    let target = e.open_segment(peer.segment_name()).await.unwrap();
    let local = e.allocate_managed_buffer(64 << 10).await.unwrap();
    local.write_at(0, b"registered by hand");
    e.transfer(&[req(
        Opcode::Write,
        &local,
        0,
        &target,
        addr as u64 + 100,
        18,
    )])
    .await
    .unwrap();
    peer.unregister_memory(addr).await.unwrap();
    assert_eq!(&memory[100..118], b"registered by hand");
    // The watch refreshes our view; either way the server refuses.
    let err = e
        .transfer(&[req(Opcode::Write, &local, 0, &target, addr as u64, 4)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransferError::NotRegistered { .. }),
        "{err:?}"
    );
    assert_eq!(&memory[..4], &[0, 0, 0, 0]);
    assert!(matches!(
        peer.unregister_memory(addr).await,
        Err(TransferError::NotRegistered { .. })
    ));
    e.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_cache_follows_metadata_changes() {
    let e = engine("embedded", &[Protocol::Tcp], None).await;
    let peer = engine("embedded", &[Protocol::Tcp], None).await;
    let target = e.open_segment(peer.segment_name()).await.unwrap();
    assert!(target.descriptor().buffers.is_empty());
    let buf = peer.allocate_managed_buffer(4096).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !target
        .descriptor()
        .buffers
        .iter()
        .any(|b| b.addr == buf.addr() as u64)
    {
        assert!(
            Instant::now() < deadline,
            "watch never delivered the new buffer"
        );
        tokio::task::yield_now().await;
    }
    e.shutdown().await;
    peer.shutdown().await;
}

#[test]
fn blocking_helpers_outside_the_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (e, peer, local, remote) = rt.block_on(async {
        let e = engine("embedded", &[Protocol::Tcp], None).await;
        let peer = engine("embedded", &[Protocol::Tcp], None).await;
        let local = e.allocate_managed_buffer(8192).await.unwrap();
        let remote = peer.allocate_managed_buffer(8192).await.unwrap();
        (e, peer, local, remote)
    });
    local.write_at(0, b"sync!");
    e.transfer_sync_write(
        peer.segment_name(),
        local.addr(),
        remote.addr() as u64 + 10,
        5,
    )
    .unwrap();
    let mut got = [0u8; 5];
    remote.read_at(10, &mut got);
    assert_eq!(&got, b"sync!");
    e.transfer_sync_read(
        peer.segment_name(),
        local.addr() + 100,
        remote.addr() as u64 + 10,
        5,
    )
    .unwrap();
    local.read_at(100, &mut got);
    assert_eq!(&got, b"sync!");
    // Inside the runtime the blocking helpers refuse instead of deadlocking.
    let inside = rt.block_on(async {
        e.transfer_sync_write(peer.segment_name(), local.addr(), remote.addr() as u64, 1)
    });
    assert!(matches!(inside, Err(TransferError::InvalidConfig(_))));
    rt.block_on(async {
        e.shutdown().await;
        peer.shutdown().await;
    });
}

#[tokio::test]
async fn unavailable_transports_and_bad_config() {
    let rdma = TransferEngine::start(TransferEngineConfig {
        protocols: vec![Protocol::Rdma],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(
        rdma,
        TransferError::TransportUnavailable {
            protocol: Protocol::Rdma,
            ..
        }
    ));
    // "rdma,tcp": tcp carries the traffic when rdma is unavailable (as just seen).
    let fallback = TransferEngine::start(TransferEngineConfig {
        protocols: vec![Protocol::Rdma, Protocol::Tcp],
        ..Default::default()
    })
    .await
    .expect("rdma,tcp falls back to tcp");
    assert!(fallback.transport(Protocol::Rdma).is_none());
    assert!(fallback.transport(Protocol::Tcp).is_some());
    fallback.shutdown().await;
    let bad = TransferEngine::start(TransferEngineConfig {
        slice_size: 0,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(bad, TransferError::InvalidConfig(_)));
    let e = engine("embedded", &[Protocol::Tcp], None).await;
    assert!(matches!(
        e.open_segment("127.0.0.1:1").await,
        Err(TransferError::UnknownSegment(_))
    ));
    e.shutdown().await;
}

/// A loopback TCP proxy whose live connections can be cut at will.
struct CuttingProxy {
    port: u16,
    conns: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    async fn start(upstream: u16) -> CuttingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let list = Arc::clone(&conns);
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut up) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                list.lock().push(task);
            }
        });
        CuttingProxy {
            port,
            conns,
            accept,
        }
    }

    /// Close every proxied connection (both sides see a reset/EOF).
    fn cut(&self) {
        for t in self.conns.lock().drain(..) {
            t.abort();
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_pooled_connections_are_retried_on_fresh_ones() {
    let e = engine("embedded", &[Protocol::Tcp], None).await;
    let peer = engine("embedded", &[Protocol::Tcp], None).await;
    let remote = peer.allocate_managed_buffer(4 << 20).await.unwrap();
    let proxy = CuttingProxy::start(peer.rpc_port()).await;
    // Publish the peer under another name that routes through the proxy.
    let mut desc = peer.local_descriptor();
    desc.name = format!("via-proxy-{}", proxy.port);
    desc.rpc_port = proxy.port;
    desc.host_id.clear();
    e.metadata()
        .put(&mooncake_metadata::segment_key(&desc.name), &desc.to_json())
        .await
        .unwrap();
    let target = e.open_segment(&desc.name).await.unwrap();
    let local = e.allocate_managed_buffer(4 << 20).await.unwrap();
    let data = random_bytes(9, 4 << 20);
    local.write_at(0, &data);
    let write = req(
        Opcode::Write,
        &local,
        0,
        &target,
        remote.addr() as u64,
        4 << 20,
    );
    e.transfer(std::slice::from_ref(&write)).await.unwrap();
    // Every pooled connection is now dead; the next transfer must notice,
    // drop them and succeed on fresh connections.
    proxy.cut();
    remote.fill(0, 4 << 20, 0);
    e.transfer(&[write])
        .await
        .expect("retried on fresh connections");
    let mut got = vec![0u8; 4 << 20];
    remote.read_at(0, &mut got);
    assert!(got == data);
    e.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_shm_descriptor_is_refused_and_tcp_used() {
    use std::os::fd::AsRawFd;
    let e = engine("embedded", &[Protocol::Shm, Protocol::Tcp], None).await;
    let peer = engine("embedded", &[Protocol::Shm, Protocol::Tcp], None).await;
    const LEN: usize = 1 << 20;
    let remote = peer.allocate_managed_buffer(LEN).await.unwrap();
    // An unrelated file this process holds read-only, as large as the buffer
    // (the old shm transport opened it read-write through /proc and wrote).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("victim");
    std::fs::write(&path, vec![0x5a; LEN]).unwrap();
    let victim = std::fs::File::open(&path).unwrap();
    // The peer's descriptor with its buffer's shm info pointing at the file.
    let mut desc = peer.local_descriptor();
    desc.name = format!("poisoned-{}", peer.rpc_port());
    let shm = desc.buffers[0]
        .shm
        .as_mut()
        .expect("managed buffers publish shm");
    shm.fd = victim.as_raw_fd();
    e.metadata()
        .put(&mooncake_metadata::segment_key(&desc.name), &desc.to_json())
        .await
        .unwrap();
    let target = e.open_segment(&desc.name).await.unwrap();
    let local = e.allocate_managed_buffer(LEN).await.unwrap();
    let data = random_bytes(12, LEN);
    local.write_at(0, &data);
    e.transfer(&[req(
        Opcode::Write,
        &local,
        0,
        &target,
        remote.addr() as u64,
        LEN,
    )])
    .await
    .expect("falls back to tcp");
    // The write reached the real buffer (over tcp) and not the file.
    let mut got = vec![0u8; LEN];
    remote.read_at(0, &mut got);
    assert!(got == data);
    assert!(std::fs::read(&path).unwrap() == vec![0x5a; LEN]);
    e.shutdown().await;
    peer.shutdown().await;
}
