//! Servers that misbehave in ways a real etcd 3.4 or redis cannot be made to:
//! one that accepts connections and never answers (every backend must give
//! `Unreachable` within its timeouts, never hang), and an older etcd whose
//! JSON gateway lives under `/v3beta` (the client must find it).

use std::time::Duration;

use axum::routing::post;
use mooncake_metadata::etcd::{EtcdClient, EtcdOptions};
use mooncake_metadata::redis::RedisOptions;
use mooncake_metadata::{
    EtcdMetadata, HttpMetadata, HttpOptions, MetadataError, MetadataStore, RedisMetadata,
};
use tokio::net::TcpListener;

/// Accepts connections, reads nothing, answers nothing; holds them open.
async fn silent_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (addr, task)
}

fn assert_unreachable<T: std::fmt::Debug>(what: &str, r: Result<T, MetadataError>) {
    assert!(
        matches!(r, Err(MetadataError::Unreachable { .. })),
        "{what}: expected Unreachable, got {r:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_unreachable_not_a_hang() {
    let (addr, task) = silent_server().await;
    let short = Duration::from_millis(300);
    // The outer guard only keeps a regression from hanging the suite.
    let guard = Duration::from_secs(30);

    let http = HttpMetadata::connect(
        format!("http://{addr}/metadata").parse().unwrap(),
        HttpOptions {
            connect_timeout: short,
            request_timeout: short,
            ..HttpOptions::default()
        },
    );
    assert_unreachable("http", tokio::time::timeout(guard, http).await.unwrap());

    let endpoints = [addr.to_string()];
    let etcd = EtcdMetadata::connect_with(
        &endpoints,
        EtcdOptions {
            connect_timeout: short,
            request_timeout: short,
        },
    );
    assert_unreachable("etcd", tokio::time::timeout(guard, etcd).await.unwrap());

    let redis_url = format!("redis://{addr}");
    let redis = RedisMetadata::connect_with(
        &redis_url,
        RedisOptions {
            connect_timeout: short,
            response_timeout: short,
            ..RedisOptions::default()
        },
    );
    assert_unreachable("redis", tokio::time::timeout(guard, redis).await.unwrap());
    task.abort();
}

#[tokio::test]
async fn an_etcd_gateway_under_v3beta_is_found() {
    // etcd 3.3 served its gateway under /v3beta only; /v3 is a 404 there.
    let app = axum::Router::new().route(
        "/v3beta/kv/range",
        post(|| async {
            r#"{"header":{"revision":"9"},"kvs":[{"key":"aw==","value":"dg==","mod_revision":"9"}],"count":"1"}"#
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = EtcdClient::connect(&[addr.to_string()], EtcdOptions::default())
        .await
        .unwrap();
    assert_eq!(client.api_prefix().await.unwrap(), "/v3beta");
    let store = EtcdMetadata::connect(&[addr.to_string()]).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
    task.abort();
}

#[tokio::test]
async fn a_server_without_any_etcd_gateway_is_a_typed_error() {
    let app = axum::Router::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    match EtcdClient::connect(&[addr.to_string()], EtcdOptions::default()).await {
        Err(MetadataError::Backend { message, .. }) => {
            assert!(message.contains("no etcd v3 JSON gateway"), "{message}")
        }
        other => panic!("expected a Backend error, got {other:?}"),
    }
    task.abort();
}
