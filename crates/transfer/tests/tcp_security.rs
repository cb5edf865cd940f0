//! The RPC port as an outsider meets it: the mutual handshake (wrong, no
//! and right credential; refusals counted), and the bounds a listener keeps
//! on what clients make it hold (slowloris handshakes and headers, idle
//! connections, per-peer connection caps, partial frames against the
//! buffer budget). Each test runs a real server on a loopback port with
//! small limits, so the bounds show within a second or two.

use std::sync::Arc;
use std::time::Duration;

use mooncake_security::{handshake, AuthMode, Credential};
use mooncake_transfer::memory::MemoryRegistry;
use mooncake_transfer::transport::tcp::client::Conn;
use mooncake_transfer::transport::tcp::frame::{
    Op, RequestHeader, ResponseHeader, Status, MAX_RPC_LEN, RESPONSE_HEADER_LEN,
};
use mooncake_transfer::transport::tcp::server::{self, ServerContext, ServerLimits, ServerState};
use mooncake_transfer::transport::tcp::HANDSHAKE_SERVICE;
use mooncake_transfer::{SegmentDescriptor, TransferError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const TOKEN: &str = "tcp-security-test-token-0123456789";
const T: Duration = Duration::from_secs(5);

fn cred() -> AuthMode {
    AuthMode::Required(Credential::from_token(TOKEN).unwrap())
}

struct Server {
    port: u16,
    state: Arc<ServerState>,
    _stop: watch::Sender<bool>,
}

async fn server(auth: AuthMode, limits: ServerLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = ServerState::new(&limits);
    let desc = SegmentDescriptor {
        name: format!("127.0.0.1:{port}"),
        protocol: "tcp".into(),
        rpc_host: "127.0.0.1".into(),
        rpc_port: port,
        host_id: String::new(),
        pid: 0,
        epoch: 1,
        version: 1,
        buffers: Vec::new(),
        transports: Default::default(),
    }
    .to_json();
    let ctx = ServerContext {
        registry: Arc::new(MemoryRegistry::new()),
        auth,
        limits,
        state: Arc::clone(&state),
        descriptor: Arc::new(move || desc.clone()),
        serve_data: false,
        transport_rpc: None,
        frame_timeout: Duration::from_secs(10),
    };
    let (stop, rx) = watch::channel(false);
    tokio::spawn(server::serve(listener, ctx, rx));
    Server {
        port,
        state,
        _stop: stop,
    }
}

async fn legit(port: u16) -> Result<SegmentDescriptor, TransferError> {
    let mut c = Conn::connect("seg", "127.0.0.1", port, &cred(), T).await?;
    c.descriptor().await
}

/// Poll `cond` every 20 ms for at most `secs` seconds.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 50 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// The peer closed: EOF (possibly after some bytes) or a reset.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(T, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn wrong_or_missing_credential_is_refused_and_counted() {
    let srv = server(cred(), ServerLimits::default()).await;
    let wrong = AuthMode::Required(Credential::from_token("another-token-0123456789abc").unwrap());
    let err = Conn::connect("seg", "127.0.0.1", srv.port, &wrong, T)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::TokenMismatch(_)), "{err:?}");
    let err = Conn::connect("seg", "127.0.0.1", srv.port, &AuthMode::Insecure, T)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::TokenMismatch(_)), "{err:?}");
    // Frames sent without a handshake are never answered: the server reads
    // 72 bytes as a proof, finds no handshake, and closes.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let h = RequestHeader {
        op: Op::GetDescriptor,
        id: 1,
        addr: 0,
        len: 0,
    };
    for _ in 0..3 {
        s.write_all(&h.encode()).await.unwrap();
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut got)).await;
    assert_eq!(got.len(), 40, "only the challenge comes back");

    let d = legit(srv.port).await.unwrap();
    assert_eq!(d.rpc_port, srv.port);
    assert!(
        eventually(5, || srv.state.auth.refused() == 2
            && srv.state.auth.failed() == 1)
        .await
    );
    assert_eq!(srv.state.auth.accepted(), 1);

    // And a client with a credential refuses an insecure server.
    let open = server(AuthMode::Insecure, ServerLimits::default()).await;
    let err = legit(open.port).await.unwrap_err();
    assert!(matches!(err, TransferError::TokenMismatch(_)), "{err:?}");
}

