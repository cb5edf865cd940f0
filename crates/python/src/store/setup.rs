//! Building the store client's configuration from the reference's `setup`
//! arguments: port choice, size parsing, environment overrides.

use std::net::TcpListener;
use std::time::Duration;

use mooncake_store::client::ClientConfig;

/// The reference picks a port in this range when `local_hostname` names no
/// port (its tests check it).
const PORT_RANGE: (u16, u16) = (12300, 14300);

/// Arguments of `setup`, normalised.
#[derive(Debug, Clone)]
pub struct SetupArgs {
    pub local_hostname: String,
    pub metadata_server: String,
    pub global_segment_size: u64,
    pub local_buffer_size: u64,
    pub protocol: String,
    pub master_server_addr: String,
}

/// The `cluster_token` / `insecure` keywords of `setup`: with neither, the
/// credential comes from `MC_CLUSTER_TOKEN` / `MOONCAKE_CLUSTER_TOKEN_FILE`.
/// The store's engine and metadata client read the credential from the
/// environment, so a token given here is exported to this process's
/// environment (and `insecure` clears it): it applies to the whole process.
pub fn install_credential(cluster_token: Option<&str>, insecure: bool) -> Result<(), String> {
    use mooncake_security::credential::{ADMIN_TOKEN_ENV, TOKEN_ENV, TOKEN_FILE_ENV};
    if insecure {
        tracing::warn!("store set up without authentication (insecure=True)");
        for k in [TOKEN_ENV, ADMIN_TOKEN_ENV, TOKEN_FILE_ENV] {
            std::env::remove_var(k);
        }
        return Ok(());
    }
    if let Some(t) = cluster_token {
        let c = mooncake_security::Credential::from_token(t).map_err(|e| e.to_string())?;
        std::env::set_var(TOKEN_ENV, c.expose_token());
    }
    Ok(())
}

/// `host` → `host:port` with a free port from the reference's range;
/// `host:port` (and `[v6]:port`) unchanged, except that with `busy_ok` a port
/// that is already bound
/// (another store of this process, or a previous one's leftover) gets a free
/// port from the range instead of failing setup. The reference treats that
/// port as a segment name only (its engine binds any free port), so two stores
/// named alike both start there; here the port is the segment's identity, so
/// the second one takes another (its `get_hostname` says which).
fn pick_port(local_hostname: &str, busy_ok: bool) -> String {
    let h = local_hostname.trim();
    let h = if h.is_empty() { "localhost" } else { h };
    let split = if let Some(rest) = h.strip_prefix('[') {
        rest.split_once("]:")
    } else if h.matches(':').count() == 1 {
        h.split_once(':')
    } else {
        None
    };
    if let Some((host, port)) = split {
        let busy = busy_ok
            && port.parse::<u16>().is_ok_and(|p| {
                p != 0
                    && matches!(TcpListener::bind((host, p)), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
            });
        if !busy {
            return h.to_string();
        }
        return pick_port(host, false);
    }
    let host = h.trim_matches(|c| c == '[' || c == ']');
    let span = u32::from(PORT_RANGE.1 - PORT_RANGE.0) + 1;
    let start = std::process::id().wrapping_mul(2_654_435_761) ^ nanos();
    for i in 0..span {
        let port = PORT_RANGE.0 + ((start.wrapping_add(i)) % span) as u16;
        if TcpListener::bind((host, port)).is_ok() {
            return format_host_port(host, port);
        }
    }
    // Range exhausted: let the engine pick any free port.
    format_host_port(host, 0)
}

fn format_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// The client configuration for `args`. Only settings `setup` has no
/// argument for come from the environment: `DEFAULT_KV_LEASE_TTL` (ms, the
/// master's lease, as the reference's tests export it) and
/// `MC_TRANSFER_TIMEOUT` (seconds).
pub fn client_config(args: &SetupArgs) -> Result<ClientConfig, String> {
    let mut c = ClientConfig {
        local_hostname: pick_port(
            &args.local_hostname,
            args.metadata_server.trim() != "P2PHANDSHAKE",
        ),
        metadata_server: args.metadata_server.trim().to_string(),
        master_server_addr: args.master_server_addr.trim().to_string(),
        protocol: if args.protocol.trim().is_empty() {
            "tcp".into()
        } else {
            args.protocol.trim().to_ascii_lowercase()
        },
        global_segment_size: args.global_segment_size,
        local_buffer_size: args.local_buffer_size,
        ..ClientConfig::default()
    };
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(v) = var("DEFAULT_KV_LEASE_TTL") {
        let ms: u64 = v
            .trim()
            .parse()
            .map_err(|_| format!("DEFAULT_KV_LEASE_TTL={v:?} is not a number of ms"))?;
        c.lease_ttl = Duration::from_millis(ms.max(1));
    }
    if let Some(v) = var("MC_TRANSFER_TIMEOUT") {
        let s: u64 = v
            .trim()
            .parse()
            .map_err(|_| format!("MC_TRANSFER_TIMEOUT={v:?} is not a number of seconds"))?;
        c.transfer_timeout = Duration::from_secs(s.max(1));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick_port_strict(h: &str) -> String {
        pick_port(h, false)
    }

    #[test]
    fn ports_are_kept_or_chosen_in_range() {
        assert_eq!(pick_port_strict("127.0.0.1:17000"), "127.0.0.1:17000");
        assert_eq!(pick_port_strict("[::1]:17000"), "[::1]:17000");
        let chosen = pick_port_strict("127.0.0.1");
        let port: u16 = chosen.rsplit(':').next().unwrap().parse().unwrap();
        assert!((PORT_RANGE.0..=PORT_RANGE.1).contains(&port), "{chosen}");
        assert!(pick_port_strict("").starts_with("localhost:"));
        // A busy port: kept without busy_ok, replaced from the range with it.
        let held = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let busy = format!("127.0.0.1:{}", held.local_addr().unwrap().port());
        assert_eq!(pick_port(&busy, false), busy);
        let moved = pick_port(&busy, true);
        let port: u16 = moved.rsplit(':').next().unwrap().parse().unwrap();
        assert!(moved.starts_with("127.0.0.1:") && (PORT_RANGE.0..=PORT_RANGE.1).contains(&port));
    }

    #[test]
    fn config_from_args() {
        let a = SetupArgs {
            local_hostname: "127.0.0.1:0".into(),
            metadata_server: " http://127.0.0.1:8080/metadata ".into(),
            global_segment_size: 1 << 20,
            local_buffer_size: 0,
            protocol: "TCP".into(),
            master_server_addr: "127.0.0.1:50051".into(),
        };
        let c = client_config(&a).unwrap();
        assert_eq!(c.protocol, "tcp");
        assert_eq!(c.metadata_server, "http://127.0.0.1:8080/metadata");
        assert_eq!(c.local_buffer_size, 0);
        assert_eq!(c.global_segment_size, 1 << 20);
    }
}
