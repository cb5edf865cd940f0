//! One module per subcommand.
pub mod bench_transfer;
pub mod master;
pub mod metadata_server;
pub mod segment;
pub mod trace;
pub mod up;
