//! vLLM's KV-cache event wire format (`vllm/distributed/kv_events.py`):
//! one ZMQ message is three frames — topic, an 8-byte big-endian sequence
//! number, and a msgpack [`KvEventBatch`].
//!
//! Two encodings are decoded: the current one (msgspec structs as maps, the
//! event type in a `"type"` tag field; `data_parallel_rank` in the batch) and
//! the older `array_like` one (an event is `["BlockStored", hashes, parent,
//! tokens, block_size, lora_id, medium, ...]`, a batch `[ts, events, dp]`).
//! Block hashes may be integers (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`, the
//! default) or raw digests; a digest is reduced the way vLLM reduces it to an
//! integer (its low 64 bits, big-endian), so both name the same block.
//! Unknown fields and trailing array elements are ignored (forward
//! compatible); a malformed payload is a typed error, never a panic.
//!
//! [`encode_batch`] writes the current encoding (what the fake engine
//! publishes).

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A block hash as the index keys it (vLLM's integer form).
pub type BlockHash = u64;

/// One KV-cache event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum KvEvent {
    /// Consecutive full blocks were committed to the cache.
    BlockStored {
        /// Chained hashes of the stored blocks, in prefix order.
        block_hashes: Vec<BlockHash>,
        /// Hash of the block before the first one (`None` at the root).
        parent_block_hash: Option<BlockHash>,
        /// The tokens of all stored blocks (`block_size` per block).
        token_ids: Vec<u32>,
        /// Tokens per block.
        block_size: u32,
        /// Deprecated LoRA id.
        lora_id: Option<i64>,
        /// Where the blocks live (`GPU`, `CPU`, ...).
        medium: Option<String>,
        /// LoRA adapter name.
        lora_name: Option<String>,
    },
    /// Blocks were evicted.
    BlockRemoved {
        /// Hashes of the evicted blocks.
        block_hashes: Vec<BlockHash>,
        /// Where they were.
        medium: Option<String>,
    },
    /// The whole cache was reset.
    AllBlocksCleared,
}

/// One published batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvEventBatch {
    /// Publisher's wall-clock time (seconds).
    pub ts: f64,
    /// Events in order.
    pub events: Vec<KvEvent>,
    /// Data-parallel rank of the publishing engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_parallel_rank: Option<u32>,
}

/// Why a payload is not a batch.
#[derive(Debug, thiserror::Error)]
#[error("malformed KV event batch: {0}")]
pub struct WireError(String);

/// Decodes one msgpack batch (either encoding).
pub fn decode_batch(payload: &[u8]) -> Result<KvEventBatch, WireError> {
    rmp_serde::from_slice(payload).map_err(|e| WireError(e.to_string()))
}

/// Encodes a batch as current vLLM does (maps with a `type` tag).
pub fn encode_batch(batch: &KvEventBatch) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    rmp_serde::to_vec_named(batch).unwrap_or_default()
}

/// vLLM's `ExternalBlockHash`: an integer, or a digest whose low 64 bits
/// (big-endian) are the integer form.
struct ExtHash(u64);

