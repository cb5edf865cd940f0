//! KV-cache events as vLLM (and SGLang, same schema) publish them: what
//! each engine stored in, evicted from or cleared out of its prefix cache.
//!
//! - [`wire`]: the msgpack batch format (both of vLLM's encodings).
//! - [`hash`]: vLLM's chained block hash, so the router's hashes of a
//!   prompt equal the engine's.
//! - [`zmq`]: publisher (fake engine) and subscriber (router, indexer)
//!   over ZMQ PUB/SUB with sequence numbers and ROUTER replay.

pub mod hash;
pub mod wire;
pub mod zmq;
