//! Signed HTTP requests: how a client proves the cluster credential to an
//! HTTP server (the metadata server, mutating admin endpoints) without a
//! connection-level handshake.
//!
//! The header `x-mooncake-auth: v1 role=<role> ts=<unix ms> nonce=<32 hex> mac=<64 hex>`
//! carries an HMAC-SHA256, under the role's key, of a domain label, the
//! method, the path with query, the timestamp, the nonce and the SHA-256 of
//! the body. The server accepts a signature only within a time window and
//! only once (a bounded cache of the nonces it saw inside the window).
//!
//! Invariants: only requests whose MAC verified enter the replay cache (an
//! outsider cannot fill it); when the cache is full of unexpired nonces,
//! requests are refused rather than admitted unchecked.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use crate::credential::{AuthMode, Credential, Role};
use crate::mac;
use crate::SecurityError;

/// Name of the request header (lower case, as HTTP/2 and `http` want it).
pub const HEADER: &str = "x-mooncake-auth";
/// Default accepted clock difference between client and server.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default bound on remembered nonces.
pub const DEFAULT_REPLAY_CAPACITY: usize = 200_000;
const LABEL: &[u8] = b"mooncake-http/1\0";

fn parts<'a>(
    method: &'a str,
    path_and_query: &'a str,
    ts: &'a str,
    nonce: &'a str,
    body_hash: &'a [u8],
    role: &'a str,
) -> [&'a [u8]; 11] {
    [
        LABEL,
        role.as_bytes(),
        b"\n",
        method.as_bytes(),
        b"\n",
        path_and_query.as_bytes(),
        b"\n",
        ts.as_bytes(),
        b"\n",
        nonce.as_bytes(),
        body_hash,
    ]
}

/// The header value that signs this request with the credential's cluster
/// role (`now_ms`: milliseconds since the Unix epoch).
pub fn sign(
    cred: &Credential,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_ms: u64,
) -> String {
    sign_as(cred, Role::Cluster, method, path_and_query, body, now_ms)
        .expect("every credential holds the cluster key")
}

/// [`sign`] with an explicit role; `None` if the credential lacks its key.
pub fn sign_as(
    cred: &Credential,
    role: Role,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_ms: u64,
) -> Option<String> {
    let key = cred.key_for(role)?;
    let ts = now_ms.to_string();
    let nonce = mac::to_hex(&mac::nonce::<16>());
    let body_hash = mac::sha256(body);
    let tag = mac::hmac(
        key,
        &parts(
            method,
            path_and_query,
            &ts,
            &nonce,
            &body_hash,
            role.as_str(),
        ),
    );
    Some(format!(
        "v1 role={} ts={ts} nonce={nonce} mac={}",
        role.as_str(),
        mac::to_hex(&tag)
    ))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Default)]
struct ReplayCache {
    seen: HashSet<String>,
    order: VecDeque<(u64, String)>,
}

/// Checks signed requests for one server.
#[derive(Debug)]
pub struct HttpVerifier {
    mode: AuthMode,
    window_ms: u64,
    capacity: usize,
    replay: Mutex<ReplayCache>,
}

struct Parsed<'a> {
    role: Role,
    ts: &'a str,
    ts_ms: u64,
    nonce: &'a str,
    mac: Vec<u8>,
}

fn parse(value: &str) -> Result<Parsed<'_>, SecurityError> {
    let mut it = value.split_ascii_whitespace();
    if it.next() != Some("v1") {
        return Err(SecurityError::Malformed("auth header: unknown version"));
    }
    let (mut role, mut ts, mut nonce, mut tag) = (None, None, None, None);
    for field in it {
        match field.split_once('=') {
            Some(("role", v)) => role = Some(v),
            Some(("ts", v)) => ts = Some(v),
            Some(("nonce", v)) => nonce = Some(v),
            Some(("mac", v)) => tag = Some(v),
            _ => return Err(SecurityError::Malformed("auth header: unknown field")),
        }
    }
    let role = match role {
        Some("cluster") => Role::Cluster,
        Some("admin") => Role::Admin,
        _ => return Err(SecurityError::Malformed("auth header: bad role")),
    };
    let ts = ts.ok_or(SecurityError::Malformed("auth header: no ts"))?;
    let ts_ms = ts
        .parse()
        .map_err(|_| SecurityError::Malformed("auth header: bad ts"))?;
    let nonce = nonce.ok_or(SecurityError::Malformed("auth header: no nonce"))?;
    if nonce.len() != 32 || mac::from_hex(nonce).is_none() {
        return Err(SecurityError::Malformed("auth header: bad nonce"));
    }
    let mac = tag
        .and_then(mac::from_hex)
        .filter(|m| m.len() == 32)
        .ok_or(SecurityError::Malformed("auth header: bad mac"))?;
    Ok(Parsed {
        role,
        ts,
        ts_ms,
        nonce,
        mac,
    })
}

impl HttpVerifier {
    /// A verifier with the default window and replay capacity.
    pub fn new(mode: AuthMode) -> Self {
        Self::with_limits(mode, DEFAULT_WINDOW, DEFAULT_REPLAY_CAPACITY)
    }

    /// A verifier accepting clocks `window` apart, remembering up to
    /// `capacity` nonces.
    pub fn with_limits(mode: AuthMode, window: Duration, capacity: usize) -> Self {
        Self {
            mode,
            window_ms: window.as_millis() as u64,
            capacity,
            replay: Mutex::new(ReplayCache::default()),
        }
    }

