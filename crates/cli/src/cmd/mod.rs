//! One module per subcommand.
pub mod bench_cache;
pub mod bench_dummy;
pub mod bench_router;
pub mod bench_store;
pub mod bench_transfer;
pub mod client;
pub mod fake_engine;
pub mod master;
pub mod metadata_server;
pub mod p2p;
pub mod real_client;
pub mod router;
pub mod segment;
pub mod sim;
pub mod store_node;
pub mod trace;
pub mod up;
