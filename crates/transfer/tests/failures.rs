//! Dead and restarted peers: a target SIGKILLed mid-batch fails the batch
//! within the timeout instead of hanging; a target restarted under the same
//! segment name is reachable again (P2P handshake and HTTP metadata).

mod common;

use std::time::{Duration, Instant};

use common::*;
use mooncake_metadata::http::server::MetadataServer;
use mooncake_transfer::{FailureReason, Opcode, Protocol, TransferError, TransferStatus};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_killed_mid_batch_fails_within_timeout() {
    let mut child = SegmentProc::p2p("256MiB", &["--protocol", "tcp"]);
    let e = engine("P2PHANDSHAKE", &[Protocol::Tcp], None).await;
    let timeout = e.config().transfer_timeout;
    let target = e.open_segment(&child.ready.segment).await.unwrap();
    let base = child.ready.buffer_addr;
    let chunk = 32 * MIB;
    let src = e.allocate_managed_buffer(chunk).await.unwrap();
    // 64 x 32 MiB = 2 GiB: far more than can finish before the kill.
    let writes: Vec<_> = (0..64)
        .map(|i| {
            req(
                Opcode::Write,
                &src,
                0,
                &target,
                base + ((i % 8) * chunk) as u64,
                chunk,
            )
        })
        .collect();
    let batch = e.allocate_batch(writes.len()).unwrap();
    e.submit(batch, &writes).unwrap();
    // Kill once the batch demonstrably runs.
    let started = Instant::now();
    while !e
        .batch_status(batch)
        .unwrap()
        .contains(&TransferStatus::Completed)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "batch made no progress"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill9();
    let killed = Instant::now();
    let statuses = tokio::time::timeout(timeout + Duration::from_secs(5), e.wait(batch))
        .await
        .expect("batch hung after the target died")
        .unwrap();
    assert!(
        killed.elapsed() < timeout,
        "failure took {:?}",
        killed.elapsed()
    );
    assert!(
        statuses.iter().all(TransferStatus::is_final),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| matches!(s, TransferStatus::Failed(FailureReason::PeerUnreachable(_)))),
        "{statuses:?}"
    );
    e.free_batch(batch).unwrap();
    e.shutdown().await;
}

/// Write and read back a marker through `target`.
async fn exchange(
    e: &mooncake_transfer::TransferEngine,
    target: &mooncake_transfer::SegmentHandle,
    addr: u64,
    seed: u64,
) {
    let data = random_bytes(seed, 3 * MIB + 5);
    let src = e.allocate_managed_buffer(data.len()).await.unwrap();
    src.write_at(0, &data);
    e.transfer(&[req(Opcode::Write, &src, 0, target, addr, data.len())])
        .await
        .expect("write");
    assert!(read_back(e, target, addr, data.len()).await == data);
}

async fn restart_reachable(metadata: &str, protocols: &[Protocol]) {
    let port = mooncake_testkit::free_port().unwrap();
    let host = format!("127.0.0.1:{port}");
    let args = [
        "--local-hostname",
        host.as_str(),
        "--metadata",
        metadata,
        "--size",
        "8MiB",
    ];
    let mut first = SegmentProc::spawn(&args);
    assert_eq!(first.ready.segment, host);
    let e = engine(metadata, protocols, None).await;
    let target = e.open_segment(&host).await.unwrap();
    exchange(&e, &target, first.ready.buffer_addr + 1, 1).await;

    first.kill9();
    let src = e.allocate_managed_buffer(4096).await.unwrap();
    let err = e
        .transfer(&[req(
            Opcode::Write,
            &src,
            0,
            &target,
            first.ready.buffer_addr,
            4096,
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Failed(FailureReason::PeerUnreachable(_))
        ),
        "{err:?}"
    );

    let second = SegmentProc::spawn(&args);
    assert_eq!(second.ready.segment, host);
    // Same handle, new process, new buffer address.
    exchange(&e, &target, second.ready.buffer_addr + 7, 2).await;
    // A freshly opened handle works too.
    let again = e.open_segment(&host).await.unwrap();
    exchange(&e, &again, second.ready.buffer_addr, 3).await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_target_reachable_again_p2p() {
    restart_reachable("P2PHANDSHAKE", &[Protocol::Tcp, Protocol::Shm]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_target_reachable_again_http_metadata() {
    let server = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    restart_reachable(&server.url(), &[Protocol::Tcp]).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_metadata_shm_and_unknown_segments() {
    let server = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    let url = server.url();
    let child = SegmentProc::spawn(&[
        "--local-hostname",
        "127.0.0.1:0",
        "--metadata",
        &url,
        "--size",
        "4MiB",
    ]);
    let e = engine(&url, &[Protocol::Shm, Protocol::Tcp], None).await;
    let target = e.open_segment(&child.ready.segment).await.unwrap();
    exchange(&e, &target, child.ready.buffer_addr + 3, 4).await;
    let err = e.open_segment("127.0.0.1:1").await.unwrap_err();
    assert!(matches!(err, TransferError::UnknownSegment(_)), "{err:?}");
    e.shutdown().await;
    server.shutdown().await.unwrap();
}
