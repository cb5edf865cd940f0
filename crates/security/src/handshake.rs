//! The connection handshake: run once at the start of every TCP connection of
//! a Mooncake protocol (transfer engine, master RPC, real-client service),
//! before that protocol's first frame.
//!
//! ```text
//! server -> client  Challenge  "MCAU" | ver u8 | flags u8 | 0 u16 | server_nonce[32]          40 bytes
//! client -> server  Proof      "MCAU" | ver u8 | role u8  | 0 u16 | client_nonce[32] | mac[32] 72 bytes
//! server -> client  Verdict    "MCAU" | ver u8 | ok u8    | 0 u16 | mac[32]                   40 bytes
//! ```
//!
//! `flags` bit 0: the server runs insecure (no credential). The client's mac
//! is HMAC-SHA256 under the key of the role it claims over a domain label,
//! the service name and both nonces; the server answers with its own HMAC
//! over the nonces in the other order, so each side knows the other holds
//! the secret, and neither reveals it.
//!
//! Invariants: messages have fixed sizes (no length from the peer is ever
//! trusted); the whole exchange is bounded by one timeout; a refused peer
//! gets a Verdict with `ok = 0` and the connection is then closed by the
//! caller; counters of accepted, refused and timed-out handshakes are kept
//! in [`AuthStats`] for the server's metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::credential::{AuthMode, Role};
use crate::mac::{self, Tag};
use crate::SecurityError;

/// How long a handshake may take unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

const MAGIC: [u8; 4] = *b"MCAU";
const VERSION: u8 = 1;
const FLAG_INSECURE: u8 = 1;
const CHALLENGE_LEN: usize = 40;
const PROOF_LEN: usize = 72;
const VERDICT_LEN: usize = 40;
const CLIENT_LABEL: &[u8] = b"mooncake-auth/1 client\0";
const SERVER_LABEL: &[u8] = b"mooncake-auth/1 server\0";

/// Counters a server exports as metrics.
#[derive(Debug, Default)]
pub struct AuthStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

impl AuthStats {
    /// Handshakes that ended with an authenticated (or, insecure, admitted) peer.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Peers that failed to prove the credential.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Handshakes that broke off: timeout, I/O error, not our protocol.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

fn header(kind_byte: u8, flags: u8) -> [u8; 8] {
    [
        MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, kind_byte, flags, 0,
    ]
}

fn check_header(buf: &[u8]) -> Result<(), SecurityError> {
    if buf[..4] != MAGIC {
        return Err(SecurityError::Malformed("not a Mooncake handshake"));
    }
    if buf[4] != VERSION {
        return Err(SecurityError::Malformed("unsupported handshake version"));
    }
    Ok(())
}

fn client_mac(
    key: &[u8],
    service: &str,
    server_nonce: &[u8],
    client_nonce: &[u8],
    role: Role,
) -> Tag {
    mac::hmac(
        key,
        &[
            CLIENT_LABEL,
            service.as_bytes(),
            b"\0",
            server_nonce,
            client_nonce,
            &[role as u8],
        ],
    )
}

fn server_parts<'a>(
    service: &'a str,
    server_nonce: &'a [u8],
    client_nonce: &'a [u8],
    role: &'a [u8; 1],
) -> [&'a [u8]; 6] {
    [
        SERVER_LABEL,
        service.as_bytes(),
        b"\0",
        client_nonce,
        server_nonce,
        role,
    ]
}

/// Authenticate the peer on a freshly accepted connection. Returns the role
/// it proved (`Anonymous` on an insecure server, which admits everyone).
pub async fn accept<S>(
    stream: &mut S,
    mode: &AuthMode,
    service: &str,
    timeout: Duration,
) -> Result<Role, SecurityError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, accept_inner(stream, mode, service)).await {
        Ok(r) => r,
        Err(_) => Err(SecurityError::Timeout),
    }
}

