//! Range reads vs whole-object reads: 64 KiB out of 64 MiB objects.
//!
//! ```text
//! cargo run --release -p mooncake-store --example range_read_bench -- [--shm] [--objects 4] [--range-kib 64]
//! ```
//! In one process: a master (with its metadata server), a storage client holding the
//! objects in its segment, and a reader client without a segment that reads over the
//! Transfer Engine (tcp over loopback; `--shm` lets it use same-host shared memory).
//! *before* is what `get_into_ranges` did until range reads existed: `get` the whole
//! object, then copy the range out; *after* is `get_range_into`, which moves only the
//! range. Offsets are pseudo-random, so ranges also cross stripe boundaries.
//!
//! Measured on the 2-core development machine (2026-11-26, release build, load average
//! ~4 from other builds; 4 stripes per object), median per 64 KiB range:
//!
//! | reader transport | before (whole object) | after (range) | after, 16 ranges per call | ratio |
//! |---|---|---|---|---|
//! | tcp loopback | 66.4 ms | 66.7 µs | 43.3 µs | ~1000x |
//! | same-host shm | 46.1 ms | 43.0 µs | 14.3 µs | ~1070x |
//!
//! Bytes moved per range: 64 MiB before, 64 KiB after. Through Python
//! (`get_into_ranges`, dev-profile wheel, tcp): 101 ms before, 0.37 ms after.

use std::time::{Duration, Instant};

use mooncake_master::MasterConfig;
use mooncake_master::MasterServer;
use mooncake_store::client::{Client, ClientConfig, RangeRead, Region};
use mooncake_store::ReplicateConfig;

const MIB: usize = 1 << 20;

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let shm = std::env::args().any(|a| a == "--shm");
    let objects: usize = arg("--objects").map_or(4, |s| s.parse().unwrap());
    let range = arg("--range-kib").map_or(64, |s| s.parse::<usize>().unwrap()) << 10;
    let obj = 64 * MIB;

    let mcfg = MasterConfig {
        rpc_address: "127.0.0.1".into(),
        rpc_port: 0,
        metrics_host: "127.0.0.1".into(),
        metrics_port: 0,
        enable_http_metadata_server: true,
        http_metadata_server_host: "127.0.0.1".into(),
        http_metadata_server_port: 0,
        ..MasterConfig::default()
    };
    let master = MasterServer::start(mcfg).await.expect("master starts");
    let meta = master.metadata_addr().expect("metadata server");
    let base = ClientConfig {
        local_hostname: "127.0.0.1".into(),
        metadata_server: format!("http://{meta}/metadata"),
        master_server_addr: master.rpc_addr().to_string(),
        ..ClientConfig::default()
    };
    let storage = Client::connect(ClientConfig {
        global_segment_size: ((objects + 1) * obj) as u64,
        local_buffer_size: obj as u64,
        ..base.clone()
    })
    .await
    .expect("storage client");
    let reader = Client::connect(ClientConfig {
        global_segment_size: 0,
        local_buffer_size: obj as u64,
        same_host_shm: shm,
        ..base
    })
    .await
    .expect("reader client");

    let value: Vec<u8> = (0..obj).map(|i| (i * 31 + (i >> 12)) as u8).collect();
    let keys: Vec<String> = (0..objects).map(|i| format!("obj-{i}")).collect();
    for k in &keys {
        storage
            .put(k, &value, &ReplicateConfig::default())
            .await
            .expect("put");
    }
    let pieces = reader.master().get_replica_list(&keys[0]).await.unwrap()[0]
        .pieces
        .len();
    let dst = reader.allocate_buffer(range).await.unwrap();
    let mut check = vec![0u8; range];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_off = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng as usize) % (obj - range)
    };

    // before: the whole object, then the range copied out of it.
    let mut before = Vec::new();
    for i in 0..3 * objects {
        let (k, off) = (&keys[i % objects], next_off());
        let t0 = Instant::now();
        let whole = reader.get(k).await.unwrap();
        dst.write_at(0, &whole[off..off + range]);
        before.push(t0.elapsed());
    }
    // after: only the range.
    let mut after = Vec::new();
    for i in 0..500 {
        let (k, off) = (&keys[i % objects], next_off());
        let t0 = Instant::now();
        let n = reader
            .get_range_into(k, off as u64, Region::whole(&dst))
            .await
            .unwrap();
        after.push(t0.elapsed());
        assert_eq!(n as usize, range);
        if i % 50 == 0 {
            dst.read_at(0, &mut check);
            assert!(check == value[off..off + range], "range bytes differ");
        }
    }
    // A batch of 16 ranges of one object in one call.
    let bufs: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..16 {
            v.push(reader.allocate_buffer(range).await.unwrap());
        }
        v
    };
    let mut batch = Vec::new();
    for i in 0..50 {
        let k = &keys[i % objects];
        let reads: Vec<RangeRead<'_>> = bufs
            .iter()
            .map(|b| RangeRead {
                key: k,
                offset: next_off() as u64,
                dst: Region::whole(b),
            })
            .collect();
        let t0 = Instant::now();
        let res = reader.batch_get_ranges_into(&reads).await.unwrap();
        batch.push(t0.elapsed());
        assert!(res
            .iter()
            .all(|r| r.as_ref().is_ok_and(|&n| n as usize == range)));
    }

    let (b, a, bt) = (median(&mut before), median(&mut after), median(&mut batch));
    let transport = if shm { "same-host shm" } else { "tcp loopback" };
    println!("range read bench: {range_kib} KiB ranges of {objects} x 64 MiB objects ({pieces} stripes each), reader over {transport}", range_kib = range >> 10);
    println!("| path | median per range | bytes moved per range |");
    println!("|---|---|---|");
    println!(
        "| before: get whole object + copy range | {:.2} ms | {} MiB |",
        b.as_secs_f64() * 1e3,
        obj / MIB
    );
    println!(
        "| after: get_range_into | {:.1} µs | {} KiB |",
        a.as_secs_f64() * 1e6,
        range >> 10
    );
    println!(
        "| after: batch of 16 ranges, per range | {:.1} µs | {} KiB |",
        bt.as_secs_f64() * 1e6 / 16.0,
        range >> 10
    );
    println!(
        "speedup (single range): {:.0}x",
        b.as_secs_f64() / a.as_secs_f64()
    );

    reader.close().await.unwrap();
    storage.close().await.unwrap();
    master.shutdown().await;
}
