//! [`MasterClient`]: async RPC client of the master; one pipelined TCP connection shared by
//! all clones, reconnected lazily after it drops.
//!
//! The master is named by an address (`host:port`) or, under HA, by an etcd locator
//! `etcd://h:p[;h:p][/cluster_id]` (the reference's spelling; cluster id defaults to
//! `mooncake_cluster`): the client then reads the leader from etcd at every (re)connect,
//! checks with `Hello` that it serves under a term no older than one already used
//! (fencing: a deposed leader is never used again), and rides through a failover: a
//! request refused with [`ErrorCode::NotLeader`] (never applied) is retried on the new
//! leader, and so is an idempotent request whose connection broke, until
//! [`ClientOptions::failover_timeout`].
//!
//! Invariants: every request registered in `pending` is answered exactly once — by its
//! response, or by an error when the connection dies or the call times out (the entry is
//! removed in either case, so the map never grows without bound).

use crate::frame::{decode_response, encode_frame, read_frame};
use crate::{
    ClientId, ErrorCode, HeartbeatReply, Replica, ReplicateConfig, Request, Response, SegmentDesc,
    MAX_FRAME_LEN,
};
use bytes::BytesMut;
use mooncake_security::{handshake, AuthMode, SecurityError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

type Reply = Result<Response, ErrorCode>;

/// Timeouts of a [`MasterClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one RPC may take before it fails with [`ErrorCode::RpcFail`].
    pub rpc_timeout: Duration,
    /// How long a (re)connect may take.
    pub connect_timeout: Duration,
    /// With an `etcd://` locator: how long a call keeps retrying across a leader change.
    pub failover_timeout: Duration,
    /// How this client authenticates each connection ([`super::MASTER_RPC_SERVICE`]
    /// handshake). `None`: the credential in the environment ([`auth_from_env`]).
    pub auth: Option<AuthMode>,
}

/// The credential in the environment (`MC_CLUSTER_TOKEN` [+ `MC_ADMIN_TOKEN`], or the
/// 0600 file named by `MOONCAKE_CLUSTER_TOKEN_FILE`); without one, no authentication
/// (logged once as a warning: a master that requires the credential then refuses us
/// with [`ErrorCode::PermissionDenied`]). A malformed credential is an error, never a
/// silent downgrade.
pub fn auth_from_env() -> Result<AuthMode, mooncake_security::SecurityError> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    match mooncake_security::Credential::from_env()? {
        Some(c) => Ok(AuthMode::Required(c)),
        None => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!("no cluster credential in the environment (MC_CLUSTER_TOKEN / MOONCAKE_CLUSTER_TOKEN_FILE): connecting without authentication");
            }
            Ok(AuthMode::Insecure)
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            rpc_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            failover_timeout: Duration::from_secs(20),
            auth: None,
        }
    }
}

#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    closed: AtomicBool,
}

impl Shared {
    fn fail_all(&self) {
        self.closed.store(true, Ordering::Release);
        // Dropping the senders wakes every waiter with an error.
        self.pending.lock().clear();
    }
}

/// One connection. Writes use flat combining: a caller appends its frame to `queued`, then
/// takes the write lock and writes out everything queued — its own frame and those of
/// callers waiting behind it, in one syscall. A caller whose frame was already written by
/// the lock holder finds the queue empty and returns at once. No frame is stranded: each
/// is queued before its owner asks for the lock, and every lock holder drains the queue.
struct Conn {
    queued: Mutex<BytesMut>,
    wr: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
}

impl Conn {
    async fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.queued.lock().extend_from_slice(frame);
        let mut w = self.wr.lock().await;
        loop {
            let buf = {
                let mut q = self.queued.lock();
                if q.is_empty() {
                    return Ok(());
                }
                q.split()
            };
            w.write_all(&buf).await?;
        }
    }
}

/// How the master is found.
enum Locator {
    Direct(String),
    Etcd {
        etcd: mooncake_metadata::etcd::EtcdClient,
        cluster_id: String,
    },
}

/// Parse `etcd://h:p[;h:p][/cluster_id]`; `None` for a plain address.
pub fn parse_etcd_locator(addr: &str) -> Option<(Vec<String>, String)> {
    let rest = addr.trim().strip_prefix("etcd://")?;
    let (hosts, cluster) = match rest.split_once('/') {
        Some((h, c)) if !c.is_empty() => (h, c.to_string()),
        Some((h, _)) => (h, "mooncake_cluster".to_string()),
        None => (rest, "mooncake_cluster".to_string()),
    };
    let eps = crate::leader::split_endpoints(hosts);
    (!eps.is_empty()).then_some((eps, cluster))
}

