//! Free loopback ports.
//!
//! A port is free when probed; a process may take it before the server under
//! test binds it. Prefer `--port 0` and reading the bound port from the READY
//! line ([`crate::ready`]); use this where a command needs the port up front
//! (a restart on the same port, a peer URL given before start).

use std::net::{Ipv4Addr, TcpListener};

/// A loopback TCP port free at the time of the call.
pub fn free_port() -> std::io::Result<u16> {
    free_port_on(&Ipv4Addr::LOCALHOST.to_string())
}

/// A TCP port of `host` (an address of this machine) free at the time of the call.
pub fn free_port_on(host: &str) -> std::io::Result<u16> {
    Ok(TcpListener::bind((host, 0))?.local_addr()?.port())
}
