//! What the router knows about a request without a tokenizer: the prompt's
//! text, its prefix block hashes, token estimates and the output length.
//!
//! Owns the OpenAI request parsing the router needs (completions `prompt`,
//! chat `messages`, `max_tokens` / `max_completion_tokens`, `stream`) and the
//! block hashing shared by the router and the fake engine, so both agree on
//! which prefixes are equal.
//!
//! Approximations (documented in the crate README):
//! - A block is `block_chars` **characters** of the rendered prompt (default
//!   2048 ≈ 512 tokens at ~4 characters per token, the traces' block size).
//!   Only full blocks are hashed: engines (vLLM, SGLang) cache whole KV
//!   blocks only, so a trailing partial block is never reusable.
//! - Each block's hash covers the previous block's hash (a chained prefix
//!   hash, like the traces' `hash_ids`): equal hashes mean equal prefixes.
//! - Tokens are estimated as `ceil(chars / CHARS_PER_TOKEN)`.
//! - Chat messages are rendered as `role\ncontent\n` per message; the
//!   rendering only has to be stable (equal message prefixes give equal text
//!   prefixes), not match the engine's chat template.
//!
//! Invariants: hashing is deterministic across processes and platforms
//! (FNV-1a over UTF-8 bytes plus a SplitMix64 finaliser, no random state);
//! `blocks.len() == chars / block_chars`.

use serde_json::Value;

/// Characters per token assumed when estimating token counts (English text
/// under BPE tokenizers averages about four characters per token).
pub const CHARS_PER_TOKEN: usize = 4;

/// Default characters per prefix block (≈ 512 tokens).
pub const DEFAULT_BLOCK_CHARS: usize = 2048;

/// Output tokens assumed when a request gives no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// Which OpenAI endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    ChatCompletions,
}

impl Endpoint {
    /// The URL path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::ChatCompletions => "/v1/chat/completions",
        }
    }

    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Completions => "completions",
            Endpoint::ChatCompletions => "chat",
        }
    }
}

/// Why a request body cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// The body is not a JSON object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// The endpoint's prompt field is missing.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type.
    #[error("field `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The routing-relevant shape of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptShape {
    /// Characters of the rendered prompt.
    pub chars: usize,
    /// Estimated prompt tokens (at least 1).
    pub input_tokens: u32,
    /// Output tokens: `max_tokens` / `max_completion_tokens` or the default.
    pub output_tokens: u32,
    /// Chained hashes of the prompt's full blocks.
    pub blocks: Vec<u64>,
    /// Whether the client asked for an SSE stream.
    pub stream: bool,
}

/// Estimated tokens of `chars` characters (at least 1: an empty prompt still
/// runs one forward pass).
pub fn estimate_tokens(chars: usize) -> u32 {
    let t = chars.div_ceil(CHARS_PER_TOKEN).max(1);
    u32::try_from(t).unwrap_or(u32::MAX)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// SplitMix64's finaliser: spreads FNV's weak low bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Chained hashes of the full `block_chars`-character blocks of `text`
/// (`block_chars == 0` yields no blocks).
pub fn block_hashes(text: &str, block_chars: usize) -> Vec<u64> {
    if block_chars == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(text.len() / block_chars);
    let mut prev: u64 = 0;
    let mut start = 0usize;
    let mut count = 0usize;
    for (i, c) in text.char_indices() {
        count += 1;
        if count == block_chars {
            let end = i + c.len_utf8();
            let h = fnv1a(
                fnv1a(FNV_OFFSET, &prev.to_le_bytes()),
                &text.as_bytes()[start..end],
            );
            prev = mix(h);
            out.push(prev);
            start = end;
            count = 0;
        }
    }
    out
}

/// Renders a chat `messages` array as text (`role\ncontent\n` per message;
/// content parts of type `text` concatenated, other parts as their JSON).
pub fn render_messages(messages: &Value) -> Result<String, PromptError> {
    let arr = messages.as_array().ok_or_else(|| PromptError::Invalid {
        field: "messages",
        message: "must be an array".into(),
    })?;
    let mut out = String::new();
    for m in arr {
        let obj = m.as_object().ok_or_else(|| PromptError::Invalid {
            field: "messages",
            message: "every message must be an object".into(),
        })?;
        out.push_str(obj.get("role").and_then(Value::as_str).unwrap_or(""));
        out.push('\n');
        match obj.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Array(parts)) => {
                for p in parts {
                    match p.get("text").and_then(Value::as_str) {
                        Some(t) => out.push_str(t),
                        None => out.push_str(&p.to_string()),
                    }
                }
            }
            Some(other) => out.push_str(&other.to_string()),
        }
        out.push('\n');
    }
    Ok(out)
}

/// The prompt text of a completions request: a string, or an array of
/// strings / token ids (rendered as their JSON, which is stable).
fn completions_prompt(body: &Value) -> Result<String, PromptError> {
    match body.get("prompt") {
        None | Some(Value::Null) => Err(PromptError::Missing("prompt")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("")),
        Some(_) => Err(PromptError::Invalid {
            field: "prompt",
            message: "must be a string or an array".into(),
        }),
    }
}

