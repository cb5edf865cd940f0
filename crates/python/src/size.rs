//! Human-readable sizes ("16MB", "16 MB", "1GiB", 4096) as the reference's
//! configuration accepts them; percentages are refused.

pub use mooncake_store::client::parse_size;
