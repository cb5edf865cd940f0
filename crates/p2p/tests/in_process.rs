//! Several P2P nodes in one process (one Transfer Engine each, talking over
//! real tcp sockets on loopback), with a real etcd for metadata: fan-out,
//! lease expiry and the bad-input errors. The multi-process tests are in
//! `crates/cli/tests/p2p_cli.rs`.

use std::sync::Arc;
use std::time::Duration;

use mooncake_p2p::{P2pConfig, P2pError, P2pStore, Region};
use mooncake_testkit::EtcdServer;
use mooncake_transfer::{ManagedBuffer, Protocol, TransferEngine, TransferEngineConfig};

fn config() -> P2pConfig {
    P2pConfig {
        ttl: Duration::from_secs(2),
        refresh: Duration::from_millis(50),
        stall_timeout: Duration::from_secs(3),
        ban: Duration::from_millis(300),
        ..Default::default()
    }
}

async fn node(meta: &str) -> (P2pStore, Arc<TransferEngine>) {
    let engine = TransferEngine::start(TransferEngineConfig {
        metadata_server: meta.into(),
        // tcp only: every byte crosses a socket, as between hosts.
        protocols: vec![Protocol::Tcp],
        ..Default::default()
    })
    .await
    .expect("engine");
    let store = P2pStore::start(Arc::clone(&engine), config())
        .await
        .expect("p2p node");
    (store, engine)
}

fn region(b: &ManagedBuffer) -> Region {
    Region {
        addr: b.addr() as u64,
        len: b.len() as u64,
    }
}

use mooncake_testkit::pattern;

fn contents(b: &ManagedBuffer) -> Vec<u8> {
    let mut v = vec![0; b.len()];
    b.read_at(0, &mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_verify_and_errors() {
    let etcd = EtcdServer::start().expect("etcd");
    let meta = etcd.conn_string();
    let (seed, seed_engine) = node(&meta).await;

    // Two parts of different sizes; shards never cross them.
    let a = seed_engine.allocate_managed_buffer(3 << 20).await.unwrap();
    let b = seed_engine.allocate_managed_buffer(1 << 20).await.unwrap();
    let data = pattern(4 << 20, 7);
    a.write_at(0, &data[..3 << 20]);
    b.write_at(0, &data[3 << 20..]);
    let m = seed
        .register("ckpt/model", &[region(&a), region(&b)], 256 << 10)
        .await
        .unwrap();
    assert_eq!(m.shards.len(), 16);
    assert_eq!(m.size, 4 << 20);

    // Duplicate register: refused, nothing changes.
    let err = seed.register("ckpt/model", &[region(&a)], 1 << 20).await;
    assert!(matches!(err, Err(P2pError::AlreadyServing(_))), "{err:?}");
    let (other, other_engine) = node(&meta).await;
    let c = other_engine.allocate_managed_buffer(1 << 20).await.unwrap();
    let err = other.register("ckpt/model", &[region(&c)], 1 << 20).await;
    assert!(
        matches!(err, Err(P2pError::AlreadyRegistered(_))),
        "{err:?}"
    );
    assert_eq!(other.manifest("ckpt/model").await.unwrap().id, m.id);

    // Unknown name; buffers too small; memory not registered.
    let err = other.get_replica("ckpt/nope", &[region(&c)]).await;
    assert!(matches!(err, Err(P2pError::NotFound(_))), "{err:?}");
    let err = other.get_replica("ckpt/model", &[region(&c)]).await;
    assert!(
        matches!(err, Err(P2pError::BuffersTooSmall { need, have, .. }) if need == 4 << 20 && have == 1 << 20),
        "{err:?}"
    );
    let stray = vec![0u8; 4096];
    let err = other
        .get_replica(
            "ckpt/model",
            &[Region {
                addr: stray.as_ptr() as u64,
                len: 4096,
            }],
        )
        .await;
    assert!(
        matches!(err, Err(P2pError::NotRegistered { .. })),
        "{err:?}"
    );
    let err = other.register("", &[region(&c)], 1).await;
    assert!(matches!(err, Err(P2pError::InvalidName(..))), "{err:?}");

    // Three readers, each with its own layout (one buffer; two halves).
    let mut readers = Vec::new();
    for i in 0..3 {
        let (r, e) = node(&meta).await;
        let bufs = if i == 0 {
            vec![e.allocate_managed_buffer(4 << 20).await.unwrap()]
        } else {
            vec![
                e.allocate_managed_buffer(2 << 20).await.unwrap(),
                e.allocate_managed_buffer(2 << 20).await.unwrap(),
            ]
        };
        readers.push((r, e, bufs));
    }
    let reports = futures_join(&readers).await;
    for ((_, _, bufs), rep) in readers.iter().zip(&reports) {
        let got: Vec<u8> = bufs.iter().flat_map(contents).collect();
        assert!(got[..data.len()] == data[..], "reader copy differs");
        assert_eq!(rep.bytes, 4 << 20);
        assert_eq!(rep.sources.values().sum::<u64>(), 4 << 20);
        assert!(rep.corrupt_holders.is_empty());
    }

    // Every reader now serves the object: list shows 4 complete holders.
    let list = other.list("ckpt/").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].complete_holders, 4, "{list:?}");

    // A late reader can finish with the seeder gone (delete_replica).
    seed.delete_replica("ckpt/model").await.unwrap();
    let d = other_engine.allocate_managed_buffer(4 << 20).await.unwrap();
    let rep = other
        .get_replica("ckpt/model", &[region(&d)])
        .await
        .unwrap();
    assert!(!rep.sources.contains_key(seed.node()), "{rep:?}");
    assert!(contents(&d) == data);
    assert!(matches!(
        seed.delete_replica("ckpt/model").await,
        Err(P2pError::NotServing(_))
    ));

    // A reader dropped without cleanup (a crash) vanishes within one TTL.
    let (r0, e0, b0) = readers.remove(0);
    drop(r0);
    drop(b0);
    e0.shutdown().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = other.list("ckpt/model").await.unwrap();
        if l[0].holders == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "holder did not expire: {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Unregister withdraws the object for everyone.
    other.unregister("ckpt/model").await.unwrap();
    assert!(other.list("ckpt/").await.unwrap().is_empty());
    let err = readers[0].0.get_replica("ckpt/model", &[region(&d)]).await;
    assert!(
        matches!(
            err,
            Err(P2pError::AlreadyServing(_)) | Err(P2pError::NotFound(_))
        ),
        "{err:?}"
    );
}