/// The rendered prompt text of a request body.
pub fn prompt_text(endpoint: Endpoint, body: &Value) -> Result<String, PromptError> {
    if !body.is_object() {
        return Err(PromptError::NotAnObject);
    }
    match endpoint {
        Endpoint::Completions => completions_prompt(body),
        Endpoint::ChatCompletions => match body.get("messages") {
            None | Some(Value::Null) => Err(PromptError::Missing("messages")),
            Some(m) => render_messages(m),
        },
    }
}

/// `max_completion_tokens` (chat) or `max_tokens`, if given.
pub fn requested_output(body: &Value) -> Result<Option<u32>, PromptError> {
    for field in ["max_completion_tokens", "max_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let n = v.as_u64().ok_or_else(|| PromptError::Invalid {
                    field: if field == "max_tokens" {
                        "max_tokens"
                    } else {
                        "max_completion_tokens"
                    },
                    message: "must be a non-negative integer".into(),
                })?;
                return Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)));
            }
        }
    }
    Ok(None)
}

/// Whether the body asks for streaming (`"stream": true`).
pub fn wants_stream(body: &Value) -> Result<bool, PromptError> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(PromptError::Invalid {
            field: "stream",
            message: "must be a boolean".into(),
        }),
    }
}

/// Parses what the router needs from a request body.
pub fn shape(
    endpoint: Endpoint,
    body: &Value,
    block_chars: usize,
    default_max_tokens: u32,
) -> Result<PromptShape, PromptError> {
    shape_with(
        endpoint,
        body,
        &BlockScheme::Chars(block_chars),
        default_max_tokens,
    )
}

/// How prompts are cut into prefix blocks.
#[derive(Debug, Clone)]
pub enum BlockScheme {
    /// `block_chars`-character blocks of the text, FNV-chained (no
    /// engine publishes these: the router's caches are beliefs).
    Chars(usize),
    /// The engine's own blocks: token ids (given as a token-id `prompt`,
    /// else [`toy_tokens`] of the text) hashed as vLLM hashes them, so they
    /// equal the hashes in the engine's KV events.
    Tokens(crate::kv_events::hash::BlockHasher),
}

/// Characters per token of [`toy_tokens`].
pub const TOY_TOKEN_BYTES: usize = CHARS_PER_TOKEN;

/// A stand-in tokenizer shared by the router and the fake engine: one token
/// per [`TOY_TOKEN_BYTES`] bytes of UTF-8 (FNV of the chunk, below 100,000,
/// a vocabulary's size). Equal text prefixes give equal token prefixes. A
/// real engine's tokenizer differs: in front of one, send token-id prompts
/// for exact prefix hits.
pub fn toy_tokens(text: &str) -> Vec<u32> {
    text.as_bytes()
        .chunks(TOY_TOKEN_BYTES)
        .map(|c| (mix(fnv1a(FNV_OFFSET, c)) % 100_000) as u32)
        .collect()
}

