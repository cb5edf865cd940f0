//! The master over real sockets: RPC round trips through `MasterClient`, pipelining,
//! and bad input (garbage, truncated and oversized frames, empty and 1 MB keys) that must be
//! answered with typed errors and never take the server down.

use mooncake_master::MasterConfig;
use mooncake_master::MasterServer;
use mooncake_store_protocol::frame::{decode_response, encode_frame, HEADER_LEN};
use mooncake_store_protocol::{
    ClientId, ClientStatus, ErrorCode, MasterClient, ReplicateConfig, Request, Response,
    SegmentDesc,
};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn cfg() -> MasterConfig {
    MasterConfig {
        rpc_address: "127.0.0.1".into(),
        rpc_port: 0,
        metrics_host: "127.0.0.1".into(),
        metrics_port: 0,
        tick_interval_ms: 20,
        ..Default::default()
    }
}

fn seg(name: &str, size: u64) -> SegmentDesc {
    SegmentDesc {
        name: name.into(),
        base_addr: 0x7f00_0000_0000,
        size,
        protocol: "tcp".into(),
        location: String::new(),
    }
}

async fn raw_call(s: &mut TcpStream, id: u64, payload: &[u8]) -> Result<Response, ErrorCode> {
    let mut f = Vec::new();
    f.extend_from_slice(&((payload.len() + 8) as u32).to_le_bytes());
    f.extend_from_slice(&id.to_le_bytes());
    f.extend_from_slice(payload);
    s.write_all(&f).await.unwrap();
    read_reply(s, id).await
}

async fn read_reply(s: &mut TcpStream, want_id: u64) -> Result<Response, ErrorCode> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).await.unwrap();
    let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
    assert_eq!(u64::from_le_bytes(h[4..].try_into().unwrap()), want_id);
    let mut p = vec![0u8; len - 8];
    s.read_exact(&mut p).await.unwrap();
    decode_response(&p).unwrap()
}

#[tokio::test]
async fn rpc_round_trips() {
    let srv = MasterServer::start(cfg()).await.unwrap();
    let c = MasterClient::connect(&srv.rpc_addr().to_string())
        .await
        .unwrap();
    let me = ClientId::random();
    c.ping().await.unwrap();
    assert_eq!(
        c.heartbeat(me).await.unwrap().status,
        ClientStatus::NeedRemount
    );
    c.mount_segment(me, &seg("127.0.0.1:1", 64 << 20))
        .await
        .unwrap();
    assert_eq!(c.heartbeat(me).await.unwrap().status, ClientStatus::Ok);

    let rc = ReplicateConfig::default();
    let reps = c.put_start("k1", 4096, &rc).await.unwrap();
    assert_eq!(reps[0].pieces[0].segment, "127.0.0.1:1");
    assert!(!c.exists("k1").await.unwrap());
    c.put_end("k1").await.unwrap();
    assert!(c.exists("k1").await.unwrap());
    assert_eq!(c.get_size("k1").await.unwrap(), 4096);
    assert_eq!(c.get_replica_list("k1").await.unwrap(), reps);
    assert_eq!(c.remove("k1", false).await, Err(ErrorCode::ObjectHasLease));
    c.remove("k1", true).await.unwrap();
    assert_eq!(
        c.get_replica_list("k1").await,
        Err(ErrorCode::ObjectNotFound)
    );
    c.put_start("k2", 10, &rc).await.unwrap();
    c.put_revoke("k2").await.unwrap();
    assert_eq!(c.put_end("k2").await, Err(ErrorCode::InvalidWrite));

    let items: Vec<(String, u64)> = (0..10).map(|i| (format!("b{i}"), 1000)).collect();
    let keys: Vec<String> = items.iter().map(|x| x.0.clone()).collect();
    assert!(c
        .batch_put_start(&items, &rc)
        .await
        .unwrap()
        .iter()
        .all(|r| r.is_ok()));
    assert!(c
        .batch_put_end(&keys)
        .await
        .unwrap()
        .iter()
        .all(|r| r.is_ok()));
    assert!(c
        .batch_exists(&keys)
        .await
        .unwrap()
        .iter()
        .all(|r| *r == Ok(true)));
    assert_eq!(c.batch_get_replica_list(&keys).await.unwrap().len(), 10);
    assert_eq!(c.remove_by_regex("^b[0-4]$", true).await.unwrap(), 5);
    assert!(c
        .batch_remove(&keys[5..], true)
        .await
        .unwrap()
        .iter()
        .all(|r| r.is_ok()));
    assert_eq!(c.remove_all(true).await.unwrap(), 0);
    c.upsert_start("u", 100, &rc).await.unwrap();
    c.put_end("u").await.unwrap();
    c.upsert_start("u", 200, &rc).await.unwrap();
    c.put_end("u").await.unwrap();
    assert_eq!(c.get_size("u").await.unwrap(), 200);
    c.unmount_segment(me, "127.0.0.1:1").await.unwrap();
    assert!(!c.exists("u").await.unwrap());
    srv.shutdown().await;
}

