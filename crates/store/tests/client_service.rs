//! The client service end to end: a real master process, a real client (in
//! this process, or a `mooncake real-client` process), dummy clients over
//! real sockets and real shared memory. Malformed frames and ranges outside
//! the shared pool get typed errors; a dummy's pool is released when it
//! disconnects.

mod cluster_common;

use std::time::Duration;

use bytes::BytesMut;
use cluster_common::Clients;

use mooncake_store::client::{ClientError, Region};
use mooncake_store::client_service::shm::SharedPool;
use mooncake_store::client_service::wire::{
    PoolDesc, PoolRange, ServiceReply, ServiceRequest, ServiceResponse, WireError,
};
use mooncake_store::client_service::{serve, DummyClient, CONNECTIONS};
use mooncake_store::protocol::frame::{decode_payload, encode_frame, read_frame};
use mooncake_store::{ErrorCode, ReplicateConfig};
use mooncake_testkit::{check_tagged, tagged_value, wait_for_async, Cluster, MasterOpts, Proc};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

/// A long client TTL: the real client heartbeats from this test's runtime,
/// which big copies in a debug build on a loaded machine may stall.
fn opts() -> MasterOpts {
    MasterOpts {
        client_ttl_s: 10,
        ..MasterOpts::default()
    }
}

fn rc() -> ReplicateConfig {
    ReplicateConfig::default()
}

/// A region over memory of this test that is *not* in any shared pool.
fn heap_region(v: &mut [u8]) -> Region<'static> {
    // SAFETY: `v` outlives every use of the region in these tests (the
    // region is only handed to the dummy, which copies through the socket).
    unsafe { Region::from_raw(v.as_mut_ptr() as usize, v.len()) }
}

/// A region of the dummy's pool.
fn pool_region(addr: usize, len: usize) -> Region<'static> {
    // SAFETY: `addr` came from DummyClient::alloc(len); the pool lives as
    // long as the dummy, which outlives the region's use.
    unsafe { Region::from_raw(addr, len) }
}

fn write(addr: usize, data: &[u8]) {
    // SAFETY: callers pass a pool buffer of at least data.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) }
}