/// [`accept`], counting the outcome in `stats` and logging refusals.
pub async fn accept_counted<S>(
    stream: &mut S,
    mode: &AuthMode,
    service: &str,
    timeout: Duration,
    stats: &AuthStats,
    peer: &(dyn std::fmt::Display + Sync),
) -> Result<Role, SecurityError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let r = accept(stream, mode, service, timeout).await;
    match &r {
        Ok(_) => stats.accepted.fetch_add(1, Ordering::Relaxed),
        Err(SecurityError::Refused(why)) => {
            tracing::warn!(%peer, service, why, "refused an unauthenticated connection");
            stats.refused.fetch_add(1, Ordering::Relaxed)
        }
        Err(e) => {
            tracing::debug!(%peer, service, error = %e, "handshake failed");
            stats.failed.fetch_add(1, Ordering::Relaxed)
        }
    };
    r
}

async fn accept_inner<S>(
    stream: &mut S,
    mode: &AuthMode,
    service: &str,
) -> Result<Role, SecurityError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server_nonce: [u8; 32] = mac::nonce();
    let flags = if matches!(mode, AuthMode::Insecure) {
        FLAG_INSECURE
    } else {
        0
    };
    let mut challenge = [0u8; CHALLENGE_LEN];
    challenge[..8].copy_from_slice(&header(flags, 0));
    challenge[8..].copy_from_slice(&server_nonce);
    stream.write_all(&challenge).await?;
    stream.flush().await?;

    let mut proof = [0u8; PROOF_LEN];
    stream.read_exact(&mut proof).await?;
    check_header(&proof)?;
    let role = Role::from_u8(proof[5]).ok_or(SecurityError::Malformed("unknown role"))?;
    let client_nonce = &proof[8..40];
    let tag = &proof[40..72];

    let verdict_ok = match mode {
        AuthMode::Insecure => Ok(None),
        AuthMode::Required(cred) => match cred.key_for(role) {
            None if role == Role::Anonymous => {
                Err(SecurityError::Refused("no credential presented"))
            }
            None => Err(SecurityError::Refused("role not configured on this server")),
            Some(key) => {
                if mac::verify(
                    key,
                    &[
                        CLIENT_LABEL,
                        service.as_bytes(),
                        b"\0",
                        &server_nonce,
                        client_nonce,
                        &[role as u8],
                    ],
                    tag,
                ) {
                    Ok(Some(key))
                } else {
                    Err(SecurityError::Refused("wrong credential"))
                }
            }
        },
    };
    let mut verdict = [0u8; VERDICT_LEN];
    match verdict_ok {
        Ok(key) => {
            verdict[..8].copy_from_slice(&header(1, 0));
            if let Some(key) = key {
                let r = [role as u8];
                let t = mac::hmac(key, &server_parts(service, &server_nonce, client_nonce, &r));
                verdict[8..].copy_from_slice(&t);
            }
            stream.write_all(&verdict).await?;
            stream.flush().await?;
            Ok(match mode {
                AuthMode::Insecure => Role::Anonymous,
                AuthMode::Required(_) => role,
            })
        }
        Err(e) => {
            verdict[..8].copy_from_slice(&header(0, 0));
            // Best effort: the caller closes the connection either way.
            let _ = stream.write_all(&verdict).await;
            let _ = stream.flush().await;
            Err(e)
        }
    }
}

/// Authenticate to the server on a freshly opened connection, proving the
/// strongest role the credential holds. Returns that role.
pub async fn connect<S>(
    stream: &mut S,
    mode: &AuthMode,
    service: &str,
    timeout: Duration,
) -> Result<Role, SecurityError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, connect_inner(stream, mode, service)).await {
        Ok(r) => r,
        Err(_) => Err(SecurityError::Timeout),
    }
}

