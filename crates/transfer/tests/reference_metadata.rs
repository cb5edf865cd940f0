//! Engines whose metadata lives on a server with only the reference's HTTP
//! protocol (GET/PUT/DELETE `/metadata?key=`, no `?prefix=` listing, hence no
//! watch) start, find each other and transfer; descriptors then refresh on
//! demand instead of through change notifications.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use common::*;
use mooncake_transfer::{Opcode, Protocol};
use parking_lot::Mutex;

type Map = Arc<Mutex<HashMap<String, Vec<u8>>>>;

fn key_of(q: &HashMap<String, String>) -> Result<String, (StatusCode, &'static str)> {
    q.get("key")
        .cloned()
        .ok_or((StatusCode::BAD_REQUEST, "missing key"))
}

/// A metadata server that speaks only what the reference's server speaks.
async fn reference_style_server() -> (String, tokio::task::JoinHandle<()>) {
    let map: Map = Arc::default();
    let app =
        axum::Router::new()
            .route(
                "/metadata",
                get(
                    |State(m): State<Map>, Query(q): Query<HashMap<String, String>>| async move {
                        let key = key_of(&q)?;
                        m.lock()
                            .get(&key)
                            .cloned()
                            .ok_or((StatusCode::NOT_FOUND, "metadata not found"))
                    },
                )
                .put(
                    |State(m): State<Map>,
                     Query(q): Query<HashMap<String, String>>,
                     body: Bytes| async move {
                        let key = key_of(&q)?;
                        m.lock().insert(key, body.to_vec());
                        Ok::<_, (StatusCode, &'static str)>("metadata updated")
                    },
                )
                .delete(
                    |State(m): State<Map>, Query(q): Query<HashMap<String, String>>| async move {
                        let key = key_of(&q)?;
                        m.lock()
                            .remove(&key)
                            .map(|_| "metadata deleted")
                            .ok_or((StatusCode::NOT_FOUND, "metadata not found"))
                    },
                ),
            )
            .with_state(map);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metadata", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_work_over_a_server_without_listing() {
    let (url, server) = reference_style_server().await;
    let target = engine(&url, &[Protocol::Tcp], None).await;
    let initiator = engine(&url, &[Protocol::Tcp], None).await;

    let remote = target.allocate_managed_buffer(1 << 20).await.unwrap();
    let local = initiator.allocate_managed_buffer(1 << 20).await.unwrap();
    let data = random_bytes(11, 1 << 20);
    local.write_at(0, &data);

    let seg = initiator.open_segment(target.segment_name()).await.unwrap();
    initiator
        .transfer(&[req(
            Opcode::Write,
            &local,
            0,
            &seg,
            remote.addr() as u64,
            1 << 20,
        )])
        .await
        .unwrap();
    let mut got = vec![0u8; 1 << 20];
    remote.read_at(0, &mut got);
    assert!(got == data, "bytes written through tcp differ");

    // A buffer registered after the initiator cached the descriptor is found
    // by the on-demand refresh, with no watch to announce it.
    let late = target.allocate_managed_buffer(4096).await.unwrap();
    initiator
        .transfer(&[req(
            Opcode::Write,
            &local,
            0,
            &seg,
            late.addr() as u64,
            4096,
        )])
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    late.read_at(0, &mut head);
    assert!(head == data[..4096]);

    initiator.shutdown().await;
    target.shutdown().await;
    server.abort();
}
