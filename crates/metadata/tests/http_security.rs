//! The HTTP metadata server as an outsider meets it: with a credential it
//! refuses unsigned, wrongly signed and replayed requests and changes
//! nothing; whatever the credential, it bounds what a client can make it
//! hold (declared lengths, table size, slow and idle connections, connection
//! counts) and keeps serving legitimate clients meanwhile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mooncake_metadata::http::client::{HttpMetadata, HttpOptions};
use mooncake_metadata::http::serve::HttpLimits;
use mooncake_metadata::http::server::{MetadataServer, MetadataService, TableCaps};
use mooncake_metadata::MetadataStore;
use mooncake_security::{AuthMode, Credential};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn client(server: &MetadataServer, credential: Option<Credential>) -> HttpMetadata {
    HttpMetadata::new(
        server.url().parse().unwrap(),
        HttpOptions {
            credential,
            ..HttpOptions::default()
        },
    )
    .unwrap()
}

async fn secured(caps: TableCaps, limits: HttpLimits) -> (MetadataServer, Credential) {
    let cred = Credential::generate().without_admin();
    let svc = MetadataService::with_auth(AuthMode::Required(cred.clone()), caps);
    let server = MetadataServer::bind_with_limits("127.0.0.1:0", svc, limits)
        .await
        .unwrap();
    (server, cred)
}

/// Raw request bytes; returns everything the server sends until it closes
/// (or `limit` passes).
async fn raw(addr: SocketAddr, request: &[u8], limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn unsigned_forged_and_replayed_requests_are_refused() {
    let (server, cred) = secured(TableCaps::default(), HttpLimits::default()).await;
    let good = client(&server, Some(cred.clone()));
    good.put("mooncake/ram/a", b"real").await.unwrap();

    // No credential: refused, nothing changed.
    let anon = client(&server, None);
    let e = anon.put("mooncake/ram/a", b"forged").await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    assert!(
        anon.get("mooncake/ram/a").await.is_err(),
        "reads of descriptors need the credential too"
    );
    assert!(anon.delete("mooncake/ram/a").await.is_err());

    // Another secret: refused.
    let wrong = client(&server, Some(Credential::generate()));
    assert!(wrong.put("mooncake/ram/a", b"forged").await.is_err());

    // A recorded signed request replayed verbatim: refused.
    let path = "/metadata?key=mooncake%2Fram%2Fa";
    let sig = mooncake_security::http::sign(
        &cred,
        "PUT",
        path,
        b"again",
        mooncake_security::http::now_ms(),
    );
    let http = reqwest::Client::new();
    let url = format!("http://{}{path}", server.local_addr());
    let send = || {
        http.put(&url)
            .header("x-mooncake-auth", &sig)
            .body("again")
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let replay = send().await.unwrap();
    assert_eq!(replay.status(), 401);
    assert_eq!(replay.headers()["content-type"], "application/json");
    let body: serde_json::Value = replay.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("replayed"),
        "{body}"
    );

    assert_eq!(good.get("mooncake/ram/a").await.unwrap().unwrap(), b"again");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn huge_declared_length_gets_413_and_a_closed_connection() {
    let svc = MetadataService::with_auth(AuthMode::Insecure, TableCaps::default());
    let server = MetadataServer::bind_with("127.0.0.1:0", svc).await.unwrap();
    let req = b"PUT /metadata?key=k HTTP/1.1\r\nHost: x\r\nContent-Length: 4294967296\r\n\r\nabc";
    let (resp, closed) = raw(server.local_addr(), req, Duration::from_secs(10)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("\"error\""), "JSON body expected: {resp}");
    assert!(closed, "the server must close the connection after a 413");
    assert!(server.service().is_empty());
}

#[tokio::test]
async fn table_caps_refuse_with_507_and_change_nothing() {
    let caps = TableCaps {
        max_value_bytes: 1024,
        max_entries: 3,
        max_total_bytes: 2048,
    };
    let (server, cred) = secured(caps, HttpLimits::default()).await;
    let c = client(&server, Some(cred));
    for k in ["a", "b", "c"] {
        c.put(k, &[1u8; 600]).await.unwrap();
    }
    let e = c.put("d", b"x").await.unwrap_err();
    assert!(e.to_string().contains("507"), "{e}");
    // Replacing a key is allowed while the bytes fit.
    c.put("a", &[2u8; 800]).await.unwrap();
    let e = c.put("b", &[3u8; 1000]).await.unwrap_err();
    assert!(e.to_string().contains("507"), "too many bytes: {e}");
    let e = c.put("c", &[4u8; 1025]).await.unwrap_err();
    assert!(e.to_string().contains("413"), "{e}");
    assert_eq!(server.service().len(), 3);
    assert_eq!(server.service().total_bytes(), 800 + 600 + 600);
    assert_eq!(c.get("b").await.unwrap().unwrap(), vec![1u8; 600]);
}

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

#[tokio::test]
async fn slowloris_idle_and_connection_floods_are_cut_while_clients_are_served() {
    let limits = HttpLimits {
        max_connections: 64,
        max_connections_per_peer: 20,
        header_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(1500),
        drain_timeout: Duration::from_secs(1),
    };
    let (server, cred) = secured(TableCaps::default(), limits).await;
    let addr = server.local_addr();

    // 20 slowloris connections from 127.0.0.2, one header byte every 100 ms.
    let start = Instant::now();
    let mut loris = Vec::new();
    for _ in 0..20 {
        loris.push(tokio::spawn(async move {
            let mut s = connect_from("127.0.0.2", addr).await;
            let req = b"GET /metadata?key=a HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for b in req.iter().cycle().take(400) {
                if s.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }));
    }
    // The 21st connection from the same peer is over its cap: closed unread.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect_from("127.0.0.2", addr).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("over-cap connection must be closed")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // Meanwhile a legitimate client is served.
    let c = client(&server, Some(cred));
    c.put("k", b"v").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().unwrap(), b"v");

    for l in loris {
        assert!(
            l.await.unwrap(),
            "slowloris connection must be closed by the header timeout"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(20));

    // An idle connection (no bytes at all) is closed by the idle timeout.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("idle connection must be closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    server.shutdown().await.unwrap();
}
