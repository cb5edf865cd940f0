//! Objects laid over several registered buffers: the reference's
//! `batch_put_from_multi_buffers` / `batch_upsert_from_multi_buffers` /
//! `batch_get_into_multi_buffers` (what vLLM's and SGLang's connectors call on
//! every save and load: one key per block, one buffer per layer), and the
//! get-session forms (`batch_get_session_start`,
//! `batch_get_into_multi_buffer_ranges`, `batch_get_session_end`) for
//! layer-wise loading.
//!
//! Every buffer must lie inside memory registered with `register_buffer` (or
//! from `alloc_from_mem_pool`); a key with any other buffer, or with buffer
//! and size lists of different lengths, is refused (INVALID_PARAMS) before
//! anything moves, and the other keys go ahead.

use std::collections::HashMap;

use mooncake_store::client::{RangeRead, Region, CODE_INVALID_PARAMS};
use pyo3::prelude::*;

use super::{code, insert_code, pin_conflict, replicate, PyReplicateConfig, PyStore};
use crate::log;
use crate::runtime::block_on;

/// The keys of a multi-buffer call whose buffers are all registered.
struct Parts {
    /// One code per key given, INVALID_PARAMS until the key's operation ran.
    out: Vec<i64>,
    idx: Vec<usize>,
    keys: Vec<String>,
    parts: Vec<Vec<Region<'static>>>,
}

impl PyStore {
    fn stage_parts(
        &self,
        py: Python<'_>,
        what: &str,
        keys: &[String],
        ptrs: &[Vec<usize>],
        sizes: &[Vec<usize>],
    ) -> Result<Parts, Vec<i64>> {
        let invalid = i64::from(CODE_INVALID_PARAMS);
        if keys.len() != ptrs.len() || keys.len() != sizes.len() {
            log::error(
                py,
                &format!("{what}: keys, all_buffer_ptrs and all_sizes differ in length"),
            );
            return Err(vec![invalid; keys.len()]);
        }
        let mut staged = Parts {
            out: vec![invalid; keys.len()],
            idx: Vec::new(),
            keys: Vec::new(),
            parts: Vec::new(),
        };
        for (i, k) in keys.iter().enumerate() {
            if ptrs[i].len() != sizes[i].len() {
                log::error(
                    py,
                    &format!(
                        "{what}({k}): {} buffers but {} sizes",
                        ptrs[i].len(),
                        sizes[i].len()
                    ),
                );
                continue;
            }
            let regions: Option<Vec<Region<'static>>> = ptrs[i]
                .iter()
                .zip(&sizes[i])
                .map(|(&p, &n)| self.region(p, n))
                .collect();
            match regions {
                Some(r) => {
                    staged.idx.push(i);
                    staged.keys.push(k.clone());
                    staged.parts.push(r);
                }
                None => log::error(
                    py,
                    &format!("{what}({k}): a buffer is null or not registered"),
                ),
            }
        }
        Ok(staged)
    }