/// 40 slowloris handshakes (1 byte, then nothing) and 10 authenticated
/// connections stalled mid-header are all closed within the handshake /
/// idle timeout (1 s), while a legitimate client is served meanwhile.
#[tokio::test]
async fn slowloris_and_idle_connections_are_closed() {
    let limits = ServerLimits {
        handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let srv = server(cred(), limits).await;
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
        s.write_all(b"M").await.unwrap();
        slow.push(s);
    }
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
        handshake::connect(&mut s, &cred(), HANDSHAKE_SERVICE, T)
            .await
            .unwrap();
        s.write_all(b"MCTE\x01").await.unwrap();
        stalled.push(s);
    }
    assert!(legit(srv.port).await.is_ok(), "served during the flood");
    for s in slow.iter_mut().chain(stalled.iter_mut()) {
        assert!(closed_by_peer(s).await, "offender closed");
    }
    assert!(eventually(5, || srv.state.connections.active() == 0).await);
    assert!(srv.state.auth.failed() >= 40, "{:?}", srv.state.auth);
    assert!(
        srv.state
            .timed_out
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 10
    );
}

/// Over the per-peer cap, new connections are closed unread; once the
/// flood is gone, clients are served again.
#[tokio::test]
async fn connections_over_the_cap_are_closed_unread() {
    let limits = ServerLimits {
        max_connections: 64,
        max_connections_per_peer: 8,
        ..Default::default()
    };
    let srv = server(cred(), limits).await;
    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap());
    }
    assert!(eventually(5, || srv.state.connections.active() == 8).await);
    let mut extra = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
    let mut buf = [0u8; 40];
    let n = tokio::time::timeout(T, extra.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "over-cap connection gets not even a challenge");
    assert!(
        srv.state
            .over_cap
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(flood);
    assert!(eventually(5, || srv.state.connections.active() == 0).await);
    assert!(legit(srv.port).await.is_ok());
}

/// Memory budget: the server buffers at most 256 KiB of frame bodies in
/// total, whatever 16 authenticated clients declare (each a 64 KiB
/// transport RPC of which only 100 bytes arrive). Frames beyond the budget
/// are refused before any allocation and their connections closed; the
/// budget is returned when the offenders go; legitimate requests (which
/// need no buffer) are served throughout.
#[tokio::test]
async fn partial_frames_stay_within_the_buffer_budget() {
    const BUDGET: u64 = 256 << 10;
    let limits = ServerLimits {
        buffer_budget: BUDGET,
        ..Default::default()
    };
    let srv = server(cred(), limits).await;
    let mut partial = Vec::new();
    for i in 0..16u64 {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).await.unwrap();
        handshake::connect(&mut s, &cred(), HANDSHAKE_SERVICE, T)
            .await
            .unwrap();
        let h = RequestHeader {
            op: Op::TransportRpc,
            id: i,
            addr: 0,
            len: MAX_RPC_LEN,
        };
        s.write_all(&h.encode()).await.unwrap();
        s.write_all(&[0u8; 100]).await.unwrap();
        partial.push(s);
    }
    assert!(
        eventually(5, || srv
            .state
            .over_budget
            .load(std::sync::atomic::Ordering::Relaxed)
            == 12)
        .await
    );
    assert!(srv.state.budget.used() <= BUDGET);
    assert_eq!(srv.state.budget.used(), 4 * MAX_RPC_LEN);
    // The refused ones got a BadRequest and were closed.
    let mut refused = 0;
    for s in partial.iter_mut() {
        let mut b = [0u8; RESPONSE_HEADER_LEN];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut b)).await
        {
            assert_eq!(
                ResponseHeader::decode(&b).unwrap().status,
                Status::BadRequest
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 12);
    assert!(legit(srv.port).await.is_ok());
    drop(partial);
    assert!(eventually(5, || srv.state.budget.used() == 0).await);
}
