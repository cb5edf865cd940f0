//! The fetch loop of `get_replica`: the I/O shell around the
//! [`Scheduler`]. It re-reads holder records every `refresh`, starts the
//! transfers the scheduler hands out, verifies each shard's checksum in local
//! memory, announces verified (and in-flight) shards, and feeds completions
//! and failures back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mooncake_transfer::{Opcode, TransferEngine, TransferRequest};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{crc_of, FetchResult, GetReport, Inner, Progress, ServedRef};
use crate::error::P2pError;
use crate::layout::{locate, pieces, Manifest, Piece, Region};
use crate::meta::LiveHolder;
use crate::scheduler::{Assignment, Failure, HolderView, Limits, Scheduler};

impl Inner {
    /// Announce in the background, so the next transfers start at once.
    /// Announcements of one entry are serialised (each writes the state of
    /// its turn), so a newer record is never overwritten by an older one.
    fn announce_soon(self: &Arc<Self>, served: &ServedRef) {
        let me = Arc::clone(self);
        let entry = Arc::clone(served);
        tokio::spawn(async move {
            if let Err(e) = me.announce(&entry).await {
                tracing::warn!(error = %e, "announcing shards failed");
            }
        });
    }

    pub(super) async fn fetch(
        self: &Arc<Self>,
        manifest: &Manifest,
        local: &[Region],
        served: &ServedRef,
        progress: Option<&watch::Sender<Progress>>,
    ) -> Result<GetReport, P2pError> {
        let cfg = &self.config;
        let start = Instant::now();
        let n = manifest.shards.len();
        let mut sched = Scheduler::new(
            n,
            Limits {
                total: cfg.parallel,
                per_holder: cfg.per_holder,
                ban: cfg.ban,
                origin_only: cfg.origin_only,
            },
        );
        let mut rng = StdRng::from_entropy();
        let mut holders: HashMap<String, LiveHolder> = HashMap::new();
        let mut last_refresh: Option<Instant> = None;
        let mut last_progress = Instant::now();
        let mut tasks: JoinSet<(Assignment, FetchResult)> = JoinSet::new();
        let mut report = GetReport {
            name: manifest.name.clone(),
            bytes: manifest.size,
            shards: n,
            parts: manifest.parts.clone(),
            ..Default::default()
        };
        let mut done_bytes = 0u64;
        while !sched.is_complete() {
            if last_refresh.is_none_or(|t| t.elapsed() >= cfg.refresh) {
                match self.live_holders(manifest).await {
                    Ok(live) => {
                        holders = live
                            .into_iter()
                            .filter(|(id, _)| *id != self.node)
                            .collect();
                        sched.set_holders(
                            holders
                                .iter()
                                .map(|(id, h)| HolderView {
                                    id: id.clone(),
                                    origin: h.record.origin,
                                    have: h.have.clone(),
                                    fetching: h.fetching.clone(),
                                })
                                .collect(),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading holders failed; keeping the last view")
                    }
                }
                last_refresh = Some(Instant::now());
            }
            let mut started = false;
            while let Some(a) = sched.next(Instant::now(), &mut rng) {
                let shard = manifest.shards[a.shard];
                let plan = holders
                    .get(&a.holder)
                    .and_then(|h| pieces(shard.offset, shard.len, &h.record.regions, local))
                    .map(|p| (holders[&a.holder].record.segment.clone(), p));
                let Some((segment, plan)) = plan else {
                    sched.failed(&a, Failure::Io, Instant::now());
                    continue;
                };
                let runs = locate(local, shard.offset, shard.len).expect("checked size");
                let engine = Arc::clone(&self.engine);
                let delay = cfg.hooks.shard_delay;
                served.lock().await.fetching.insert(a.shard);
                started = true;
                tasks.spawn(async move {
                    let r = fetch_shard(engine, segment, plan, runs, shard.crc32, delay).await;
                    (a, r)
                });
            }
            if started && cfg.announce {
                self.announce_soon(served);
            }
            if sched.in_flight() == 0 && last_progress.elapsed() >= cfg.stall_timeout {
                return Err(P2pError::MissingShards {
                    name: manifest.name.clone(),
                    shards: sched.missing(),
                    total: n,
                    secs: last_progress.elapsed().as_secs_f64(),
                });
            }
            let joined = tokio::select! {
                j = tasks.join_next(), if !tasks.is_empty() => j,
                _ = tokio::time::sleep(cfg.refresh) => None,
            };
            let Some(joined) = joined else { continue };
            let (a, result) = match joined {
                Ok(v) => v,
                Err(e) => return Err(P2pError::InvalidArgument(format!("fetch task failed: {e}"))),
            };
            served.lock().await.fetching.remove(a.shard);
            match result {
                Ok(()) => {
                    let shard = manifest.shards[a.shard];
                    sched.completed(&a);
                    last_progress = Instant::now();
                    done_bytes += shard.len;
                    *report.sources.entry(a.holder.clone()).or_default() += shard.len;
                    if cfg.hooks.corrupt_served {
                        let (addr, _) = locate(local, shard.offset, shard.len).expect("checked")[0];
                        // SAFETY: inside a checked registered region; this
                        // node owns these bytes (its own copy of the shard).
                        unsafe {
                            let p = addr as usize as *mut u8;
                            p.write(p.read() ^ 0xff);
                        }
                    }
                    served.lock().await.have.insert(a.shard);
                    if cfg.announce {
                        self.announce_soon(served);
                    }
                    if let Some(p) = progress {
                        p.send_replace(Progress {
                            done_bytes,
                            total_bytes: manifest.size,
                            sources: report.sources.len(),
                            live_holders: sched.live_holders(),
                        });
                    }
                }
                Err((why, msg)) => {
                    tracing::warn!(holder = %a.holder, shard = a.shard, ?why, msg, "shard fetch failed; retrying elsewhere");
                    report.failed_transfers += 1;
                    sched.failed(&a, why, Instant::now());
                }
            }
        }
        if cfg.announce {
            // The complete record is in place before get_replica returns.
            if let Err(e) = self.announce(served).await {
                tracing::warn!(error = %e, "announcing the complete copy failed");
            }
        }
        report.secs = start.elapsed().as_secs_f64();
        report.corrupt_holders = sched.corrupt_holders();
        Ok(report)
    }
}

async fn fetch_shard(
    engine: Arc<TransferEngine>,
    segment: String,
    plan: Vec<Piece>,
    runs: Vec<(u64, u64)>,
    crc32: u32,
    delay: Duration,
) -> FetchResult {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let target = engine
        .open_segment(&segment)
        .await
        .map_err(|e| (Failure::Io, e.to_string()))?;
    let requests: Vec<TransferRequest> = plan
        .iter()
        .map(|p| TransferRequest {
            opcode: Opcode::Read,
            source: p.local as usize,
            target: target.clone(),
            target_offset: p.remote,
            length: p.len as usize,
        })
        .collect();
    engine
        .transfer(&requests)
        .await
        .map_err(|e| (Failure::Io, e.to_string()))?;
    let got = tokio::task::spawn_blocking(move || crc_of(&runs))
        .await
        .map_err(|e| (Failure::Io, e.to_string()))?;
    if got != crc32 {
        return Err((
            Failure::Corrupt,
            format!("checksum {got:#010x}, expected {crc32:#010x}"),
        ));
    }
    Ok(())
}
