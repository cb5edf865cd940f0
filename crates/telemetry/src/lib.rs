//! Telemetry shared by every Mooncake component. Owns the Prometheus text
//! exposition format (version 0.0.4): [`prometheus::TextWriter`] is the one
//! writer of `# HELP` / `# TYPE` lines, label escaping, value spelling and
//! histogram series; the master, the store and the router render their
//! `/metrics` pages with it. No dependencies, no registry: components keep
//! their own counters and write them at scrape time.

pub mod prometheus;

pub use prometheus::{Kind, TextWriter};