async fn futures_join(
    readers: &[(P2pStore, Arc<TransferEngine>, Vec<ManagedBuffer>)],
) -> Vec<mooncake_p2p::GetReport> {
    let futs = readers.iter().map(|(r, _, bufs)| {
        let regions: Vec<Region> = bufs.iter().map(region).collect();
        async move {
            r.get_replica("ckpt/model", &regions)
                .await
                .expect("get_replica")
        }
    });
    futures::future::join_all(futs).await
}

#[tokio::test]
async fn metadata_down_is_a_clear_error() {
    let port = mooncake_testkit::free_port().unwrap();
    let engine = TransferEngine::start(TransferEngineConfig {
        metadata_server: "embedded".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The engine is fine, but the P2P node points at a dead etcd.
    let err = mooncake_p2p::meta::Meta::connect(
        &format!("etcd://127.0.0.1:{port}"),
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, P2pError::Metadata(_)), "{err:?}");
    let err = P2pStore::start(Arc::clone(&engine), P2pConfig::default()).await;
    assert!(err.is_ok());
    let handshake = TransferEngine::start(TransferEngineConfig {
        metadata_server: "P2PHANDSHAKE".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = P2pStore::start(handshake, P2pConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, P2pError::NoSharedMetadata(_)), "{err:?}");
}

/// Redis has no leases here: records expire by their wall-clock deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_records_of_a_crashed_holder_expire() {
    let redis = mooncake_testkit::RedisServer::start().expect("redis");
    let meta = redis.conn_string();
    let (seed, seed_engine) = node(&meta).await;
    let a = seed_engine.allocate_managed_buffer(1 << 20).await.unwrap();
    a.write_at(0, &pattern(1 << 20, 3));
    seed.register("r/obj", &[region(&a)], 128 << 10)
        .await
        .unwrap();
    let (reader, reader_engine) = node(&meta).await;
    let b = reader_engine
        .allocate_managed_buffer(1 << 20)
        .await
        .unwrap();
    reader.get_replica("r/obj", &[region(&b)]).await.unwrap();
    assert!(contents(&b) == contents(&a));
    assert_eq!(seed.list("r/").await.unwrap()[0].complete_holders, 2);
    // "Crash": no delete_replica, no shutdown; the heartbeat stops.
    drop(reader);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = seed.list("r/obj").await.unwrap();
        if l[0].holders == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{l:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
