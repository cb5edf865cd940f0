//! etcd primitives the store's high availability builds on: leases (grant,
//! keep-alive, revoke) and an atomic put-if-absent (a transaction comparing
//! the key's create revision with 0). Together they make leader election:
//! grant a lease, `put_if_absent(leader_key, me, lease)`, keep the lease alive;
//! the key vanishes when the leader stops refreshing it.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::{b64, de_i64, gateway_error, EtcdClient, RangeResponse, BACKEND};
use crate::http::client::reqwest_error;
use crate::MetadataError;

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease ID to attach keys to.
    pub id: i64,
    /// The TTL the server granted.
    pub ttl: Duration,
}

/// Outcome of [`EtcdClient::put_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutIfAbsent {
    /// The key did not exist and now holds the value.
    Created,
    /// The key exists; its current value, unchanged.
    Exists(Vec<u8>),
}

#[derive(Debug, Deserialize)]
struct LeaseAnswer {
    #[serde(rename = "ID", default, deserialize_with = "de_i64")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    ttl: i64,
}

#[derive(Debug, Deserialize)]
struct StreamItem<T> {
    result: Option<T>,
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct TxnAnswer {
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<TxnOpAnswer>,
}

#[derive(Debug, Default, Deserialize)]
struct TxnOpAnswer {
    response_range: Option<RangeResponse>,
}

impl EtcdClient {
    /// Grant a lease of `ttl` (rounded up to whole seconds, at least 1 s).
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, MetadataError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let a: LeaseAnswer = self
            .call("/lease/grant", json!({ "TTL": secs.max(1).to_string() }))
            .await?;
        if a.id == 0 || a.ttl <= 0 {
            return Err(MetadataError::Backend {
                backend: BACKEND,
                message: format!("lease grant answered id {} ttl {}", a.id, a.ttl),
            });
        }
        Ok(Lease {
            id: a.id,
            ttl: Duration::from_secs(a.ttl as u64),
        })
    }

    /// Refresh lease `id` once. `Ok(None)` means the lease no longer exists
    /// (expired or revoked); `Ok(Some(ttl))` is the renewed TTL.
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<Option<Duration>, MetadataError> {
        let prefix = self.api_prefix().await?;
        // The gateway maps this bidirectional stream onto one request body and
        // a newline-separated answer stream; one request gives one answer.
        let resp = self
            .send(
                &format!("{prefix}/lease/keepalive"),
                &json!({ "ID": id.to_string() }),
                false,
            )
            .await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| reqwest_error(BACKEND, e))?;
        if !status.is_success() {
            return Err(gateway_error(status, &body));
        }
        let line = body.split(|b| *b == b'\n').next().unwrap_or_default();
        let item: StreamItem<LeaseAnswer> =
            serde_json::from_slice(line).map_err(|e| MetadataError::Backend {
                backend: BACKEND,
                message: format!("unexpected keepalive answer: {e}"),
            })?;
        match (item.result, item.error) {
            (_, Some(err)) => Err(MetadataError::Backend {
                backend: BACKEND,
                message: format!("keepalive failed: {err}"),
            }),
            (Some(a), None) if a.ttl > 0 => Ok(Some(Duration::from_secs(a.ttl as u64))),
            _ => Ok(None),
        }
    }

    /// Revoke lease `id`, deleting every key attached to it. Revoking an
    /// unknown (already expired) lease is not an error.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), MetadataError> {
        match self
            .call::<Value>("/lease/revoke", json!({ "ID": id.to_string() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(MetadataError::Backend { message, .. })
                if message.contains("requested lease not found") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Atomically store `value` under `key` only if the key does not exist,
    /// attached to `lease` when given; otherwise return the current value.
    ///
    /// If the connection broke after etcd applied the transaction, the retry
    /// answers `Exists(value)` with our own value: callers electing a leader
    /// should compare the value (a unique candidate id) rather than trust
    /// `Created` alone.
    pub async fn put_if_absent(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<PutIfAbsent, MetadataError> {
        let mut put = json!({ "key": b64(key), "value": b64(value) });
        if let Some(id) = lease {
            put["lease"] = json!(id.to_string());
        }
        let body = json!({
            "compare": [{ "key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": put }],
            "failure": [{ "request_range": { "key": b64(key) } }],
        });
        let a: TxnAnswer = self.call("/kv/txn", body).await?;
        if a.succeeded {
            return Ok(PutIfAbsent::Created);
        }
        let current = a
            .responses
            .into_iter()
            .find_map(|r| r.response_range)
            .and_then(|r| r.kvs.into_iter().next());
        match current {
            Some(kv) => Ok(PutIfAbsent::Exists(kv.value_bytes()?)),
            // Deleted between the compare and the range: it exists no more,
            // but we did not create it either; report an empty current value.
            None => Ok(PutIfAbsent::Exists(Vec::new())),
        }
    }

    /// Keep `lease` alive in the background (a refresh every TTL/3) until the
    /// returned keeper is dropped or the lease is lost.
    pub fn keep_alive(&self, lease: Lease) -> LeaseKeeper {
        let (tx, rx) = watch::channel(true);
        let client = self.clone();
        let task = tokio::spawn(async move {
            let period = (lease.ttl / 3).max(Duration::from_millis(100));
            let mut last_ok = Instant::now();
            let mut ttl = lease.ttl;
            loop {
                tokio::time::sleep(period).await;
                match client.lease_keep_alive_once(lease.id).await {
                    Ok(Some(t)) => {
                        last_ok = Instant::now();
                        ttl = t;
                    }
                    Ok(None) => {
                        tracing::warn!(lease = lease.id, "etcd lease expired");
                        break;
                    }
                    Err(e) if last_ok.elapsed() >= ttl => {
                        tracing::warn!(lease = lease.id, error = %e, "etcd lease keep-alive failed past its TTL");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(lease = lease.id, error = %e, "etcd keep-alive failed; retrying")
                    }
                }
            }
            let _ = tx.send(false);
        });
        LeaseKeeper {
            lease,
            alive: rx,
            task,
        }
    }
}

/// A lease kept alive by a background task; dropping it stops the refreshes
/// (the lease then expires after its TTL; revoke it to end it at once).
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: Lease,
    alive: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// The lease kept alive.
    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// False once the lease expired or could not be refreshed within its TTL.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves when the lease is lost.
    pub async fn lost(&mut self) {
        let _ = self.alive.wait_for(|alive| !alive).await;
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
