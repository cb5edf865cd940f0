//! The HTTP metadata server's wire behaviour, checked with raw requests:
//! the reference's status codes and bodies, our listing extension, `/health`,
//! mounting into another router, and graceful shutdown.

use mooncake_metadata::http::server::{MetadataServer, MetadataService};
use mooncake_metadata::http::Listing;
use reqwest::{Method, StatusCode};

fn url(server: &MetadataServer, query: &str) -> String {
    format!("http://{}/metadata?{query}", server.local_addr())
}

/// One raw request: status and body text.
async fn call(
    http: &reqwest::Client,
    method: Method,
    url: String,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn reference_status_codes_and_bodies() {
    let server = MetadataServer::bind("127.0.0.1:0").await.unwrap();
    let http = reqwest::Client::new();
    let key = "key=mooncake%2Fram%2Fh%3A1";
    let not_found = (StatusCode::NOT_FOUND, "metadata not found".to_string());

    assert_eq!(
        call(&http, Method::GET, url(&server, key), None).await,
        not_found
    );
    let (status, _) = call(
        &http,
        Method::PUT,
        url(&server, key),
        Some(r#"{"name":"h:1"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The key decodes the same whether '/' and ':' are escaped or not, and
    // whether spaces are %20 or +.
    assert_eq!(
        call(
            &http,
            Method::GET,
            url(&server, "key=mooncake/ram/h:1"),
            None
        )
        .await,
        (StatusCode::OK, r#"{"name":"h:1"}"#.to_string())
    );
    call(&http, Method::PUT, url(&server, "key=a%20b"), Some("x")).await;
    assert_eq!(
        call(&http, Method::GET, url(&server, "key=a+b"), None).await,
        (StatusCode::OK, "x".to_string())
    );

    let (status, _) = call(&http, Method::DELETE, url(&server, key), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&http, Method::DELETE, url(&server, key), None).await,
        not_found
    );
    assert_eq!(
        call(&http, Method::GET, url(&server, key), None).await,
        not_found
    );

    // Requests without a key are refused and change nothing.
    for (method, query) in [
        (Method::GET, ""),
        (Method::PUT, ""),
        (Method::DELETE, "other=1"),
    ] {
        let (status, _) = call(&http, method, url(&server, query), Some("v")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(server.service().len(), 1);

    let health = format!("http://{}/health", server.local_addr());
    assert_eq!(
        call(&http, Method::GET, health, None).await.0,
        StatusCode::OK
    );
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
