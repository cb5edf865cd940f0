//! The published Mooncake trace format (JSONL) and its streaming loader.
//!
//! One request per line: `timestamp` (ms since trace start), `input_length` and
//! `output_length` (tokens), `hash_ids` (hashes of the prompt's prefix blocks,
//! [`TRACE_BLOCK_TOKENS`] tokens each; equal prefixes share leading ids).

use serde::{Deserialize, Serialize};

/// Tokens per `hash_ids` block in the published traces.
pub const TRACE_BLOCK_TOKENS: u32 = 512;

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Arrival time in milliseconds since the start of the trace.
    pub timestamp: u64,
    /// Prompt length in tokens.
    pub input_length: u32,
    /// Generated length in tokens.
    pub output_length: u32,
    /// Prefix block hashes, one per `TRACE_BLOCK_TOKENS` tokens of the prompt.
    pub hash_ids: Vec<u64>,
}