/// A completions `prompt` given as token ids (`[1, 2, ...]` or
/// `[[1, 2, ...]]`), if it is one.
pub fn prompt_token_ids(body: &Value) -> Option<Vec<u32>> {
    let arr = body.get("prompt")?.as_array()?;
    let ids = match arr.first() {
        Some(Value::Array(inner)) if arr.len() == 1 => inner,
        _ => arr,
    };
    if ids.is_empty() {
        return None;
    }
    ids.iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// The token ids of a request whose rendered prompt is `text`: a
/// completions token-id prompt as given, else [`toy_tokens`] of the text.
pub fn prompt_tokens(endpoint: Endpoint, body: &Value, text: &str) -> Vec<u32> {
    match endpoint {
        Endpoint::Completions => prompt_token_ids(body),
        Endpoint::ChatCompletions => None,
    }
    .unwrap_or_else(|| toy_tokens(text))
}

/// Parses what the router needs from a request body, cutting blocks by
/// `scheme`.
pub fn shape_with(
    endpoint: Endpoint,
    body: &Value,
    scheme: &BlockScheme,
    default_max_tokens: u32,
) -> Result<PromptShape, PromptError> {
    let text = prompt_text(endpoint, body)?;
    let chars = text.chars().count();
    let (input_tokens, blocks) = match scheme {
        BlockScheme::Chars(bc) => (estimate_tokens(chars), block_hashes(&text, *bc)),
        BlockScheme::Tokens(h) => {
            let ids = prompt_tokens(endpoint, body, &text);
            let n = u32::try_from(ids.len().max(1)).unwrap_or(u32::MAX);
            (n, h.hashes(&ids))
        }
    };
    Ok(PromptShape {
        chars,
        input_tokens,
        output_tokens: requested_output(body)?.unwrap_or(default_max_tokens).max(1),
        blocks,
        stream: wants_stream(body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_scheme_uses_token_id_prompts_or_toy_tokens() {
        use crate::kv_events::hash::{BlockHasher, HashAlgo, DEFAULT_SEED};
        let h = BlockHasher::new(HashAlgo::Sha256, 4, DEFAULT_SEED);
        let scheme = BlockScheme::Tokens(h.clone());
        let ids: Vec<u32> = (0..10).collect();
        let s = shape_with(Endpoint::Completions, &json!({"prompt": ids}), &scheme, 8).unwrap();
        assert_eq!(s.input_tokens, 10);
        assert_eq!(s.blocks, h.hashes(&ids));
        let s2 = shape_with(Endpoint::Completions, &json!({"prompt": [ids]}), &scheme, 8).unwrap();
        assert_eq!(s2.blocks, s.blocks);
        let text = "abcd".repeat(9);
        let s3 = shape_with(Endpoint::Completions, &json!({"prompt": text}), &scheme, 8).unwrap();
        assert_eq!(s3.input_tokens, 9);
        assert_eq!(s3.blocks, h.hashes(&toy_tokens(&text)));
        assert_eq!(s3.blocks.len(), 2);
        assert!(toy_tokens(&text).iter().all(|&t| t < 100_000));
    }

    #[test]
    fn blocks_are_chained_prefix_hashes() {
        let a = "x".repeat(10) + &"y".repeat(10) + "tail";
        let b = "x".repeat(10) + &"z".repeat(10) + "tail";
        let ha = block_hashes(&a, 10);
        let hb = block_hashes(&b, 10);
        // 24 chars → 2 full blocks; the partial tail is not hashed.
        assert_eq!(ha.len(), 2);
        assert_eq!(ha[0], hb[0], "same first block, same hash");
        assert_ne!(ha[1], hb[1]);
        // Chained: the same block content after a different prefix differs.
        let c = "q".repeat(10) + &"y".repeat(10);
        assert_ne!(block_hashes(&c, 10)[1], ha[1]);
        // Deterministic.
        assert_eq!(block_hashes(&a, 10), ha);
        assert!(block_hashes(&a, 0).is_empty());
        assert!(block_hashes("short", 10).is_empty());
    }

    #[test]
    fn blocks_count_characters_not_bytes() {
        let s = "é".repeat(8); // 16 bytes, 8 chars
        assert_eq!(block_hashes(&s, 4).len(), 2);
        assert_ne!(block_hashes(&s, 4)[0], block_hashes(&"e".repeat(8), 4)[0]);
    }

    #[test]
    fn token_estimate() {
        assert_eq!(estimate_tokens(0), 1);
        assert_eq!(estimate_tokens(4), 1);
        assert_eq!(estimate_tokens(5), 2);
        assert_eq!(estimate_tokens(2048), 512);
    }

    #[test]
    fn completions_shape() {
        let body =
            json!({"model": "m", "prompt": "a".repeat(5000), "max_tokens": 7, "stream": true});
        let s = shape(Endpoint::Completions, &body, 2048, 256).unwrap();
        assert_eq!(s.chars, 5000);
        assert_eq!(s.input_tokens, 1250);
        assert_eq!(s.output_tokens, 7);
        assert_eq!(s.blocks.len(), 2);
        assert!(s.stream);
        let dflt = shape(
            Endpoint::Completions,
            &json!({"prompt": ["ab", "cd"]}),
            2,
            256,
        )
        .unwrap();
        assert_eq!(dflt.output_tokens, 256);
        assert_eq!(dflt.blocks.len(), 2);
        assert!(!dflt.stream);
    }

    #[test]
    fn chat_shape_and_shared_prefix() {
        let sys = "s".repeat(4096);
        let a = json!({"messages": [{"role": "system", "content": sys}, {"role": "user", "content": "hi"}],
                       "max_completion_tokens": 3});
        let b = json!({"messages": [{"role": "system", "content": sys},
                       {"role": "user", "content": [{"type": "text", "text": "other"}]}]});
        let sa = shape(Endpoint::ChatCompletions, &a, 2048, 256).unwrap();
        let sb = shape(Endpoint::ChatCompletions, &b, 2048, 256).unwrap();
        assert_eq!(sa.output_tokens, 3);
        assert_eq!(sa.blocks.len(), 2);
        assert_eq!(sa.blocks[..1], sb.blocks[..1]);
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        let ep = Endpoint::Completions;
        assert_eq!(shape(ep, &json!([1]), 8, 1), Err(PromptError::NotAnObject));
        assert_eq!(
            shape(ep, &json!({}), 8, 1),
            Err(PromptError::Missing("prompt"))
        );
        assert!(matches!(
            shape(ep, &json!({"prompt": 3}), 8, 1),
            Err(PromptError::Invalid {
                field: "prompt",
                ..
            })
        ));
        assert!(matches!(
            shape(ep, &json!({"prompt": "x", "max_tokens": -1}), 8, 1),
            Err(PromptError::Invalid {
                field: "max_tokens",
                ..
            })
        ));
        assert!(matches!(
            shape(ep, &json!({"prompt": "x", "stream": "yes"}), 8, 1),
            Err(PromptError::Invalid {
                field: "stream",
                ..
            })
        ));
        let chat = Endpoint::ChatCompletions;
        assert_eq!(
            shape(chat, &json!({"prompt": "x"}), 8, 1),
            Err(PromptError::Missing("messages"))
        );
        assert!(shape(chat, &json!({"messages": [1]}), 8, 1).is_err());
    }
}
