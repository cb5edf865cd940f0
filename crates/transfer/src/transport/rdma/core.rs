//! The pure (sans-IO) decisions of the rdma transport, unit-tested without
//! hardware: configuration from the reference's `MC_*` variables, GID index
//! choice, which NIC pair carries a slice (skipping NICs taken out of
//! rotation), what a work completion status means for retrying, and the
//! per-endpoint connection state machine. Time is passed in; nothing here
//! sleeps or touches a device.

use std::time::{Duration, Instant};

use crate::TransferError;

/// Tunables, with the reference's environment names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaConfig {
    /// `MC_RDMA_DEVICES`: comma-separated device names; empty = every device.
    pub devices: Vec<String>,
    /// `MC_IB_PORT` (default 1).
    pub port: u8,
    /// `MC_GID_INDEX`; `None` picks a RoCE v2 IPv4 GID (see [`choose_gid_index`]).
    pub gid_index: Option<u32>,
    /// `MC_MAX_WR`: outstanding work requests per QP (default 256).
    pub max_wr: u32,
    /// `MC_MAX_CQE`: completion queue entries per device (default 4096); also
    /// caps the work requests outstanding on a device, so the CQ never overflows.
    pub max_cqe: u32,
    /// `MC_NUM_QP_PER_EP`: QPs per (local NIC, peer NIC) pair (default 2).
    pub qps_per_peer: usize,
    /// `MC_MTU`: path MTU in bytes (default 4096), capped by both ports' active MTU.
    pub mtu: u32,
    /// `MC_RETRY_CNT`: transport retries of the NIC before a WR fails (default 7).
    pub retry_cnt: u8,
    /// `MC_IB_TIMEOUT`: local ACK timeout exponent (4.096 us × 2^x; default 14).
    pub timeout: u8,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            devices: Vec::new(),
            port: 1,
            gid_index: None,
            max_wr: 256,
            max_cqe: 4096,
            qps_per_peer: 2,
            mtu: 4096,
            retry_cnt: 7,
            timeout: 14,
        }
    }
}

impl RdmaConfig {
    /// Read the variables through `var` (the environment in production).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, TransferError> {
        let mut c = RdmaConfig::default();
        let num = |k: &str, max: u64| -> Result<Option<u64>, TransferError> {
            match var(k).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n <= max => Ok(Some(n)),
                    _ => Err(TransferError::InvalidConfig(format!(
                        "{k}={v:?} is not a number in 0..={max}"
                    ))),
                },
            }
        };
        if let Some(v) = var("MC_RDMA_DEVICES") {
            c.devices = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(p) = num("MC_IB_PORT", 255)? {
            c.port = p as u8;
        }
        c.gid_index = num("MC_GID_INDEX", u32::MAX as u64)?.map(|g| g as u32);
        if let Some(v) = num("MC_MAX_WR", 1 << 20)? {
            c.max_wr = v as u32;
        }
        if let Some(v) = num("MC_MAX_CQE", 1 << 22)? {
            c.max_cqe = v as u32;
        }
        if let Some(v) = num("MC_NUM_QP_PER_EP", 64)? {
            c.qps_per_peer = v as usize;
        }
        if let Some(v) = num("MC_MTU", 4096)? {
            c.mtu = v as u32;
        }
        if let Some(v) = num("MC_RETRY_CNT", 7)? {
            c.retry_cnt = v as u8;
        }
        if let Some(v) = num("MC_IB_TIMEOUT", 31)? {
            c.timeout = v as u8;
        }
        if c.max_wr == 0 || c.max_cqe == 0 || c.qps_per_peer == 0 || c.port == 0 {
            return Err(TransferError::InvalidConfig(
                "MC_MAX_WR, MC_MAX_CQE, MC_NUM_QP_PER_EP and MC_IB_PORT must be > 0".into(),
            ));
        }
        if mtu_enum(c.mtu).is_none() {
            return Err(TransferError::InvalidConfig(format!(
                "MC_MTU={} is not one of 256, 512, 1024, 2048, 4096",
                c.mtu
            )));
        }
        Ok(c)
    }
}

/// `enum ibv_mtu` of a byte count.
pub fn mtu_enum(bytes: u32) -> Option<u8> {
    match bytes {
        256 => Some(1),
        512 => Some(2),
        1024 => Some(3),
        2048 => Some(4),
        4096 => Some(5),
        _ => None,
    }
}

/// `ibv_gid_type` of RoCE v2 as the shim reports it.
pub const GID_TYPE_ROCE_V2: u32 = 2;

