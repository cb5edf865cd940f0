//! What an outsider on the network can no longer do to stored data, against a
//! real master and real `mooncake store-node` processes (issue 10):
//! - overwrite a replica in place: the CRC32C recorded at put detects it, the
//!   reader uses another replica, and fails when none is intact;
//! - unmount or replace another node's segment: its owner id (the proof of
//!   ownership) is not on the admin pages, and a guessed one is refused.

mod cluster_common;

use cluster_common::Clients;
use mooncake_store::client::{checksum_failures, Client, ClientError};
use mooncake_store::{Replica, ReplicateConfig};
use mooncake_testkit::{Cluster, MasterOpts};
use mooncake_transfer::{Opcode, TransferRequest};

fn rc(n: u32) -> ReplicateConfig {
    ReplicateConfig {
        replica_num: n,
        ..ReplicateConfig::default()
    }
}

/// Overwrite the first bytes of `replica` in its storage node's segment with
/// `junk`, through the Transfer Engine of `outsider` (what anyone who can
/// reach the segment's port could do).
async fn forge(outsider: &Client, replica: &Replica, junk: &[u8]) {
    let piece = &replica.pieces[0];
    let buf = outsider.allocate_buffer(junk.len()).await.unwrap();
    buf.write_at(0, junk);
    let engine = outsider.engine();
    let target = engine.open_segment(&piece.segment).await.unwrap();
    engine
        .transfer(&[TransferRequest {
            opcode: Opcode::Write,
            source: buf.addr(),
            target,
            target_offset: piece.addr,
            length: junk.len().min(piece.len as usize),
        }])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replica_is_detected_and_another_replica_used() {
    let cluster = Cluster::start(2, 16 << 20, MasterOpts::default());
    let client = cluster.client().await;
    let outsider = cluster.client().await;
    let value: Vec<u8> = (0..64 << 10).map(|i: u32| (i * 31 + 7) as u8).collect();
    client.put("k", &value, &rc(2)).await.unwrap();
    let replicas = client.master().get_replica_list("k").await.unwrap();
    assert_eq!(replicas.len(), 2);
    let crc = crc32c::crc32c(&value);
    assert!(replicas.iter().all(|r| r.crc32c == Some(crc)));

    forge(&outsider, &replicas[0], b"forged bytes, not the value").await;
    let before = checksum_failures();
    // Reads rotate over equally near replicas: two gets read the forged one first once.
    for _ in 0..2 {
        assert_eq!(client.get("k").await.unwrap(), value);
    }
    assert!(
        checksum_failures() > before,
        "the forged replica was counted"
    );

    forge(&outsider, &replicas[1], b"forged as well").await;
    let err = client.get("k").await.unwrap_err();
    assert!(matches!(err, ClientError::ChecksumMismatch { .. }), "{err}");
    assert!(client.batch_get(&["k".to_string()]).await.unwrap()[0].is_err());

    // Opting out per put: no checksum is recorded, and nothing is verified.
    let plain = ReplicateConfig {
        with_checksum: false,
        ..rc(1)
    };
    client.put("plain", &value, &plain).await.unwrap();
    let r = client.master().get_replica_list("plain").await.unwrap();
    assert_eq!(r[0].crc32c, None);
    assert_eq!(client.get("plain").await.unwrap(), value);

    // Batch puts record a checksum per key too.
    let keys = vec!["b1".to_string(), "b2".to_string()];
    let res = client
        .batch_put(&keys, &[&value[..100], &value[..200]], &rc(1))
        .await
        .unwrap();
    assert!(res.iter().all(|r| r.is_ok()));
    let r = client.master().get_replica_list("b2").await.unwrap();
    assert_eq!(r[0].crc32c, Some(crc32c::crc32c(&value[..200])));
    client.close().await.unwrap();
    outsider.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_segment_cannot_be_unmounted_or_replaced() {
    let cluster = Cluster::start(1, 16 << 20, MasterOpts::default());
    let outsider = cluster.client().await;
    let node = cluster.nodes[0].segment.clone();
    let segs = cluster.admin("segments");
    let owner = segs[0]["owner"].as_str().unwrap().to_string();
    assert!(owner.starts_with("client-"), "a label, not the id: {owner}");
    let m = outsider.master();
    let guessed = mooncake_store::protocol::ClientId::random();
    assert!(m.unmount_segment(guessed, &node).await.is_err());
    let fake = mooncake_store::protocol::SegmentDesc {
        name: node.clone(),
        base_addr: 1 << 40,
        size: 1 << 20,
        protocol: "tcp".into(),
        location: "cpu".into(),
    };
    assert_eq!(
        m.mount_segment(guessed, &fake).await,
        Err(mooncake_store::ErrorCode::SegmentAlreadyExists)
    );
    let segs = cluster.admin("segments");
    assert_eq!(
        segs[0]["owner"].as_str().unwrap(),
        owner,
        "still the node's"
    );
    outsider.close().await.unwrap();
}
