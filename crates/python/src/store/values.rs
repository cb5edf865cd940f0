//! Operations on plain bytes: put/upsert (single, parts, batch) staged
//! through the client's local buffer, and get/get_batch returning `bytes`.

use futures::future::join_all;
use mooncake_store::client::{ClientError, CODE_INVALID_PARAMS};
use mooncake_store::ReplicateConfig;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{code, insert_code, pin_conflict, replicate, PyReplicateConfig, PyStore};
use crate::log;
use crate::pybuf::PyBuf;
use crate::runtime::block_on;

impl PyStore {
    fn put_value(
        &self,
        py: Python<'_>,
        what: &str,
        key: &str,
        value: &[u8],
        rc: &ReplicateConfig,
        upsert: bool,
    ) -> i64 {
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return code,
        };
        if !self.can_stage(py, what) || pin_conflict(py, what, rc) {
            return i64::from(CODE_INVALID_PARAMS);
        }
        let r = block_on(py, async {
            if upsert {
                client.upsert(key, value, rc).await
            } else {
                client.put(key, value, rc).await
            }
        });
        if let Err(e) = &r {
            self.report(py, what, key, e);
        }
        if upsert {
            r.as_ref().map_or_else(code, |_| 0)
        } else {
            insert_code(&r)
        }
    }

    fn many_values(
        &self,
        py: Python<'_>,
        what: &str,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        rc: ReplicateConfig,
        upsert: bool,
    ) -> PyResult<i64> {
        let client = match self.ready(py, what) {
            Ok(c) => c,
            Err(code) => return Ok(code),
        };
        if keys.len() != values.len() {
            log::error(
                py,
                &format!("{what}: {} keys but {} values", keys.len(), values.len()),
            );
            return Ok(i64::from(CODE_INVALID_PARAMS));
        }
        if !self.can_stage(py, what) || pin_conflict(py, what, &rc) {
            return Ok(i64::from(CODE_INVALID_PARAMS));
        }
        let bufs = values
            .iter()
            .map(|v| PyBuf::get(v, false))
            .collect::<PyResult<Vec<_>>>()?;
        let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        let results: Vec<Result<(), ClientError>> = block_on(py, async {
            if upsert {
                let futs = keys
                    .iter()
                    .zip(&slices)
                    .map(|(k, v)| client.upsert(k, v, &rc));
                join_all(futs).await
            } else {
                match client.batch_put(&keys, &slices, &rc).await {
                    Ok(v) => v,
                    Err(e) => vec![Err(e)],
                }
            }
        });
        for (i, r) in results.iter().enumerate() {
            let c = if upsert {
                r.as_ref().map_or_else(code, |_| 0)
            } else {
                insert_code(r)
            };
            if c != 0 {
                if let Err(e) = r {
                    self.report(py, what, keys.get(i).map_or("", |k| k.as_str()), e);
                }
                return Ok(c);
            }
        }
        Ok(0)
    }

    /// put/upsert of one bytes-like `value`; a `TypeError` for anything else.
    fn put_object(
        &self,
        py: Python<'_>,
        what: &str,
        key: &str,
        value: &Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
        upsert: bool,
    ) -> PyResult<i64> {
        let buf = PyBuf::get(value, false)
            .map_err(|_| PyTypeError::new_err("value must be a bytes-like object"))?;
        Ok(self.put_value(py, what, key, buf.as_slice(), &replicate(config), upsert))
    }

    /// The parts (any bytes-like objects) back to back, copied once.
    fn joined_parts(parts: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<Vec<u8>> {
        let bufs = parts
            .iter()
            .map(|p| PyBuf::get(&p, false))
            .collect::<PyResult<Vec<_>>>()?;
        let mut out = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
        for b in &bufs {
            out.extend_from_slice(b.as_slice());
        }
        Ok(out)
    }
}

#[pymethods]
impl PyStore {
    /// Store `value` (any bytes-like object) under `key`.
    #[pyo3(signature = (key, value, config = None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        self.put_object(py, "put", key, value, config, false)
    }

    /// Store `value` under `key`, replacing an existing object.
    #[pyo3(signature = (key, value, config = None))]
    fn upsert(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        self.put_object(py, "upsert", key, value, config, true)
    }

    /// Store the concatenation of `parts` under `key`.
    #[pyo3(signature = (key, *parts, config = None))]
    fn put_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &Bound<'_, pyo3::types::PyTuple>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        let data = Self::joined_parts(parts)?;
        Ok(self.put_value(py, "put_parts", key, &data, &replicate(config), false))
    }

    #[pyo3(signature = (key, *parts, config = None))]
    fn upsert_parts(
        &self,
        py: Python<'_>,
        key: &str,
        parts: &Bound<'_, pyo3::types::PyTuple>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        let data = Self::joined_parts(parts)?;
        Ok(self.put_value(py, "upsert_parts", key, &data, &replicate(config), true))
    }

    /// Put many values; 0 if all succeeded, else the first failure's code.
    #[pyo3(signature = (keys, values, config = None))]
    fn put_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        self.many_values(py, "put_batch", keys, values, replicate(config), false)
    }

    #[pyo3(signature = (keys, values, config = None))]
    fn upsert_batch(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        values: Vec<Bound<'_, PyAny>>,
        config: Option<PyRef<'_, PyReplicateConfig>>,
    ) -> PyResult<i64> {
        self.many_values(py, "upsert_batch", keys, values, replicate(config), true)
    }

    /// The value of `key`; `b""` if it is missing (or on any failure).
    fn get<'py>(&self, py: Python<'py>, key: &str) -> Bound<'py, PyBytes> {
        let Ok(client) = self.ready(py, "get") else {
            return PyBytes::new(py, b"");
        };
        match block_on(py, async { client.get(key).await }) {
            Ok(v) => PyBytes::new(py, &v),
            Err(e) => {
                self.report(py, "get", key, &e);
                PyBytes::new(py, b"")
            }
        }
    }

    /// Values of `keys`, `b""` for each missing one.
    fn get_batch<'py>(&self, py: Python<'py>, keys: Vec<String>) -> Vec<Bound<'py, PyBytes>> {
        let Ok(client) = self.ready(py, "get_batch") else {
            return keys.iter().map(|_| PyBytes::new(py, b"")).collect();
        };
        let r = block_on(py, async { client.batch_get(&keys).await });
        match r {
            Ok(list) => list
                .into_iter()
                .zip(&keys)
                .map(|(r, k)| match r {
                    Ok(v) => PyBytes::new(py, &v),
                    Err(e) => {
                        self.report(py, "get_batch", k, &e);
                        PyBytes::new(py, b"")
                    }
                })
                .collect(),
            Err(e) => {
                log::error(py, &format!("get_batch: {e}"));
                keys.iter().map(|_| PyBytes::new(py, b"")).collect()
            }
        }
    }
}
