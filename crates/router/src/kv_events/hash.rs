//! vLLM's chained prefix block hash, reproduced byte for byte so that the
//! hashes the router computes from a prompt's token ids equal the ones an
//! engine publishes in its `BlockStored` events.
//!
//! Matched against vLLM's `vllm/v1/core/kv_cache_utils.py` +
//! `vllm/utils/hashing.py` (main branch of 2025–26, v0.10 onwards): a full
//! block's hash is `H((parent_hash, tuple(block_token_ids), extra_keys))`
//! where `parent_hash` is the previous block's 32-byte digest, or
//! `NONE_HASH = H(seed)` for the first block, and `extra_keys` is `None` for
//! plain text prompts (no LoRA, multimodal input or `cache_salt`). `H` is
//! - `sha256` (vLLM's default `--prefix-caching-hash-algo`): SHA-256 of
//!   `pickle.dumps(obj, protocol=5)`, reproduced by [`pickle`] for exactly
//!   these shapes (bytes, tuple of ints, `None`, str);
//! - `sha256_cbor`: SHA-256 of canonical CBOR.
//!
//! The seed is `PYTHONHASHSEED` when the engine has it set; otherwise recent
//! vLLM uses the fixed string `vllm-none-hash` for these cryptographic
//! algorithms (older releases drew a random one per process: set
//! `PYTHONHASHSEED` on the engines and give the router the same value).
//! Events carry the integer form: the digest's low 64 bits, big-endian.
//!
//! Invariants: deterministic; only full blocks are hashed; the test vectors
//! below were produced by CPython 3.11's `pickle` + `hashlib`.

use sha2::{Digest, Sha256};
use std::str::FromStr;

/// vLLM's seed when `PYTHONHASHSEED` is unset (cryptographic algorithms).
pub const DEFAULT_SEED: &str = "vllm-none-hash";

/// vLLM's default block size (tokens per KV block).
pub const DEFAULT_BLOCK_SIZE: u32 = 16;

/// `--prefix-caching-hash-algo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgo {
    /// SHA-256 over pickle (vLLM's default).
    #[default]
    Sha256,
    /// SHA-256 over canonical CBOR.
    Sha256Cbor,
}

impl FromStr for HashAlgo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sha256" => Ok(HashAlgo::Sha256),
            "sha256_cbor" => Ok(HashAlgo::Sha256Cbor),
            _ => Err(format!(
                "unsupported hash algorithm `{s}` (expected sha256 or sha256_cbor)"
            )),
        }
    }
}

impl HashAlgo {
    /// The vLLM name.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha256Cbor => "sha256_cbor",
        }
    }
}

/// Computes an engine's block hashes from token ids.
#[derive(Debug, Clone)]
pub struct BlockHasher {
    algo: HashAlgo,
    block_size: usize,
    none_hash: [u8; 32],
    buf_cap: usize,
}