struct Inner {
    addr: String,
    locator: Locator,
    /// Highest term of a master this client used (0: none yet, or a direct address).
    max_term: AtomicU64,
    opts: ClientOptions,
    auth: AuthMode,
    conn: Mutex<Option<Arc<Conn>>>,
    connect_lock: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

/// Async client of the master's RPC. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct MasterClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MasterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterClient")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl MasterClient {
    /// Connect to the master at `addr` (`host:port`) with default timeouts.
    pub async fn connect(addr: &str) -> Result<Self, ErrorCode> {
        Self::connect_with(addr, ClientOptions::default()).await
    }

    /// Connect with explicit timeouts. Fails with [`ErrorCode::RpcFail`] when the master
    /// cannot be reached now; later calls reconnect by themselves.
    pub async fn connect_with(addr: &str, opts: ClientOptions) -> Result<Self, ErrorCode> {
        let auth = match &opts.auth {
            Some(a) => a.clone(),
            None => auth_from_env().map_err(|e| {
                tracing::error!(error = %e, "cluster credential");
                ErrorCode::InvalidParams
            })?,
        };
        let locator = match parse_etcd_locator(addr) {
            Some((eps, cluster_id)) => Locator::Etcd {
                etcd: mooncake_metadata::etcd::EtcdClient::new(
                    &eps,
                    mooncake_metadata::etcd::EtcdOptions {
                        connect_timeout: opts.connect_timeout,
                        request_timeout: opts.connect_timeout,
                    },
                )
                .map_err(|_| ErrorCode::InvalidParams)?,
                cluster_id,
            },
            None => Locator::Direct(addr.to_string()),
        };
        let c = MasterClient {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                locator,
                max_term: AtomicU64::new(0),
                opts,
                auth,
                conn: Mutex::new(None),
                connect_lock: tokio::sync::Mutex::new(()),
                next_id: AtomicU64::new(1),
            }),
        };
        match &c.inner.locator {
            Locator::Direct(_) => {
                c.conn().await?;
            }
            // The leader may be mid-election: wait for one like any call would.
            Locator::Etcd { .. } => {
                c.call(&Request::Ping).await?;
            }
        }
        Ok(c)
    }

    /// Whether this client follows the leader through etcd.
    pub fn follows_leader(&self) -> bool {
        matches!(self.inner.locator, Locator::Etcd { .. })
    }

    /// The highest master term this client has used (0 with a direct address).
    pub fn term(&self) -> u64 {
        self.inner.max_term.load(Ordering::Acquire)
    }

    /// Where to connect now.
    async fn resolve(&self) -> Result<String, ErrorCode> {
        match &self.inner.locator {
            Locator::Direct(a) => Ok(a.clone()),
            Locator::Etcd { etcd, cluster_id } => {
                match crate::leader::find_leader(etcd, cluster_id).await {
                    Ok(Some((l, _))) => Ok(l.rpc),
                    Ok(None) => {
                        tracing::debug!(cluster_id, "no master leads now");
                        Err(ErrorCode::NotLeader)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the leader from etcd");
                        Err(ErrorCode::RpcFail)
                    }
                }
            }
        }
    }

    /// The master address this client talks to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    async fn conn(&self) -> Result<Arc<Conn>, ErrorCode> {
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let _g = self.inner.connect_lock.lock().await;
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let addr = self.resolve().await?;
        let stream =
            tokio::time::timeout(self.inner.opts.connect_timeout, TcpStream::connect(&addr))
                .await
                .map_err(|_| {
                    tracing::warn!(%addr, "connect to master timed out");
                    ErrorCode::RpcFail
                })?
                .map_err(|e| {
                    tracing::warn!(%addr, error = %e, "connect to master failed");
                    ErrorCode::RpcFail
                })?;
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        if let Err(e) = handshake::connect(
            &mut stream,
            &self.inner.auth,
            super::MASTER_RPC_SERVICE,
            self.inner.opts.connect_timeout,
        )
        .await
        {
            tracing::warn!(%addr, error = %e, "master connection not authenticated");
            return Err(match e {
                SecurityError::Io(_) | SecurityError::Timeout => ErrorCode::RpcFail,
                _ => ErrorCode::PermissionDenied,
            });
        }
        let (rd, wr) = stream.into_split();
        let mut rd = tokio::io::BufReader::with_capacity(64 << 10, rd);
        let shared = Arc::new(Shared::default());
        let s3 = shared.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let id = match read_frame(&mut rd, &mut buf).await {
                    Ok(id) => id,
                    Err(_) => break,
                };
                let reply = decode_response(&buf).unwrap_or_else(Err);
                if let Some(tx) = s3.pending.lock().remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            s3.fail_all();
        });
        let conn = Arc::new(Conn {
            queued: Mutex::new(BytesMut::with_capacity(4096)),
            wr: tokio::sync::Mutex::new(wr),
            shared,
        });
        if self.follows_leader() {
            // Fencing: only a serving master whose term is not older than one we used.
            let hello = self.call_on(&conn, &Request::Hello).await;
            let ok = match hello {
                Ok(Response::Role(r)) if r.serving && r.term >= self.term() => {
                    self.inner.max_term.fetch_max(r.term, Ordering::AcqRel);
                    true
                }
                Ok(Response::Role(r)) => {
                    tracing::info!(%addr, term = r.term, serving = r.serving, known = self.term(), "refusing a master that does not lead");
                    false
                }
                _ => false,
            };
            if !ok {
                conn.shared.fail_all();
                return Err(ErrorCode::NotLeader);
            }
        }
        *self.inner.conn.lock() = Some(conn.clone());
        Ok(conn)
    }

    /// Drop the connection (every call in flight on it fails with `RpcFail`); the next
    /// call connects again — to the current leader, with an `etcd://` locator.
    pub fn reset_connection(&self) {
        self.drop_conn();
    }

    fn drop_conn(&self) {
        if let Some(c) = self.inner.conn.lock().take() {
            c.shared.fail_all();
        }
    }

    fn live_conn(&self) -> Option<Arc<Conn>> {
        let g = self.inner.conn.lock();
        g.as_ref()
            .filter(|c| !c.shared.closed.load(Ordering::Acquire))
            .cloned()
    }

    /// Send one request and wait for its answer. Following a leader, retries what is
    /// safe to retry until `failover_timeout`.
    pub async fn call(&self, req: &Request) -> Result<Response, ErrorCode> {
        if !self.follows_leader() {
            let conn = self.conn().await?;
            return self.call_on(&conn, req).await;
        }
        let deadline = tokio::time::Instant::now() + self.inner.opts.failover_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let r = match self.conn().await {
                Ok(conn) => self.call_on(&conn, req).await,
                Err(e) => Err(e),
            };
            let retry = match &r {
                // Refused before being applied: always safe.
                Err(ErrorCode::NotLeader) => true,
                Err(ErrorCode::RpcFail) => idempotent(req),
                _ => false,
            };
            if !retry || tokio::time::Instant::now() >= deadline {
                return r;
            }
            self.drop_conn();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
    }

    /// One request on `conn`.
    async fn call_on(&self, conn: &Arc<Conn>, req: &Request) -> Result<Response, ErrorCode> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = BytesMut::with_capacity(64);
        encode_frame(&mut frame, id, req);
        if frame.len() - 4 > MAX_FRAME_LEN {
            // The master would refuse it and drop the connection; fail here instead.
            return Err(ErrorCode::FrameTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        conn.shared.pending.lock().insert(id, tx);
        if conn.shared.closed.load(Ordering::Acquire) {
            // The reader died between our liveness check and the insert; fail_all may
            // already have run, so nobody would answer this id.
            conn.shared.pending.lock().remove(&id);
            return Err(ErrorCode::RpcFail);
        }
        let timeout = self.inner.opts.rpc_timeout;
        match tokio::time::timeout(timeout, conn.send(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                // A failed or stuck write leaves the stream in an unknown state: drop it.
                conn.shared.pending.lock().remove(&id);
                conn.shared.fail_all();
                return Err(ErrorCode::RpcFail);
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(ErrorCode::RpcFail),
            Err(_) => {
                conn.shared.pending.lock().remove(&id);
                tracing::warn!(op = req.name(), "master rpc timed out");
                Err(ErrorCode::RpcFail)
            }
        }
    }

    /// Round trip without touching state.
    pub async fn ping(&self) -> Result<(), ErrorCode> {
        match self.call(&Request::Ping).await? {
            Response::Pong => Ok(()),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// A heartbeat listing the segments this client has mounted (the master reconciles).
    pub async fn sync_client(
        &self,
        client_id: ClientId,
        segments: &[SegmentDesc],
    ) -> Result<super::SyncReply, ErrorCode> {
        match self
            .call(&Request::SyncClient {
                client_id,
                segments: segments.to_vec(),
            })
            .await?
        {
            Response::Sync(r) => Ok(r),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// Role and term of the master this client talks to.
    pub async fn hello(&self) -> Result<super::RoleInfo, ErrorCode> {
        match self.call(&Request::Hello).await? {
            Response::Role(r) => Ok(r),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// Tell the master this client is alive.
    pub async fn heartbeat(&self, client_id: ClientId) -> Result<HeartbeatReply, ErrorCode> {
        match self.call(&Request::Heartbeat { client_id }).await? {
            Response::Heartbeat(r) => Ok(r),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// Contribute a memory region to the pool (idempotent for the same owner and range).
    pub async fn mount_segment(
        &self,
        client_id: ClientId,
        segment: &SegmentDesc,
    ) -> Result<(), ErrorCode> {
        done(
            self.call(&Request::MountSegment {
                client_id,
                segment: segment.clone(),
            })
            .await?,
        )
    }

    /// Withdraw a segment: replicas in it are dropped.
    pub async fn unmount_segment(&self, client_id: ClientId, name: &str) -> Result<(), ErrorCode> {
        done(
            self.call(&Request::UnmountSegment {
                client_id,
                name: name.to_string(),
            })
            .await?,
        )
    }

    /// Reserve space for a new object; returns where to write each replica.
    pub async fn put_start(
        &self,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<Replica>, ErrorCode> {
        replicas(
            self.call(&Request::PutStart {
                key: key.to_string(),
                size,
                config: config.clone(),
            })
            .await?,
        )
    }

    /// Like [`put_start`](Self::put_start) but replaces an existing object at put_end.
    pub async fn upsert_start(
        &self,
        key: &str,
        size: u64,
        config: &ReplicateConfig,
    ) -> Result<Vec<Replica>, ErrorCode> {
        replicas(
            self.call(&Request::UpsertStart {
                key: key.to_string(),
                size,
                config: config.clone(),
            })
            .await?,
        )
    }

    /// Make a written object visible.
    pub async fn put_end(&self, key: &str) -> Result<(), ErrorCode> {
        done(
            self.call(&Request::PutEnd {
                key: key.to_string(),
            })
            .await?,
        )
    }

    /// Make a written object visible, recording the CRC32C of its value (`None`:
    /// plain [`put_end`](Self::put_end)).
    pub async fn put_end_checked(&self, key: &str, crc32c: Option<u32>) -> Result<(), ErrorCode> {
        let Some(crc32c) = crc32c else {
            return self.put_end(key).await;
        };
        done(
            self.call(&Request::PutEndChecked {
                key: key.to_string(),
                crc32c,
            })
            .await?,
        )
    }

    /// Abandon a put: free its reservation.
    pub async fn put_revoke(&self, key: &str) -> Result<(), ErrorCode> {
        done(
            self.call(&Request::PutRevoke {
                key: key.to_string(),
            })
            .await?,
        )
    }

    /// Complete replicas of `key`; grants the object a lease.
    pub async fn get_replica_list(&self, key: &str) -> Result<Vec<Replica>, ErrorCode> {
        replicas(
            self.call(&Request::GetReplicaList {
                key: key.to_string(),
            })
            .await?,
        )
    }

    /// Whether `key` is visible.
    pub async fn exists(&self, key: &str) -> Result<bool, ErrorCode> {
        match self
            .call(&Request::Exists {
                key: key.to_string(),
            })
            .await?
        {
            Response::Exists(b) => Ok(b),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// Size of `key` in bytes.
    pub async fn get_size(&self, key: &str) -> Result<u64, ErrorCode> {
        match self
            .call(&Request::GetSize {
                key: key.to_string(),
            })
            .await?
        {
            Response::Size(s) => Ok(s),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// Remove `key` (a leased object only with `force`).
    pub async fn remove(&self, key: &str, force: bool) -> Result<(), ErrorCode> {
        done(
            self.call(&Request::Remove {
                key: key.to_string(),
                force,
            })
            .await?,
        )
    }

    /// Remove every visible key matching `pattern`; returns how many were removed.
    pub async fn remove_by_regex(&self, pattern: &str, force: bool) -> Result<u64, ErrorCode> {
        count(
            self.call(&Request::RemoveByRegex {
                pattern: pattern.to_string(),
                force,
            })
            .await?,
        )
    }

    /// Remove every visible object (leased ones only with `force`); returns the count.
    pub async fn remove_all(&self, force: bool) -> Result<u64, ErrorCode> {
        count(self.call(&Request::RemoveAll { force }).await?)
    }

    /// `call` of a request that names only `keys`.
    async fn call_keys(
        &self,
        keys: &[String],
        request: fn(Vec<String>) -> Request,
    ) -> Result<Response, ErrorCode> {
        self.call(&request(keys.to_vec())).await
    }

    /// put_start for many keys: one result per `(key, size)`.
    pub async fn batch_put_start(
        &self,
        items: &[(String, u64)],
        config: &ReplicateConfig,
    ) -> Result<Vec<Result<Vec<Replica>, ErrorCode>>, ErrorCode> {
        batch_replicas(
            self.call(&Request::BatchPutStart {
                items: items.to_vec(),
                config: config.clone(),
            })
            .await?,
        )
    }

    /// put_end for many keys.
    pub async fn batch_put_end(
        &self,
        keys: &[String],
    ) -> Result<Vec<Result<(), ErrorCode>>, ErrorCode> {
        batch_done(
            self.call_keys(keys, |keys| Request::BatchPutEnd { keys })
                .await?,
        )
    }

    /// put_end for many keys, each with an optional CRC32C of its value.
    pub async fn batch_put_end_checked(
        &self,
        items: &[(String, Option<u32>)],
    ) -> Result<Vec<Result<(), ErrorCode>>, ErrorCode> {
        if items.iter().all(|(_, c)| c.is_none()) {
            let keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
            return self.batch_put_end(&keys).await;
        }
        batch_done(
            self.call(&Request::BatchPutEndChecked {
                items: items.to_vec(),
            })
            .await?,
        )
    }

    /// put_revoke for many keys.
    pub async fn batch_put_revoke(
        &self,
        keys: &[String],
    ) -> Result<Vec<Result<(), ErrorCode>>, ErrorCode> {
        batch_done(
            self.call_keys(keys, |keys| Request::BatchPutRevoke { keys })
                .await?,
        )
    }

    /// get_replica_list for many keys (each found key is leased).
    pub async fn batch_get_replica_list(
        &self,
        keys: &[String],
    ) -> Result<Vec<Result<Vec<Replica>, ErrorCode>>, ErrorCode> {
        batch_replicas(
            self.call_keys(keys, |keys| Request::BatchGetReplicaList { keys })
                .await?,
        )
    }

    /// exists for many keys.
    pub async fn batch_exists(
        &self,
        keys: &[String],
    ) -> Result<Vec<Result<bool, ErrorCode>>, ErrorCode> {
        match self
            .call_keys(keys, |keys| Request::BatchExists { keys })
            .await?
        {
            Response::BatchExists(v) => Ok(v),
            _ => Err(ErrorCode::Internal),
        }
    }

    /// remove for many keys.
    pub async fn batch_remove(
        &self,
        keys: &[String],
        force: bool,
    ) -> Result<Vec<Result<(), ErrorCode>>, ErrorCode> {
        batch_done(
            self.call(&Request::BatchRemove {
                keys: keys.to_vec(),
                force,
            })
            .await?,
        )
    }
}

/// Requests a client following the leader may send again after a broken connection:
/// repeating them changes nothing beyond the first application.
fn idempotent(req: &Request) -> bool {
    matches!(
        req,
        Request::Ping
            | Request::Hello
            | Request::Heartbeat { .. }
            | Request::SyncClient { .. }
            | Request::MountSegment { .. }
            | Request::UnmountSegment { .. }
            | Request::GetReplicaList { .. }
            | Request::BatchGetReplicaList { .. }
            | Request::Exists { .. }
            | Request::BatchExists { .. }
            | Request::GetSize { .. }
            | Request::PutRevoke { .. }
            | Request::BatchPutRevoke { .. }
            // Not idempotent, but harmless to repeat: a reservation is not durable, so
            // a new leader never has it; a repeat on the same master answers
            // ObjectAlreadyExists and the put fails cleanly.
            | Request::PutStart { .. }
            | Request::UpsertStart { .. }
            | Request::BatchPutStart { .. }
    )
}

fn done(r: Response) -> Result<(), ErrorCode> {
    match r {
        Response::Done => Ok(()),
        _ => Err(ErrorCode::Internal),
    }
}

fn count(r: Response) -> Result<u64, ErrorCode> {
    match r {
        Response::Count(n) => Ok(n),
        _ => Err(ErrorCode::Internal),
    }
}

fn replicas(r: Response) -> Result<Vec<Replica>, ErrorCode> {
    match r {
        Response::Replicas(v) => Ok(v),
        _ => Err(ErrorCode::Internal),
    }
}

#[allow(clippy::type_complexity)]
fn batch_replicas(r: Response) -> Result<Vec<Result<Vec<Replica>, ErrorCode>>, ErrorCode> {
    match r {
        Response::BatchReplicas(v) => Ok(v),
        _ => Err(ErrorCode::Internal),
    }
}

fn batch_done(r: Response) -> Result<Vec<Result<(), ErrorCode>>, ErrorCode> {
    match r {
        Response::BatchDone(v) => Ok(v),
        _ => Err(ErrorCode::Internal),
    }
}
