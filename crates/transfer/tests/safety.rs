//! The serving side refuses what it must: out-of-range and unregistered
//! addresses (typed errors, memory untouched), truncated and garbage frames
//! (that connection closes; the server keeps serving others), requests
//! without the cluster token.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use mooncake_transfer::transport::tcp::frame::{
    Op, RequestHeader, ResponseHeader, Status, RESPONSE_HEADER_LEN,
};
use mooncake_transfer::{
    FailureReason, Opcode, Protocol, TransferEngine, TransferEngineConfig, TransferError,
    TransferStatus,
};

const SIZE: usize = 1 << 20;

/// A raw connection that has passed the handshake as an anonymous peer
/// (what an insecure server admits).
fn raw(port: u16) -> TcpStream {
    let mut s = unauthenticated(port);
    anonymous_handshake(&mut s);
    s
}

/// A raw connection before any handshake.
fn unauthenticated(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The handshake's wire format (mooncake_security::handshake), as an
/// anonymous client: read the 40-byte challenge, send a 72-byte proof with
/// role 0 and no mac; returns whether the 40-byte verdict admitted us.
fn anonymous_handshake(s: &mut TcpStream) -> bool {
    let mut challenge = [0u8; 40];
    s.read_exact(&mut challenge).unwrap();
    assert_eq!(&challenge[..4], b"MCAU");
    let mut proof = [0u8; 72];
    proof[..5].copy_from_slice(b"MCAU\x01");
    s.write_all(&proof).unwrap();
    let mut verdict = [0u8; 40];
    s.read_exact(&mut verdict).is_ok() && verdict[5] == 1
}

fn send(s: &mut TcpStream, op: Op, addr: u64, len: u64, payload: &[u8]) {
    let h = RequestHeader {
        op,
        id: 1,
        addr,
        len,
    };
    s.write_all(&h.encode()).unwrap();
    s.write_all(payload).unwrap();
}

fn response(s: &mut TcpStream) -> Option<ResponseHeader> {
    let mut b = [0u8; RESPONSE_HEADER_LEN];
    s.read_exact(&mut b).ok()?;
    ResponseHeader::decode(&b).ok()
}

/// The server closed this connection (EOF or reset), possibly after one
/// BadRequest/TokenMismatch response.
fn closed(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => rest.len() <= RESPONSE_HEADER_LEN,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_and_unregistered_are_refused_and_memory_untouched() {
    let child = SegmentProc::p2p("1MiB", &["--protocol", "tcp"]);
    let e = engine("P2PHANDSHAKE", &[Protocol::Tcp], None).await;
    let target = e.open_segment(&child.ready.segment).await.unwrap();
    let base = child.ready.buffer_addr;
    let len = child.ready.buffer_len;
    assert_eq!(len as usize, SIZE);
    let src = e.allocate_managed_buffer(2 * SIZE).await.unwrap();
    let pattern = random_bytes(11, SIZE);
    src.write_at(0, &pattern);
    e.transfer(&[req(Opcode::Write, &src, 0, &target, base, SIZE)])
        .await
        .unwrap();
    src.fill(0, 2 * SIZE, 0xEE);

    // Crosses the end of the buffer: refused whole, even its in-range part.
    let err = e
        .transfer(&[req(Opcode::Write, &src, 0, &target, base + len - 100, 200)])
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::OutOfRange { .. }), "{err:?}");
    // Before the buffer, and far away: unregistered.
    for addr in [base - 1, base + len + 4096, 0x10, u64::MAX - 3] {
        let err = e
            .transfer(&[req(Opcode::Write, &src, 0, &target, addr, 8)])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                TransferError::NotRegistered { .. } | TransferError::OutOfRange { .. }
            ),
            "{addr:#x}: {err:?}"
        );
    }
    // A multi-slice request reaching past the end changes nothing either.
    let err = e
        .transfer(&[req(Opcode::Write, &src, 0, &target, base, 2 * SIZE)])
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::OutOfRange { .. }), "{err:?}");
    // Reads out of range are refused as well, and the status says why.
    let batch = e.allocate_batch(1).unwrap();
    e.submit(batch, &[req(Opcode::Read, &src, 0, &target, base + len, 1)])
        .unwrap();
    let st = e.wait(batch).await.unwrap();
    assert!(
        matches!(
            &st[0],
            TransferStatus::Failed(FailureReason::NotRegistered { .. })
        ),
        "{st:?}"
    );
    // A local source outside registered memory is refused before any I/O.
    let stack = [0u8; 16];
    let mut bad = req(Opcode::Write, &src, 0, &target, base, 16);
    bad.source = stack.as_ptr() as usize;
    let err = e.transfer(&[bad]).await.unwrap_err();
    assert!(
        matches!(err, TransferError::LocalNotRegistered { .. }),
        "{err:?}"
    );

    // The target's memory is exactly the pattern.
    let back = read_back(&e, &target, base, SIZE).await;
    assert!(back == pattern, "target memory changed by refused requests");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frames_refused_server_keeps_serving() {
    let mut child = SegmentProc::p2p("1MiB", &["--protocol", "tcp"]);
    let port = child.ready.rpc_port;
    let base = child.ready.buffer_addr;
    let len = child.ready.buffer_len;

    // Garbage header: connection closed.
    let mut s = raw(port);
    s.write_all(&[0xAB; 32]).unwrap();
    assert!(closed(&mut s));
    // Truncated header, then EOF.
    let mut s = raw(port);
    s.write_all(b"MCTE\x01\x03").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(&mut s));
    // Valid header with an absurd length: refused, closed.
    let mut s = raw(port);
    send(&mut s, Op::Write, base, u64::MAX, &[]);
    assert!(closed(&mut s));
    // Write whose payload is cut short: closed, nothing acknowledged.
    let mut s = raw(port);
    send(&mut s, Op::Write, base, 1000, &[7u8; 10]);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(&mut s));

    // Refusals keep a well-formed connection usable.
    let mut s = raw(port);
    send(&mut s, Op::Write, base + len - 4, 8, &[1u8; 8]);
    assert_eq!(response(&mut s).unwrap().status, Status::OutOfRange);
    send(&mut s, Op::Read, base + len + 4096, 8, &[]);
    assert_eq!(response(&mut s).unwrap().status, Status::NotRegistered);
    send(&mut s, Op::Write, base, 4, b"abcd");
    assert_eq!(response(&mut s).unwrap().status, Status::Ok);
    send(&mut s, Op::Read, base, 4, &[]);
    let r = response(&mut s).unwrap();
    assert_eq!((r.status, r.len), (Status::Ok, 4));
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abcd");

    // And the server still serves engines.
    assert!(child.is_alive());
    let e = engine("P2PHANDSHAKE", &[Protocol::Tcp], None).await;
    let target = e.open_segment(&child.ready.segment).await.unwrap();
    let back = read_back(&e, &target, base, 4).await;
    assert_eq!(back, b"abcd");
    e.shutdown().await;
}

