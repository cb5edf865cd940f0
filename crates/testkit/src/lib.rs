//! The one process-test harness of the workspace. It owns:
//!
//! | module      | what                                                                 |
//! |-------------|----------------------------------------------------------------------|
//! | [`bin`]     | finding (and building) the `mooncake` binary under test              |
//! | [`proc`]    | child processes in their own process group, killed on drop, stdout lines, stderr captured |
//! | [`ready`]   | parsing the one-line JSON READY announcement every server prints     |
//! | [`wait`]    | bounded, condition-based waits (never a sleep as synchronisation)    |
//! | [`net`]     | free loopback ports                                                  |
//! | [`netns`]   | network namespaces on a bridge, shaped and cut links (multi-host tests) |
//! | [`http`]    | a blocking HTTP GET for health and admin views                       |
//! | [`servers`] | real `etcd` and `redis-server` processes                             |
//! | [`cluster`] | a local store cluster: `mooncake up` (master + metadata) and storage nodes |
//! | [`data`]    | self-checking and deterministic test payloads                        |
//!
//! Invariants: every child started here is killed (its whole process group)
//! and reaped when its handle drops, also when a test panics; every wait has a
//! deadline and its panic message says what was awaited (with the child's
//! stderr tail where there is one). The crate depends on no workspace crate,
//! so any crate may use it in `[dev-dependencies]`, and the `mooncake` benches
//! use it to start their own clusters.
//!
//! ```no_run
//! use mooncake_testkit::{Proc, Ready};
//! use std::time::Duration;
//!
//! let mut seg = Proc::mooncake(&["segment", "--metadata", "P2PHANDSHAKE", "--size", "1MiB"]);
//! let ready: Ready = seg.ready(Duration::from_secs(30));
//! assert_eq!(ready.component, "segment");
//! println!("segment {} on port {}", ready.str("segment"), ready.u64("rpc_port"));
//! ```

pub mod bin;
pub mod cluster;
pub mod data;
pub mod http;
pub mod net;
pub mod netns;
pub mod proc;
pub mod ready;
pub mod servers;
pub mod wait;

pub use bin::mooncake_bin;
pub use cluster::{store_node, Cluster, MasterOpts, Node};
pub use data::{check_tagged, fnv, pattern, tagged_value};
pub use net::free_port;
pub use proc::Proc;
pub use ready::Ready;
pub use servers::{EtcdServer, HarnessError, RedisServer};
pub use wait::{wait_for, wait_for_async, wait_until};