fn read(addr: usize, len: usize) -> Vec<u8> {
    // SAFETY: callers pass a pool buffer of at least len bytes.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len).to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dummy_forwards_every_operation_and_is_released_on_disconnect() {
    let cluster = Cluster::start(0, 0, opts());
    let real = cluster.client_with(64 << 20, 16 << 20).await;
    let buffers_before = real.engine().local_descriptor().buffers.len();
    let service = serve(real.clone(), "127.0.0.1:0").await.unwrap();
    let addr = service.local_addr().to_string();
    let dummy = DummyClient::connect(&addr, 8 << 20).await.unwrap();
    assert_eq!(dummy.segment_name(), real.segment_name());
    assert_eq!(service.attached_pools(), CONNECTIONS);
    assert_eq!(
        real.engine().local_descriptor().buffers.len(),
        buffers_before + CONNECTIONS,
        "the pool is registered with the real client's engine, once per connection"
    );

    // Plain values through the socket.
    let v = tagged_value("a", 1, 100_000);
    dummy.put("a", &v, &rc()).await.unwrap();
    assert_eq!(check_tagged("a", &dummy.get("a").await.unwrap()), Ok(1));
    assert_eq!(check_tagged("a", &real.get("a").await.unwrap()), Ok(1));
    let e = dummy.put("a", b"other", &rc()).await.unwrap_err();
    assert_eq!(e.master_code(), Some(ErrorCode::ObjectAlreadyExists));
    dummy
        .upsert("a", &tagged_value("a", 2, 5000), &rc())
        .await
        .unwrap();
    assert_eq!(check_tagged("a", &dummy.get("a").await.unwrap()), Ok(2));
    assert!(dummy.get("missing").await.unwrap_err().is_not_found());
    let keys: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    let vals: Vec<Vec<u8>> = keys.iter().map(|k| tagged_value(k, 3, 3 << 20)).collect();
    let refs: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
    // 18 MiB in all: split over several requests by the dummy.
    let r = dummy.batch_put(&keys, &refs, &rc()).await.unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    let mut gk = keys.clone();
    gk.push("missing".into());
    // 18 MiB of answers do not fit a frame: asked again key by key.
    let got = dummy.batch_get(&gk).await.unwrap();
    for (k, g) in keys.iter().zip(&got) {
        assert_eq!(check_tagged(k, g.as_ref().unwrap()), Ok(3));
    }
    assert!(got[6].as_ref().unwrap_err().is_not_found());
    let ex = dummy.batch_is_exist(&gk).await.unwrap();
    assert!(ex[..6].iter().all(|e| *e.as_ref().unwrap()));
    assert!(!ex[6].as_ref().unwrap());
    assert!(dummy.is_exist("a").await.unwrap());
    assert_eq!(dummy.get_size("b0").await.unwrap(), 3 << 20);
    assert!(dummy.get_size("missing").await.unwrap_err().is_not_found());

    // Zero-copy through the shared pool.
    let len = 256 << 10;
    let src = dummy.alloc(4 * len).unwrap();
    let zkeys: Vec<String> = (0..4).map(|i| format!("z{i}")).collect();
    for (i, k) in zkeys.iter().enumerate() {
        write(src + i * len, &tagged_value(k, 4, len));
    }
    let regions: Vec<Region<'_>> = (0..4).map(|i| pool_region(src + i * len, len)).collect();
    let r = dummy.batch_put_from(&zkeys, &regions, &rc()).await.unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    assert_eq!(check_tagged("z0", &real.get("z0").await.unwrap()), Ok(4));
    let dst = dummy.alloc(4 * len).unwrap();
    let regions: Vec<Region<'_>> = (0..4).map(|i| pool_region(dst + i * len, len)).collect();
    let sizes = dummy.batch_get_into(&zkeys, &regions).await.unwrap();
    for (i, s) in sizes.iter().enumerate() {
        assert_eq!(*s.as_ref().unwrap(), len as u64);
        assert_eq!(check_tagged(&zkeys[i], &read(dst + i * len, len)), Ok(4));
    }
    let small = dummy.alloc(100).unwrap();
    let e = dummy
        .get_into("z0", pool_region(small, 100))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::BufferTooSmall { .. }), "{e}");
    assert!(dummy.free(small));
    assert!(!dummy.free(small));

    // Memory outside the pool is copied through the socket instead.
    let mut heap = tagged_value("h", 5, 70_000);
    dummy
        .put_from("h", heap_region(&mut heap), &rc())
        .await
        .unwrap();
    let mut out = vec![0u8; 80_000];
    let n = dummy.get_into("h", heap_region(&mut out)).await.unwrap();
    assert_eq!(n, 70_000);
    assert_eq!(check_tagged("h", &out[..70_000]), Ok(5));

    // Removal.
    // Unforced: refused while a read's lease lasts, then done.
    wait_for_async("the lease on \"a\" to end", WAIT, || async {
        match dummy.remove("a", false).await {
            Ok(()) => Some(()),
            Err(e) if e.master_code() == Some(ErrorCode::ObjectHasLease) => None,
            Err(e) => panic!("remove: {e}"),
        }
    })
    .await;
    assert!(!dummy.is_exist("a").await.unwrap());
    let r = dummy.batch_remove(&keys[..2], true).await.unwrap();
    assert!(r.iter().all(|x| x.is_ok()));
    assert_eq!(dummy.remove_by_regex("^z", true).await.unwrap(), 4);
    assert_eq!(dummy.remove_all(true).await.unwrap(), 5);
    assert_eq!(dummy.health_check().await, 0);
    dummy
        .put("keep", &tagged_value("keep", 6, 1000), &rc())
        .await
        .unwrap();

    // Disconnect: the pool is unregistered and unmapped; the service goes on.
    dummy.close().await;
    wait_for_async("the pool to be released", WAIT, || async {
        (service.attached_pools() == 0 && service.sessions() == 0).then_some(())
    })
    .await;
    assert_eq!(
        real.engine().local_descriptor().buffers.len(),
        buffers_before
    );
    assert!(dummy.get("keep").await.unwrap_err().master_code() == Some(ErrorCode::RpcFail));
    let again = DummyClient::connect(&addr, 1 << 20).await.unwrap();
    assert_eq!(
        check_tagged("keep", &again.get("keep").await.unwrap()),
        Ok(6)
    );
    drop(again);
    wait_for_async("the second pool to be released", WAIT, || async {
        (service.attached_pools() == 0).then_some(())
    })
    .await;
    real.close().await.unwrap();
}

