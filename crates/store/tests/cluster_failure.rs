//! kill -9 of a storage process: replicated objects stay readable, the master
//! drops the dead node within `client_ttl`, and objects whose only replica died
//! read as "not found" — never stale or corrupt bytes.

mod cluster_common;

use std::time::{Duration, Instant};

use cluster_common::Clients;

use mooncake_store::ReplicateConfig;
use mooncake_testkit::{check_tagged, tagged_value, wait_for_async, Cluster, MasterOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_storage_node() {
    let opts = MasterOpts {
        client_ttl_s: 2,
        ..MasterOpts::default()
    };
    let mut cluster = Cluster::start(3, 64 << 20, opts);
    let client = cluster.client().await;
    let len = 200_000;
    let mut keys = Vec::new();
    for i in 0..30 {
        for (prefix, n) in [("dup", 2u32), ("solo", 1u32)] {
            let key = format!("{prefix}-{i}");
            let cfg = ReplicateConfig {
                replica_num: n,
                ..ReplicateConfig::default()
            };
            client
                .put(&key, &tagged_value(&key, 7, len), &cfg)
                .await
                .unwrap();
            keys.push(key);
        }
    }
    let victim = cluster.nodes[0].segment.clone();
    // Which keys live only on the victim?
    let mut lost = Vec::new();
    let mut survive = Vec::new();
    for k in &keys {
        let reps = client.master().get_replica_list(k).await.unwrap();
        let on_victim = reps
            .iter()
            .filter(|r| r.pieces.iter().any(|p| p.segment == victim))
            .count();
        if on_victim == reps.len() {
            lost.push(k.clone());
        } else {
            survive.push((k.clone(), on_victim > 0));
        }
    }
    assert!(!lost.is_empty(), "some solo objects landed on the victim");
    assert!(
        survive.iter().any(|(_, v)| *v),
        "some replicated objects have a copy on the victim"
    );

    cluster.nodes[0].proc.kill9();
    let killed = Instant::now();

    // Replicated objects stay readable right away (the dead copy is skipped).
    for (k, _) in &survive {
        let v = client.get(k).await.unwrap_or_else(|e| panic!("{k}: {e}"));
        assert_eq!(check_tagged(k, &v), Ok(7), "{k}");
    }
    // Until the master notices, reads of lost objects fail; they never return bytes
    // other than the object's own.
    let ttl = Duration::from_secs(cluster.opts.client_ttl_s);
    wait_for_async(
        "the master to drop the dead node",
        ttl * 3 + Duration::from_secs(2),
        || {
            let client = client.clone();
            let lost = lost.clone();
            let victim = victim.clone();
            async move {
                for k in &lost {
                    if let Ok(v) = client.get(k).await {
                        assert_eq!(check_tagged(k, &v), Ok(7), "a get returned foreign bytes");
                    }
                }
                match client.master().get_replica_list(&lost[0]).await {
                    Err(mooncake_store::ErrorCode::ObjectNotFound) => Some(()),
                    Ok(reps) => {
                        assert!(reps
                            .iter()
                            .all(|r| r.pieces.iter().any(|p| p.segment == victim)));
                        None
                    }
                    Err(_) => None,
                }
            }
        },
    )
    .await;
    let dropped_after = killed.elapsed();
    assert!(
        dropped_after <= ttl + Duration::from_secs(2),
        "dead node dropped after {dropped_after:?}, client_ttl {ttl:?}"
    );
    for k in &lost {
        let e = client.get(k).await.unwrap_err();
        assert!(e.is_not_found(), "{k}: {e}");
        assert!(!client.is_exist(k).await.unwrap());
    }
    for (k, _) in &survive {
        let v = client.get(k).await.unwrap();
        assert_eq!(check_tagged(k, &v), Ok(7));
        for r in client.master().get_replica_list(k).await.unwrap() {
            assert!(
                r.pieces.iter().all(|p| p.segment != victim),
                "dead replica still listed"
            );
        }
    }
    // The pool still takes new objects on the surviving nodes.
    let v = tagged_value("after", 1, len);
    client
        .put("after", &v, &ReplicateConfig::default())
        .await
        .unwrap();
    assert_eq!(
        check_tagged("after", &client.get("after").await.unwrap()),
        Ok(1)
    );
    client.close().await.unwrap();
}
