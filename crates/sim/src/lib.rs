//! The Conductor's offline tools, kept out of the live router: everything
//! here reads traces, simulates a cluster or draws charts, and nothing in
//! `mooncake-router` links it.
//!
//! Layout (pure cores; no I/O except the trace reader and the plot writers):
//! - [`trace`]: the published trace format, a streaming loader, statistics,
//!   synthetic traces.
//! - [`sim`]: the trace-driven discrete-event simulator of a disaggregated
//!   cluster; it routes with the Conductor core's
//!   [`decide`](mooncake_conductor::policy::decide), as the live router does.
//! - [`plot`]: dependency-free SVG charts (lines, histograms, CDFs).
//!
//! The scheduling core (policies, admission, cache bookkeeping, cost model)
//! is `mooncake-conductor`; it is imported at the crate root so that the
//! modules here name it `crate::policy`, `crate::cache`, `crate::cost`.

use mooncake_conductor::{cache, cost, policy};

pub mod plot;
pub mod sim;
pub mod trace;