/// A raw connection speaking the service's frames.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    id: u64,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            id: 0,
        }
    }

    async fn send_bytes(&mut self, payload: &[u8]) -> ServiceResponse {
        self.id += 1;
        let mut f = Vec::new();
        f.extend_from_slice(&((payload.len() + 8) as u32).to_le_bytes());
        f.extend_from_slice(&self.id.to_le_bytes());
        f.extend_from_slice(payload);
        self.s.write_all(&f).await.unwrap();
        self.reply().await
    }

    async fn reply(&mut self) -> ServiceResponse {
        let got = tokio::time::timeout(WAIT, read_frame(&mut self.s, &mut self.buf))
            .await
            .expect("reply in time")
            .expect("a reply frame");
        assert_eq!(got, self.id);
        decode_payload(&self.buf).expect("a decodable reply")
    }

    async fn call(&mut self, req: &ServiceRequest) -> ServiceResponse {
        self.id += 1;
        let mut f = BytesMut::new();
        encode_frame(&mut f, self.id, req);
        self.s.write_all(&f).await.unwrap();
        self.reply().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let cluster = Cluster::start(0, 0, opts());
    let real = cluster.client_with(32 << 20, 4 << 20).await;
    real.put("k", &tagged_value("k", 1, 4096), &rc())
        .await
        .unwrap();
    let service = serve(real.clone(), "127.0.0.1:0").await.unwrap();
    let addr = service.local_addr().to_string();
    let mut raw = Raw::connect(&addr).await;

    // Garbage: MalformedFrame, and the connection stays usable.
    for junk in [
        &[][..],
        &[0xff; 40][..],
        &[2, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
    ] {
        assert_eq!(
            raw.send_bytes(junk).await,
            Err(WireError::Master(ErrorCode::MalformedFrame))
        );
    }
    assert_eq!(
        raw.call(&ServiceRequest::Health).await,
        Ok(ServiceReply::Health(0))
    );

    // Zero-copy without a pool.
    let get_into = |offset: u64, len: u64| ServiceRequest::GetInto {
        keys: vec!["k".into()],
        ranges: vec![PoolRange { offset, len }],
    };
    assert!(matches!(
        raw.call(&get_into(0, 4096)).await,
        Err(WireError::InvalidParams(_))
    ));
    // Pools that cannot be mapped.
    for desc in [
        PoolDesc {
            pid: std::process::id(),
            fd: 987_654,
            len: 4096,
        },
        PoolDesc {
            pid: u32::MAX,
            fd: 3,
            len: 4096,
        },
        PoolDesc {
            pid: std::process::id(),
            fd: 0,
            len: 0,
        },
    ] {
        assert!(
            matches!(
                raw.call(&ServiceRequest::Attach(desc.clone())).await,
                Err(WireError::InvalidParams(_))
            ),
            "{desc:?}"
        );
    }
    let pool = SharedPool::create(64 << 10).unwrap();
    let mut long = pool.desc();
    long.len = 1 << 30;
    assert!(matches!(
        raw.call(&ServiceRequest::Attach(long)).await,
        Err(WireError::InvalidParams(_))
    ));
    assert_eq!(service.attached_pools(), 0);
    assert!(matches!(
        raw.call(&ServiceRequest::Attach(pool.desc())).await,
        Ok(ServiceReply::Attached { .. })
    ));
    assert_eq!(service.attached_pools(), 1);
    assert!(matches!(
        raw.call(&ServiceRequest::Attach(pool.desc())).await,
        Err(WireError::InvalidParams(_))
    ));

    // Ranges outside the pool are refused per key; the pool is untouched.
    let plen = pool.len() as u64;
    for (offset, len) in [
        (plen - 100, 4096),
        (plen, 1),
        (u64::MAX, 2),
        (1 << 40, 4096),
    ] {
        match raw.call(&get_into(offset, len)).await {
            Ok(ServiceReply::Sizes(v)) => {
                assert!(
                    matches!(v[0], Err(WireError::InvalidParams(_))),
                    "{offset}+{len}: {v:?}"
                )
            }
            other => panic!("{offset}+{len}: {other:?}"),
        }
    }
    let put_from = ServiceRequest::PutFrom {
        keys: vec!["evil".into()],
        ranges: vec![PoolRange {
            offset: plen - 10,
            len: 4096,
        }],
        config: rc(),
        upsert: false,
    };
    match raw.call(&put_from).await {
        Ok(ServiceReply::Done(v)) => assert!(matches!(v[0], Err(WireError::InvalidParams(_)))),
        other => panic!("{other:?}"),
    }
    assert!(!real.is_exist("evil").await.unwrap());
    // SAFETY: the pool is mapped and this test owns it.
    let untouched = unsafe { std::slice::from_raw_parts(pool.addr() as *const u8, pool.len()) };
    assert!(untouched.iter().all(|&b| b == 0));
    // Mismatched lengths.
    let bad = ServiceRequest::GetInto {
        keys: vec!["k".into(), "j".into()],
        ranges: vec![],
    };
    assert!(matches!(
        raw.call(&bad).await,
        Err(WireError::InvalidParams(_))
    ));
    // A valid range works on the same connection.
    match raw.call(&get_into(4096, 4096)).await {
        Ok(ServiceReply::Sizes(v)) => assert_eq!(v, vec![Ok(4096)]),
        other => panic!("{other:?}"),
    }
    assert_eq!(check_tagged("k", &untouched[4096..8192]), Ok(1));

    // A frame over the limit: FrameTooLarge, then the connection closes and
    // its pool is released.
    raw.id += 1;
    let mut f = Vec::new();
    f.extend_from_slice(&u32::MAX.to_le_bytes());
    f.extend_from_slice(&raw.id.to_le_bytes());
    raw.s.write_all(&f).await.unwrap();
    assert_eq!(
        raw.reply().await,
        Err(WireError::Master(ErrorCode::FrameTooLarge))
    );
    wait_for_async("the pool to be released", WAIT, || async {
        (service.attached_pools() == 0 && service.sessions() == 0).then_some(())
    })
    .await;
    // The service still serves others.
    let d = DummyClient::connect(&addr, 1 << 20).await.unwrap();
    assert_eq!(check_tagged("k", &d.get("k").await.unwrap()), Ok(1));
    real.close().await.unwrap();
}

/// `mooncake real-client` as its own process; the dummy in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_process_serves_dummies() {
    let cluster = Cluster::start(0, 0, opts());
    let mut proc = Proc::mooncake(&[
        "real-client",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--master_server_address",
        &cluster.master_addr,
        "--metadata_server",
        &cluster.metadata,
        "--global_segment_size",
        "32MiB",
        "--local_buffer_size",
        "8MiB",
    ]);
    let service = proc
        .ready(Duration::from_secs(30))
        .str("service")
        .to_string();

    let d1 = DummyClient::connect(&service, 4 << 20).await.unwrap();
    let d2 = DummyClient::connect(&service, 4 << 20).await.unwrap();
    let len = 1 << 20;
    let src = d1.alloc(len).unwrap();
    write(src, &tagged_value("x", 7, len));
    d1.put_from("x", pool_region(src, len), &rc())
        .await
        .unwrap();
    // Another dummy (another process's view) reads it into its own pool.
    let dst = d2.alloc(len).unwrap();
    assert_eq!(
        d2.get_into("x", pool_region(dst, len)).await.unwrap(),
        len as u64
    );
    assert_eq!(check_tagged("x", &read(dst, len)), Ok(7));
    // The object lives in the real client's segment: the master knows it.
    let direct = cluster.client().await;
    assert_eq!(check_tagged("x", &direct.get("x").await.unwrap()), Ok(7));

    // The real client dies: dummies get RPC_FAIL, never a hang or a panic.
    proc.kill9();
    let e = d1.get("x").await.unwrap_err();
    assert_eq!(e.master_code(), Some(ErrorCode::RpcFail), "{e}");
    assert_eq!(d2.health_check().await, 2);
    let e = DummyClient::connect(&service, 1 << 20).await.unwrap_err();
    assert_eq!(e.master_code(), Some(ErrorCode::RpcFail), "{e}");
    direct.close().await.unwrap();
}