impl BlockHasher {
    /// A hasher for `block_size`-token blocks (`block_size >= 1`).
    pub fn new(algo: HashAlgo, block_size: u32, seed: &str) -> Self {
        let mut buf = Vec::new();
        match algo {
            HashAlgo::Sha256 => pickle::str_obj(&mut buf, seed),
            HashAlgo::Sha256Cbor => cbor::text(&mut buf, seed),
        }
        Self {
            algo,
            block_size: block_size.max(1) as usize,
            none_hash: Sha256::digest(&buf).into(),
            buf_cap: 64 + 6 * block_size.max(1) as usize,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> u32 {
        self.block_size as u32
    }

    /// The algorithm.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The 32-byte digest of one block after `parent` (`None`: first block).
    pub fn digest(&self, parent: Option<&[u8; 32]>, tokens: &[u32]) -> [u8; 32] {
        let parent = parent.unwrap_or(&self.none_hash);
        let mut buf = Vec::with_capacity(self.buf_cap);
        match self.algo {
            HashAlgo::Sha256 => pickle::block(&mut buf, parent, tokens),
            HashAlgo::Sha256Cbor => cbor::block(&mut buf, parent, tokens),
        }
        Sha256::digest(&buf).into()
    }

    /// Integer (event) form of the chained hashes of every full block of
    /// `tokens`.
    pub fn hashes(&self, tokens: &[u32]) -> Vec<u64> {
        let mut out = Vec::with_capacity(tokens.len() / self.block_size);
        let mut parent: Option<[u8; 32]> = None;
        for block in tokens.chunks_exact(self.block_size) {
            let d = self.digest(parent.as_ref(), block);
            out.push(to_int(&d));
            parent = Some(d);
        }
        out
    }
}

/// vLLM's `maybe_convert_block_hash`: the low 64 bits, big-endian.
pub fn to_int(d: &[u8; 32]) -> u64 {
    u64::from_be_bytes(d[24..].try_into().unwrap_or([0; 8]))
}

/// The pickle (protocol 5) encodings vLLM's `sha256` hashes.
mod pickle {
    const PROTO: u8 = 0x80;
    const FRAME: u8 = 0x95;
    const MEMOIZE: u8 = 0x94;
    const STOP: u8 = b'.';

    /// PROTO 5, FRAME <len>, body, STOP (one frame: the pickles are small).
    fn framed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(&[PROTO, 5, FRAME]);
        let len_at = out.len();
        out.extend_from_slice(&[0; 8]);
        body(out);
        out.push(STOP);
        let len = (out.len() - len_at - 8) as u64;
        out[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
    }

    fn int(out: &mut Vec<u8>, v: u32) {
        if v < 0x100 {
            out.extend_from_slice(&[b'K', v as u8]);
        } else if v < 0x1_0000 {
            out.push(b'M');
            out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v < 0x8000_0000 {
            out.push(b'J');
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            // LONG1: minimal two's complement, here 4 bytes + a sign byte.
            out.extend_from_slice(&[0x8a, 5]);
            out.extend_from_slice(&v.to_le_bytes());
            out.push(0);
        }
    }

    /// `(parent_digest, tuple(tokens), None)`.
    pub(super) fn block(out: &mut Vec<u8>, parent: &[u8; 32], tokens: &[u32]) {
        framed(out, |o| {
            o.extend_from_slice(&[b'C', 32]); // SHORT_BINBYTES
            o.extend_from_slice(parent);
            o.push(MEMOIZE);
            match tokens.len() {
                0 => o.push(b')'), // EMPTY_TUPLE, not memoized
                n @ 1..=3 => {
                    tokens.iter().for_each(|&t| int(o, t));
                    o.push(0x84 + n as u8); // TUPLE1..3
                    o.push(MEMOIZE);
                }
                _ => {
                    o.push(b'(');
                    tokens.iter().for_each(|&t| int(o, t));
                    o.push(b't');
                    o.push(MEMOIZE);
                }
            }
            o.push(b'N');
            o.push(0x87); // TUPLE3
            o.push(MEMOIZE);
        });
    }

    /// A `str` (the seed).
    pub(super) fn str_obj(out: &mut Vec<u8>, s: &str) {
        framed(out, |o| {
            let b = s.as_bytes();
            if b.len() < 256 {
                o.extend_from_slice(&[0x8c, b.len() as u8]); // SHORT_BINUNICODE
            } else {
                o.push(0x58); // BINUNICODE
                o.extend_from_slice(&(b.len() as u32).to_le_bytes());
            }
            o.extend_from_slice(b);
            o.push(MEMOIZE);
        });
    }
}

/// The canonical CBOR encodings vLLM's `sha256_cbor` hashes.
mod cbor {
    fn head(out: &mut Vec<u8>, major: u8, v: u64) {
        let m = major << 5;
        if v < 24 {
            out.push(m | v as u8);
        } else if v < 0x100 {
            out.extend_from_slice(&[m | 24, v as u8]);
        } else if v < 0x1_0000 {
            out.push(m | 25);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v < 0x1_0000_0000 {
            out.push(m | 26);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            out.push(m | 27);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    pub(super) fn block(out: &mut Vec<u8>, parent: &[u8; 32], tokens: &[u32]) {
        head(out, 4, 3);
        head(out, 2, 32);
        out.extend_from_slice(parent);
        head(out, 4, tokens.len() as u64);
        tokens.iter().for_each(|&t| head(out, 0, t as u64));
        out.push(0xf6); // null
    }

    pub(super) fn text(out: &mut Vec<u8>, s: &str) {
        head(out, 3, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    // CPython 3.11: pickle.dumps("vllm-none-hash", protocol=5), its SHA-256,
    // and pickle.dumps((none_hash, (1, 2, 3), None), protocol=5).
    const SEED_PICKLE: &str = "80059512000000000000008c0e766c6c6d2d6e6f6e652d68617368942e";
    const NONE_HASH: &str = "066b1e8987e027138e98701c46128929378935f9b6cd1549105ae6b4f0d71198";
    const P3: &str = "8005952f000000000000004320066b1e8987e027138e98701c46128929378935f9b6cd1549105ae6b4f0d71198944b014b024b0387944e87942e";

    #[test]
    fn pickle_bytes_match_cpython() {
        let mut b = Vec::new();
        pickle::str_obj(&mut b, DEFAULT_SEED);
        assert_eq!(hex(&b), SEED_PICKLE);
        let h = BlockHasher::new(HashAlgo::Sha256, 3, DEFAULT_SEED);
        assert_eq!(hex(&h.none_hash), NONE_HASH);
        let mut b = Vec::new();
        pickle::block(&mut b, &h.none_hash, &[1, 2, 3]);
        assert_eq!(hex(&b), P3);
    }

    #[test]
    fn chained_hashes_match_cpython_across_int_widths() {
        // Tokens exercising BININT1 / BININT2 / BININT / LONG1.
        let mut toks = vec![0, 255, 256, 65535, 65536, (1 << 31) - 1, 1 << 31, 151643];
        toks.extend([7, 9, 11, 13, 17, 19, 23, 29]);
        toks.extend(100..116);
        toks.extend([1, 2, 3]); // a partial block: not hashed
        let h = BlockHasher::new(HashAlgo::Sha256, 16, DEFAULT_SEED);
        assert_eq!(
            h.hashes(&toks),
            vec![10883444955931199912, 18055317387959083140]
        );
    }

    #[test]
    fn cbor_hashes_match_cpython_cbor2() {
        // cbor2.dumps(..., canonical=True), cbor2 5.x.
        let mut toks: Vec<u32> = (0..16).collect();
        toks.extend([300, 70000]);
        toks.extend(5..19);
        let h = BlockHasher::new(HashAlgo::Sha256Cbor, 16, DEFAULT_SEED);
        assert_eq!(
            h.hashes(&toks),
            vec![2233398808101521225, 9845564858303910642]
        );
    }

    #[test]
    fn seed_and_algo_change_every_hash() {
        let toks: Vec<u32> = (0..64).collect();
        let a = BlockHasher::new(HashAlgo::Sha256, 16, DEFAULT_SEED).hashes(&toks);
        let b = BlockHasher::new(HashAlgo::Sha256, 16, "0").hashes(&toks);
        let c = BlockHasher::new(HashAlgo::Sha256Cbor, 16, DEFAULT_SEED).hashes(&toks);
        assert_eq!(a.len(), 4);
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        assert!(a.iter().zip(&c).all(|(x, y)| x != y));
        // Equal prefixes, equal hashes; a change in block 2 changes 2.. only.
        let mut t2 = toks.clone();
        t2[40] = 999;
        let d = BlockHasher::new(HashAlgo::Sha256, 16, DEFAULT_SEED).hashes(&t2);
        assert_eq!(a[..2], d[..2]);
        assert!(a[2..].iter().zip(&d[2..]).all(|(x, y)| x != y));
    }
}
