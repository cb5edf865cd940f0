//! Store clients for the multi-process cluster tests. The processes (a real
//! `mooncake up` master with its HTTP metadata server, real `mooncake
//! store-node`s) come from `mooncake-testkit`; the test process is the client.
#![allow(dead_code)]

use std::time::Duration;

use mooncake_store::client::{Client, ClientConfig};
use mooncake_testkit::Cluster;

/// Store clients of a [`Cluster`], connected from the test process.
#[allow(async_fn_in_trait)]
pub trait Clients {
    /// A client with no segment of its own and a 64 MiB staging buffer.
    async fn client(&self) -> Client {
        self.client_with(0, 64 << 20).await
    }

    /// A client mounting `segment` bytes with a `local_buffer`-byte staging buffer.
    async fn client_with(&self, segment: u64, local_buffer: u64) -> Client;
}

impl Clients for Cluster {
    async fn client_with(&self, segment: u64, local_buffer: u64) -> Client {
        let cfg = ClientConfig {
            local_hostname: "127.0.0.1".into(),
            metadata_server: self.metadata.clone(),
            master_server_addr: self.master_addr.clone(),
            global_segment_size: segment,
            local_buffer_size: local_buffer,
            lease_ttl: Duration::from_millis(self.opts.lease_ttl_ms),
            ..ClientConfig::default()
        };
        Client::connect(cfg).await.expect("client connects")
    }
}
