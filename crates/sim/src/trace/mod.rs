//! The published Mooncake trace format (JSONL) and its streaming loader.
//!
//! One request per line: `timestamp` (ms since trace start), `input_length` and
//! `output_length` (tokens), `hash_ids` (hashes of the prompt's prefix blocks,
//! [`TRACE_BLOCK_TOKENS`] tokens each; equal prefixes share leading ids).
//!
//! [`TraceReader`] reads any [`BufRead`] one line at a time (memory does not
//! grow with the trace), skips blank lines, and turns every malformed line
//! into a [`TraceError`] naming the 1-based line number and, where one is to
//! blame, the field. Unknown extra fields are ignored (newer trace versions add
//! some). After an error the reader moves on to the next line, so a caller may
//! choose to skip bad lines instead of stopping.
//!
//! Submodules: [`stats`] (one-pass statistics), [`hitrate`] (prefix-cache hit
//! ratio under capacity limits; the paper's Figure 9), [`plots`] (SVG output).

pub mod hitrate;
pub mod plots;
pub mod stats;
pub mod synth;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

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

/// Why one line is not a valid record (without the line number; see
/// [`TraceError::Line`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Valid JSON but not an object.
    #[error("expected a JSON object, found {0}")]
    NotObject(&'static str),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type or an out-of-range value.
    #[error("field `{field}`: {message}")]
    Field {
        /// The field (`hash_ids[3]` for an element).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl RecordError {
    /// The field to blame, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            RecordError::Missing(f) => Some(f),
            RecordError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// An error reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened.
    #[error("cannot open trace {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading failed (I/O error or invalid UTF-8) at a line.
    #[error("line {line}: read error: {source}")]
    Io {
        /// 1-based line number.
        line: u64,
        /// The underlying error.
        source: io::Error,
    },
    /// A line is not a valid record.
    #[error("line {line}: {error}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        error: RecordError,
    },
}

impl TraceError {
    /// The 1-based line number the error is about, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            TraceError::Open { .. } => None,
            TraceError::Io { line, .. } | TraceError::Line { line, .. } => Some(*line),
        }
    }

    /// The field to blame, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            TraceError::Line { error, .. } => error.field(),
            _ => None,
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn uint(v: &Value, field: &str, max: u64) -> Result<u64, RecordError> {
    let bad = |message: String| RecordError::Field {
        field: field.to_string(),
        message,
    };
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        Some(n) => Err(bad(format!("{n} exceeds the maximum {max}"))),
        None => match v {
            Value::Number(n) => Err(bad(format!("expected a non-negative integer, found {n}"))),
            other => Err(bad(format!(
                "expected a non-negative integer, found {}",
                kind_of(other)
            ))),
        },
    }
}

impl TraceRecord {
    /// Parses one JSON line (without the line number; see [`TraceReader`]).
    pub fn parse_line(line: &str) -> Result<TraceRecord, RecordError> {
        let v: Value = serde_json::from_str(line).map_err(|e| RecordError::Json(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(RecordError::NotObject(kind_of(&v)));
        };
        let get = |name: &'static str| obj.get(name).ok_or(RecordError::Missing(name));
        let timestamp = uint(get("timestamp")?, "timestamp", u64::MAX)?;
        let input_length = uint(get("input_length")?, "input_length", u32::MAX as u64)? as u32;
        let output_length = uint(get("output_length")?, "output_length", u32::MAX as u64)? as u32;
        let hash_ids = match get("hash_ids")? {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, h)| uint(h, &format!("hash_ids[{i}]"), u64::MAX))
                .collect::<Result<Vec<u64>, _>>()?,
            other => {
                return Err(RecordError::Field {
                    field: "hash_ids".into(),
                    message: format!(
                        "expected an array of block hashes, found {}",
                        kind_of(other)
                    ),
                })
            }
        };
        Ok(TraceRecord {
            timestamp,
            input_length,
            output_length,
            hash_ids,
        })
    }

    /// Arrival time in seconds.
    pub fn arrival_s(&self) -> f64 {
        self.timestamp as f64 / 1000.0
    }

    /// Number of prefix blocks.
    pub fn blocks(&self) -> usize {
        self.hash_ids.len()
    }

    /// Tokens covered by the first `blocks` blocks, capped at the prompt length
    /// (the last block of a prompt is usually partial).
    pub fn prefix_tokens(&self, blocks: usize) -> u64 {
        (blocks as u64 * TRACE_BLOCK_TOKENS as u64).min(self.input_length as u64)
    }
}

/// A streaming reader of trace records from any [`BufRead`].
#[derive(Debug)]
pub struct TraceReader<R> {
    inner: R,
    buf: Vec<u8>,
    line: u64,
    done: bool,
}

impl<R: BufRead> TraceReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        TraceReader {
            inner,
            buf: Vec::new(),
            line: 0,
            done: false,
        }
    }

    /// The 1-based number of the last line read (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }
}

impl TraceReader<BufReader<File>> {
    /// Opens a trace file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|source| TraceError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(TraceReader::new(BufReader::with_capacity(1 << 16, f)))
    }
}

impl<R: BufRead> Iterator for TraceReader<R> {
    type Item = Result<TraceRecord, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            match self.inner.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    let parsed = match std::str::from_utf8(&self.buf) {
                        Ok(text) if text.trim().is_empty() => continue,
                        Ok(text) => TraceRecord::parse_line(text.trim()),
                        Err(e) => Err(RecordError::Json(format!("invalid UTF-8: {e}"))),
                    };
                    return Some(parsed.map_err(|error| TraceError::Line {
                        line: self.line,
                        error,
                    }));
                }
                Err(source) => {
                    // An I/O error may repeat forever: report it once and stop.
                    self.done = true;
                    return Some(Err(TraceError::Io {
                        line: self.line,
                        source,
                    }));
                }
            }
        }
        None
    }
}

/// Where the published traces live in a checkout: `$MOONCAKE_TRACES` if set,
/// else `../shared/traces` next to the repository root (resolved from this
/// crate's source directory at build time). Used by tests, examples and CI.
pub fn published_traces_dir() -> PathBuf {
    match std::env::var_os("MOONCAKE_TRACES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces"),
    }
}

/// The path of a published trace file (e.g. `conversation_trace.jsonl`), or
/// an [`TraceError::Open`] error naming where it was looked for.
pub fn published_trace(name: &str) -> Result<PathBuf, TraceError> {
    let p = published_traces_dir().join(name);
    if p.is_file() {
        Ok(p.canonicalize().unwrap_or(p))
    } else {
        Err(TraceError::Open {
            path: p,
            source: io::Error::new(io::ErrorKind::NotFound, "published trace not found"),
        })
    }
}

/// Reads a whole trace into memory, stopping at the first error.
pub fn read_trace(path: impl AsRef<Path>) -> Result<Vec<TraceRecord>, TraceError> {
    TraceReader::open(path)?.collect()
}

#[cfg(test)]
mod tests;
