//! High availability: leader election through etcd, and the op-log kept in etcd under
//! the leader's guard ([`EtcdSink`]).
//!
//! Keys, under `mooncake/<cluster_id>/master/`:
//! * `leader` — `{"rpc": "host:port", "incarnation": n}`, attached to the leader's lease.
//!   Its create revision is the **term**: etcd revisions only grow, so every new
//!   leadership has a larger term than all before it.
//! * `log/<seq, 20 digits>` — one record per group-committed batch of ops.
//! * `snap/meta` — `{"name": .., "seq": last seq in the snapshot}`; `snap/<name>/<i>` —
//!   its chunks.
//!
//! Every write is a transaction guarded by "the leader key still has my create revision":
//! a master whose lease lapsed (paused, partitioned) cannot append, compact or delete
//! anything once a successor exists, and learns it is fenced from the refused write. It
//! also stops serving on its own once its lease is no longer known valid (`serve_until`,
//! measured from the moment each keep-alive was *sent*), so a leader woken from SIGSTOP
//! answers [`mooncake_store_protocol::ErrorCode::NotLeader`] before anything else.
//!
//! A standby polls the leader key (every `ha_lease_ttl_sec / 5`, at most 200 ms) and
//! campaigns when it is gone; on winning it loads the snapshot and log from etcd, replays
//! them into a fresh state, writes a new snapshot and serves. Nothing acknowledged is
//! lost: an op is acknowledged only after its batch is in etcd.
//!
//! Why etcd and not standbys following the leader's log: the etcd cluster users already
//! run for HA is itself the replicated, fsync'ed log; writing batches into it keeps the
//! masters stateless peers (any of them can take over, no log shipping, no quorum of
//! masters) at the cost of one etcd round trip per batch, which group commit amortises
//! over all puts in flight. See the crate README for the measured cost.

use super::clock::Clock;
use super::durable::{decode_records, encode_record, LogSink, SinkError};
use super::oplog::LogOp;
use super::server::{recover, Shared};
use crate::config::MasterConfig;
use mooncake_metadata::etcd::{EtcdClient, EtcdOptions, PutIfAbsent, TxnOp};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use mooncake_store_protocol::leader::{find_leader, key_prefix, LeaderInfo};

/// Most bytes of one log record or snapshot chunk (etcd refuses requests over 1.5 MiB).
const MAX_VALUE: usize = 512 << 10;

#[derive(Debug, Serialize, Deserialize)]
struct SnapMeta {
    name: String,
    seq: u64,
}

/// The op-log in etcd, written only while `leader` has create revision `term`.
pub struct EtcdSink {
    etcd: EtcdClient,
    prefix: String,
    term: i64,
    seq: AtomicU64,
    snaps: AtomicU64,
    current_snap: parking_lot::Mutex<Option<String>>,
}

impl EtcdSink {
    pub fn new(etcd: EtcdClient, cluster_id: &str, term: i64) -> Self {
        EtcdSink {
            etcd,
            prefix: key_prefix(cluster_id),
            term,
            seq: AtomicU64::new(0),
            snaps: AtomicU64::new(0),
            current_snap: parking_lot::Mutex::new(None),
        }
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    fn log_key(seq: u64) -> String {
        format!("log/{seq:020}")
    }

    async fn guarded(&self, ops: &[TxnOp]) -> Result<(), SinkError> {
        match self
            .etcd
            .txn_if_created_at(&self.key("leader"), self.term, ops)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(SinkError::Fenced),
            Err(e) => Err(SinkError::Backend(e.to_string())),
        }
    }
}

fn backend(e: mooncake_metadata::MetadataError) -> SinkError {
    SinkError::Backend(e.to_string())
}

/// Split ops into encoded records of at most [`MAX_VALUE`] bytes (one op may exceed it
/// alone only if it is itself that large; etcd then refuses it and the write fails).
fn records(ops: &[LogOp]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, op) in ops.iter().enumerate() {
        let n = bincode::serialized_size(op).unwrap_or(0) as usize;
        if i > start && size + n > MAX_VALUE {
            out.push(encode_record(&ops[start..i]));
            start = i;
            size = 0;
        }
        size += n;
    }
    if start < ops.len() {
        out.push(encode_record(&ops[start..]));
    }
    out
}

