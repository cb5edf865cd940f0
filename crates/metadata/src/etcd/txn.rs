//! Guarded transactions and revision-aware reads: what a leader needs to write only while
//! it still leads. A leader elected by `put_if_absent(leader_key, .., lease)` knows the
//! key's create revision; [`EtcdClient::txn_if_created_at`] applies writes only if the
//! leader key still has that create revision, so a leader that lost its lease (the key
//! vanished or was re-created by a successor) can no longer change anything.

use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{b64, de_i64, prefix_range, EtcdClient, RangeResponse};
use crate::MetadataError;

/// One write of a guarded transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Store `value` under `key`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Delete every key under `prefix` that sorts before `before` (all keys under the
    /// prefix when `before` is `None`).
    DeletePrefix {
        prefix: Vec<u8>,
        before: Option<Vec<u8>>,
    },
}

/// A key with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvInfo {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

#[derive(Debug, Default, Deserialize)]
struct TxnAnswer {
    #[serde(default)]
    succeeded: bool,
}

#[derive(Debug, Default, Deserialize)]
struct RangeWithHeader {
    #[serde(default)]
    kvs: Vec<super::client::KeyValue>,
    #[serde(default)]
    more: bool,
    #[serde(default)]
    header: super::client::Header,
    #[serde(default, deserialize_with = "de_i64")]
    #[allow(dead_code)]
    count: i64,
}

impl EtcdClient {
    /// Apply `ops` atomically if `guard_key` exists with create revision
    /// `create_revision`; `Ok(false)` (nothing written) otherwise.
    pub async fn txn_if_created_at(
        &self,
        guard_key: &[u8],
        create_revision: i64,
        ops: &[TxnOp],
    ) -> Result<bool, MetadataError> {
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => {
                    json!({ "request_put": { "key": b64(key), "value": b64(value) } })
                }
                TxnOp::DeletePrefix { prefix, before } => {
                    let (key, end) = prefix_range(prefix);
                    let end = before.clone().unwrap_or(end);
                    json!({ "request_delete_range": { "key": b64(&key), "range_end": b64(&end) } })
                }
            })
            .collect();
        let body = json!({
            "compare": [{
                "key": b64(guard_key),
                "target": "CREATE",
                "result": "EQUAL",
                "create_revision": create_revision.to_string(),
            }],
            "success": success,
        });
        let a: TxnAnswer = self.call("/kv/txn", body).await?;
        Ok(a.succeeded)
    }

    /// `key` with its revisions, or `None`.
    pub async fn get_kv(&self, key: &[u8]) -> Result<Option<KvInfo>, MetadataError> {
        let r: RangeResponse = self.range(key, None, false).await?;
        match r.kvs.into_iter().next() {
            Some(kv) => Ok(Some(KvInfo {
                key: kv.key_bytes()?,
                value: kv.value_bytes()?,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            })),
            None => Ok(None),
        }
    }

    /// Every key under `prefix` with its value, sorted by key, read in pages of at most
    /// `page` keys (bounded answers however large the prefix grew), all at one revision.
    pub async fn range_prefix(
        &self,
        prefix: &[u8],
        page: usize,
    ) -> Result<Vec<KvInfo>, MetadataError> {
        let (mut key, end) = prefix_range(prefix);
        let mut out = Vec::new();
        let mut revision: i64 = 0;
        loop {
            let mut body = json!({
                "key": b64(&key),
                "range_end": b64(&end),
                "limit": page.max(1).to_string(),
            });
            if revision > 0 {
                body["revision"] = json!(revision.to_string());
            }
            let r: RangeWithHeader = self.call("/kv/range", body).await?;
            if revision == 0 {
                revision = r.header.revision;
            }
            let n = r.kvs.len();
            for kv in r.kvs {
                out.push(KvInfo {
                    key: kv.key_bytes()?,
                    value: kv.value_bytes()?,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                });
            }
            if !r.more || n == 0 {
                return Ok(out);
            }
            // Continue just after the last key.
            key = out.last().expect("n > 0").key.clone();
            key.push(0);
        }
    }
}
