//! Put sessions: a put whose space is reserved first and whose bytes are written
//! range by range before it becomes visible (the reference's
//! `batch_put_session_start` / `batch_put_from_multi_buffer_ranges` /
//! `batch_put_session_end` / `batch_put_session_revoke`, for writers that produce an
//! object in pieces, e.g. one layer at a time).
//!
//! Invariants: nothing is readable before [`Client::put_session_end`] (the master
//! lists replicas only after put_end); a write names only bytes inside the object
//! (`[offset, offset + len)` within its size, else INVALID_PARAMS and nothing
//! moves) and only caller memory lent as a [`Region`]; a revoked session frees its
//! space and never becomes visible.

use std::collections::HashMap;

use mooncake_transfer::Opcode;
use tracing::Instrument;

use super::io::requests;
use super::plan;
use super::{Client, ClientError, Region, Result};
use mooncake_store_protocol::{validate_key, Replica, ReplicateConfig};

/// A started put: its size and the replicas reserved for it.
#[derive(Debug, Clone)]
pub struct PutSession {
    size: u64,
    replicas: Vec<Replica>,
}

impl PutSession {
    /// The object's size, fixed at start.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Client {
    /// Reserve space for `keys` (`sizes[i]` bytes each) without moving data; one
    /// session (or error) per key. A key that exists fails with
    /// `ObjectAlreadyExists`.
    pub async fn put_session_start(
        &self,
        keys: &[String],
        sizes: &[u64],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<PutSession>>> {
        let span = tracing::info_span!("store.put_session_start", n = keys.len());
        async {
            self.check_open()?;
            if keys.len() != sizes.len() {
                return Err(ClientError::InvalidParams(format!(
                    "{} keys but {} sizes",
                    keys.len(),
                    sizes.len()
                )));
            }
            let mut out: Vec<Option<Result<PutSession>>> = keys
                .iter()
                .zip(sizes)
                .map(|(k, &n)| match validate_key(k) {
                    Err(e) => Some(Err(e.into())),
                    Ok(()) if n == 0 => Some(Err(ClientError::InvalidParams(
                        "value must not be empty".into(),
                    ))),
                    Ok(()) => None,
                })
                .collect();
            let todo: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
            if !todo.is_empty() {
                let items: Vec<(String, u64)> =
                    todo.iter().map(|&i| (keys[i].clone(), sizes[i])).collect();
                let started = self.inner.master.batch_put_start(&items, config).await?;
                for (&i, r) in todo.iter().zip(started) {
                    out[i] = Some(r.map_err(ClientError::from).map(|replicas| PutSession {
                        size: sizes[i],
                        replicas,
                    }));
                }
            }
            Ok(out
                .into_iter()
                .map(|r| r.expect("every key answered"))
                .collect())
        }
        .instrument(span)
        .await
    }

    /// Write `parts` — each a registered region and the object offset its bytes
    /// go to — into every replica of a started put, as one engine batch; the bytes
    /// written. A part reaching past the object's end: INVALID_PARAMS, nothing moves.
    pub async fn put_session_write(
        &self,
        session: &PutSession,
        parts: &[(Region<'_>, u64)],
    ) -> Result<u64> {
        let span = tracing::debug_span!("store.put_session_write", parts = parts.len());
        async {
            self.check_open()?;
            let mut total = 0u64;
            for (r, off) in parts {
                let len = r.len() as u64;
                match off.checked_add(len) {
                    Some(end) if end <= session.size => total += len,
                    _ => {
                        return Err(ClientError::InvalidParams(format!(
                            "range {off}+{len} outside object of {} bytes",
                            session.size
                        )))
                    }
                }
            }
            let mut spans = Vec::new();
            let mut locals = Vec::new();
            for replica in &session.replicas {
                for (r, off) in parts.iter().filter(|(r, _)| !r.is_empty()) {
                    for s in plan::spans(replica, *off..*off + r.len() as u64) {
                        locals.push(r.addr() + (s.obj_off - off) as usize);
                        spans.push(s);
                    }
                }
            }
            if spans.is_empty() {
                return Ok(total);
            }
            let mut cache = HashMap::new();
            self.handles(spans.iter(), &mut cache).await?;
            let mut reqs = requests(&spans, &cache, Opcode::Write, |_| 0);
            for (req, local) in reqs.iter_mut().zip(locals) {
                req.source = local;
            }
            self.inner.engine.transfer(&reqs).await?;
            Ok(total)
        }
        .instrument(span)
        .await
    }

    /// Make the objects of started puts visible; one result per key.
    pub async fn put_session_end(&self, keys: &[String]) -> Result<Vec<Result<()>>> {
        self.check_open()?;
        let r = self.inner.master.batch_put_end(keys).await?;
        Ok(r.into_iter()
            .map(|x| x.map_err(ClientError::from))
            .collect())
    }

    /// Abandon started puts, freeing their space; one result per key.
    pub async fn put_session_revoke(&self, keys: &[String]) -> Result<Vec<Result<()>>> {
        self.check_open()?;
        let r = self.inner.master.batch_put_revoke(keys).await?;
        Ok(r.into_iter()
            .map(|x| x.map_err(ClientError::from))
            .collect())
    }
}