/// Calls from many tasks at once: spread over the dummy's connections, each
/// lands in its own buffer of the shared pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_the_connections() {
    let cluster = Cluster::start(0, 0, opts());
    let real = cluster.client_with(64 << 20, 16 << 20).await;
    let service = serve(real.clone(), "127.0.0.1:0").await.unwrap();
    let addr = service.local_addr().to_string();
    let dummy = std::sync::Arc::new(DummyClient::connect(&addr, 8 << 20).await.unwrap());
    assert_eq!(service.sessions(), CONNECTIONS);
    let len = 128 << 10;
    let mut tasks = Vec::new();
    for t in 0..12 {
        let d = std::sync::Arc::clone(&dummy);
        tasks.push(tokio::spawn(async move {
            let src = d.alloc(len).unwrap();
            let dst = d.alloc(len).unwrap();
            for round in 0..5u64 {
                let key = format!("c{t}-{round}");
                write(src, &tagged_value(&key, round, len));
                d.put_from(&key, pool_region(src, len), &rc())
                    .await
                    .unwrap();
                assert_eq!(
                    d.get_into(&key, pool_region(dst, len)).await.unwrap(),
                    len as u64
                );
                assert_eq!(check_tagged(&key, &read(dst, len)), Ok(round));
            }
            assert!(d.free(src) && d.free(dst));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(dummy.remove_all(true).await.unwrap(), 60);
    dummy.close().await;
    wait_for_async("every connection's pool to be released", WAIT, || async {
        (service.attached_pools() == 0 && service.sessions() == 0).then_some(())
    })
    .await;
    real.close().await.unwrap();
}

/// Plain values through the staging area: large ones need no frame, and the
/// staging ranges are reused across calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_plain_values_move_through_the_staging_area() {
    let cluster = Cluster::start(0, 0, opts());
    let real = cluster.client_with(128 << 20, 4 << 20).await;
    let service = serve(real.clone(), "127.0.0.1:0").await.unwrap();
    let addr = service.local_addr().to_string();
    let staged = DummyClient::connect_with_staging(&addr, 1 << 20, 24 << 20)
        .await
        .unwrap();
    let plain = DummyClient::connect(&addr, 1 << 20).await.unwrap();

    let big = tagged_value("big", 1, 20 << 20);
    let e = plain.put("big", &big, &rc()).await.unwrap_err();
    assert!(matches!(e, ClientError::InvalidParams(_)), "{e}");
    staged.put("big", &big, &rc()).await.unwrap();
    assert_eq!(check_tagged("big", &real.get("big").await.unwrap()), Ok(1));
    // Too large for a frame: back through the staging area; without one, refused.
    assert_eq!(
        check_tagged("big", &staged.get("big").await.unwrap()),
        Ok(1)
    );
    let e = plain.get("big").await.unwrap_err();
    assert!(matches!(e, ClientError::InvalidParams(_)), "{e}");
    for round in 2..5 {
        let keys: Vec<String> = (0..6).map(|i| format!("s{round}-{i}")).collect();
        let vals: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| tagged_value(k, round, 3 << 20))
            .collect();
        let refs: Vec<&[u8]> = vals.iter().map(|v| v.as_slice()).collect();
        // 18 MiB: some staged, the rest (no room left) carried in frames.
        let r = staged.batch_put(&keys, &refs, &rc()).await.unwrap();
        assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
        for (k, g) in keys.iter().zip(staged.batch_get(&keys).await.unwrap()) {
            assert_eq!(check_tagged(k, &g.unwrap()), Ok(round));
        }
    }
    real.close().await.unwrap();
}
