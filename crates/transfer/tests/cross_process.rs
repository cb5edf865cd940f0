//! Two processes: this test process (initiator engine) and `mooncake segment`
//! children, transferring both ways over tcp and shm; contents verified byte
//! for byte. Descriptors come from the peer itself (P2P handshake: no
//! metadata server) unless a test says otherwise.

mod common;

use common::*;
use mooncake_transfer::{Opcode, Protocol, TransferStatus};

const MIB: usize = 1 << 20;

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} (got {}, want {})",
            got[i], want[i]
        );
    }
}

/// (local offset, remote offset, length): odd sizes, unaligned offsets,
/// zero length, multi-slice; non-overlapping on both sides.
const LAYOUT: &[(usize, usize, usize)] = &[
    (0, 0, 0),
    (1, 3, 1),
    (17, 1001, 4095),
    (8192 + 5, 10_000, 65_537),
    (100_000, 300_001, 3 * MIB + 17),
    (5 * MIB + 3, 4 * MIB + 11, 2 * MIB - 7),
];

async fn round_trip(child_protocols: &str, initiator: &[Protocol], seed: u64) {
    let child = SegmentProc::p2p("16MiB", &["--protocol", child_protocols]);
    let e = engine("P2PHANDSHAKE", initiator, None).await;
    let target = e
        .open_segment(&child.ready.segment)
        .await
        .expect("open segment");
    let base = child.ready.buffer_addr;
    let src = e.allocate_managed_buffer(8 * MIB).await.unwrap();
    let dst = e.allocate_managed_buffer(8 * MIB).await.unwrap();
    let data = random_bytes(seed, 8 * MIB);
    src.write_at(0, &data);

    let writes: Vec<_> = LAYOUT
        .iter()
        .map(|&(l, r, n)| req(Opcode::Write, &src, l, &target, base + r as u64, n))
        .collect();
    let batch = e.allocate_batch(writes.len()).unwrap();
    e.submit(batch, &writes).unwrap();
    let statuses = e.wait(batch).await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == TransferStatus::Completed),
        "{statuses:?}"
    );
    e.free_batch(batch).unwrap();

    let reads: Vec<_> = LAYOUT
        .iter()
        .map(|&(l, r, n)| req(Opcode::Read, &dst, l, &target, base + r as u64, n))
        .collect();
    e.transfer(&reads).await.expect("reads complete");
    for &(l, _, n) in LAYOUT {
        let mut got = vec![0u8; n];
        dst.read_at(l, &mut got);
        assert_same(&got, &data[l..l + n], &format!("range at local {l}"));
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_both_ways_byte_for_byte() {
    round_trip("tcp,shm", &[Protocol::Tcp], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_both_ways_byte_for_byte() {
    // The child serves no tcp data ops, so success proves the shm path.
    round_trip("shm", &[Protocol::Shm], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshareable_target_falls_back_to_tcp() {
    // Same host, shm enabled here, but the child does not offer shm.
    round_trip("tcp", &[Protocol::Tcp, Protocol::Shm], 3).await;
}

async fn big_batch(child_protocols: &str, initiator: &[Protocol]) {
    let child = SegmentProc::p2p("256MiB", &["--protocol", child_protocols]);
    let e = engine("P2PHANDSHAKE", initiator, None).await;
    let target = e.open_segment(&child.ready.segment).await.unwrap();
    let base = child.ready.buffer_addr;
    let chunk = 64 * MIB;
    let src = e.allocate_managed_buffer(chunk).await.unwrap();
    let data = random_bytes(7, chunk);
    src.write_at(0, &data);
    // 4 x 64 MiB = 256 MiB in one batch.
    let writes: Vec<_> = (0..4)
        .map(|i| {
            req(
                Opcode::Write,
                &src,
                0,
                &target,
                base + (i * chunk) as u64,
                chunk,
            )
        })
        .collect();
    e.transfer(&writes).await.expect("256 MiB batch");
    let dst = e.allocate_managed_buffer(chunk).await.unwrap();
    for i in 0..4 {
        dst.fill(0, chunk, 0);
        e.transfer(&[req(
            Opcode::Read,
            &dst,
            0,
            &target,
            base + (i * chunk) as u64,
            chunk,
        )])
        .await
        .unwrap();
        let mut got = vec![0u8; chunk];
        dst.read_at(0, &mut got);
        assert_same(&got, &data, &format!("chunk {i}"));
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_batch_of_256_mib() {
    big_batch("tcp", &[Protocol::Tcp]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_batch_of_256_mib() {
    big_batch("shm", &[Protocol::Shm]).await;
}