#[async_trait::async_trait]
impl LogSink for EtcdSink {
    async fn load(&self) -> Result<Vec<LogOp>, SinkError> {
        let mut ops = Vec::new();
        let mut after = 0u64;
        if let Some(meta) = self
            .etcd
            .get(&self.key("snap/meta"))
            .await
            .map_err(backend)?
        {
            let meta: SnapMeta = serde_json::from_slice(&meta)
                .map_err(|e| SinkError::Corrupt(format!("snap/meta: {e}")))?;
            let chunks = self
                .etcd
                .range_prefix(&self.key(&format!("snap/{}/", meta.name)), 256)
                .await
                .map_err(backend)?;
            for c in chunks {
                let (o, valid) = decode_records(&c.value);
                if valid != c.value.len() {
                    return Err(SinkError::Corrupt(format!(
                        "snapshot chunk {}",
                        String::from_utf8_lossy(&c.key)
                    )));
                }
                ops.extend(o);
            }
            after = meta.seq;
            *self.current_snap.lock() = Some(meta.name);
        }
        let log = self
            .etcd
            .range_prefix(&self.key("log/"), 1024)
            .await
            .map_err(backend)?;
        let mut last = after;
        for kv in log {
            let k = String::from_utf8_lossy(&kv.key);
            let Some(seq) = k.rsplit('/').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if seq <= after {
                continue; // compacted into the snapshot, deletion pending
            }
            let (o, valid) = decode_records(&kv.value);
            if valid != kv.value.len() {
                return Err(SinkError::Corrupt(format!("log record {k}")));
            }
            ops.extend(o);
            last = last.max(seq);
        }
        self.seq.store(last, Ordering::Release);
        Ok(ops)
    }

    async fn append(&self, ops: &[LogOp]) -> Result<(), SinkError> {
        for rec in records(ops) {
            let seq = self.seq.load(Ordering::Acquire) + 1;
            self.guarded(&[TxnOp::Put {
                key: self.key(&Self::log_key(seq)),
                value: rec,
            }])
            .await?;
            self.seq.store(seq, Ordering::Release);
        }
        Ok(())
    }

    async fn compact(&self, state: &[LogOp]) -> Result<(), SinkError> {
        let n = self.snaps.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{n}", self.term);
        for (i, rec) in records(state).into_iter().enumerate() {
            self.guarded(&[TxnOp::Put {
                key: self.key(&format!("snap/{name}/{i:06}")),
                value: rec,
            }])
            .await?;
        }
        let seq = self.seq.load(Ordering::Acquire);
        let meta = serde_json::to_vec(&SnapMeta {
            name: name.clone(),
            seq,
        })
        .expect("json");
        // Flip to the new snapshot and drop the log it covers, atomically.
        self.guarded(&[
            TxnOp::Put {
                key: self.key("snap/meta"),
                value: meta,
            },
            TxnOp::DeletePrefix {
                prefix: self.key("log/"),
                before: Some(self.key(&Self::log_key(seq + 1))),
            },
        ])
        .await?;
        let old = self.current_snap.lock().replace(name);
        if let Some(old) = old {
            self.guarded(&[TxnOp::DeletePrefix {
                prefix: self.key(&format!("snap/{old}/")),
                before: None,
            }])
            .await?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("etcd {} term {}", self.prefix, self.term)
    }
}

/// The address clients should use for `rpc` bound at `bound`.
fn advertised(cfg: &MasterConfig, bound: std::net::SocketAddr) -> String {
    if !cfg.advertise_address.is_empty() {
        return cfg.advertise_address.clone();
    }
    let ip = if bound.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        bound.ip().to_string()
    };
    format!("{ip}:{}", bound.port())
}

