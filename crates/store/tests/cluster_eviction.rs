//! Filling the pool: eviction keeps it under the high watermark, leased and
//! soft-pinned objects survive, and a put that cannot fit fails cleanly with
//! nothing half-visible.

mod cluster_common;

use std::time::Duration;

use cluster_common::Clients;

use mooncake_store::{ErrorCode, ReplicateConfig};
use mooncake_testkit::{check_tagged, tagged_value, wait_for_async, Cluster, MasterOpts};

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_spares_leased_and_soft_pinned_objects() {
    let opts = MasterOpts {
        lease_ttl_ms: 60_000,
        allow_evict_soft_pinned: false,
        ..MasterOpts::default()
    };
    let pool = 64 * MIB;
    let cluster = Cluster::start(1, pool as u64, opts);
    let client = cluster.client().await;
    let plain = ReplicateConfig::default();
    let pinned = ReplicateConfig {
        with_soft_pin: true,
        ..ReplicateConfig::default()
    };
    client
        .put("leased", &tagged_value("leased", 1, MIB), &plain)
        .await
        .unwrap();
    client.get("leased").await.unwrap(); // grants a 60 s lease
    client
        .put("pinned", &tagged_value("pinned", 1, MIB), &pinned)
        .await
        .unwrap();

    // Write three pools' worth of objects.
    let mut ok = 0;
    for i in 0..(3 * pool / MIB) {
        let k = format!("fill-{i}");
        match client.put(&k, &tagged_value(&k, 1, MIB), &plain).await {
            Ok(()) => ok += 1,
            Err(e) => assert_eq!(e.master_code(), Some(ErrorCode::NoSpace), "{k}: {e}"),
        }
    }
    assert!(
        ok >= 2 * pool / MIB,
        "eviction made room: only {ok} puts succeeded"
    );

    // Survivors.
    assert_eq!(
        check_tagged("leased", &client.get("leased").await.unwrap()),
        Ok(1)
    );
    assert_eq!(
        check_tagged("pinned", &client.get("pinned").await.unwrap()),
        Ok(1)
    );

    // Under the watermark: eviction runs on the master's ticker, so the pool may
    // overshoot between ticks; it must come back under within a few ticks.
    let keys: Vec<String> = (0..(3 * pool / MIB)).map(|i| format!("fill-{i}")).collect();
    let limit = (pool as f64 * cluster.opts.high_watermark) as usize / MIB + 1;
    let live = wait_for_async(
        "eviction to bring the pool under the watermark",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            let keys = keys.clone();
            async move {
                let live = client
                    .batch_is_exist(&keys)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|e| matches!(e, Ok(true)))
                    .count()
                    + 2;
                (live <= limit).then_some(live)
            }
        },
    )
    .await;
    assert!(live >= pool / MIB / 2, "eviction removed too much: {live}");
    // The most recent object is there and intact.
    let last = keys.last().unwrap();
    assert_eq!(check_tagged(last, &client.get(last).await.unwrap()), Ok(1));

    // An object larger than the pool fails cleanly.
    let e = client
        .put("huge", &vec![7u8; pool + MIB], &plain)
        .await
        .unwrap_err();
    assert_eq!(e.master_code(), Some(ErrorCode::NoSpace), "{e}");
    assert!(!client.is_exist("huge").await.unwrap());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_full_of_pinned_objects_refuses_puts_cleanly() {
    let opts = MasterOpts {
        allow_evict_soft_pinned: false,
        ..MasterOpts::default()
    };
    let pool = 32 * MIB;
    let cluster = Cluster::start(1, pool as u64, opts);
    let client = cluster.client().await;
    let pinned = ReplicateConfig {
        with_soft_pin: true,
        ..ReplicateConfig::default()
    };
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 0..(2 * pool / MIB) {
        let k = format!("pin-{i}");
        match client.put(&k, &tagged_value(&k, 3, MIB), &pinned).await {
            Ok(()) => stored.push(k),
            Err(e) => {
                assert_eq!(e.master_code(), Some(ErrorCode::NoSpace), "{k}: {e}");
                refused = Some(k);
                break;
            }
        }
    }
    let refused = refused.expect("a full pool of pinned objects refuses a put");
    assert!(
        !client.is_exist(&refused).await.unwrap(),
        "refused put is invisible"
    );
    assert!(stored.len() >= pool / MIB / 2);
    for k in &stored {
        assert_eq!(check_tagged(k, &client.get(k).await.unwrap()), Ok(3), "{k}");
    }
    client.close().await.unwrap();
}
