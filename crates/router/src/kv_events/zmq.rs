//! The ZMQ shell of KV events, both ends, speaking vLLM's protocol
//! (`ZmqEventPublisher`): a PUB socket sends `[topic, seq (8 bytes
//! big-endian), msgpack batch]`; a ROUTER socket answers a replay request
//! `[identity, "", start_seq]` with `[identity, "", seq, batch]` for every
//! buffered batch from `start_seq` on, then `[identity, "", -1, ""]`.
//!
//! - [`Publisher`]: what the fake engine runs (bounded replay buffer, and
//!   test faults: a batch not sent live, or sent after its successor).
//! - [`subscribe`]: one stream's subscriber task (SUB + a DEALER for
//!   replays). It applies batches to the [`PrefixIndex`] strictly in
//!   sequence order: a gap is closed by a replay (counted, or counted lost
//!   when the buffer no longer has it); a batch already applied (a late,
//!   reordered one) is dropped; a sequence that restarts from 0 means the
//!   engine restarted with an empty cache, so the stream is cleared. When it
//!   joins a stream mid-way it replays from 0 to learn what is already
//!   cached.
//!
//! Uses the pure-Rust `zeromq` crate (ZMTP 3.1, interoperates with libzmq /
//! pyzmq peers) so no C library is needed to build.

use super::wire::{decode_batch, encode_batch, KvEventBatch};
use crate::indexer::PrefixIndex;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// vLLM's end-of-replay marker.
pub const END_SEQ: [u8; 8] = (-1i64).to_be_bytes();

/// Batches a publisher keeps for replay (vLLM's `buffer_steps` default).
pub const REPLAY_BUFFER: usize = 10_000;

/// How long a subscriber waits for one replay answer frame.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);

/// A restart is told from a late batch by how far back the sequence went.
const REORDER_WINDOW: u64 = 1024;

/// Test faults a publisher can inject (by sequence number).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Batches kept for replay but never sent live.
    pub drop: HashSet<u64>,
    /// Batches sent live only after the next one.
    pub swap: HashSet<u64>,
}

enum Cmd {
    Publish(KvEventBatch),
    Faults(Faults),
}

