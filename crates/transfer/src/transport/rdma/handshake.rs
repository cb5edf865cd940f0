//! Wire format of the rdma connection handshake (JSON in a `TransportRpc`
//! frame on the RPC port) and of the `transports.rdma` descriptor extension.
//! Pure data; the transport validates every field it uses.

use serde::{Deserialize, Serialize};

/// One NIC as published in `transports.rdma.devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicDesc {
    pub name: String,
    pub lid: u16,
    pub gid: String,
}

/// The rdma entry of a descriptor's `transports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaExtension {
    pub devices: Vec<NicDesc>,
    /// Random per transport start: a handshake answered with another value
    /// means the peer restarted behind a cached descriptor.
    #[serde(default)]
    pub instance: u64,
}

/// One QP's connection facts in a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpInfo {
    pub qpn: u32,
    pub psn: u32,
}

/// Handshake request (initiator → target), JSON over the RPC port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub kind: String,
    /// Initiator's segment name and NIC.
    pub segment: String,
    pub nic: String,
    /// The initiator NIC's index (its names may repeat).
    #[serde(default)]
    pub nic_index: usize,
    /// The target NIC asked for: its index in the target's descriptor
    /// (names may repeat) and its name (checked).
    pub peer_nic: String,
    #[serde(default)]
    pub peer_nic_index: Option<usize>,
    pub gid: String,
    pub lid: u16,
    /// Path MTU in bytes the initiator can use.
    pub mtu: u32,
    pub qps: Vec<QpInfo>,
}

/// Handshake reply (target → initiator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectReply {
    /// The target's [`RdmaExtension::instance`].
    pub instance: u64,
    pub gid: String,
    pub lid: u16,
    pub mtu: u32,
    pub qps: Vec<QpInfo>,
}

pub(super) const CONNECT_KIND: &str = "rdma_connect";