    /// The mode this verifier enforces.
    pub fn mode(&self) -> &AuthMode {
        &self.mode
    }

    /// The role a request proved. `header` is the value of [`HEADER`] if
    /// present. An insecure verifier admits everything as `Anonymous`.
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        header: Option<&str>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Role, SecurityError> {
        let cred = match &self.mode {
            AuthMode::Insecure => return Ok(Role::Anonymous),
            AuthMode::Required(c) => c,
        };
        let value = header.ok_or(SecurityError::CredentialRequired)?;
        let p = parse(value)?;
        if p.ts_ms.abs_diff(now_ms) > self.window_ms {
            return Err(SecurityError::Refused("signature outside the time window"));
        }
        let key = cred
            .key_for(p.role)
            .ok_or(SecurityError::Refused("role not configured on this server"))?;
        let body_hash = mac::sha256(body);
        if !mac::verify(
            key,
            &parts(
                method,
                path_and_query,
                p.ts,
                p.nonce,
                &body_hash,
                p.role.as_str(),
            ),
            &p.mac,
        ) {
            return Err(SecurityError::Refused("wrong credential"));
        }
        let mut cache = self.replay.lock();
        let horizon = now_ms.saturating_sub(self.window_ms);
        while cache.order.front().is_some_and(|(ts, _)| *ts < horizon) {
            if let Some((_, n)) = cache.order.pop_front() {
                cache.seen.remove(&n);
            }
        }
        if cache.seen.contains(p.nonce) {
            return Err(SecurityError::Refused("replayed request"));
        }
        if cache.seen.len() >= self.capacity {
            return Err(SecurityError::Refused(
                "too many signed requests in the window",
            ));
        }
        cache.seen.insert(p.nonce.to_string());
        // Expire by the later of the two clocks, so a client running ahead
        // cannot get its nonce forgotten while its signature is still valid.
        cache
            .order
            .push_back((p.ts_ms.max(now_ms), p.nonce.to_string()));
        Ok(p.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_request_verifies_once() {
        let cred = Credential::generate();
        let v = HttpVerifier::new(AuthMode::Required(cred.clone()));
        let now = 1_000_000;
        let h = sign(&cred, "PUT", "/metadata?key=a", b"body", now);
        assert_eq!(
            v.verify("PUT", "/metadata?key=a", Some(&h), b"body", now + 5)
                .unwrap(),
            Role::Cluster
        );
        assert!(matches!(
            v.verify("PUT", "/metadata?key=a", Some(&h), b"body", now + 6),
            Err(SecurityError::Refused("replayed request"))
        ));
    }

    #[test]
    fn any_changed_part_is_refused() {
        let cred = Credential::generate();
        let v = HttpVerifier::new(AuthMode::Required(cred.clone()));
        let now = 5_000_000;
        for (m, p, b) in [
            ("DELETE", "/metadata?key=a", &b"body"[..]),
            ("PUT", "/metadata?key=b", b"body"),
            ("PUT", "/metadata?key=a", b"bodz"),
        ] {
            let h = sign(&cred, "PUT", "/metadata?key=a", b"body", now);
            assert!(matches!(
                v.verify(m, p, Some(&h), b, now),
                Err(SecurityError::Refused(_))
            ));
        }
        let other = Credential::generate();
        let h = sign(&other, "PUT", "/metadata?key=a", b"body", now);
        assert!(v
            .verify("PUT", "/metadata?key=a", Some(&h), b"body", now)
            .is_err());
        assert!(matches!(
            v.verify("PUT", "/x", None, b"", now),
            Err(SecurityError::CredentialRequired)
        ));
        assert!(matches!(
            v.verify("PUT", "/x", Some("v1 garbage"), b"", now),
            Err(SecurityError::Malformed(_))
        ));
    }

    #[test]
    fn stale_signatures_are_refused_and_admin_needs_admin_key() {
        let cred = Credential::generate();
        let v = HttpVerifier::new(AuthMode::Required(cred.clone()));
        let h = sign(&cred, "GET", "/", b"", 0);
        assert!(v.verify("GET", "/", Some(&h), b"", 61_000).is_err());
        let h = sign_as(&cred, Role::Admin, "POST", "/remove_all", b"", 10).unwrap();
        assert_eq!(
            v.verify("POST", "/remove_all", Some(&h), b"", 10).unwrap(),
            Role::Admin
        );
        assert!(sign_as(&cred.without_admin(), Role::Admin, "POST", "/", b"", 0).is_none());
    }

    #[test]
    fn replay_cache_is_bounded_and_expires() {
        let cred = Credential::generate();
        let v =
            HttpVerifier::with_limits(AuthMode::Required(cred.clone()), Duration::from_secs(1), 2);
        for _ in 0..2 {
            let h = sign(&cred, "GET", "/", b"", 0);
            v.verify("GET", "/", Some(&h), b"", 0).unwrap();
        }
        let h = sign(&cred, "GET", "/", b"", 0);
        assert!(
            v.verify("GET", "/", Some(&h), b"", 0).is_err(),
            "full cache refuses"
        );
        let h = sign(&cred, "GET", "/", b"", 2_000);
        v.verify("GET", "/", Some(&h), b"", 2_000).unwrap();
    }

    #[test]
    fn insecure_admits_anything() {
        let v = HttpVerifier::new(AuthMode::Insecure);
        assert_eq!(v.verify("PUT", "/", None, b"", 0).unwrap(), Role::Anonymous);
    }
}
