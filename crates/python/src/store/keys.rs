//! Key-level operations: existence, size, removal (single, batch, by regex,
//! all). Removal of an object a reader holds a lease on fails with
//! OBJECT_HAS_LEASE unless `force`.

use pyo3::prelude::*;

use super::{code, PyStore};
use crate::log;
use crate::runtime::block_on;

#[pymethods]
impl PyStore {
    /// 1 if `key` exists, 0 if not, a negative code on failure.
    fn is_exist(&self, py: Python<'_>, key: &str) -> i64 {
        self.batch_is_exist(py, vec![key.to_string()])[0]
    }

    fn batch_is_exist(&self, py: Python<'_>, keys: Vec<String>) -> Vec<i64> {
        let client = match self.ready(py, "batch_is_exist") {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.is_empty() {
            return Vec::new();
        }
        match block_on(py, async { client.batch_is_exist(&keys).await }) {
            Ok(list) => list
                .iter()
                .map(|r| match r {
                    Ok(true) => 1,
                    Ok(false) => 0,
                    Err(e) if e.is_not_found() => 0,
                    Err(_) => -1,
                })
                .collect(),
            Err(e) => {
                log::error(py, &format!("batch_is_exist: {e}"));
                vec![-1; keys.len()]
            }
        }
    }

    /// Size of the object in bytes, or a negative code.
    fn get_size(&self, py: Python<'_>, key: &str) -> i64 {
        let client = match self.ready(py, "get_size") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async { client.get_size(key).await }) {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => code(&e),
        }
    }

    /// Remove `key` (refused while a reader holds its lease unless `force`).
    #[pyo3(signature = (key, force = false))]
    fn remove(&self, py: Python<'_>, key: &str, force: bool) -> i64 {
        let client = match self.ready(py, "remove") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async { client.remove(key, force).await }) {
            Ok(()) => 0,
            Err(e) => code(&e),
        }
    }

    #[pyo3(signature = (keys, force = false))]
    fn batch_remove(&self, py: Python<'_>, keys: Vec<String>, force: bool) -> Vec<i64> {
        let client = match self.ready(py, "batch_remove") {
            Ok(c) => c,
            Err(code) => return vec![code; keys.len()],
        };
        if keys.is_empty() {
            return Vec::new();
        }
        match block_on(py, async { client.batch_remove(&keys, force).await }) {
            Ok(list) => list
                .iter()
                .map(|r| r.as_ref().map_or_else(code, |_| 0))
                .collect(),
            Err(e) => vec![code(&e); keys.len()],
        }
    }

    /// Remove every key matching `regex_pattern`: how many were removed, or
    /// a negative code.
    #[pyo3(signature = (regex_pattern, force = false))]
    fn remove_by_regex(&self, py: Python<'_>, regex_pattern: &str, force: bool) -> i64 {
        let client = match self.ready(py, "remove_by_regex") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async {
            client.remove_by_regex(regex_pattern, force).await
        }) {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => {
                log::error(py, &format!("remove_by_regex({regex_pattern}): {e}"));
                code(&e)
            }
        }
    }

    #[pyo3(signature = (force = false))]
    fn remove_all(&self, py: Python<'_>, force: bool) -> i64 {
        let client = match self.ready(py, "remove_all") {
            Ok(c) => c,
            Err(code) => return code,
        };
        match block_on(py, async { client.remove_all(force).await }) {
            Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Err(e) => code(&e),
        }
    }
}
