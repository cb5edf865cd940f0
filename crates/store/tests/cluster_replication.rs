//! Multi-process cluster: master + three `mooncake store-node` processes + the
//! test process as client. Replication, striping, zero-copy and batch paths,
//! with contents verified byte for byte.

mod cluster_common;

use std::collections::HashSet;

use cluster_common::Clients;

use mooncake_store::client::Region;
use mooncake_store::{ErrorCode, ReplicateConfig};
use mooncake_testkit::{check_tagged, tagged_value, Cluster, MasterOpts};

fn rc(n: u32) -> ReplicateConfig {
    ReplicateConfig {
        replica_num: n,
        ..ReplicateConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_one_two_three_on_distinct_nodes() {
    let cluster = Cluster::start(3, 64 << 20, MasterOpts::default());
    let client = cluster.client().await;
    let nodes: HashSet<&str> = cluster.nodes.iter().map(|n| n.segment.as_str()).collect();
    for n in 1..=3u32 {
        for (i, len) in [64usize, 4096, 100_000, 3 << 20].into_iter().enumerate() {
            let key = format!("rep{n}-{i}");
            let v = tagged_value(&key, n as u64, len);
            client.put(&key, &v, &rc(n)).await.unwrap();
            let replicas = client.master().get_replica_list(&key).await.unwrap();
            assert_eq!(replicas.len(), n as usize, "{key}");
            // Each replica lies on a different storage node.
            let homes: HashSet<&str> = replicas
                .iter()
                .map(|r| {
                    let segs: HashSet<&str> = r.pieces.iter().map(|p| p.segment.as_str()).collect();
                    assert_eq!(segs.len(), 1, "small object in one segment");
                    *segs.iter().next().unwrap()
                })
                .collect();
            assert_eq!(homes.len(), n as usize, "replicas on distinct nodes");
            assert!(homes.is_subset(&nodes));
            let got = client.get(&key).await.unwrap();
            assert_eq!(got.len(), len);
            assert_eq!(check_tagged(&key, &got), Ok(n as u64));
            assert_eq!(client.get_size(&key).await.unwrap(), len as u64);
            assert!(client.is_exist(&key).await.unwrap());
        }
    }
    // put of an existing key is refused; upsert replaces.
    let v = tagged_value("rep1-0", 9, 64);
    let e = client.put("rep1-0", &v, &rc(1)).await.unwrap_err();
    assert_eq!(e.master_code(), Some(ErrorCode::ObjectAlreadyExists));
    client.upsert("rep1-0", &v, &rc(2)).await.unwrap();
    assert_eq!(
        check_tagged("rep1-0", &client.get("rep1-0").await.unwrap()),
        Ok(9)
    );
    // remove / regex / all
    client.remove("rep1-0", true).await.unwrap();
    assert!(client.get("rep1-0").await.unwrap_err().is_not_found());
    assert_eq!(client.remove_by_regex("^rep2-", true).await.unwrap(), 4);
    assert!(!client.is_exist("rep2-1").await.unwrap());
    assert!(client.remove_all(true).await.unwrap() >= 7);
    assert!(!client.is_exist("rep3-3").await.unwrap());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn striped_object_spans_nodes_and_reads_back() {
    // 3 x 160 MiB segments; a 300 MiB object cannot fit in one.
    let cluster = Cluster::start(3, 160 << 20, MasterOpts::default());
    let client = cluster.client().await;
    let len = 300usize << 20;
    let v: Vec<u8> = (0..len)
        .map(|i| (i as u64).wrapping_mul(2654435761) as u8 ^ (i >> 20) as u8)
        .collect();
    client.put("big", &v, &rc(1)).await.unwrap();
    let replicas = client.master().get_replica_list("big").await.unwrap();
    assert_eq!(replicas.len(), 1);
    let segs: HashSet<&str> = replicas[0]
        .pieces
        .iter()
        .map(|p| p.segment.as_str())
        .collect();
    assert!(segs.len() >= 2, "striped across nodes: {segs:?}");
    assert!(replicas[0].pieces.len() > 1);
    let got = client.get("big").await.unwrap();
    assert_eq!(got.len(), len);
    assert!(got == v, "striped object read back differs");

    // Zero-copy into a registered buffer.
    let buf = client.allocate_buffer(len).await.unwrap();
    let n = client.get_into("big", Region::whole(&buf)).await.unwrap();
    assert_eq!(n, len as u64);
    let mut back = vec![0u8; len];
    buf.read_at(0, &mut back);
    assert!(back == v);
    // A buffer that is too small is refused, not overrun.
    let small = client.allocate_buffer(1 << 20).await.unwrap();
    let e = client
        .get_into("big", Region::whole(&small))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            mooncake_store::client::ClientError::BufferTooSmall { .. }
        ),
        "{e}"
    );
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_copy_and_batch_operations() {
    let cluster = Cluster::start(3, 64 << 20, MasterOpts::default());
    let client = cluster.client().await;
    let n = 16usize;
    let len = 256 << 10;
    let src = client.allocate_buffer(n * len).await.unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("zc{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        src.write_at(i * len, &tagged_value(k, 1, len));
    }
    // put_from one, batch_put_from the rest.
    client
        .put_from(&keys[0], Region::of(&src, 0, len).unwrap(), &rc(2))
        .await
        .unwrap();
    let regions: Vec<Region<'_>> = (1..n)
        .map(|i| Region::of(&src, i * len, len).unwrap())
        .collect();
    let r = client
        .batch_put_from(&keys[1..], &regions, &rc(2))
        .await
        .unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");

    // batch_get_into a second buffer.
    let dst = client.allocate_buffer(n * len).await.unwrap();
    let regions: Vec<Region<'_>> = (0..n)
        .map(|i| Region::of(&dst, i * len, len).unwrap())
        .collect();
    let sizes = client.batch_get_into(&keys, &regions).await.unwrap();
    for (i, s) in sizes.iter().enumerate() {
        assert_eq!(*s.as_ref().unwrap(), len as u64);
        let mut v = vec![0u8; len];
        dst.read_at(i * len, &mut v);
        assert_eq!(check_tagged(&keys[i], &v), Ok(1));
    }

    // batch_put / batch_get on plain memory, with one bad key and one duplicate.
    let mut bkeys: Vec<String> = (0..8).map(|i| format!("b{i}")).collect();
    bkeys.push(String::new());
    bkeys.push(keys[0].clone());
    let vals: Vec<Vec<u8>> = bkeys
        .iter()
        .map(|k| tagged_value(if k.is_empty() { "x" } else { k }, 2, 5000))
        .collect();
    let refs: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
    let r = client.batch_put(&bkeys, &refs, &rc(1)).await.unwrap();
    assert!(r[..8].iter().all(|x| x.is_ok()), "{r:?}");
    assert_eq!(
        r[8].as_ref().unwrap_err().master_code(),
        Some(ErrorCode::InvalidKey)
    );
    assert_eq!(
        r[9].as_ref().unwrap_err().master_code(),
        Some(ErrorCode::ObjectAlreadyExists)
    );
    // The refused duplicate left the original intact.
    assert_eq!(
        check_tagged(&keys[0], &client.get(&keys[0]).await.unwrap()),
        Ok(1)
    );

    let mut gkeys = bkeys[..8].to_vec();
    gkeys.push("missing".into());
    let got = client.batch_get(&gkeys).await.unwrap();
    for (k, g) in gkeys[..8].iter().zip(&got) {
        assert_eq!(check_tagged(k, g.as_ref().unwrap()), Ok(2));
    }
    assert!(got[8].as_ref().unwrap_err().is_not_found());
    let ex = client.batch_is_exist(&gkeys).await.unwrap();
    assert!(ex[..8].iter().all(|e| *e.as_ref().unwrap()));
    assert!(!ex[8].as_ref().unwrap());
    let rm = client.batch_remove(&gkeys[..4], true).await.unwrap();
    assert!(rm.iter().all(|x| x.is_ok()));
    assert!(!client.is_exist(&gkeys[0]).await.unwrap());
    assert!(client.is_exist(&gkeys[5]).await.unwrap());
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_staging_buffer_cannot_put_plain_memory() {
    let cluster = Cluster::start(1, 32 << 20, MasterOpts::default());
    let client = cluster.client_with(0, 0).await;
    let e = client.put("k", b"value", &rc(1)).await.unwrap_err();
    assert!(e.code() < 0);
    assert!(
        !client.is_exist("k").await.unwrap(),
        "failed put left nothing visible"
    );
    client.close().await.unwrap();
}
