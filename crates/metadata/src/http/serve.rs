//! The one bounded HTTP serve loop for Mooncake's HTTP listeners (metadata
//! server; the master's admin and router listeners can move onto it): an
//! `axum::Router` behind a connection cap per listener and per peer address,
//! a header-read timeout (slowloris), an idle timeout on kept-alive
//! connections, and graceful shutdown.
//!
//! Invariants: a connection over a cap is closed at once without reading
//! from it; every connection task ends within `idle_timeout` of its peer
//! going silent and within `header_timeout` of a request's first byte if
//! its headers never complete; shutdown stops accepting, lets in-flight
//! requests finish for up to `drain_timeout`, then aborts the rest.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mooncake_security::limits::{ConnectionLimiter, IdleTimeout};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Bounds of one HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_connections_per_peer: usize,
    /// Time from a request's start until its headers must be complete.
    pub header_timeout: Duration,
    /// Time a connection may go without any byte moving.
    pub idle_timeout: Duration,
    /// Time in-flight requests get at shutdown.
    pub drain_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_peer: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serve `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limiter = ConnectionLimiter::new(limits.max_connections, limits.max_connections_per_peer);
    let mut conns = JoinSet::new();
    let (drain_tx, drain_rx) = watch::channel(false);
    let limits = Arc::new(limits);
    loop {
        let (stream, peer) = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of fds and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match limiter.try_acquire(peer.ip()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let mut drain = drain_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let svc = TowerToHyperService::new(app);
            let conn = builder.serve_connection_with_upgrades(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "http connection ended");
                    }
                }
                _ = async { let _ = drain.wait_for(|d| *d).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
    Ok(())
}