/// The election loop of one master: campaign, lead until the lease is lost, repeat.
/// Never returns before `stop` flips.
pub(crate) async fn run(
    shared: Arc<Shared>,
    cfg: MasterConfig,
    clock: Arc<dyn Clock>,
    rpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let endpoints = cfg.etcd_endpoint_list();
    let ttl = Duration::from_secs(cfg.ha_lease_ttl_sec);
    let poll = (ttl / 5).min(Duration::from_millis(200));
    let prefix = key_prefix(&cfg.cluster_id);
    let leader_key = format!("{prefix}leader").into_bytes();
    let me = LeaderInfo {
        rpc: advertised(&cfg, rpc),
        http: advertised(&MasterConfig::default(), http),
        incarnation: shared.role.incarnation,
    };
    let me_json = serde_json::to_vec(&me).expect("json");
    let opts = EtcdOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: ttl.max(Duration::from_secs(2)),
    };
    let etcd = match EtcdClient::new(&endpoints, opts) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bad etcd endpoints; this master will never lead");
            return;
        }
    };
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        if *stop.borrow() {
            return;
        }
        // Campaign.
        let attempt = async {
            // The lease runs from (at the latest) now: serve_until counts from here.
            let t_sent = shared.uptime_ms();
            let lease = etcd.lease_grant(ttl).await?;
            let r = etcd
                .put_if_absent(&leader_key, &me_json, Some(lease.id))
                .await?;
            let won = match r {
                PutIfAbsent::Created => true,
                PutIfAbsent::Exists(v) => v == me_json,
            };
            if !won {
                let _ = etcd.lease_revoke(lease.id).await;
                let cur = etcd.get_kv(&leader_key).await?;
                return Ok::<_, mooncake_metadata::MetadataError>(Err(cur));
            }
            let kv = etcd.get_kv(&leader_key).await?;
            Ok(Ok((lease, t_sent, kv)))
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        match outcome {
            Err(e) => {
                if !warned {
                    tracing::error!(error = %e, endpoints = ?endpoints, "etcd unreachable; retrying with backoff (this master stands by)");
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Ok(Err(current)) => {
                backoff = Duration::from_millis(100);
                warned = false;
                let leader =
                    current.and_then(|kv| serde_json::from_slice::<LeaderInfo>(&kv.value).ok());
                *shared.role.leader.lock() = leader.map(|l| l.rpc);
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            Ok(Ok((lease, t_sent, kv))) => {
                backoff = Duration::from_millis(100);
                warned = false;
                let Some(kv) = kv.filter(|kv| kv.value == me_json) else {
                    continue; // lost it again already
                };
                let term = kv.create_revision;
                lead(
                    &shared, &cfg, &clock, &etcd, lease, t_sent, term, &me, &mut stop,
                )
                .await;
                if *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Serve as leader under `lease` until it is lost (or `stop`).
#[allow(clippy::too_many_arguments)]
async fn lead(
    shared: &Arc<Shared>,
    cfg: &MasterConfig,
    clock: &Arc<dyn Clock>,
    etcd: &EtcdClient,
    lease: mooncake_metadata::etcd::Lease,
    t_sent: u64,
    term: i64,
    me: &LeaderInfo,
    stop: &mut watch::Receiver<bool>,
) {
    let ttl_ms = lease.ttl.as_millis() as u64;
    // Stop serving a little before etcd could expire the lease.
    let margin = (ttl_ms / 5).clamp(100, 1000);
    let valid_until = |sent: u64| sent + ttl_ms - margin;
    tracing::info!(term, rpc = %me.rpc, "elected leader; loading the op-log from etcd");
    let t0 = std::time::Instant::now();
    let sink: Arc<dyn LogSink> = Arc::new(EtcdSink::new(etcd.clone(), &cfg.cluster_id, term));
    let log = match recover(shared, sink, cfg, clock.clone()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "could not load the op-log; giving up leadership");
            let _ = etcd.lease_revoke(lease.id).await;
            return;
        }
    };
    let (wstop_tx, wstop) = watch::channel(false);
    let writer = log.spawn_writer(wstop);
    {
        let mut st = shared.state.lock();
        st.set_term(term as u64, shared.role.incarnation);
    }
    *shared.role.leader.lock() = Some(me.rpc.clone());
    shared.role.set_leading(term as u64, valid_until(t_sent));
    shared.role.elections_won.fetch_add(1, Ordering::Relaxed);
    tracing::info!(term, ms = t0.elapsed().as_millis() as u64, "leader serving");
    // Keep the lease alive; every success extends how long we may serve.
    let period = Duration::from_millis((ttl_ms / 3).max(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => break,
        }
        if log.failed() {
            tracing::warn!(term, "op-log write refused or failed; stepping down");
            break;
        }
        let sent = shared.uptime_ms();
        match etcd.lease_keep_alive_once(lease.id).await {
            Ok(Some(_)) => shared.role.extend(valid_until(sent)),
            Ok(None) => {
                tracing::warn!(term, "leader lease expired; stepping down");
                break;
            }
            Err(e) => {
                if !shared.serving() {
                    tracing::warn!(term, error = %e, "could not refresh the leader lease in time; stepping down");
                    break;
                }
            }
        }
    }
    shared.role.stop_serving();
    *shared.role.leader.lock() = None;
    shared.role.leadership_lost.fetch_add(1, Ordering::Relaxed);
    *shared.log.write() = None;
    log.fail();
    let _ = wstop_tx.send(true);
    writer.abort();
    if *stop.borrow() {
        // Orderly shutdown: hand over at once.
        let _ = etcd.lease_revoke(lease.id).await;
    }
}
