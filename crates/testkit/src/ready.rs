//! The READY line: how every long-running `mooncake` command says it is
//! serving. One JSON object on one stdout line, printed once, after every
//! listener is bound (so `--port 0` is usable), by one function of the CLI
//! (`cmd::ready::announce`):
//!
//! ```text
//! {"ready":"<component>","pid":<process id>, <component fields>...}
//! ```
//!
//! | `ready`           | fields                                                        |
//! |-------------------|---------------------------------------------------------------|
//! | `up`              | `master` (rpc addr), `metadata` (URL), `status` (URL), `segment` ("" without a node); `--ha`: also `etcd`, `masters` |
//! | `master`          | `rpc` (addr), `http` (metrics/admin addr), `metadata` (URL or null) |
//! | `store-node`      | `segment`, `size`                                             |
//! | `real-client`     | `service` (addr), `segment`, `size`                           |
//! | `segment`         | `segment`, `rpc_port`, `buffer_addr`, `buffer_len`            |
//! | `router`, `indexer`, `fake-engine` | `url`, `addr`                                |
//! | `metadata-server` | `addr` (bound), `metadata` (connection string)                |
//! | `p2p-serve`       | `name`, `segment`, `size`, `shards`                           |
//!
//! Human-friendly lines may come before it; a reader skips every line that is
//! not a JSON object with a `ready` field. The format is documented for users
//! in `docs/readiness.md`.

use serde_json::{Map, Value};

/// A parsed READY line.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// What announced itself (`up`, `master`, `segment`, ...).
    pub component: String,
    /// Its process id.
    pub pid: u32,
    /// Every field of the line (including `ready` and `pid`).
    pub fields: Map<String, Value>,
}

impl Ready {
    /// The READY object in `line`, or `None` when the line is something else.
    pub fn parse(line: &str) -> Option<Ready> {
        let line = line.trim();
        if !line.starts_with('{') {
            return None;
        }
        let Value::Object(fields) = serde_json::from_str(line).ok()? else {
            return None;
        };
        let component = fields.get("ready")?.as_str()?.to_string();
        let pid = fields.get("pid").and_then(Value::as_u64).unwrap_or(0) as u32;
        Some(Ready {
            component,
            pid,
            fields,
        })
    }

    /// A field, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// A string field; panics naming the field and the line when it is missing.
    pub fn str(&self, key: &str) -> &str {
        self.get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string {key:?} in READY line {:?}", self.fields))
    }

    /// An integer field; panics naming the field and the line when it is missing.
    pub fn u64(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no integer {key:?} in READY line {:?}", self.fields))
    }

    /// The port of an `addr`-like (`host:port`) or URL field.
    pub fn port(&self, key: &str) -> u16 {
        let v = self.str(key);
        let hostport = v.split_once("://").map_or(v, |(_, rest)| rest);
        let hostport = hostport.split('/').next().unwrap_or(hostport);
        hostport
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {key}={v:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ready_object_and_skips_other_lines() {
        let r = Ready::parse(
            r#"{"ready":"up","pid":42,"master":"127.0.0.1:5","metadata":"http://127.0.0.1:6/metadata","status":"http://127.0.0.1:7/","segment":""}"#,
        )
        .unwrap();
        assert_eq!((r.component.as_str(), r.pid), ("up", 42));
        assert_eq!(r.str("master"), "127.0.0.1:5");
        assert_eq!(r.port("master"), 5);
        assert_eq!(r.port("metadata"), 6);
        assert_eq!(r.port("status"), 7);
        assert!(Ready::parse("Mooncake store is up.").is_none());
        assert!(Ready::parse(r#"{"name":"x"}"#).is_none(), "no ready field");
        assert!(Ready::parse("{not json").is_none());
    }

    #[test]
    #[should_panic(expected = "no string \"rpc\"")]
    fn a_missing_field_names_itself() {
        Ready::parse(r#"{"ready":"master","pid":1}"#)
            .unwrap()
            .str("rpc");
    }
}
