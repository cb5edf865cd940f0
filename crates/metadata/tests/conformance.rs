//! The shared conformance suite against every backend, each a real server:
//! embedded, our HTTP server, a real etcd and a real redis (both started by
//! `mooncake_metadata::testing`), plus connection-string and reachability errors.

mod common;

use std::time::Duration;

use mooncake_metadata::http::server::MetadataServer;
use mooncake_metadata::redis::{RedisOptions, RedisWatchMode};
use mooncake_metadata::{
    connect, EmbeddedMetadata, MetadataError, MetadataStore, RedisMetadata, WatchEvent,
};
use mooncake_testkit::{free_port, EtcdServer, RedisServer};

fn etcd() -> EtcdServer {
    EtcdServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn redis_server(extra: &[&str]) -> RedisServer {
    RedisServer::start_with(extra).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn embedded_conforms() {
    common::conformance(&EmbeddedMetadata::new(), "conf").await;
}

#[tokio::test]
async fn http_conforms() {
    let server = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    let store = connect(&server.url()).await.unwrap();
    assert_eq!(store.backend(), "http");
    common::conformance(store.as_ref(), "conf").await;
    // The URL without a path means /metadata.
    let bare = connect(&format!("http://{}", server.local_addr()))
        .await
        .unwrap();
    assert!(bare.get("conf/bin").await.unwrap().is_some());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn etcd_conforms() {
    let server = etcd();
    let store = connect(&server.conn_string()).await.unwrap();
    assert_eq!(store.backend(), "etcd");
    common::conformance(store.as_ref(), "conf").await;
    // A bare host:port is etcd (the reference's default without a scheme).
    let bare = connect(&server.endpoint()).await.unwrap();
    assert_eq!(bare.backend(), "etcd");
    assert!(bare.get("conf/bin").await.unwrap().is_some());
}

#[tokio::test]
async fn etcd_tries_endpoints_in_order() {
    let server = etcd();
    let dead = format!("127.0.0.1:{}", free_port().unwrap());
    let store = connect(&format!("etcd://{dead},{}", server.endpoint()))
        .await
        .unwrap();
    store.put("failover/k", b"v").await.unwrap();
    assert_eq!(store.get("failover/k").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test]
async fn redis_with_keyspace_notifications_conforms() {
    let server = redis_server(&[]);
    let store = RedisMetadata::connect(&server.conn_string()).await.unwrap();
    assert!(store.uses_notifications().await.unwrap());
    common::conformance(&store, "conf").await;
    // The dispatcher picks redis too, and db numbers select the database.
    let db3 = connect(&format!("{}/3", server.conn_string()))
        .await
        .unwrap();
    assert_eq!(db3.backend(), "redis");
    assert_eq!(db3.get("conf/bin").await.unwrap(), None, "db 3 is separate");
    common::conformance(db3.as_ref(), "conf-db3").await;
}

#[tokio::test]
async fn redis_polling_conforms() {
    let server = redis_server(&[]);
    let opts = RedisOptions {
        watch_mode: RedisWatchMode::Poll,
        poll_interval: Duration::from_millis(100),
        ..RedisOptions::default()
    };
    let store = RedisMetadata::connect_with(&server.conn_string(), opts)
        .await
        .unwrap();
    assert!(!store.uses_notifications().await.unwrap());
    common::conformance(&store, "conf").await;
}

#[tokio::test]
async fn redis_without_config_command_falls_back_to_polling() {
    // A managed redis that forbids CONFIG: the watcher must still work.
    let server = redis_server(&["--rename-command", "CONFIG", ""]);
    let store = RedisMetadata::connect(&server.conn_string()).await.unwrap();
    assert!(!store.uses_notifications().await.unwrap());
    common::conformance(&store, "conf").await;
}

#[tokio::test]
async fn malformed_connection_strings_are_typed_errors() {
    for bad in [
        "etcd://",
        "etcd://h:0",
        "nohostport",
        "ftp://x:1",
        "http://",
        "redis://h:x",
    ] {
        match connect(bad).await {
            Err(MetadataError::InvalidConnectionString(s, why)) => {
                assert_eq!(s, bad);
                assert!(!why.is_empty());
            }
            other => panic!("{bad:?}: expected InvalidConnectionString, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn unreachable_servers_fail_fast_and_typed() {
    let port = free_port().unwrap();
    for conn in [
        format!("http://127.0.0.1:{port}/metadata"),
        format!("etcd://127.0.0.1:{port}"),
        format!("127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
    ] {
        // The guard only keeps a regression from hanging the suite.
        let res = tokio::time::timeout(Duration::from_secs(30), connect(&conn))
            .await
            .unwrap_or_else(|_| panic!("{conn}: connect hung"));
        match res {
            Err(MetadataError::Unreachable { .. }) => {}
            other => panic!("{conn}: expected Unreachable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_killed_server_turns_into_unreachable() {
    let mut etcd = etcd();
    let mut redis = redis_server(&[]);
    let http = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    let stores = [
        connect(&etcd.conn_string()).await.unwrap(),
        connect(&redis.conn_string()).await.unwrap(),
        connect(&http.url()).await.unwrap(),
    ];
    for s in &stores {
        s.put("k", b"v").await.unwrap();
    }
    etcd.kill();
    redis.kill();
    http.shutdown().await.unwrap();
    for s in &stores {
        let res = tokio::time::timeout(Duration::from_secs(30), s.get("k"))
            .await
            .unwrap_or_else(|_| panic!("{}: get hung", s.backend()));
        assert!(
            matches!(res, Err(MetadataError::Unreachable { .. })),
            "{}: {res:?}",
            s.backend()
        );
    }
}

/// Wait for `want`, skipping re-reports a reconnecting watcher may send first.
async fn await_event(rx: &mut tokio::sync::mpsc::Receiver<WatchEvent>, want: &WatchEvent) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if ev == *want => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watch closed before {want:?}"),
            Err(_) => panic!("no {want:?} within 30 s"),
        }
    }
}

fn put_event(key: &str, value: &[u8]) -> WatchEvent {
    WatchEvent::Put {
        key: key.into(),
        value: value.to_vec(),
    }
}

/// A watcher on `r/` that has seen its first event (`r/a` = 1).
async fn live_watcher(store: &dyn MetadataStore) -> tokio::sync::mpsc::Receiver<WatchEvent> {
    let mut rx = store.watch("r/").await.unwrap();
    store.put("r/a", b"1").await.unwrap();
    await_event(&mut rx, &put_event("r/a", b"1")).await;
    rx
}

#[tokio::test]
async fn etcd_watch_resumes_after_a_restart_without_losing_changes() {
    let mut server = etcd();
    let store = connect(&server.conn_string()).await.unwrap();
    let mut rx = live_watcher(store.as_ref()).await;

    server.restart().unwrap_or_else(|e| panic!("{e}"));
    // Written right after the restart, likely before the watcher reconnects:
    // the resumed watch (from its last revision) must still deliver them, in order.
    let writer = connect(&server.conn_string()).await.unwrap();
    writer.put("r/b", b"2").await.unwrap();
    writer.delete("r/a").await.unwrap();
    // Exactly these, in this order: nothing lost, nothing repeated.
    for want in [
        put_event("r/b", b"2"),
        WatchEvent::Delete { key: "r/a".into() },
    ] {
        let got = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        assert_eq!(got.expect("event within 30 s"), Some(want));
    }
}

#[tokio::test]
async fn redis_watch_resubscribes_after_a_restart() {
    let mut server = redis_server(&[]);
    let store = RedisMetadata::connect(&server.conn_string()).await.unwrap();
    let mut rx = live_watcher(&store).await;

    // The restarted redis has no data and no notification config.
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    // The key r/a vanished with the restart: reported once the watcher is back.
    await_event(&mut rx, &WatchEvent::Delete { key: "r/a".into() }).await;
    // And notifications work again (re-enabled on the new server).
    let writer = connect(&server.conn_string()).await.unwrap();
    writer.put("r/c", b"3").await.unwrap();
    await_event(&mut rx, &put_event("r/c", b"3")).await;
    assert!(store.uses_notifications().await.unwrap());
}