const TOKEN: &str = "safety-test-cluster-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_credential_must_be_proved() {
    let child = SegmentProc::p2p("1MiB", &["--protocol", "tcp", "--cluster-token", TOKEN]);
    let port = child.ready.rpc_port;
    let base = child.ready.buffer_addr;

    // Wrong token: the P2P handshake itself is refused.
    let wrong = engine(
        "P2PHANDSHAKE",
        &[Protocol::Tcp],
        Some("a-wrong-guess-of-the-cluster-token"),
    )
    .await;
    let err = wrong.open_segment(&child.ready.segment).await.unwrap_err();
    assert!(matches!(err, TransferError::TokenMismatch(_)), "{err:?}");
    // No token (explicitly insecure): refused as well.
    let none = TransferEngine::start(TransferEngineConfig {
        metadata_server: "P2PHANDSHAKE".into(),
        protocols: vec![Protocol::Tcp],
        insecure: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = none.open_segment(&child.ready.segment).await.unwrap_err();
    assert!(matches!(err, TransferError::TokenMismatch(_)), "{err:?}");
    // Raw frames without the handshake: the server reads them as a proof,
    // refuses, answers nothing but the challenge and a negative verdict,
    // and closes; nothing was read or written.
    let mut s = unauthenticated(port);
    send(&mut s, Op::Write, base, 8, b"FORGED!!");
    send(&mut s, Op::Read, base, 4, &[]);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.len() <= 80,
        "only challenge + verdict: {} bytes",
        got.len()
    );
    assert!(!got.windows(8).any(|w| w == b"FORGED!!"));
    // An anonymous proof is refused too, and frames after it are not served.
    let mut s = unauthenticated(port);
    assert!(!anonymous_handshake(&mut s));
    assert!(closed(&mut s));

    // The right token works, and the forged write never landed.
    let right = engine("P2PHANDSHAKE", &[Protocol::Tcp], Some(TOKEN)).await;
    let target = right.open_segment(&child.ready.segment).await.unwrap();
    assert_ne!(read_back(&right, &target, base, 8).await, b"FORGED!!");
    let src = right.allocate_managed_buffer(4096).await.unwrap();
    src.write_at(0, b"token ok");
    right
        .transfer(&[req(Opcode::Write, &src, 0, &target, base, 8)])
        .await
        .unwrap();
    assert_eq!(read_back(&right, &target, base, 8).await, b"token ok");
    for e in [wrong, none, right] {
        e.shutdown().await;
    }
}
