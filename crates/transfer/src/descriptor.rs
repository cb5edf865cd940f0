//! Segment descriptors: the JSON a segment publishes under
//! `mooncake/ram/<segment>` (and serves over its RPC port in P2P handshake
//! mode), describing its registered buffers and how to reach it.
//!
//! Field names follow the reference where it has them (`name`, `protocol`,
//! `buffers[].{name,addr,length,lkey,rkey}`); the rest are ours. Unknown
//! fields are ignored when reading, so newer peers stay readable.
//!
//! Invariant: a descriptor is only a *hint* for routing; the serving side
//! re-checks every access against its own registry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::memory::{check_range, RegionInfo};
use crate::TransferError;

/// Same-host sharing information of a buffer (memfd in the owner process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmDesc {
    pub pid: u32,
    pub fd: i32,
}

/// One registered buffer of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferDesc {
    /// Location string (`cpu:0`).
    pub name: String,
    pub addr: u64,
    pub length: u64,
    #[serde(default)]
    pub lkey: Vec<u32>,
    #[serde(default)]
    pub rkey: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm: Option<ShmDesc>,
}

impl From<&RegionInfo> for BufferDesc {
    fn from(r: &RegionInfo) -> Self {
        BufferDesc {
            name: r.location.clone(),
            addr: r.addr as u64,
            length: r.len as u64,
            lkey: r.keys.iter().map(|k| k.lkey).collect(),
            rkey: r.keys.iter().map(|k| k.rkey).collect(),
            shm: r.shm.map(|s| ShmDesc {
                pid: s.pid,
                fd: s.fd,
            }),
        }
    }
}

/// A segment's published descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDescriptor {
    /// Segment name (`host:port`).
    pub name: String,
    /// Enabled protocols, comma-separated (the reference has one string).
    pub protocol: String,
    /// Where the RPC port listens.
    pub rpc_host: String,
    pub rpc_port: u16,
    /// Equal on two segments ⇒ same host and pid namespace (shm possible).
    #[serde(default)]
    pub host_id: String,
    #[serde(default)]
    pub pid: u32,
    /// Random per engine start: a restarted segment has a new epoch.
    #[serde(default)]
    pub epoch: u64,
    /// Increments on every publish by the same engine.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub buffers: Vec<BufferDesc>,
    /// Transport-specific extensions (see `Transport::descriptor_extension`).
    #[serde(default)]
    pub transports: BTreeMap<String, serde_json::Value>,
}

impl SegmentDescriptor {
    /// The buffer wholly containing `[addr, addr+len)`, or the typed refusal.
    pub fn find_buffer(&self, addr: u64, len: u64) -> Result<&BufferDesc, TransferError> {
        let candidate = self
            .buffers
            .iter()
            .filter(|b| b.addr <= addr)
            .max_by_key(|b| b.addr)
            .ok_or(TransferError::NotRegistered { addr, len })?;
        check_range(candidate.addr, candidate.length, addr, len)?;
        Ok(candidate)
    }

    /// Whether `protocol` is listed as enabled.
    pub fn has_protocol(&self, protocol: &str) -> bool {
        self.protocol.split(',').any(|p| p.trim() == protocol)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("descriptor serialises")
    }

    pub fn from_json(segment: &str, bytes: &[u8]) -> Result<Self, TransferError> {
        serde_json::from_slice(bytes)
            .map_err(|e| TransferError::Protocol(format!("malformed descriptor of {segment}: {e}")))
    }
}

/// Fuzz entry point (cargo-fuzz target `descriptor` and a bounded stable
/// test): parse `data` as a published descriptor; one that parses must
/// survive a JSON round trip unchanged. Must never panic.
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(d) = SegmentDescriptor::from_json("fuzz", data) {
        let again = SegmentDescriptor::from_json("fuzz", &d.to_json()).expect("round trip");
        assert_eq!(again.name, d.name);
        assert_eq!(again.buffers.len(), d.buffers.len());
    }
}

/// An identifier of this host and pid namespace: boot id plus the pid
/// namespace inode. Two processes with equal ids can open each other's
/// `/proc/<pid>/fd/<fd>` (given the same user).
pub fn local_host_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{boot}/{pidns}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_roundtrip_and_lookup() {
        let d = SegmentDescriptor {
            name: "127.0.0.1:1".into(),
            protocol: "tcp,shm".into(),
            rpc_host: "127.0.0.1".into(),
            rpc_port: 1,
            host_id: local_host_id(),
            pid: 7,
            epoch: 9,
            version: 1,
            buffers: vec![
                BufferDesc {
                    name: "cpu:0".into(),
                    addr: 0x1000,
                    length: 0x100,
                    lkey: vec![],
                    rkey: vec![],
                    shm: Some(ShmDesc { pid: 7, fd: 3 }),
                },
                BufferDesc {
                    name: "cpu:0".into(),
                    addr: 0x4000,
                    length: 0x100,
                    lkey: vec![],
                    rkey: vec![],
                    shm: None,
                },
            ],
            transports: BTreeMap::new(),
        };
        let back = SegmentDescriptor::from_json("x", &d.to_json()).unwrap();
        assert_eq!(back, d);
        assert_eq!(d.find_buffer(0x4010, 0x10).unwrap().addr, 0x4000);
        assert!(matches!(
            d.find_buffer(0x10f0, 0x20),
            Err(TransferError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.find_buffer(0x2000, 1),
            Err(TransferError::NotRegistered { .. })
        ));
        assert!(d.has_protocol("shm") && !d.has_protocol("rdma"));
        assert!(SegmentDescriptor::from_json("x", b"{garbage").is_err());
    }

    /// The fuzz target on stable, bounded: truncated and byte-flipped
    /// descriptors and random bytes never panic the parser.
    #[test]
    fn mutated_descriptors_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let valid = br#"{"name":"h:1","protocol":"tcp,shm","rpc_host":"h","rpc_port":1,"pid":7,"buffers":[{"name":"cpu:0","addr":4096,"length":256,"lkey":[],"rkey":[],"shm":{"pid":7,"fd":3}}],"transports":{"rdma":{"gid":"00"}}}"#;
        fuzz_parse(valid);
        for i in 0..5_000 {
            let mut data = valid.to_vec();
            if i % 3 == 0 {
                data.truncate(rng.gen_range(0..data.len()));
            }
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..data.len().max(1));
                if at < data.len() {
                    data[at] = rng.gen();
                }
            }
            fuzz_parse(&data);
        }
    }
}
