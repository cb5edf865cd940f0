//! Zero-copy operations on caller memory registered with `register_buffer`:
//! put_from/upsert_from and get_into with their batch forms. Ranges outside
//! a registered buffer are refused per key (INVALID_PARAMS) before anything
//! moves.

use mooncake_store::client::{ClientError, Region, CODE_INVALID_PARAMS};
use mooncake_store::ReplicateConfig;
use pyo3::prelude::*;

use super::{code, insert_code, pin_conflict, replicate, PyReplicateConfig, PyStore};
use crate::log;
use crate::runtime::block_on;

/// Which zero-copy put a `many_from` call performs.
#[derive(Clone, Copy)]
struct FromOp {
    what: &'static str,
    upsert: bool,
}

/// The keys of a zero-copy call whose buffers lie in registered memory.
struct Staged {
    /// One code per key given, INVALID_PARAMS until the key's operation ran.
    out: Vec<i64>,
    /// Position in the call's key list of each staged key.
    idx: Vec<usize>,
    keys: Vec<String>,
    regions: Vec<Region<'static>>,
}

impl PyStore {
    /// Pair each key with its registered region, logging those whose buffer
    /// is not registered; every key INVALID_PARAMS if the lists differ in
    /// length.
    fn stage(
        &self,
        py: Python<'_>,
        what: &str,
        keys: &[String],
        ptrs: &[usize],
        sizes: &[usize],
    ) -> Result<Staged, Vec<i64>> {
        if keys.len() != ptrs.len() || keys.len() != sizes.len() {
            log::error(
                py,
                &format!("{what}: keys, buffer_ptrs and sizes differ in length"),
            );
            return Err(vec![i64::from(CODE_INVALID_PARAMS); keys.len()]);
        }
        let mut staged = Staged {
            out: vec![i64::from(CODE_INVALID_PARAMS); keys.len()],
            idx: Vec::with_capacity(keys.len()),
            keys: Vec::with_capacity(keys.len()),
            regions: Vec::with_capacity(keys.len()),
        };
        for (i, k) in keys.iter().enumerate() {
            match self.region(ptrs[i], sizes[i]) {
                Some(r) => {
                    staged.idx.push(i);
                    staged.keys.push(k.clone());
                    staged.regions.push(r);
                }
                None => log::error(
                    py,
                    &format!(
                        "{what}({k}): buffer {:#x}+{} is not registered",
                        ptrs[i], sizes[i]
                    ),
                ),
            }
        }
        Ok(staged)
    }

    /// put_from/upsert_from on many keys; one code per key.
    fn many_from(
        &self,
        py: Python<'_>,
        op: FromOp,
        keys: Vec<String>,
        ptrs: Vec<usize>,
        sizes: Vec<usize>,
        rc: ReplicateConfig,
    ) -> Vec<i64> {
        let FromOp { what, upsert } = op;
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if pin_conflict(py, what, &rc) {
            return vec![i64::from(CODE_INVALID_PARAMS); keys.len()];
        }
        let Staged {
            mut out,
            idx,
            keys: ks,
            regions,
        } = match self.stage(py, what, &keys, &ptrs, &sizes) {
            Ok(s) => s,
            Err(codes) => return codes,
        };
        let results: Result<Vec<Result<(), ClientError>>, ClientError> = block_on(py, async {
            if upsert {
                client.batch_upsert_from(&ks, &regions, &rc).await
            } else {
                client.batch_put_from(&ks, &regions, &rc).await
            }
        });
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                log::error(py, &format!("{what}: {e}"));
                for &i in &idx {
                    out[i] = code(&e);
                }
                return out;
            }
        };
        for (j, r) in results.iter().enumerate() {
            let Some(&i) = idx.get(j) else { break };
            out[i] = if upsert {
                r.as_ref().map_or_else(code, |_| 0)
            } else {
                insert_code(r)
            };
            if let Err(e) = r {
                self.report(py, what, &keys[i], e);
            }
        }
        out
    }
}

#[pymethods]
impl PyStore {
    /// Store `size` bytes of registered memory at `buffer_ptr`, zero-copy.
    #[pyo3(signature = (key, buffer_ptr, size, config = None))]
    fn put_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: usize,
        size: usize,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> i64 {
        self.many_from(
            py,
            FromOp {
                what: "put_from",
                upsert: false,
            },
            vec![key.to_string()],
            vec![buffer_ptr],
            vec![size],
            replicate(config),
        )[0]
    }

    #[pyo3(signature = (key, buffer_ptr, size, config = None))]
    fn upsert_from(
        &self,
        py: Python<'_>,
        key: &str,
        buffer_ptr: usize,
        size: usize,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> i64 {
        self.many_from(
            py,
            FromOp {
                what: "upsert_from",
                upsert: true,
            },
            vec![key.to_string()],
            vec![buffer_ptr],
            vec![size],
            replicate(config),
        )[0]
    }

    #[pyo3(signature = (keys, buffer_ptrs, sizes, config = None))]
    fn batch_put_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<usize>,
        sizes: Vec<usize>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i64> {
        self.many_from(
            py,
            FromOp {
                what: "batch_put_from",
                upsert: false,
            },
            keys,
            buffer_ptrs,
            sizes,
            replicate(config),
        )
    }

    #[pyo3(signature = (keys, buffer_ptrs, sizes, config = None))]
    fn batch_upsert_from(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<usize>,
        sizes: Vec<usize>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i64> {
        self.many_from(
            py,
            FromOp {
                what: "batch_upsert_from",
                upsert: true,
            },
            keys,
            buffer_ptrs,
            sizes,
            replicate(config),
        )
    }

    /// Read `key` into registered memory at `buffer_ptr` (room for `size`
    /// bytes), zero-copy: the object's size, or a negative code.
    fn get_into(&self, py: Python<'_>, key: &str, buffer_ptr: usize, size: usize) -> i64 {
        self.batch_get_into(py, vec![key.to_string()], vec![buffer_ptr], vec![size])[0]
    }

    fn batch_get_into(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        buffer_ptrs: Vec<usize>,
        sizes: Vec<usize>,
    ) -> Vec<i64> {
        let what = "batch_get_into";
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        let Staged {
            mut out,
            idx,
            keys: ks,
            regions,
        } = match self.stage(py, what, &keys, &buffer_ptrs, &sizes) {
            Ok(s) => s,
            Err(codes) => return codes,
        };
        if ks.is_empty() {
            return out;
        }
        let r = block_on(py, async { client.batch_get_into(&ks, &regions).await });
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
}
