//! Network namespaces for multi-host tests: a [`Lan`] of N namespaces ("hosts"),
//! each with a veth link to a bridge in the test's own namespace. The bridge
//! has `.1` of the LAN's /24 ([`Lan::gateway`]: a server there is reachable
//! from every host), host `i` has `.10+i`. Links can be shaped with tc
//! (token bucket, both directions) and cut ([`Lan::link`]). Everything is
//! removed on drop.
//!
//! Creating namespaces needs root (CAP_NET_ADMIN) and iproute2:
//! [`Lan::create`] returns `None` where that is missing, and the caller skips
//! with a message.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Run a command quietly; whether it succeeded.
pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run a command quietly; panics naming it when it fails.
pub fn must(args: &[&str]) {
    assert!(sh(args), "failed: {}", args.join(" "));
}

/// Namespaces of one test, bridged; removed on drop.
pub struct Lan {
    tag: String,
    subnet: String,
    hosts: usize,
}

impl Lan {
    /// `hosts` namespaces on a fresh bridge; each link shaped to `rate`
    /// (tc syntax, e.g. `"100mbit"`) when given. `None` where namespaces
    /// cannot be created here.
    pub fn create(hosts: usize, rate: Option<&str>) -> Option<Lan> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names stay under 16 bytes: "mk" + 6 digits + "v" + index.
        let tag = format!("{:04}{:02}", pid % 10_000, n % 100);
        let probe = format!("mk{tag}p");
        if !sh(&["ip", "netns", "add", &probe]) {
            return None;
        }
        sh(&["ip", "netns", "del", &probe]);
        let lan = Lan {
            subnet: format!("10.{}.{}", 100 + (pid / 250 + n) % 150, pid % 250),
            tag,
            hosts: 0,
        };
        let mut lan = lan;
        let br = lan.bridge();
        must(&["ip", "link", "add", &br, "type", "bridge"]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lan.gateway()),
            "dev",
            &br,
        ]);
        must(&["ip", "link", "set", &br, "up"]);
        for i in 0..hosts {
            let (ns, outer, inner) = (lan.ns(i), lan.outer(i), format!("mk{}i{i}", lan.tag));
            must(&["ip", "netns", "add", &ns]);
            lan.hosts = i + 1;
            must(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            must(&["ip", "link", "set", &inner, "netns", &ns]);
            must(&["ip", "-n", &ns, "link", "set", &inner, "name", "eth0"]);
            let addr = format!("{}/24", lan.ip(i));
            must(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "link", "set", &outer, "master", &br, "up"]);
            if let Some(rate) = rate {
                let tbf = [
                    "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms",
                ];
                let mut inside = vec![
                    "ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0",
                ];
                inside.extend(tbf);
                must(&inside);
                let mut outside = vec!["tc", "qdisc", "add", "dev", &outer];
                outside.extend(tbf);
                must(&outside);
            }
        }
        Some(lan)
    }

    fn bridge(&self) -> String {
        format!("mk{}b", self.tag)
    }

    fn outer(&self, i: usize) -> String {
        format!("mk{}v{i}", self.tag)
    }

    /// Name of host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("mk{}n{i}", self.tag)
    }

    /// The bridge's address, reachable from every host.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// Host `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// `program` to run inside host `i` (`ip netns exec <ns> program`).
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }

    /// Bring host `i`'s link up or down (down: its packets are dropped, no
    /// reset is sent, as when a cable is pulled).
    pub fn link(&self, i: usize, up: bool) {
        must(&[
            "ip",
            "link",
            "set",
            &self.outer(i),
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for i in 0..self.hosts {
            // Deleting the outer end removes the pair at once (a deleted
            // namespace's devices go away only when the kernel gets to it).
            sh(&["ip", "link", "del", &self.outer(i)]);
            sh(&["ip", "netns", "del", &self.ns(i)]);
        }
        sh(&["ip", "link", "del", &self.bridge()]);
    }
}