/// Choose a GID index from `(index, gid bytes, type)` entries: prefer a RoCE v2
/// GID holding an IPv4 address (`::ffff:a.b.c.d`, what routes over IP
/// networks), then any RoCE v2 GID, then any non-zero GID.
pub fn choose_gid_index(entries: &[(u32, [u8; 16], u32)]) -> Option<u32> {
    let nonzero = |g: &[u8; 16]| g.iter().any(|b| *b != 0);
    let v4 = |g: &[u8; 16]| g[..10].iter().all(|b| *b == 0) && g[10] == 0xff && g[11] == 0xff;
    entries
        .iter()
        .find(|(_, g, t)| *t == GID_TYPE_ROCE_V2 && v4(g))
        .or_else(|| {
            entries
                .iter()
                .find(|(_, g, t)| *t == GID_TYPE_ROCE_V2 && nonzero(g))
        })
        .or_else(|| entries.iter().find(|(_, g, _)| nonzero(g)))
        .map(|(i, _, _)| *i)
}

/// GID bytes as the reference prints them: 16 hex pairs joined by `:`.
pub fn gid_to_string(g: &[u8; 16]) -> String {
    g.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn gid_from_string(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 16 {
        return None;
    }
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

/// What a failed work completion means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionClass {
    Ok,
    /// The peer's NIC refused the rkey/range: permanent, never retried.
    RemoteAccess,
    /// The peer did not answer (retries exhausted): the endpoint is broken
    /// and the peer may be gone; retry after reconnecting.
    PeerLost,
    /// The QP was moved to the error state (our reset after another failure,
    /// or a NIC taken out): retry; the peer is not suspect.
    Flushed,
    /// Anything else (local protection, bad length...): endpoint broken, retryable.
    Other,
}

/// Classify an `ibv_wc_status`.
pub fn classify(status: u32) -> CompletionClass {
    match status {
        0 => CompletionClass::Ok,
        // IBV_WC_REM_ACCESS_ERR, IBV_WC_REM_INV_REQ_ERR
        10 | 9 => CompletionClass::RemoteAccess,
        // IBV_WC_WR_FLUSH_ERR
        5 => CompletionClass::Flushed,
        // IBV_WC_RETRY_EXC_ERR, IBV_WC_RNR_RETRY_EXC_ERR, IBV_WC_REM_ABORT_ERR,
        // IBV_WC_RESP_TIMEOUT_ERR
        12 | 13 | 17 | 21 => CompletionClass::PeerLost,
        _ => CompletionClass::Other,
    }
}

/// Health of one local NIC: in rotation, or out until a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicHealth {
    Up,
    /// Out of rotation until the instant (then probed again).
    Out(Instant),
}

/// Which local NIC carries a slice: round robin over NICs in rotation,
/// shifted by the attempt number so a retry takes another NIC; a NIC whose
/// time out ended is back in rotation. `None` when every NIC is out.
pub fn pick_nic(health: &[NicHealth], seq: u64, attempt: u32, now: Instant) -> Option<usize> {
    let up: Vec<usize> = health
        .iter()
        .enumerate()
        .filter(|(_, h)| match h {
            NicHealth::Up => true,
            NicHealth::Out(until) => *until <= now,
        })
        .map(|(i, _)| i)
        .collect();
    if up.is_empty() {
        return None;
    }
    let k = (seq.wrapping_add(attempt as u64) % up.len() as u64) as usize;
    Some(up[k])
}

/// The peer NIC paired with local NIC `local` (the peer publishes `remote`
/// NICs): spread local NICs over the peer's, shifted on retries.
pub fn pair_remote(local: usize, remote: usize, attempt: u32) -> Option<usize> {
    (remote > 0).then(|| (local + attempt as usize) % remote)
}

/// Connection state of one endpoint (a set of QPs to one peer NIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// No QPs yet, or the old ones were dropped.
    Idle,
    /// QPs connected; work requests may be posted.
    Ready,
    /// A work request failed or the handshake failed: reconnect once
    /// `retry_at` has passed (back-off doubles per failure, capped).
    Broken { retry_at: Instant, failures: u32 },
}

/// What the caller should do with an endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointAction {
    Use,
    Connect,
    /// Too soon after a failure: fail this attempt (the engine retries
    /// elsewhere) instead of hammering a dead peer.
    Backoff,
}