#[tokio::test]
async fn pipelined_concurrent_calls_share_one_connection() {
    let srv = MasterServer::start(cfg()).await.unwrap();
    let c = MasterClient::connect(&srv.rpc_addr().to_string())
        .await
        .unwrap();
    c.mount_segment(ClientId(1), &seg("s", 64 << 20))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let k = format!("t{t}-{i}");
                c.put_start(&k, 64, &ReplicateConfig::default())
                    .await
                    .unwrap();
                c.put_end(&k).await.unwrap();
                assert!(c.exists(&k).await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = srv.shared().state.lock().summary();
    assert_eq!(st.objects, 1600);
    assert_eq!(srv.shared().metrics.op_count("exists"), 1600);
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_keys_get_typed_errors() {
    let srv = MasterServer::start(cfg()).await.unwrap();
    let c = MasterClient::connect(&srv.rpc_addr().to_string())
        .await
        .unwrap();
    c.mount_segment(ClientId(1), &seg("s", 1 << 20))
        .await
        .unwrap();
    let rc = ReplicateConfig::default();
    assert_eq!(c.put_start("", 10, &rc).await, Err(ErrorCode::InvalidKey));
    assert_eq!(c.exists("").await, Err(ErrorCode::InvalidKey));
    let mb = "k".repeat(1 << 20);
    assert_eq!(c.put_start(&mb, 10, &rc).await, Err(ErrorCode::InvalidKey));
    assert_eq!(c.get_replica_list(&mb).await, Err(ErrorCode::InvalidKey));
    assert_eq!(
        c.put_start("k", u64::MAX, &rc).await,
        Err(ErrorCode::NoSpace)
    );
    assert_eq!(
        c.put_start("k", 0, &rc).await,
        Err(ErrorCode::InvalidParams)
    );
    // A key bigger than a frame: refused as too large by the client itself (the server's
    // answer to an oversized frame is tested on a raw socket below); the client stays usable.
    let huge = "k".repeat(20 << 20);
    assert_eq!(c.exists(&huge).await, Err(ErrorCode::FrameTooLarge));
    c.ping().await.unwrap();
    assert_eq!(srv.shared().state.lock().summary().objects, 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn garbage_frames_never_crash_the_master() {
    let srv = MasterServer::start(cfg()).await.unwrap();
    let addr = srv.rpc_addr();

    // A garbage payload in a well-formed frame: typed error, connection stays usable.
    let mut s = raw_connect(addr).await;
    assert_eq!(
        raw_call(&mut s, 9, &[0xff; 40]).await,
        Err(ErrorCode::MalformedFrame)
    );
    assert_eq!(
        raw_call(&mut s, 10, &[]).await,
        Err(ErrorCode::MalformedFrame)
    );
    // A vector that claims 2^60 elements.
    let mut evil = vec![18u8, 0xfd];
    evil.extend_from_slice(&(1u64 << 60).to_le_bytes());
    assert_eq!(
        raw_call(&mut s, 11, &evil).await,
        Err(ErrorCode::MalformedFrame)
    );
    let mut ping = bytes::BytesMut::new();
    encode_frame(&mut ping, 12, &Request::Ping);
    s.write_all(&ping).await.unwrap();
    assert_eq!(read_reply(&mut s, 12).await, Ok(Response::Pong));

    // A huge declared length: answered FrameTooLarge, then closed (nothing allocated).
    let mut s = raw_connect(addr).await;
    let mut f = u32::MAX.to_le_bytes().to_vec();
    f.extend_from_slice(&77u64.to_le_bytes());
    s.write_all(&f).await.unwrap();
    assert_eq!(read_reply(&mut s, 77).await, Err(ErrorCode::FrameTooLarge));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    // Truncated frames and random bytes on many connections.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for i in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let n = rng.gen_range(0..512);
        let mut junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        if i % 2 == 0 && junk.len() >= 4 {
            // Plausible length prefix, so the payload reaches the decoder.
            let l = (junk.len() as u32).saturating_sub(4).max(8);
            junk[..4].copy_from_slice(&l.to_le_bytes());
        }
        let _ = s.write_all(&junk).await;
        drop(s);
    }
    // Still serving.
    let c = MasterClient::connect(&addr.to_string()).await.unwrap();
    c.ping().await.unwrap();
    c.mount_segment(ClientId(5), &seg("s", 1 << 20))
        .await
        .unwrap();
    c.put_start("after", 10, &ReplicateConfig::default())
        .await
        .unwrap();
    c.put_end("after").await.unwrap();
    assert!(c.exists("after").await.unwrap());
    srv.shutdown().await;
}

#[tokio::test]
async fn silent_client_expires_and_http_views_show_state() {
    let mut cfg = cfg();
    cfg.client_ttl = 1;
    let srv = MasterServer::start(cfg).await.unwrap();
    let c = MasterClient::connect(&srv.rpc_addr().to_string())
        .await
        .unwrap();
    let (alive, dead) = (ClientId(1), ClientId(2));
    c.mount_segment(alive, &seg("alive", 1 << 20))
        .await
        .unwrap();
    c.mount_segment(dead, &seg("dead", 1 << 20)).await.unwrap();
    c.put_start(
        "obj",
        100,
        &ReplicateConfig {
            replica_num: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.put_end("obj").await.unwrap();

    let http = format!("http://{}", srv.http_addr());
    let web = reqwest::Client::new();
    assert_eq!(
        web.get(format!("{http}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "OK"
    );
    let m = web
        .get(format!("{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("mooncake_master_objects 1"), "{m}");
    assert!(m.contains("mooncake_master_segment_bytes_total{segment=\"dead\"} 1048576"));
    assert!(m.contains("mooncake_master_rpc_total{op=\"put_start\"} 1"));
    let keys: serde_json::Value = web
        .get(format!("{http}/api/keys?prefix=ob"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys[0]["key"], "obj");
    assert_eq!(keys[0]["replicas"], 2);

    // Keep `alive` heartbeating; `dead` stays silent and must be dropped within ~client_ttl.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.heartbeat(alive).await.unwrap();
        let segs: serde_json::Value = web
            .get(format!("{http}/api/segments"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if segs.as_array().unwrap().len() == 1 {
            assert_eq!(segs[0]["name"], "alive");
            break;
        }
        assert!(Instant::now() < deadline, "dead client never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reps = c.get_replica_list("obj").await.unwrap();
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].pieces[0].segment, "alive");
    let clients: serde_json::Value = web
        .get(format!("{http}/api/clients"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clients.as_array().unwrap().len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn client_reconnects_after_master_restart() {
    let srv = MasterServer::start(cfg()).await.unwrap();
    let addr = srv.rpc_addr();
    let c = MasterClient::connect(&addr.to_string()).await.unwrap();
    c.ping().await.unwrap();
    srv.shutdown().await;
    // While the master is down, calls fail with RpcFail (no hang, no panic).
    assert_eq!(c.ping().await, Err(ErrorCode::RpcFail));
    let mut again = cfg();
    again.rpc_port = addr.port();
    let srv = MasterServer::start(again).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.ping().await.is_err() {
        assert!(Instant::now() < deadline, "client never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new master does not know us: heartbeat says remount.
    assert_eq!(
        c.heartbeat(ClientId(9)).await.unwrap().status,
        ClientStatus::NeedRemount
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn oversized_reply_is_a_typed_error() {
    let srv = MasterServer::start(cfg()).await.unwrap();
    let c = MasterClient::connect(&srv.rpc_addr().to_string())
        .await
        .unwrap();
    // Long segment names make every piece ~4 KB on the wire.
    let name = "s".repeat(4000);
    c.mount_segment(ClientId(1), &seg(&name, 1 << 30))
        .await
        .unwrap();
    let rc = ReplicateConfig::default();
    let keys: Vec<String> = (0..4400).map(|i| format!("k{i}")).collect();
    for chunk in keys.chunks(1000) {
        let items: Vec<(String, u64)> = chunk.iter().map(|k| (k.clone(), 64)).collect();
        assert!(c
            .batch_put_start(&items, &rc)
            .await
            .unwrap()
            .iter()
            .all(|r| r.is_ok()));
        assert!(c
            .batch_put_end(chunk)
            .await
            .unwrap()
            .iter()
            .all(|r| r.is_ok()));
    }
    assert_eq!(
        c.batch_get_replica_list(&keys).await,
        Err(ErrorCode::BufferOverflow)
    );
    // The connection is still good and a smaller batch works.
    assert_eq!(
        c.batch_get_replica_list(&keys[..100]).await.unwrap().len(),
        100
    );
    srv.shutdown().await;
}

/// A raw connection to an insecure master, past the connection handshake.
async fn raw_connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    mooncake_security::handshake::connect(
        &mut s,
        &mooncake_security::AuthMode::Insecure,
        mooncake_store_protocol::MASTER_RPC_SERVICE,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    s
}
