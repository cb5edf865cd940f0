//! Range reads against a real cluster (master + two `mooncake store-node` processes):
//! ranges at stripe boundaries, zero-length and past-the-end ranges, missing keys, and
//! the memory around each destination left untouched.

mod cluster_common;

use cluster_common::Clients;

use mooncake_store::client::{Client, ClientConfig, ClientError, RangeRead, Region};
use mooncake_store::{ErrorCode, ReplicateConfig};
use mooncake_testkit::{Cluster, MasterOpts};

const FILL: u8 = 0xEE;

fn value(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2654435761) as u8 ^ (i >> 16) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_across_stripes_and_bad_ranges() {
    let cluster = Cluster::start(2, 64 << 20, MasterOpts::default());
    let client = cluster.client().await;
    // 40 MiB with the master's 16 MiB max slice: three stripes.
    let len = 40usize << 20;
    let v = value(len);
    client
        .put("big", &v, &ReplicateConfig::default())
        .await
        .unwrap();
    let replicas = client.master().get_replica_list("big").await.unwrap();
    let pieces = &replicas[0].pieces;
    assert!(pieces.len() >= 3, "striped: {pieces:?}");
    let b1 = pieces[0].len as usize;
    let b2 = b1 + pieces[1].len as usize;

    let buf = client.allocate_buffer(2 << 20).await.unwrap();
    buf.fill(0, buf.len(), FILL);
    // (object offset, length, destination offset); destinations 320 KiB apart.
    let ranges: [(usize, usize); 6] = [
        (b1 - 100, 200),      // crosses the first stripe boundary
        (b1, 50),             // starts exactly at it
        (b2 - 10, 10),        // ends exactly at the second
        (b2 - 4096, 300_000), // spans the second boundary, larger
        (0, 1),               // first byte
        (len - 7, 7),         // last bytes
    ];
    let reads: Vec<RangeRead<'_>> = ranges
        .iter()
        .enumerate()
        .map(|(i, &(off, n))| RangeRead {
            key: "big",
            offset: off as u64,
            dst: Region::of(&buf, i * (320 << 10), n).unwrap(),
        })
        .collect();
    let got = client.batch_get_ranges_into(&reads).await.unwrap();
    let mut back = vec![0u8; buf.len()];
    buf.read_at(0, &mut back);
    let mut covered = vec![false; buf.len()];
    for (i, (&(off, n), r)) in ranges.iter().zip(&got).enumerate() {
        assert_eq!(*r.as_ref().unwrap(), n as u64, "range {i}");
        let at = i * (320 << 10);
        assert!(back[at..at + n] == v[off..off + n], "range {i} bytes");
        covered[at..at + n].iter_mut().for_each(|c| *c = true);
    }
    let stray = back
        .iter()
        .zip(&covered)
        .filter(|(b, c)| !**c && **b != FILL)
        .count();
    assert_eq!(stray, 0, "bytes outside the ranges were written");

    // Zero-length ranges: inside or at the end are fine and move nothing; past the
    // end, or reaching past it, is a typed error that writes nothing.
    buf.fill(0, buf.len(), FILL);
    let at = |o: u64, n: usize| RangeRead {
        key: "big",
        offset: o,
        dst: Region::of(&buf, 0, n).unwrap(),
    };
    let len64 = len as u64;
    let got = client
        .batch_get_ranges_into(&[
            at(5, 0),
            at(len64, 0),
            at(len64 - 5, 10),
            at(len64 + 1, 0),
            at(u64::MAX - 2, 8),
        ])
        .await
        .unwrap();
    assert_eq!(*got[0].as_ref().unwrap(), 0);
    assert_eq!(*got[1].as_ref().unwrap(), 0);
    for (i, r) in got.iter().enumerate().skip(2) {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(e, ClientError::InvalidParams(m) if m.contains(&format!("object of {len64} bytes"))),
            "read {i}: {e}"
        );
        assert_eq!(e.code(), mooncake_store::client::CODE_INVALID_PARAMS);
    }
    buf.read_at(0, &mut back);
    assert!(
        back.iter().all(|&b| b == FILL),
        "refused ranges wrote nothing"
    );

    // A missing key fails only its own ranges; the single-range form agrees.
    let region = Region::of(&buf, 100, 16).unwrap();
    let got = client
        .batch_get_ranges_into(&[
            RangeRead {
                key: "absent",
                offset: 0,
                dst: Region::of(&buf, 0, 8).unwrap(),
            },
            RangeRead {
                key: "big",
                offset: 1000,
                dst: region,
            },
        ])
        .await
        .unwrap();
    assert!(got[0].as_ref().unwrap_err().is_not_found());
    assert_eq!(*got[1].as_ref().unwrap(), 16);
    buf.read_at(0, &mut back);
    assert!(back[..8].iter().all(|&b| b == FILL));
    assert!(back[100..116] == v[1000..1016]);
    let n = client
        .get_range_into("big", (b2 - 3) as u64, Region::of(&buf, 0, 6).unwrap())
        .await
        .unwrap();
    assert_eq!(n, 6);
    buf.read_at(0, &mut back[..6]);
    assert!(back[..6] == v[b2 - 3..b2 + 3]);
    let e = client
        .get_range_into("absent", 0, Region::of(&buf, 0, 1).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.master_code(), Some(ErrorCode::ObjectNotFound));
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_read_longer_than_the_lease_keeps_it_alive() {
    // A 50 ms lease and a 128 MiB range (eight stripes over tcp): even a warm read takes
    // a few leases' worth of time, so it only succeeds because the lease is renewed
    // while it runs (without renewal every attempt is discarded).
    let opts = MasterOpts {
        lease_ttl_ms: 50,
        ..MasterOpts::default()
    };
    let cluster = Cluster::start(2, 96 << 20, opts);
    // Over tcp (not same-host shared memory, which would be a memcpy).
    let client = Client::connect(ClientConfig {
        local_hostname: "127.0.0.1".into(),
        metadata_server: cluster.metadata.clone(),
        master_server_addr: cluster.master_addr.clone(),
        global_segment_size: 0,
        local_buffer_size: 64 << 20,
        same_host_shm: false,
        lease_ttl: std::time::Duration::from_millis(50),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let len = 128usize << 20;
    let v = value(len);
    client
        .put("long", &v, &ReplicateConfig::default())
        .await
        .unwrap();
    let buf = client.allocate_buffer(len - 1000).await.unwrap();
    for _ in 0..2 {
        let t0 = std::time::Instant::now();
        let n = client
            .get_range_into("long", 1000, Region::whole(&buf))
            .await
            .unwrap();
        eprintln!(
            "128 MiB range read took {:?} under a 50 ms lease",
            t0.elapsed()
        );
        assert_eq!(n as usize, len - 1000);
    }
    let mut back = vec![0u8; len - 1000];
    buf.read_at(0, &mut back);
    assert!(back == v[1000..], "range bytes differ");
    client.close().await.unwrap();
}
