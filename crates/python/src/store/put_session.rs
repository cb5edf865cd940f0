//! Put sessions (`batch_put_session_start`, `batch_put_from_multi_buffer_ranges`,
//! `batch_put_session_end`, `batch_put_session_revoke`): space reserved first,
//! bytes written range by range from registered buffers, the object visible only
//! after the end call. Sessions live on this object, keyed by key; a `setup`
//! client only (a dummy client refuses them with INVALID_PARAMS).

use mooncake_store::client::{Region, CODE_INVALID_PARAMS};
use pyo3::prelude::*;

use super::dummy::Backend;
use super::{code, pin_conflict, replicate, PyReplicateConfig, PyStore};
use crate::log;
use crate::runtime::block_on;

impl PyStore {
    fn real_client(
        &self,
        py: Python<'_>,
        what: &str,
    ) -> Result<mooncake_store::client::Client, i64> {
        match self.ready(py, what)? {
            Backend::Real(c) => Ok(c),
            Backend::Dummy(_) => {
                log::error(
                    py,
                    &format!("{what}: put sessions need a setup() client, not a dummy"),
                );
                Err(i64::from(CODE_INVALID_PARAMS))
            }
        }
    }
}

#[pymethods]
impl PyStore {
    /// Reserve `sizes[i]` bytes for each key; one code per key (0, or a
    /// negative code such as OBJECT_ALREADY_EXISTS).
    #[pyo3(signature = (keys, sizes, config = None))]
    fn batch_put_session_start(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        sizes: Vec<u64>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> Vec<i64> {
        let what = "batch_put_session_start";
        let rc = replicate(config);
        let client = match self.real_client(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.len() != sizes.len() || pin_conflict(py, what, &rc) {
            return vec![i64::from(CODE_INVALID_PARAMS); keys.len()];
        }
        let started = match block_on(py, async {
            client.put_session_start(&keys, &sizes, &rc).await
        }) {
            Ok(s) => s,
            Err(e) => {
                log::error(py, &format!("{what}: {e}"));
                return vec![code(&e); keys.len()];
            }
        };
        let mut sessions = self.put_sessions.lock();
        keys.iter()
            .zip(started)
            .map(|(k, r)| match r {
                Ok(s) => {
                    sessions.insert(k.clone(), s);
                    0
                }
                Err(e) => {
                    self.report(py, what, k, &e);
                    code(&e)
                }
            })
            .collect()
    }

    /// Write, for key `i`, `all_sizes[i][j]` bytes from `all_buffer_ptrs[i][j]`
    /// (registered) to object offset `all_dst_offsets[i][j]`; one result per key:
    /// the bytes written, or a negative code (INVALID_PARAMS for a key without a
    /// session, an unregistered buffer or a range past the object's end).
    fn batch_put_from_multi_buffer_ranges(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        all_buffer_ptrs: Vec<Vec<usize>>,
        all_sizes: Vec<Vec<usize>>,
        all_dst_offsets: Vec<Vec<u64>>,
    ) -> Vec<i64> {
        let what = "batch_put_from_multi_buffer_ranges";
        let invalid = i64::from(CODE_INVALID_PARAMS);
        let client = match self.real_client(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.len() != all_buffer_ptrs.len()
            || keys.len() != all_sizes.len()
            || keys.len() != all_dst_offsets.len()
        {
            log::error(py, &format!("{what}: argument lists differ in length"));
            return vec![invalid; keys.len()];
        }
        let mut out = vec![invalid; keys.len()];
        let mut jobs = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (ptrs, sizes, offs) = (&all_buffer_ptrs[i], &all_sizes[i], &all_dst_offsets[i]);
            let Some(session) = self.put_sessions.lock().get(k).cloned() else {
                log::error(py, &format!("{what}({k}): not in a put session"));
                continue;
            };
            if ptrs.len() != sizes.len() || ptrs.len() != offs.len() {
                log::error(
                    py,
                    &format!("{what}({k}): buffers, sizes and offsets differ in length"),
                );
                continue;
            }
            let parts: Option<Vec<(Region<'static>, u64)>> = ptrs
                .iter()
                .zip(sizes)
                .zip(offs)
                .map(|((&p, &n), &o)| self.region(p, n).map(|r| (r, o)))
                .collect();
            match parts {
                Some(parts) => jobs.push((i, session, parts)),
                None => log::error(
                    py,
                    &format!("{what}({k}): a buffer is null or not registered"),
                ),
            }
        }
        let results = block_on(py, async {
            let futs = jobs
                .iter()
                .map(|(_, s, parts)| client.put_session_write(s, parts));
            futures::future::join_all(futs).await
        });
        for ((i, _, _), r) in jobs.iter().zip(results) {
            out[*i] = match r {
                Ok(n) => n as i64,
                Err(e) => {
                    self.report(py, what, &keys[*i], &e);
                    code(&e)
                }
            };
        }
        out
    }

    /// Make the session objects of `keys` visible; one code per key.
    fn batch_put_session_end(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i64> {
        self.finish_put_sessions(py, "batch_put_session_end", keys, false)
    }

    /// Abandon the sessions of `keys`, freeing their space; one code per key.
    fn batch_put_session_revoke(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i64> {
        self.finish_put_sessions(py, "batch_put_session_revoke", keys, true)
    }
}

impl PyStore {
    fn finish_put_sessions(
        &self,
        py: Python<'_>,
        what: &str,
        keys: Vec<String>,
        revoke: bool,
    ) -> Vec<i64> {
        let client = match self.real_client(py, what) {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        let invalid = i64::from(CODE_INVALID_PARAMS);
        let mut out = vec![invalid; keys.len()];
        let mut idx = Vec::new();
        {
            let mut sessions = self.put_sessions.lock();
            for (i, k) in keys.iter().enumerate() {
                if sessions.remove(k).is_some() {
                    idx.push(i);
                } else {
                    log::error(py, &format!("{what}({k}): not in a put session"));
                }
            }
        }
        let names: Vec<String> = idx.iter().map(|&i| keys[i].clone()).collect();
        if names.is_empty() {
            return out;
        }
        let r = block_on(py, async {
            if revoke {
                client.put_session_revoke(&names).await
            } else {
                client.put_session_end(&names).await
            }
        });
        match r {
            Ok(list) => {
                for (&i, r) in idx.iter().zip(list) {
                    out[i] = match r {
                        Ok(()) => 0,
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