impl<'de> Deserialize<'de> for ExtHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExtHash;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or bytes block hash")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExtHash, E> {
                Ok(ExtHash(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExtHash, E> {
                Ok(ExtHash(v as u64))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ExtHash, E> {
                let tail = &v[v.len().saturating_sub(8)..];
                Ok(ExtHash(tail.iter().fold(0u64, |h, &b| (h << 8) | b as u64)))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ExtHash, E> {
                self.visit_bytes(&v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ExtHash, A::Error> {
                // Some encoders write bytes as an array of small integers.
                let mut h = 0u64;
                while let Some(b) = seq.next_element::<u8>()? {
                    h = (h << 8) | b as u64;
                }
                Ok(ExtHash(h))
            }
        }
        d.deserialize_any(V)
    }
}

fn hashes(v: Option<Vec<ExtHash>>) -> Vec<BlockHash> {
    v.unwrap_or_default().into_iter().map(|h| h.0).collect()
}

#[derive(Default)]
struct Fields {
    tag: Option<String>,
    block_hashes: Option<Vec<ExtHash>>,
    parent: Option<ExtHash>,
    token_ids: Option<Vec<u32>>,
    block_size: Option<u32>,
    lora_id: Option<i64>,
    medium: Option<String>,
    lora_name: Option<String>,
}

impl Fields {
    fn build<E: de::Error>(self) -> Result<KvEvent, E> {
        match self.tag.as_deref() {
            Some("BlockStored") => Ok(KvEvent::BlockStored {
                block_hashes: hashes(self.block_hashes),
                parent_block_hash: self.parent.map(|h| h.0),
                token_ids: self.token_ids.unwrap_or_default(),
                block_size: self.block_size.unwrap_or(0),
                lora_id: self.lora_id,
                medium: self.medium,
                lora_name: self.lora_name,
            }),
            Some("BlockRemoved") => Ok(KvEvent::BlockRemoved {
                block_hashes: hashes(self.block_hashes),
                medium: self.medium,
            }),
            Some("AllBlocksCleared") => Ok(KvEvent::AllBlocksCleared),
            Some(other) => Err(E::custom(format!("unknown event type `{other}`"))),
            None => Err(E::custom("event without a type tag")),
        }
    }
}

impl<'de> Deserialize<'de> for KvEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KvEvent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a KV cache event (map or array)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<KvEvent, A::Error> {
                let mut f = Fields::default();
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "type" => f.tag = Some(m.next_value()?),
                        "block_hashes" => f.block_hashes = Some(m.next_value()?),
                        "parent_block_hash" => f.parent = m.next_value()?,
                        "token_ids" => f.token_ids = Some(m.next_value()?),
                        "block_size" => f.block_size = Some(m.next_value()?),
                        "lora_id" => f.lora_id = m.next_value()?,
                        "medium" => f.medium = m.next_value()?,
                        "lora_name" => f.lora_name = m.next_value()?,
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                f.build()
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<KvEvent, A::Error> {
                let mut f = Fields {
                    tag: s.next_element()?,
                    ..Fields::default()
                };
                match f.tag.as_deref() {
                    Some("BlockStored") => {
                        f.block_hashes = s.next_element()?;
                        f.parent = s.next_element::<Option<ExtHash>>()?.flatten();
                        f.token_ids = s.next_element()?;
                        f.block_size = s.next_element()?;
                        f.lora_id = s.next_element::<Option<i64>>()?.flatten();
                        f.medium = s.next_element::<Option<String>>()?.flatten();
                        f.lora_name = s.next_element::<Option<String>>()?.flatten();
                    }
                    Some("BlockRemoved") => {
                        f.block_hashes = s.next_element()?;
                        f.medium = s.next_element::<Option<String>>()?.flatten();
                    }
                    _ => {}
                }
                while s.next_element::<IgnoredAny>()?.is_some() {}
                f.build()
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for KvEventBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KvEventBatch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a KV event batch (map or array)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<KvEventBatch, A::Error> {
                let (mut ts, mut events, mut dp) = (0.0, None, None);
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "ts" => ts = m.next_value()?,
                        "events" => events = Some(m.next_value()?),
                        "data_parallel_rank" => dp = m.next_value()?,
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let events = events.ok_or_else(|| de::Error::missing_field("events"))?;
                Ok(KvEventBatch {
                    ts,
                    events,
                    data_parallel_rank: dp,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<KvEventBatch, A::Error> {
                let ts = s.next_element()?.unwrap_or(0.0);
                let events = s
                    .next_element()?
                    .ok_or_else(|| de::Error::missing_field("events"))?;
                let dp = s.next_element::<Option<u32>>()?.flatten();
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KvEventBatch {
                    ts,
                    events,
                    data_parallel_rank: dp,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> KvEvent {
        KvEvent::BlockStored {
            block_hashes: vec![1, u64::MAX],
            parent_block_hash: None,
            token_ids: (0..32).collect(),
            block_size: 16,
            lora_id: None,
            medium: Some("GPU".into()),
            lora_name: None,
        }
    }

    #[test]
    fn current_encoding_round_trips() {
        let b = KvEventBatch {
            ts: 1.5,
            events: vec![
                stored(),
                KvEvent::BlockRemoved {
                    block_hashes: vec![7],
                    medium: Some("GPU".into()),
                },
                KvEvent::AllBlocksCleared,
            ],
            data_parallel_rank: Some(2),
        };
        let bytes = encode_batch(&b);
        // A map whose first event map starts with the type tag.
        assert_eq!(bytes[0], 0x83, "batch is a 3-entry map");
        assert_eq!(decode_batch(&bytes).unwrap(), b);
    }

    #[test]
    fn array_like_encoding_and_bytes_hashes_decode() {
        // [ts, [["BlockStored", [bin32], nil, [..], 16, nil, "GPU", extra...],
        //        ["BlockRemoved", [5], nil], ["AllBlocksCleared"]], 0]
        let mut digest = vec![0u8; 32];
        digest[24..].copy_from_slice(&42u64.to_be_bytes());
        let v = rmpv::Value::Array(vec![
            rmpv::Value::F64(2.0),
            rmpv::Value::Array(vec![
                rmpv::Value::Array(vec![
                    "BlockStored".into(),
                    rmpv::Value::Array(vec![rmpv::Value::Binary(digest)]),
                    rmpv::Value::Nil,
                    rmpv::Value::Array((0..16).map(rmpv::Value::from).collect()),
                    16.into(),
                    rmpv::Value::Nil,
                    "GPU".into(),
                    rmpv::Value::Nil,
                    "future-field".into(),
                ]),
                rmpv::Value::Array(vec![
                    "BlockRemoved".into(),
                    rmpv::Value::Array(vec![5.into()]),
                    rmpv::Value::Nil,
                ]),
                rmpv::Value::Array(vec!["AllBlocksCleared".into()]),
            ]),
            rmpv::Value::from(0),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        let b = decode_batch(&buf).unwrap();
        assert_eq!(b.data_parallel_rank, Some(0));
        assert_eq!(b.events.len(), 3);
        match &b.events[0] {
            KvEvent::BlockStored {
                block_hashes,
                token_ids,
                block_size,
                medium,
                ..
            } => {
                assert_eq!(block_hashes, &vec![42]);
                assert_eq!(token_ids.len(), 16);
                assert_eq!(*block_size, 16);
                assert_eq!(medium.as_deref(), Some("GPU"));
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(b.events[2], KvEvent::AllBlocksCleared);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for p in [
            &b""[..],
            b"\xc1",
            b"\x93\x01",
            b"\x81\xa6events\x91\x81\xa4type\xa3Foo",
        ] {
            assert!(decode_batch(p).is_err(), "{p:?}");
        }
    }
}
