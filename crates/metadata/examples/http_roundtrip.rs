//! Start an HTTP metadata server in-process, publish a segment descriptor
//! through the client, watch it change, and look it up, the way Transfer
//! Engine peers do. Run: `cargo run -p mooncake-metadata --example http_roundtrip`.

use mooncake_metadata::http::server::MetadataServer;
use mooncake_metadata::{connect, segment_key, WatchEvent, SEGMENT_KEY_PREFIX};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MetadataServer::bind("127.0.0.1:0").await?;
    println!("metadata server at {}", server.url());

    let store = connect(&server.url()).await?;
    let mut changes = store.watch(SEGMENT_KEY_PREFIX).await?;

    let key = segment_key("127.0.0.1:12345");
    store
        .put(&key, br#"{"name":"127.0.0.1:12345","buffers":[]}"#)
        .await?;
    match changes.recv().await {
        Some(WatchEvent::Put { key, value }) => {
            println!("watch: {key} = {}", String::from_utf8_lossy(&value))
        }
        other => println!("watch: {other:?}"),
    }
    println!("segments: {:?}", store.list(SEGMENT_KEY_PREFIX).await?);
    store.delete(&key).await?;
    println!("after delete: {:?}", store.get(&key).await?);

    server.shutdown().await?;
    Ok(())
}
