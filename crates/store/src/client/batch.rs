//! Batch forms of the object operations: one master round trip to start (or
//! look up) every key, all data transfers concurrently, one round trip to end.
//! Results come back per key, in order; one key's failure never fails another.

use std::time::Instant;

use futures::future::join_all;
use tracing::Instrument;

use super::io::Src;
use super::ops::ReadTarget;
use super::{Client, ClientError, Region, Result};
use mooncake_store_protocol::{validate_key, ReplicateConfig};

impl Client {
    /// Put many values; one result per key.
    pub async fn batch_put(
        &self,
        keys: &[String],
        values: &[&[u8]],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        let span = tracing::info_span!("store.batch_put", n = keys.len());
        let srcs: Vec<(u64, Src<'_>)> = values
            .iter()
            .map(|v| (v.len() as u64, Src::Bytes(v)))
            .collect();
        self.batch_put_impl(keys, &srcs, config)
            .instrument(span)
            .await
    }

    /// Put many registered regions, zero-copy; one result per key.
    pub async fn batch_put_from(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        let span = tracing::info_span!("store.batch_put_from", n = keys.len());
        let srcs: Vec<(u64, Src<'_>)> = regions
            .iter()
            .map(|r| (r.len() as u64, Src::Registered(r.addr())))
            .collect();
        self.batch_put_impl(keys, &srcs, config)
            .instrument(span)
            .await
    }

    pub(super) async fn batch_put_impl(
        &self,
        keys: &[String],
        srcs: &[(u64, Src<'_>)],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<()>>> {
        self.check_open()?;
        if keys.len() != srcs.len() {
            return Err(ClientError::InvalidParams(format!(
                "{} keys but {} values",
                keys.len(),
                srcs.len()
            )));
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if srcs.iter().any(|(_, s)| matches!(s, Src::Bytes(_)))
            && self.inner.staging.is_none()
            && self.mounted().is_none()
        {
            return Err(ClientError::NoStagingBuffer);
        }
        // Keys the master would refuse anyway are answered here, so one bad key
        // does not cost the others a round trip.
        let mut results: Vec<Option<Result<()>>> = keys
            .iter()
            .zip(srcs)
            .map(|(k, (n, _))| {
                if let Err(e) = validate_key(k) {
                    Some(Err(e.into()))
                } else if *n == 0 {
                    Some(Err(ClientError::InvalidParams(
                        "value must not be empty".into(),
                    )))
                } else {
                    None
                }
            })
            .collect();
        let todo: Vec<usize> = (0..keys.len()).filter(|&i| results[i].is_none()).collect();
        let items: Vec<(String, u64)> =
            todo.iter().map(|&i| (keys[i].clone(), srcs[i].0)).collect();
        let started = if items.is_empty() {
            Vec::new()
        } else {
            self.inner.master.batch_put_start(&items, config).await?
        };
        let crcs: Vec<Option<u32>> = (0..keys.len())
            .map(|i| {
                (config.with_checksum && results[i].is_none())
                    .then(|| super::checksum::of_source(srcs[i].1, srcs[i].0))
            })
            .collect();
        let writes = todo.iter().zip(started).map(|(&i, start)| async move {
            let replicas = start?;
            self.write_replicas(&replicas, srcs[i].0, srcs[i].1).await
        });
        let written = join_all(writes).await;
        let mut ok_keys = Vec::new();
        let mut bad_keys = Vec::new();
        for (&i, w) in todo.iter().zip(written) {
            match w {
                Ok(()) => ok_keys.push(i),
                Err(e) => {
                    // A start that failed has nothing to revoke.
                    if e.master_code().is_none() {
                        bad_keys.push(keys[i].clone());
                    }
                    results[i] = Some(Err(e));
                }
            }
        }
        if !ok_keys.is_empty() {
            let names: Vec<(String, Option<u32>)> = ok_keys
                .iter()
                .map(|&i| (keys[i].clone(), crcs[i]))
                .collect();
            match self.inner.master.batch_put_end_checked(&names).await {
                Ok(ends) => {
                    for (&i, end) in ok_keys.iter().zip(ends) {
                        if let Err(e) = end {
                            bad_keys.push(keys[i].clone());
                            results[i] = Some(Err(e.into()));
                        } else {
                            results[i] = Some(Ok(()));
                        }
                    }
                }
                Err(e) => {
                    for &i in &ok_keys {
                        bad_keys.push(keys[i].clone());
                        results[i] = Some(Err(e.into()));
                    }
                }
            }
        }
        if !bad_keys.is_empty() {
            if let Err(e) = self.inner.master.batch_put_revoke(&bad_keys).await {
                tracing::debug!(error = %e, "batch_put_revoke after failures");
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or(Err(ClientError::Master(
                    mooncake_store_protocol::ErrorCode::Internal,
                )))
            })
            .collect())
    }

    /// Get many values; one result per key.
    pub async fn batch_get(&self, keys: &[String]) -> Result<Vec<Result<Vec<u8>>>> {
        let span = tracing::info_span!("store.batch_get", n = keys.len());
        let targets: Vec<ReadTarget<'_>> = keys.iter().map(|_| ReadTarget::Vec).collect();
        let out = self.batch_get_impl(keys, &targets).instrument(span).await?;
        Ok(out
            .into_iter()
            .map(|r| r.map(|(_, v)| v.unwrap_or_default()))
            .collect())
    }

    /// Get many values into registered regions, zero-copy; one size (or error) per key.
    pub async fn batch_get_into(
        &self,
        keys: &[String],
        regions: &[Region<'_>],
    ) -> Result<Vec<Result<u64>>> {
        let span = tracing::info_span!("store.batch_get_into", n = keys.len());
        if keys.len() != regions.len() {
            return Err(ClientError::InvalidParams(format!(
                "{} keys but {} buffers",
                keys.len(),
                regions.len()
            )));
        }
        let targets: Vec<ReadTarget<'_>> = regions.iter().map(|r| ReadTarget::Region(*r)).collect();
        let out = self.batch_get_impl(keys, &targets).instrument(span).await?;
        Ok(out.into_iter().map(|r| r.map(|(n, _)| n)).collect())
    }

    pub(super) async fn batch_get_impl(
        &self,
        keys: &[String],
        targets: &[ReadTarget<'_>],
    ) -> Result<Vec<Result<(u64, Option<Vec<u8>>)>>> {
        self.check_open()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let t0 = Instant::now();
        let lists = self.inner.master.batch_get_replica_list(keys).await?;
        let reads = keys
            .iter()
            .zip(lists)
            .zip(targets)
            .map(|((k, list), t)| async move {
                let replicas = list?;
                self.read_object(k, &replicas, t).await
            });
        let mut out = join_all(reads).await;
        if t0.elapsed() >= self.inner.config.lease_ttl {
            // The batch outlasted its leases: re-read every key on its own
            // (each with a fresh lease) rather than trust possibly reused space.
            for (i, k) in keys.iter().enumerate() {
                if out[i].is_ok() {
                    out[i] = match &targets[i] {
                        ReadTarget::Vec => self.get(k).await.map(|v| (v.len() as u64, Some(v))),
                        ReadTarget::Region(r) => self.get_into(k, *r).await.map(|n| (n, None)),
                        ReadTarget::Parts(_) => self.get_impl(k, targets[i]).await,
                    };
                }
            }
        }
        Ok(out)
    }

    /// Existence of many keys.
    pub async fn batch_is_exist(&self, keys: &[String]) -> Result<Vec<Result<bool>>> {
        let span = tracing::debug_span!("store.batch_is_exist", n = keys.len());
        async {
            self.check_open()?;
            let r = self.inner.master.batch_exists(keys).await?;
            Ok(r.into_iter()
                .map(|x| x.map_err(ClientError::from))
                .collect())
        }
        .instrument(span)
        .await
    }

    /// Remove many keys.
    pub async fn batch_remove(&self, keys: &[String], force: bool) -> Result<Vec<Result<()>>> {
        let span = tracing::info_span!("store.batch_remove", n = keys.len(), force);
        async {
            self.check_open()?;
            let r = self.inner.master.batch_remove(keys, force).await?;
            Ok(r.into_iter()
                .map(|x| x.map_err(ClientError::from))
                .collect())
        }
        .instrument(span)
        .await
    }
}
