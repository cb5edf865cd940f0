//! Many clients putting, replacing, removing and reading the same keys at once:
//! no get ever returns bytes of a different or half-written object. Values
//! carry key + version + length + checksum, and each version has its own
//! length, so torn or foreign reads cannot pass the check.

mod cluster_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cluster_common::Clients;

use mooncake_store::{ErrorCode, ReplicateConfig};
use mooncake_testkit::{check_tagged, tagged_value, Cluster, MasterOpts};
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_see_only_whole_objects() {
    let cluster = Cluster::start(3, 64 << 20, MasterOpts::default());
    let clients = [
        cluster.client().await,
        cluster.client().await,
        cluster.client().await,
    ];
    let keys: Arc<Vec<String>> = Arc::new((0..6).map(|i| format!("hot-{i}")).collect());
    // Highest version ever written per key: a get must never see a higher one.
    let versions: Arc<Vec<AtomicU64>> =
        Arc::new((0..keys.len()).map(|_| AtomicU64::new(0)).collect());
    let next_version = Arc::new(AtomicU64::new(1));
    let reads_ok = Arc::new(AtomicU64::new(0));

    let mut tasks = Vec::new();
    for t in 0..12u64 {
        let client = clients[t as usize % clients.len()].clone();
        let keys = Arc::clone(&keys);
        let versions = Arc::clone(&versions);
        let next_version = Arc::clone(&next_version);
        let reads_ok = Arc::clone(&reads_ok);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t);
            for _ in 0..150 {
                let ki = rng.gen_range(0..keys.len());
                let key = &keys[ki];
                match rng.gen_range(0..10) {
                    0..=2 => {
                        let v = next_version.fetch_add(1, Ordering::Relaxed);
                        versions[ki].fetch_max(v, Ordering::SeqCst);
                        // Length depends on the version: 64 B .. ~1.5 MiB.
                        let len = 64 + (v as usize * 7919) % (3 << 19);
                        let cfg = ReplicateConfig {
                            replica_num: 1 + (v % 3) as u32,
                            ..ReplicateConfig::default()
                        };
                        let value = tagged_value(key, v, len);
                        let r = if v.is_multiple_of(2) {
                            client.upsert(key, &value, &cfg).await
                        } else {
                            client.put(key, &value, &cfg).await
                        };
                        if let Err(e) = r {
                            assert!(
                                matches!(
                                    e.master_code(),
                                    Some(
                                        ErrorCode::ObjectAlreadyExists | ErrorCode::ObjectHasLease
                                    )
                                ),
                                "put {key}: {e}"
                            );
                        }
                    }
                    3 => {
                        if let Err(e) = client.remove(key, false).await {
                            assert!(
                                matches!(
                                    e.master_code(),
                                    Some(
                                        ErrorCode::ObjectNotFound
                                            | ErrorCode::ObjectHasLease
                                            | ErrorCode::ReplicaNotReady
                                    )
                                ),
                                "remove {key}: {e}"
                            );
                        }
                    }
                    _ => match client.get(key).await {
                        Ok(v) => {
                            let ver = check_tagged(key, &v)
                                .unwrap_or_else(|why| panic!("get {key}: {why}"));
                            assert!(
                                ver <= versions[ki].load(Ordering::SeqCst),
                                "version from the future"
                            );
                            reads_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => assert!(e.is_not_found(), "get {key}: {e}"),
                    },
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        reads_ok.load(Ordering::Relaxed) > 50,
        "enough successful reads to mean something"
    );
    for c in &clients {
        c.close().await.unwrap();
    }
}