/// A vLLM-style event publisher (see the module docs). Dropping it closes
/// the sockets in the background; [`Publisher::close`] waits for that.
pub struct Publisher {
    tx: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Binds PUB at `endpoint` and ROUTER at `replay` (`tcp://host:port`).
    pub async fn bind(endpoint: &str, replay: Option<&str>, topic: &str) -> Result<Self, String> {
        let mut publ = zeromq::PubSocket::new();
        publ.bind(endpoint)
            .await
            .map_err(|e| format!("bind {endpoint}: {e}"))?;
        let router = match replay {
            Some(r) => {
                let mut s = zeromq::RouterSocket::new();
                s.bind(r).await.map_err(|e| format!("bind {r}: {e}"))?;
                Some(s)
            }
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(publish_loop(publ, router, rx, topic.as_bytes().to_vec()));
        Ok(Self { tx, task })
    }

    /// Queues a batch (sequence numbers are assigned in call order).
    pub fn publish(&self, batch: KvEventBatch) {
        let _ = self.tx.send(Cmd::Publish(batch));
    }

    /// Closes the sockets (the ports are free when this returns).
    pub async fn close(self) {
        let Publisher { tx, task } = self;
        drop(tx);
        let _ = task.await;
    }

    /// Sets the faults for the batches not yet sent.
    pub fn set_faults(&self, f: Faults) {
        let _ = self.tx.send(Cmd::Faults(f));
    }
}

async fn publish_loop(
    mut publ: zeromq::PubSocket,
    router: Option<zeromq::RouterSocket>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    topic: Vec<u8>,
) {
    let buffer: Arc<Mutex<VecDeque<(u64, Bytes)>>> = Arc::default();
    let (stop_replay, stopped) = tokio::sync::oneshot::channel::<()>();
    let replay = router.map(|r| tokio::spawn(replay_loop(r, buffer.clone(), stopped)));
    let mut seq = 0u64;
    let mut faults = Faults::default();
    let mut held: Option<ZmqMessage> = None;
    while let Some(cmd) = rx.recv().await {
        let batch = match cmd {
            Cmd::Faults(f) => {
                faults = f;
                continue;
            }
            Cmd::Publish(b) => b,
        };
        let payload = Bytes::from(encode_batch(&batch));
        {
            let mut b = buffer.lock();
            if b.len() == REPLAY_BUFFER {
                b.pop_front();
            }
            b.push_back((seq, payload.clone()));
        }
        let msg = frames(vec![
            Bytes::from(topic.clone()),
            Bytes::copy_from_slice(&seq.to_be_bytes()),
            payload,
        ]);
        if faults.swap.contains(&seq) {
            held = Some(msg);
        } else if !faults.drop.contains(&seq) {
            let _ = publ.send(msg).await;
            if let Some(h) = held.take() {
                let _ = publ.send(h).await;
            }
        }
        seq += 1;
    }
    // The owner is gone: free the ports.
    publ.close().await;
    let _ = stop_replay.send(());
    if let Some(r) = replay {
        let _ = r.await;
    }
}

fn frames(v: Vec<Bytes>) -> ZmqMessage {
    // Never empty here, so the conversion cannot fail.
    ZmqMessage::try_from(v).unwrap_or_else(|_| ZmqMessage::from(Bytes::new()))
}

async fn replay_loop(
    mut r: zeromq::RouterSocket,
    buffer: Arc<Mutex<VecDeque<(u64, Bytes)>>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let req = tokio::select! {
            _ = &mut stop => break,
            req = r.recv() => match req {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let f = req.into_vec();
        if f.len() != 3 || f[2].len() != 8 {
            continue;
        }
        let id = f[0].clone();
        let start = u64::from_be_bytes(f[2][..8].try_into().unwrap_or([0; 8]));
        let items: Vec<(u64, Bytes)> = buffer
            .lock()
            .iter()
            .filter(|(s, _)| *s >= start)
            .cloned()
            .collect();
        for (s, p) in items {
            let m = frames(vec![
                id.clone(),
                Bytes::new(),
                Bytes::copy_from_slice(&s.to_be_bytes()),
                p,
            ]);
            if r.send(m).await.is_err() {
                break;
            }
        }
        let end = frames(vec![
            id,
            Bytes::new(),
            Bytes::copy_from_slice(&END_SEQ),
            Bytes::new(),
        ]);
        let _ = r.send(end).await;
    }
    r.close().await;
}

/// Where one stream's events come from.
#[derive(Debug, Clone)]
pub struct StreamSource {
    /// Instance the stream belongs to (the index key).
    pub instance: String,
    /// Rank assumed when batches carry none.
    pub dp_rank: u32,
    /// PUB endpoint (`tcp://host:port`).
    pub endpoint: String,
    /// ROUTER replay endpoint, if the publisher has one.
    pub replay: Option<String>,
}

/// Runs one stream's subscriber until the task is aborted.
pub async fn subscribe(src: StreamSource, index: Arc<Mutex<PrefixIndex>>) {
    index.lock().add_stream(&src.instance, src.dp_rank);
    let mut sub = zeromq::SubSocket::new();
    // Connects in the background and reconnects after a publisher restart.
    loop {
        match sub.connect(&src.endpoint).await {
            Ok(()) => break,
            Err(e) => {
                tracing::debug!(endpoint = %src.endpoint, error = %e, "kv events: connect");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    if sub.subscribe("").await.is_err() {
        return;
    }
    let mut mon = sub.monitor();
    let mut st = SubState {
        src,
        index,
        next: None,
        last_hash: 0,
        replay: None,
    };
    // Connected before the monitor existed: learn the state now.
    st.resync().await;
    loop {
        let msg = tokio::select! {
            ev = futures::StreamExt::next(&mut mon) => {
                if let Some(zeromq::SocketEvent::Connected(..)) = ev {
                    // (Re)connected: the publisher may have restarted, and
                    // batches sent meanwhile were not delivered.
                    st.resync().await;
                }
                continue;
            }
            m = sub.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "kv events: recv");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let f = msg.into_vec();
        if f.len() != 3 || f[1].len() != 8 {
            st.note(|s| s.decode_errors += 1);
            continue;
        }
        let seq = u64::from_be_bytes(f[1][..8].try_into().unwrap_or([0; 8]));
        st.on_live(seq, &f[2]).await;
    }
}

struct SubState {
    src: StreamSource,
    index: Arc<Mutex<PrefixIndex>>,
    /// Next sequence number expected.
    next: Option<u64>,
    /// Hash of the last applied payload (tells a restarted publisher that
    /// reached the same sequence number from the one we followed).
    last_hash: u64,
    replay: Option<zeromq::DealerSocket>,
}

fn payload_hash(p: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

impl SubState {
    fn note(&self, f: impl FnOnce(&mut crate::indexer::StreamStats)) {
        self.index
            .lock()
            .note(&self.src.instance, self.src.dp_rank, f);
    }

    /// After a (re)connection: asks the publisher for everything from the
    /// last applied batch on. The same publisher still has that batch (same
    /// bytes) and the rest is applied; a restarted one does not (its
    /// sequence restarted below ours, or the batch differs), so its old
    /// blocks are dropped and its whole buffer is applied from 0. Without a
    /// replay endpoint the sequence numbers alone tell (see `on_live`).
    async fn resync(&mut self) {
        if self.src.replay.is_none() {
            return;
        }
        let Some(next) = self.next else {
            self.next = Some(0);
            self.catch_up(0, 0).await;
            return;
        };
        let last = next.saturating_sub(1);
        let Ok(got) = self.replay_from(last).await else {
            return;
        };
        let same = got
            .first()
            .is_some_and(|(s, p)| *s > last || (*s == last && payload_hash(p) == self.last_hash));
        if same {
            self.apply_replayed(got);
        } else {
            self.index
                .lock()
                .restarted(&self.src.instance, self.src.dp_rank);
            self.next = Some(0);
            self.catch_up(0, 0).await;
        }
    }

    fn apply_replayed(&mut self, got: Vec<(u64, Bytes)>) {
        for (s, p) in got {
            let n = self.next.unwrap_or(0);
            if s < n {
                continue;
            }
            if s > n {
                // The buffer no longer holds [n, s).
                let lost = s - n;
                self.note(|st| st.batches_lost += lost);
            }
            self.apply(s, &p);
        }
    }

    fn apply(&mut self, seq: u64, payload: &[u8]) {
        self.last_hash = payload_hash(payload);
        match decode_batch(payload) {
            Ok(b) => self
                .index
                .lock()
                .apply(&self.src.instance, self.src.dp_rank, seq, &b),
            Err(e) => {
                tracing::warn!(instance = %self.src.instance, seq, error = %e, "kv events");
                self.note(|s| s.decode_errors += 1);
            }
        }
        self.next = Some(seq + 1);
    }

    async fn on_live(&mut self, seq: u64, payload: &[u8]) {
        match self.next {
            Some(n) if seq == n => self.apply(seq, payload),
            Some(n) if seq > n => {
                self.catch_up(n, seq).await;
                if self.next.is_some_and(|n| seq >= n) {
                    self.apply(seq, payload);
                }
            }
            Some(n) if seq == 0 || n - seq > REORDER_WINDOW => {
                // The publisher restarted: its cache is empty now.
                self.index
                    .lock()
                    .restarted(&self.src.instance, self.src.dp_rank);
                self.next = Some(0);
                if seq > 0 {
                    self.catch_up(0, seq).await;
                }
                if self.next.is_some_and(|n| seq >= n) {
                    self.apply(seq, payload);
                }
            }
            Some(_) => {} // a late batch already applied by a replay
            None => {
                // Joining mid-stream: learn what is cached already.
                if seq > 0 {
                    self.next = Some(0);
                    self.catch_up(0, seq).await;
                }
                if self.next.is_none_or(|n| seq >= n) {
                    self.apply(seq, payload);
                }
            }
        }
    }

    /// Replays `[from, upto)`; batches past `upto` that the replay brings
    /// are applied too (the live copies are then dropped as late).
    async fn catch_up(&mut self, from: u64, upto: u64) {
        let got = match self.replay_from(from).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(instance = %self.src.instance, error = %e, "kv events: replay");
                Vec::new()
            }
        };
        self.apply_replayed(got);
        let n = self.next.unwrap_or(0);
        if n < upto {
            let lost = upto - n;
            self.note(|st| st.batches_lost += lost);
            self.next = Some(upto);
        } else if from > 0 {
            self.note(|st| st.gaps_replayed += 1);
        }
    }

    async fn replay_from(&mut self, from: u64) -> Result<Vec<(u64, Bytes)>, String> {
        // A socket left from a publisher's previous life may be dead: one
        // more try on a fresh one.
        match self.replay_once(from).await {
            Ok(v) => Ok(v),
            Err(_) => self.replay_once(from).await,
        }
    }

    async fn replay_once(&mut self, from: u64) -> Result<Vec<(u64, Bytes)>, String> {
        let Some(ep) = self.src.replay.clone() else {
            return Err("no replay endpoint".into());
        };
        if self.replay.is_none() {
            let mut d = zeromq::DealerSocket::new();
            tokio::time::timeout(REPLAY_TIMEOUT, d.connect(&ep))
                .await
                .map_err(|_| "connect timeout".to_string())?
                .map_err(|e| e.to_string())?;
            self.replay = Some(d);
        }
        let d = self.replay.as_mut().ok_or("no socket")?;
        let req = frames(vec![
            Bytes::new(),
            Bytes::copy_from_slice(&from.to_be_bytes()),
        ]);
        let r = async {
            tokio::time::timeout(REPLAY_TIMEOUT, d.send(req))
                .await
                .map_err(|_| "replay send timeout".to_string())?
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            loop {
                let m = tokio::time::timeout(REPLAY_TIMEOUT, d.recv())
                    .await
                    .map_err(|_| "replay timeout".to_string())?
                    .map_err(|e| e.to_string())?;
                let f = m.into_vec();
                // ["", seq, payload]
                if f.len() != 3 || f[1].len() != 8 {
                    return Err("malformed replay frame".into());
                }
                if f[1][..] == END_SEQ {
                    return Ok(out);
                }
                let s = u64::from_be_bytes(f[1][..8].try_into().unwrap_or([0; 8]));
                out.push((s, f[2].clone()));
            }
        }
        .await;
        if r.is_err() {
            // A half-read answer would confuse the next request.
            self.replay = None;
        }
        r
    }
}
