//! The HTTP metadata server's wire behaviour, checked with raw requests:
//! the reference's status codes and bodies, our listing extension, `/health`,
//! mounting into another router, and graceful shutdown.

use mooncake_metadata::http::server::{MetadataServer, MetadataService};
use mooncake_metadata::http::Listing;
use reqwest::StatusCode;

fn url(server: &MetadataServer, query: &str) -> String {
    format!("http://{}/metadata?{query}", server.local_addr())
}

#[tokio::test]
async fn reference_status_codes_and_bodies() {
    let server = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    let http = reqwest::Client::new();

    let r = http
        .get(url(&server, "key=mooncake%2Fram%2Fh%3A1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.text().await.unwrap(), "metadata not found");

    let r = http
        .put(url(&server, "key=mooncake%2Fram%2Fh%3A1"))
        .body(r#"{"name":"h:1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The key decodes the same whether spaces are %20 or +, and '/' escaped or not.
    let r = http
        .get(url(&server, "key=mooncake/ram/h:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), r#"{"name":"h:1"}"#);
    http.put(url(&server, "key=a%20b"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        http.get(url(&server, "key=a+b"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "x"
    );

    let r = http
        .delete(url(&server, "key=mooncake%2Fram%2Fh%3A1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .delete(url(&server, "key=mooncake%2Fram%2Fh%3A1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.text().await.unwrap(), "metadata not found");
    let r = http
        .get(url(&server, "key=mooncake%2Fram%2Fh%3A1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Requests without a key are refused and change nothing.
    for req in [
        http.get(url(&server, "")),
        http.put(url(&server, "")).body("v"),
        http.delete(url(&server, "other=1")),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    assert_eq!(server.service().len(), 1);

    let r = http
        .get(format!("http://{}/health", server.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn listing_reports_keys_and_growing_revisions() {
    let server = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    let http = reqwest::Client::new();
    for key in ["p/b", "p/a", "q/a"] {
        http.put(url(&server, &format!("key={key}")))
            .body("v")
            .send()
            .await
            .unwrap();
    }
    let list = |q: &'static str| {
        let http = http.clone();
        let u = url(&server, q);
        async move {
            http.get(u)
                .send()
                .await
                .unwrap()
                .json::<Listing>()
                .await
                .unwrap()
        }
    };
    let before = list("prefix=p/").await;
    let keys: Vec<_> = before.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["p/a", "p/b"]);
    assert_eq!(before.revision, 3);
    assert_eq!(list("prefix=").await.keys.len(), 3);

    http.put(url(&server, "key=p/a"))
        .body("w")
        .send()
        .await
        .unwrap();
    let after = list("prefix=p/").await;
    assert!(after.revision > before.revision);
    assert!(
        after.keys[0].revision > before.keys[0].revision,
        "p/a rewritten"
    );
    assert_eq!(
        after.keys[1].revision, before.keys[1].revision,
        "p/b untouched"
    );
}

#[tokio::test]
async fn large_values_are_accepted_up_to_the_limit() {
    let server = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    let http = reqwest::Client::new();
    let big = vec![0xa5u8; 16 << 20];
    let r = http
        .put(url(&server, "key=big"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got = http
        .get(url(&server, "key=big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got[..] == big[..]);
    let too_big = vec![0u8; mooncake_metadata::http::server::MAX_VALUE_BYTES + 1];
    let r = http
        .put(url(&server, "key=toobig"))
        .body(too_big)
        .send()
        .await;
    // Refused with 413, or the connection is cut while sending; never stored.
    if let Ok(r) = r {
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert_eq!(server.service().len(), 1);
}

#[tokio::test]
async fn router_mounts_into_another_server() {
    // As the store master does with --enable_http_metadata_server.
    let service = MetadataService::new();
    let app = axum::Router::new()
        .route("/other", axum::routing::get(|| async { "master" }))
        .merge(service.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await });

    let store = mooncake_metadata::connect(&format!("http://{addr}/metadata"))
        .await
        .unwrap();
    store.put("mooncake/ram/x", b"d").await.unwrap();
    assert_eq!(service.len(), 1);
    let other = reqwest::get(format!("http://{addr}/other")).await.unwrap();
    assert_eq!(other.text().await.unwrap(), "master");
    task.abort();
}

#[tokio::test]
async fn graceful_shutdown_releases_the_port() {
    let server = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let store = mooncake_metadata::connect(&server.url()).await.unwrap();
    store.put("k", b"v").await.unwrap();
    server.shutdown().await.unwrap();
    // The port can be bound again at once.
    let again = MetadataServer::bind(addr).await.unwrap();
    assert_eq!(again.local_addr(), addr);
    assert_eq!(store.get("k").await.unwrap(), None, "a fresh table");
}
