//! Range reads into registered memory: the native half of `get_into_ranges`.
//!
//! `mooncake._ranges` checks the nested request's shape and flattens it; here each
//! range becomes a [`RangeRead`] of the store client, which transfers only the
//! requested bytes of the object (only the stripes a range overlaps). A destination
//! outside every buffer registered on this store is refused (INVALID_PARAMS) before
//! anything moves, as is a range past the object's end.

use mooncake_store::client::{RangeRead, CODE_INVALID_PARAMS};
use pyo3::prelude::*;

use super::{code, PyStore};
use crate::log;
use crate::runtime::block_on;

#[pymethods]
impl PyStore {
    /// Read `sizes[i]` bytes of `keys[i]` from object offset `src_offsets[i]` into
    /// `dst_addrs[i]` (registered memory); one result per range: the bytes read, or a
    /// negative code. Lists of different lengths: INVALID_PARAMS for every range.
    fn _read_ranges(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        dst_addrs: Vec<usize>,
        src_offsets: Vec<u64>,
        sizes: Vec<usize>,
    ) -> Vec<i64> {
        let n = keys.len();
        let invalid = i64::from(CODE_INVALID_PARAMS);
        if dst_addrs.len() != n || src_offsets.len() != n || sizes.len() != n {
            log::error(
                py,
                "get_into_ranges: keys, destinations, offsets and sizes differ in length",
            );
            return vec![invalid; n.max(dst_addrs.len())];
        }
        let client = match self.ready(py, "get_into_ranges") {
            Ok(c) => c,
            Err(code) => return vec![code; n],
        };
        let mut out = vec![invalid; n];
        let mut idx = Vec::with_capacity(n);
        let mut reads: Vec<RangeRead<'_>> = Vec::with_capacity(n);
        for i in 0..n {
            match self.region(dst_addrs[i], sizes[i]) {
                Some(dst) => {
                    idx.push(i);
                    reads.push(RangeRead {
                        key: &keys[i],
                        offset: src_offsets[i],
                        dst,
                    });
                }
                None => log::error(
                    py,
                    &format!(
                        "get_into_ranges({}): destination {:#x}+{} is not registered",
                        keys[i], dst_addrs[i], sizes[i]
                    ),
                ),
            }
        }
        if reads.is_empty() {
            return out;
        }
        let res = block_on(py, async { client.batch_get_ranges_into(&reads).await });
        match res {
            Ok(list) => {
                for ((&i, read), r) in idx.iter().zip(&reads).zip(list) {
                    out[i] = match r {
                        Ok(bytes) => bytes as i64,
                        Err(e) => {
                            self.report(py, "get_into_ranges", read.key, &e);
                            code(&e)
                        }
                    };
                }
            }
            Err(e) => {
                log::error(py, &format!("get_into_ranges: {e}"));
                for &i in &idx {
                    out[i] = code(&e);
                }
            }
        }
        out
    }
}
