//! [`MasterServer`]: the thin tokio shell around [`MasterState`].
//!
//! * RPC: one task per TCP connection reads frames, applies each request to the state under
//!   a mutex (held only for the synchronous state transition, never across I/O), and writes
//!   the answers — coalescing the answers of pipelined requests into one write.
//! * A ticker calls [`MasterState::tick`] every `tick_interval_ms` (put timeouts, deferred
//!   frees, client expiry, eviction).
//! * HTTP (module `http`): `/metrics`, `/health`, admin views, and optionally the
//!   metadata service.
//!
//! Bad input never panics or allocates without bound: frames are length-checked before
//! their payload is read ([`MAX_FRAME_LEN`]), payloads that do not decode are answered
//! [`ErrorCode::MalformedFrame`], an oversized frame is answered [`ErrorCode::FrameTooLarge`]
//! and its connection closed.

use super::clock::{Clock, SystemClock};
use super::durable::{Durability, FileSink, LogSink, SinkError};
use super::http;
use super::state::MasterState;
use crate::config::MasterConfig;
use crate::metrics::Metrics;
use bytes::BytesMut;
use mooncake_security::{handshake, AuthMode, AuthStats};
use mooncake_store_protocol::frame::{decode_request, encode_frame, read_frame, ReadError};
use mooncake_store_protocol::{ErrorCode, Request, Response, RoleInfo, MAX_FRAME_LEN};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("recovering the op-log: {0}")]
    Recovery(#[from] SinkError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// State shared by the RPC, ticker and HTTP tasks.
#[derive(Debug)]
pub struct Shared {
    pub state: Mutex<MasterState>,
    pub metrics: Metrics,
    pub started: Instant,
    /// The op-log sequencer when the master is durable (`--snapshot_dir`, or HA leader).
    pub log: parking_lot::RwLock<Option<Arc<Durability>>>,
    /// Role, term and fencing (see [`Role`]).
    pub role: Role,
    /// How RPC connections authenticate ([`mooncake_store_protocol::MASTER_RPC_SERVICE`]).
    pub auth: AuthMode,
    /// Handshake outcomes of RPC connections (accepted / refused / failed).
    pub auth_stats: AuthStats,
}

/// Whether this master serves, under which term. A lone master serves from the start
/// (term 1); under HA only the elected leader does, and only while its etcd lease is
/// known to be valid (`serve_until`), so a leader paused past its lease answers nothing
/// but [`ErrorCode::NotLeader`] when it wakes, even before it notices the new leader.
#[derive(Debug)]
pub struct Role {
    pub ha: bool,
    serving: std::sync::atomic::AtomicBool,
    term: std::sync::atomic::AtomicU64,
    /// Random per process.
    pub incarnation: u64,
    /// Monotonic deadline (ms since `started`) after which a leader stops serving unless
    /// its lease was refreshed; `u64::MAX` for a lone master.
    serve_until_ms: std::sync::atomic::AtomicU64,
    /// Elections won, lost leaderships (metrics).
    pub elections_won: std::sync::atomic::AtomicU64,
    pub leadership_lost: std::sync::atomic::AtomicU64,
    /// The leader's RPC address as last seen in etcd (standbys; `/leader`).
    pub leader: Mutex<Option<String>>,
}

impl Role {
    fn new(ha: bool) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        Role {
            ha,
            serving: AtomicBool::new(!ha),
            term: AtomicU64::new(if ha { 0 } else { 1 }),
            incarnation: rand::random::<u64>() | 1,
            serve_until_ms: AtomicU64::new(u64::MAX),
            elections_won: AtomicU64::new(0),
            leadership_lost: AtomicU64::new(0),
            leader: Mutex::new(None),
        }
    }

    /// The current term (0: never led).
    pub fn term(&self) -> u64 {
        self.term.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_leading(&self, term: u64, serve_until_ms: u64) {
        use std::sync::atomic::Ordering;
        self.term.store(term, Ordering::Release);
        self.serve_until_ms.store(serve_until_ms, Ordering::Release);
        self.serving.store(true, Ordering::Release);
    }

    pub(crate) fn extend(&self, serve_until_ms: u64) {
        self.serve_until_ms
            .fetch_max(serve_until_ms, std::sync::atomic::Ordering::AcqRel);
    }

    pub(crate) fn stop_serving(&self) {
        self.serving
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Shared {
    /// Whether requests are served now.
    pub fn serving(&self) -> bool {
        use std::sync::atomic::Ordering;
        if !self.role.serving.load(Ordering::Acquire) {
            return false;
        }
        if let Some(l) = self.log.read().as_ref() {
            if l.failed() {
                return false;
            }
        }
        (self.started.elapsed().as_millis() as u64)
            < self.role.serve_until_ms.load(Ordering::Acquire)
    }

    /// "leader", "standby" (HA, not leading) or "single".
    pub fn role_name(&self) -> &'static str {
        match (self.role.ha, self.serving()) {
            (false, _) => "single",
            (true, true) => "leader",
            (true, false) => "standby",
        }
    }

    /// Milliseconds since start (the clock of `serve_until`).
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn current_log(&self) -> Option<Arc<Durability>> {
        self.log.read().clone()
    }
}

/// A running master. Dropping it does not stop it; call [`MasterServer::shutdown`].
pub struct MasterServer {
    shared: Arc<Shared>,
    rpc_addr: SocketAddr,
    http_addr: SocketAddr,
    metadata_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MasterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterServer")
            .field("rpc_addr", &self.rpc_addr)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

async fn bind(what: &'static str, host: &str, port: u16) -> Result<TcpListener, ServerError> {
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

impl MasterServer {
    /// Start with the system clock, without authentication (every peer may do
    /// everything; logged as a warning). See [`MasterServer::start_with_auth`].
    pub async fn start(cfg: MasterConfig) -> Result<Self, ServerError> {
        Self::start_with_clock(cfg, Arc::new(SystemClock)).await
    }

    /// Start with an explicit clock, without authentication.
    pub async fn start_with_clock(
        cfg: MasterConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        Self::start_with_auth(cfg, clock, AuthMode::Insecure).await
    }

    /// Start with an explicit clock and authentication mode. Binds the RPC port, the
    /// HTTP port and, if enabled, the metadata server port (port 0 picks a free one; see
    /// the `*_addr` getters). With [`AuthMode::Required`], every RPC connection must
    /// prove the cluster credential, and cluster-wide deletions the admin one.
    pub async fn start_with_auth(
        cfg: MasterConfig,
        clock: Arc<dyn Clock>,
        auth: AuthMode,
    ) -> Result<Self, ServerError> {
        if auth == AuthMode::Insecure {
            tracing::warn!("master RPC runs without authentication: any process that reaches its port can read, write and delete data");
        }
        cfg.validate()?;
        let rpc = bind("rpc", &cfg.rpc_address, cfg.rpc_port).await?;
        let rpc_addr = rpc.local_addr().expect("bound");
        let http_l = bind("metrics http", &cfg.metrics_host, cfg.metrics_port).await?;
        let http_addr = http_l.local_addr().expect("bound");
        let md_l = if cfg.enable_http_metadata_server {
            Some(
                bind(
                    "http metadata server",
                    &cfg.http_metadata_server_host,
                    cfg.http_metadata_server_port,
                )
                .await?,
            )
        } else {
            None
        };
        let metadata_addr = md_l.as_ref().and_then(|l| l.local_addr().ok());
        let tick = Duration::from_millis(cfg.tick_interval_ms);
        let ha = cfg.enable_ha;
        let snapshot_dir = cfg.snapshot_dir.clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(MasterState::new(cfg.clone(), clock.clone())),
            metrics: Metrics::default(),
            started: Instant::now(),
            log: parking_lot::RwLock::new(None),
            role: Role::new(ha),
            auth,
            auth_stats: AuthStats::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if !ha && !snapshot_dir.is_empty() {
            let sink: Arc<dyn LogSink> =
                Arc::new(FileSink::open(std::path::Path::new(&snapshot_dir))?);
            let log = recover(&shared, sink, &cfg, clock.clone()).await?;
            tasks.push(log.spawn_writer(stop_rx.clone()));
        }
        if ha {
            tasks.push(tokio::spawn(super::ha::run(
                shared.clone(),
                cfg.clone(),
                clock.clone(),
                rpc_addr,
                http_addr,
                stop_rx.clone(),
            )));
        } else {
            let inc = shared.role.incarnation;
            shared.state.lock().set_term(1, inc);
        }
        tasks.push(tokio::spawn(accept_loop(
            rpc,
            shared.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(ticker(tick, shared.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(http::serve(
            http_l,
            http::router(shared.clone()),
            stop_rx.clone(),
        )));
        if let Some(l) = md_l {
            let router = mooncake_metadata::http::server::MetadataService::new().router();
            tasks.push(tokio::spawn(http::serve(l, router, stop_rx.clone())));
        }
        tracing::info!(%rpc_addr, %http_addr, ?metadata_addr, ha, "master started");
        Ok(MasterServer {
            shared,
            rpc_addr,
            http_addr,
            metadata_addr,
            stop,
            tasks,
        })
    }

    /// Address of the RPC listener.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// Address of the HTTP listener (`/metrics`, `/health`, `/api/*`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Address of the embedded HTTP metadata server, if enabled.
    pub fn metadata_addr(&self) -> Option<SocketAddr> {
        self.metadata_addr
    }

    /// The shared state (tests and embedding).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stop accepting, close connections, stop the ticker and HTTP servers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

async fn ticker(period: Duration, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => return,
        }
        if !shared.serving() {
            continue;
        }
        let log = shared.current_log();
        let report = {
            let mut st = shared.state.lock();
            let report = st.tick();
            if let Some(l) = &log {
                l.submit(st.take_journal());
                if l.since_snapshot() >= st.config().snapshot_interval_ops {
                    l.submit_snapshot(st.snapshot_ops());
                }
            }
            report
        };
        if !report.dead_clients.is_empty() || report.evicted > 0 || report.expired_puts > 0 {
            tracing::info!(
                dead_clients = report.dead_clients.len(),
                evicted = report.evicted,
                expired_puts = report.expired_puts,
                "master tick"
            );
        }
    }
}

async fn accept_loop(l: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Connection tasks live in a JoinSet so shutdown can end them all before returning.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (sock, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let shared = shared.clone();
        conns.spawn(
            async move {
                shared.metrics.conn_opened();
                // Counts the close even when the task is aborted at shutdown.
                struct Open<'a>(&'a Metrics);
                impl Drop for Open<'_> {
                    fn drop(&mut self) {
                        self.0.conn_closed();
                    }
                }
                let _open = Open(&shared.metrics);
                let mut sock = sock;
                let Ok(role) = handshake::accept_counted(
                    &mut sock,
                    &shared.auth,
                    mooncake_store_protocol::MASTER_RPC_SERVICE,
                    handshake::DEFAULT_TIMEOUT,
                    &shared.auth_stats,
                    &peer,
                )
                .await
                else {
                    return;
                };
                let admin = shared.auth.allows(role, mooncake_security::Role::Admin);
                serve_conn(sock, &shared, admin).await;
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    drop(l);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Serve one authenticated connection; `admin`: its peer proved the admin credential.
async fn serve_conn(sock: TcpStream, shared: &Shared, admin: bool) {
    let _ = sock.set_nodelay(true);
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let mut payload = Vec::new();
    let mut out = BytesMut::with_capacity(64 << 10);
    // Replies in `out` may not be sent before the ops they acknowledge are durable.
    let mut need: Option<(Arc<Durability>, u64)> = None;
    loop {
        let id = match read_frame(&mut rd, &mut payload).await {
            Ok(id) => id,
            Err(ReadError::Io(_)) => return,
            Err(ReadError::TooLarge { id, len }) => {
                shared.metrics.malformed();
                tracing::warn!(
                    len,
                    max = MAX_FRAME_LEN,
                    "oversized frame; closing connection"
                );
                encode_frame(&mut out, id, &Err::<Response, _>(ErrorCode::FrameTooLarge));
                if let Some((l, t)) = need.take() {
                    if l.wait(t).await.is_err() {
                        let _ = wr.shutdown().await;
                        return;
                    }
                }
                let _ = wr.write_all(&out).await;
                let _ = wr.shutdown().await;
                return;
            }
        };
        let reply = match decode_request(&payload) {
            Ok(req) => {
                let op = req.index();
                let span = tracing::debug_span!("rpc", op = req.name(), id);
                let _g = span.enter();
                let t0 = Instant::now();
                let r = if let Request::Hello = req {
                    Ok(Response::Role(RoleInfo {
                        term: shared.role.term(),
                        serving: shared.serving(),
                        incarnation: shared.role.incarnation,
                    }))
                } else if !shared.serving() && !matches!(req, Request::Ping) {
                    Err(ErrorCode::NotLeader)
                } else {
                    let log = shared.current_log();
                    let mut st = shared.state.lock();
                    let r = st.handle_as(req, admin);
                    if let Some(l) = log {
                        if let Some(t) = l.submit(st.take_journal()) {
                            need = Some((l, t));
                        }
                    }
                    r
                };
                shared.metrics.record(op, t0.elapsed(), r.is_ok());
                if let Err(e) = &r {
                    tracing::debug!(error = %e, "rpc error");
                }
                r
            }
            Err(e) => {
                shared.metrics.malformed();
                Err(e)
            }
        };
        let start = out.len();
        encode_frame(&mut out, id, &reply);
        if out.len() - start - 4 > MAX_FRAME_LEN {
            // The client would refuse a frame this large (a huge batch of striped
            // objects); answer with an error it can act on, e.g. by splitting the batch.
            out.truncate(start);
            encode_frame(&mut out, id, &Err::<Response, _>(ErrorCode::BufferOverflow));
        }
        // Flush when no further request is already buffered (pipelined requests share a
        // write), or when the output grows large.
        if rd.buffer().is_empty() || out.len() >= (256 << 10) {
            if let Some((l, t)) = need.take() {
                if l.wait(t).await.is_err() {
                    // Not durable: acknowledge nothing; the client sees the connection
                    // drop and the change never happened as far as any master knows.
                    let _ = wr.shutdown().await;
                    return;
                }
            }
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// Rebuild the state from `sink` (snapshot + log), start journaling into it, and install
/// the sequencer in `shared`. The caller spawns its writer.
pub(crate) async fn recover(
    shared: &Arc<Shared>,
    sink: Arc<dyn LogSink>,
    cfg: &MasterConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<Durability>, SinkError> {
    let t0 = Instant::now();
    let ops = sink.load().await?;
    let mut st = MasterState::new(cfg.clone(), clock);
    let report = st.replay(&ops);
    st.start_journal();
    let (objects, segments) = (st.summary().objects, st.summary().segments);
    tracing::info!(
        sink = %sink.describe(),
        ops = ops.len(),
        skipped = report.skipped,
        objects,
        segments,
        ms = t0.elapsed().as_millis() as u64,
        "master state recovered from the op-log"
    );
    let log = Durability::new(sink);
    // Start the new log from a snapshot of what was recovered: bounded recovery next
    // time, and no replayed op is ever applied twice.
    log.submit_snapshot(st.snapshot_ops());
    {
        let mut cur = shared.state.lock();
        let (term, inc) = (shared.role.term(), shared.role.incarnation);
        st.set_term(term, inc);
        *cur = st;
    }
    *shared.log.write() = Some(log.clone());
    Ok(log)
}