async fn connect_inner<S>(
    stream: &mut S,
    mode: &AuthMode,
    service: &str,
) -> Result<Role, SecurityError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut challenge = [0u8; CHALLENGE_LEN];
    stream.read_exact(&mut challenge).await?;
    check_header(&challenge)?;
    let server_insecure = challenge[5] & FLAG_INSECURE != 0;
    let server_nonce = &challenge[8..40];
    let client_nonce: [u8; 32] = mac::nonce();

    let (role, key) = match (mode, server_insecure) {
        (AuthMode::Required(_), true) => return Err(SecurityError::PeerInsecure),
        (AuthMode::Insecure, _) => (Role::Anonymous, None),
        (AuthMode::Required(cred), false) => {
            let role = cred.best_role();
            (role, cred.key_for(role))
        }
    };
    let mut proof = [0u8; PROOF_LEN];
    proof[..8].copy_from_slice(&header(role as u8, 0));
    proof[8..40].copy_from_slice(&client_nonce);
    if let Some(key) = key {
        proof[40..].copy_from_slice(&client_mac(key, service, server_nonce, &client_nonce, role));
    }
    stream.write_all(&proof).await?;
    stream.flush().await?;

    let mut verdict = [0u8; VERDICT_LEN];
    stream.read_exact(&mut verdict).await?;
    check_header(&verdict)?;
    if verdict[5] != 1 {
        return Err(match key {
            None => SecurityError::CredentialRequired,
            Some(_) => SecurityError::Refused("the server refused our credential"),
        });
    }
    if let Some(key) = key {
        let r = [role as u8];
        if !mac::verify(
            key,
            &server_parts(service, server_nonce, &client_nonce, &r),
            &verdict[8..],
        ) {
            return Err(SecurityError::Refused(
                "the server could not prove the cluster credential",
            ));
        }
    } else if !server_insecure {
        return Err(SecurityError::CredentialRequired);
    }
    Ok(role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Credential;

    async fn pair(
        server: AuthMode,
        client: AuthMode,
        s_service: &str,
        c_service: &str,
    ) -> (Result<Role, SecurityError>, Result<Role, SecurityError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let s_service = s_service.to_string();
        let srv =
            tokio::spawn(async move { accept(&mut b, &server, &s_service, DEFAULT_TIMEOUT).await });
        let c = connect(&mut a, &client, c_service, DEFAULT_TIMEOUT).await;
        drop(a);
        (srv.await.unwrap(), c)
    }

    #[tokio::test]
    async fn same_credential_authenticates_both_ways() {
        let cred = Credential::generate().without_admin();
        let (s, c) = pair(
            AuthMode::Required(cred.clone()),
            AuthMode::Required(cred),
            "svc",
            "svc",
        )
        .await;
        assert_eq!(s.unwrap(), Role::Cluster);
        assert_eq!(c.unwrap(), Role::Cluster);
    }

    #[tokio::test]
    async fn admin_credential_proves_admin() {
        let cred = Credential::generate();
        let (s, c) = pair(
            AuthMode::Required(cred.clone()),
            AuthMode::Required(cred),
            "svc",
            "svc",
        )
        .await;
        assert_eq!(s.unwrap(), Role::Admin);
        assert_eq!(c.unwrap(), Role::Admin);
    }

    #[tokio::test]
    async fn admin_claim_on_server_without_admin_key_is_refused() {
        let cred = Credential::generate();
        let (s, c) = pair(
            AuthMode::Required(cred.without_admin()),
            AuthMode::Required(cred),
            "svc",
            "svc",
        )
        .await;
        assert!(matches!(s, Err(SecurityError::Refused(_))), "{s:?}");
        assert!(c.is_err());
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_on_both_sides() {
        let (s, c) = pair(
            AuthMode::Required(Credential::from_token("server-secret-0123456789").unwrap()),
            AuthMode::Required(Credential::from_token("client-secret-0123456789").unwrap()),
            "svc",
            "svc",
        )
        .await;
        assert!(
            matches!(s, Err(SecurityError::Refused("wrong credential"))),
            "{s:?}"
        );
        assert!(matches!(c, Err(SecurityError::Refused(_))), "{c:?}");
    }

    #[tokio::test]
    async fn another_service_name_is_refused() {
        let cred = Credential::generate();
        let (s, _) = pair(
            AuthMode::Required(cred.clone()),
            AuthMode::Required(cred),
            "master",
            "transfer",
        )
        .await;
        assert!(matches!(s, Err(SecurityError::Refused(_))));
    }

    #[tokio::test]
    async fn anonymous_client_is_refused_by_secure_server() {
        let (s, c) = pair(
            AuthMode::Required(Credential::generate()),
            AuthMode::Insecure,
            "svc",
            "svc",
        )
        .await;
        assert!(matches!(s, Err(SecurityError::Refused(_))));
        assert!(matches!(c, Err(SecurityError::CredentialRequired)), "{c:?}");
    }

    #[tokio::test]
    async fn secure_client_refuses_insecure_server() {
        let (_, c) = pair(
            AuthMode::Insecure,
            AuthMode::Required(Credential::generate()),
            "svc",
            "svc",
        )
        .await;
        assert!(matches!(c, Err(SecurityError::PeerInsecure)), "{c:?}");
    }

    #[tokio::test]
    async fn insecure_pair_connects_anonymously() {
        let (s, c) = pair(AuthMode::Insecure, AuthMode::Insecure, "svc", "svc").await;
        assert_eq!(s.unwrap(), Role::Anonymous);
        assert_eq!(c.unwrap(), Role::Anonymous);
    }

    /// A server that claims to hold the secret but does not (it echoes
    /// zeros) is caught by the client.
    #[tokio::test]
    async fn client_detects_a_server_without_the_secret() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let fake = tokio::spawn(async move {
            let mut ch = [0u8; CHALLENGE_LEN];
            ch[..8].copy_from_slice(&header(0, 0));
            b.write_all(&ch).await.unwrap();
            let mut proof = [0u8; PROOF_LEN];
            b.read_exact(&mut proof).await.unwrap();
            let mut v = [0u8; VERDICT_LEN];
            v[..8].copy_from_slice(&header(1, 0));
            b.write_all(&v).await.unwrap();
        });
        let c = connect(
            &mut a,
            &AuthMode::Required(Credential::generate()),
            "svc",
            DEFAULT_TIMEOUT,
        )
        .await;
        assert!(matches!(c, Err(SecurityError::Refused(_))), "{c:?}");
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_and_silence_end_the_handshake() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n............................................................").await.unwrap();
        let r = accept(
            &mut b,
            &AuthMode::Required(Credential::generate()),
            "svc",
            DEFAULT_TIMEOUT,
        )
        .await;
        assert!(matches!(r, Err(SecurityError::Malformed(_))), "{r:?}");

        tokio::time::pause();
        let (_a, mut b) = tokio::io::duplex(4096);
        let r = accept(
            &mut b,
            &AuthMode::Required(Credential::generate()),
            "svc",
            Duration::from_secs(2),
        )
        .await;
        assert!(matches!(r, Err(SecurityError::Timeout)), "{r:?}");
    }

    #[tokio::test]
    async fn stats_count_outcomes() {
        let stats = AuthStats::default();
        let (mut a, mut b) = tokio::io::duplex(4096);
        let srv_mode = AuthMode::Required(Credential::generate());
        let client = tokio::spawn(async move {
            let _ = connect(
                &mut a,
                &AuthMode::Required(Credential::generate()),
                "svc",
                DEFAULT_TIMEOUT,
            )
            .await;
        });
        let r = accept_counted(&mut b, &srv_mode, "svc", DEFAULT_TIMEOUT, &stats, &"test").await;
        assert!(r.is_err());
        client.await.unwrap();
        assert_eq!(
            (stats.accepted(), stats.refused(), stats.failed()),
            (0, 1, 0)
        );
    }
}