const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl EndpointState {
    pub fn action(&self, now: Instant) -> EndpointAction {
        match self {
            EndpointState::Idle => EndpointAction::Connect,
            EndpointState::Ready => EndpointAction::Use,
            EndpointState::Broken { retry_at, .. } if *retry_at <= now => EndpointAction::Connect,
            EndpointState::Broken { .. } => EndpointAction::Backoff,
        }
    }

    pub fn connected(&mut self) {
        *self = EndpointState::Ready;
    }

    /// A handshake or a work request failed at `now`.
    pub fn failed(&mut self, now: Instant) {
        let failures = match self {
            EndpointState::Broken { failures, .. } => failures.saturating_add(1),
            _ => 1,
        };
        let backoff = BACKOFF_BASE
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(BACKOFF_MAX);
        // The first failure may reconnect at once (a restarted peer is the
        // common case); repeated ones back off.
        let retry_at = if failures == 1 { now } else { now + backoff };
        *self = EndpointState::Broken { retry_at, failures };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_vars() {
        let c = RdmaConfig::from_vars(|_| None).unwrap();
        assert_eq!(c, RdmaConfig::default());
        let vars = [
            ("MC_RDMA_DEVICES", "rxe0, rxe1"),
            ("MC_GID_INDEX", "3"),
            ("MC_MAX_WR", "64"),
            ("MC_MAX_CQE", "1024"),
            ("MC_NUM_QP_PER_EP", "4"),
            ("MC_MTU", "1024"),
        ];
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let c = RdmaConfig::from_vars(get).unwrap();
        assert_eq!(c.devices, vec!["rxe0", "rxe1"]);
        assert_eq!(
            (c.gid_index, c.max_wr, c.max_cqe, c.qps_per_peer, c.mtu),
            (Some(3), 64, 1024, 4, 1024)
        );
        for (k, v) in [
            ("MC_MAX_WR", "0"),
            ("MC_MTU", "1500"),
            ("MC_GID_INDEX", "x"),
            ("MC_RETRY_CNT", "9"),
        ] {
            let r = RdmaConfig::from_vars(|n| (n == k).then(|| v.to_string()));
            assert!(matches!(r, Err(TransferError::InvalidConfig(_))), "{k}={v}");
        }
    }

    #[test]
    fn gid_choice_prefers_roce_v2_ipv4() {
        let link_local = {
            let mut g = [0u8; 16];
            g[0] = 0xfe;
            g[1] = 0x80;
            g[15] = 1;
            g
        };
        let v4 = {
            let mut g = [0u8; 16];
            g[10] = 0xff;
            g[11] = 0xff;
            g[12..].copy_from_slice(&[198, 18, 0, 1]);
            g
        };
        // rxe's table: fe80 v1, fe80 v2, v4 v1, v4 v2.
        let table = [
            (0, link_local, 1),
            (1, link_local, 2),
            (2, v4, 1),
            (3, v4, 2),
        ];
        assert_eq!(choose_gid_index(&table), Some(3));
        assert_eq!(choose_gid_index(&table[..2]), Some(1));
        assert_eq!(choose_gid_index(&table[..1]), Some(0));
        assert_eq!(choose_gid_index(&[(0, [0; 16], 2)]), None);
        let s = gid_to_string(&v4);
        assert_eq!(gid_from_string(&s), Some(v4));
        assert_eq!(gid_from_string("00:11"), None);
        assert_eq!(gid_from_string(&s.replace("c6", "zz")), None);
    }

    #[test]
    fn completion_classes() {
        assert_eq!(classify(0), CompletionClass::Ok);
        assert_eq!(classify(10), CompletionClass::RemoteAccess);
        assert_eq!(classify(12), CompletionClass::PeerLost);
        assert_eq!(classify(5), CompletionClass::Flushed);
        assert_eq!(classify(4), CompletionClass::Other);
    }

    #[test]
    fn nic_rotation_skips_failed_nics_and_retries_elsewhere() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let all_up = [NicHealth::Up; 3];
        let picks: Vec<_> = (0..6)
            .map(|s| pick_nic(&all_up, s, 0, now).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        // A retry of the same slice lands on another NIC.
        assert_ne!(pick_nic(&all_up, 5, 0, now), pick_nic(&all_up, 5, 1, now));
        let one_out = [NicHealth::Up, NicHealth::Out(later), NicHealth::Up];
        for s in 0..10 {
            assert_ne!(pick_nic(&one_out, s, 0, now), Some(1));
        }
        // Back in rotation once its time out ended.
        assert!((0..10).any(|s| pick_nic(&one_out, s, 0, later) == Some(1)));
        assert_eq!(
            pick_nic(&[NicHealth::Out(later)], 0, 0, now),
            None,
            "no NIC in rotation"
        );
        assert_eq!(pair_remote(3, 2, 0), Some(1));
        assert_eq!(pair_remote(3, 2, 1), Some(0));
        assert_eq!(pair_remote(0, 0, 0), None);
    }

    #[test]
    fn endpoint_state_machine() {
        let t0 = Instant::now();
        let mut s = EndpointState::Idle;
        assert_eq!(s.action(t0), EndpointAction::Connect);
        s.connected();
        assert_eq!(s.action(t0), EndpointAction::Use);
        // First failure: reconnect at once (peer restart).
        s.failed(t0);
        assert_eq!(s.action(t0), EndpointAction::Connect);
        // Second: back off, then connect again.
        s.failed(t0);
        assert_eq!(s.action(t0), EndpointAction::Backoff);
        assert_eq!(
            s.action(t0 + Duration::from_millis(100)),
            EndpointAction::Connect
        );
        // Back-off grows but is capped.
        for _ in 0..40 {
            s.failed(t0);
        }
        assert_eq!(s.action(t0 + BACKOFF_MAX), EndpointAction::Connect);
        assert_eq!(
            s.action(t0 + BACKOFF_MAX - Duration::from_millis(1)),
            EndpointAction::Backoff
        );
        s.connected();
        assert_eq!(s.action(t0), EndpointAction::Use);
    }
}