    /// `op`: the caller's name and whether it replaces existing objects.
    fn put_parts_op(
        &self,
        py: Python<'_>,
        op: (&str, bool),
        keys: Vec<String>,
        ptrs: Vec<Vec<usize>>,
        sizes: Vec<Vec<usize>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i64> {
        let (what, upsert) = op;
        let rc = replicate(config);
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if pin_conflict(py, what, &rc) {
            return vec![i64::from(CODE_INVALID_PARAMS); keys.len()];
        }
        let Parts {
            mut out,
            idx,
            keys: ks,
            parts,
        } = match self.stage_parts(py, what, &keys, &ptrs, &sizes) {
            Ok(s) => s,
            Err(codes) => return codes,
        };
        if ks.is_empty() {
            return out;
        }
        let r = block_on(py, async {
            client.batch_put_from_parts(&ks, &parts, &rc, upsert).await
        });
        match r {
            Ok(list) => {
                for (j, r) in list.iter().enumerate() {
                    let i = idx[j];
                    out[i] = if upsert {
                        r.as_ref().map_or_else(code, |_| 0)
                    } else {
                        insert_code(r)
                    };
                    if let Err(e) = r {
                        self.report(py, what, &keys[i], e);
                    }
                }
            }
            Err(e) => {
                log::error(py, &format!("{what}: {e}"));
                for &i in &idx {
                    out[i] = code(&e);
                }
            }
        }
        out
    }
}

#[pymethods]
impl PyStore {
    /// Store each key's buffers, back to back, as one object, zero-copy;
    /// one code per key (0, or a negative code).
    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, config = None))]
    fn batch_put_from_multi_buffers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<usize>>,
        all_sizes: Vec<Vec<usize>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i64> {
        let what = "batch_put_from_multi_buffers";
        self.put_parts_op(py, (what, false), keys, all_buffer_ptrs, all_sizes, config)
    }

    /// As `batch_put_from_multi_buffers`, replacing existing objects.
    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, config = None))]
    fn batch_upsert_from_multi_buffers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<usize>>,
        all_sizes: Vec<Vec<usize>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i64> {
        let what = "batch_upsert_from_multi_buffers";
        self.put_parts_op(py, (what, true), keys, all_buffer_ptrs, all_sizes, config)
    }

    /// Read each key's object over its buffers (filled in order; together
    /// they must hold the whole object), zero-copy; one result per key: the
    /// object's size, or a negative code. `prefer_alloc_in_same_node` is
    /// accepted for compatibility (the nearest replica is always read first).
    #[pyo3(signature = (keys, all_buffer_ptrs, all_sizes, prefer_alloc_in_same_node = false))]
    fn batch_get_into_multi_buffers(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<usize>>,
        all_sizes: Vec<Vec<usize>>,
        prefer_alloc_in_same_node: bool,
    ) -> Vec<i64> {
        let _ = prefer_alloc_in_same_node;
        let what = "batch_get_into_multi_buffers";
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        let Parts {
            mut out,
            idx,
            keys: ks,
            parts,
        } = match self.stage_parts(py, what, &keys, &all_buffer_ptrs, &all_sizes) {
            Ok(s) => s,
            Err(codes) => return codes,
        };
        if ks.is_empty() {
            return out;
        }
        let r = block_on(py, async { client.batch_get_into_parts(&ks, &parts).await });
        match r {
            Ok(list) => {
                for (j, r) in list.into_iter().enumerate() {
                    let i = idx[j];
                    out[i] = match r {
                        Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
                        Err(e) => {
                            self.report(py, what, &keys[i], &e);
                            code(&e)
                        }
                    };
                }
            }
            Err(e) => {
                log::error(py, &format!("{what}: {e}"));
                for &i in &idx {
                    out[i] = code(&e);
                }
            }
        }
        out
    }

    /// Start a get session on `keys`: each key's size is looked up once and
    /// remembered for `batch_get_into_multi_buffer_ranges`. One code per key
    /// (0, or a negative code such as OBJECT_NOT_FOUND).
    fn batch_get_session_start(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i64> {
        let what = "batch_get_session_start";
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        let sizes = block_on(py, async {
            futures::future::join_all(keys.iter().map(|k| client.get_size(k))).await
        });
        let mut sessions = self.get_sessions.lock();
        keys.iter()
            .zip(sizes)
            .map(|(k, r)| match r {
                Ok(n) => {
                    sessions.insert(k.clone(), n);
                    0
                }
                Err(e) => {
                    sessions.remove(k);
                    self.report(py, what, k, &e);
                    code(&e)
                }
            })
            .collect()
    }

    /// Read byte ranges of session keys into registered buffers: for key `i`,
    /// `all_sizes[i][j]` bytes from object offset `all_src_offsets[i][j]` into
    /// `all_buffer_ptrs[i][j]`. One result per key: the bytes read, or a
    /// negative code (INVALID_PARAMS for a key outside the session or a range
    /// past the object's end; nothing is written for such a key).
    fn batch_get_into_multi_buffer_ranges(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<usize>>,
        all_sizes: Vec<Vec<usize>>,
        all_src_offsets: Vec<Vec<u64>>,
    ) -> Vec<i64> {
        let what = "batch_get_into_multi_buffer_ranges";
        let invalid = i64::from(CODE_INVALID_PARAMS);
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.len() != all_src_offsets.len() {
            log::error(
                py,
                &format!("{what}: keys and all_src_offsets differ in length"),
            );
            return vec![invalid; keys.len()];
        }
        let Parts {
            mut out,
            idx,
            parts,
            ..
        } = match self.stage_parts(py, what, &keys, &all_buffer_ptrs, &all_sizes) {
            Ok(s) => s,
            Err(codes) => return codes,
        };
        let sessions: HashMap<String, u64> = self.get_sessions.lock().clone();
        let mut reads: Vec<RangeRead<'_>> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (j, &i) in idx.iter().enumerate() {
            let k = &keys[i];
            let offs = &all_src_offsets[i];
            let Some(&size) = sessions.get(k) else {
                log::error(py, &format!("{what}({k}): not in a get session"));
                continue;
            };
            if offs.len() != parts[j].len() {
                log::error(
                    py,
                    &format!("{what}({k}): offsets and buffers differ in length"),
                );
                continue;
            }
            let fits = parts[j]
                .iter()
                .zip(offs)
                .all(|(r, &o)| o.checked_add(r.len() as u64).is_some_and(|e| e <= size));
            if !fits {
                log::error(
                    py,
                    &format!("{what}({k}): a range passes the object's end ({size} bytes)"),
                );
                continue;
            }
            out[i] = 0;
            for (r, &o) in parts[j].iter().zip(offs) {
                if !r.is_empty() {
                    reads.push(RangeRead {
                        key: k,
                        offset: o,
                        dst: *r,
                    });
                    owner.push(i);
                }
            }
        }
        if reads.is_empty() {
            return out;
        }
        match block_on(py, async { client.batch_get_ranges_into(&reads).await }) {
            Ok(list) => {
                for (&i, r) in owner.iter().zip(list) {
                    match r {
                        Ok(n) if out[i] >= 0 => out[i] += n as i64,
                        Ok(_) => {}
                        Err(e) => {
                            if out[i] >= 0 {
                                self.report(py, what, &keys[i], &e);
                                out[i] = code(&e);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                log::error(py, &format!("{what}: {e}"));
                for &i in &owner {
                    out[i] = code(&e);
                }
            }
        }
        out
    }

    /// End the get session of `keys`. 0.
    fn batch_get_session_end(&self, keys: Vec<String>) -> i64 {
        let mut sessions = self.get_sessions.lock();
        for k in &keys {
            sessions.remove(k);
        }
        0
    }
}
