//! The READY line: the one machine-readable announcement of every
//! long-running command, printed here and nowhere else.
//!
//! One JSON object on one stdout line, once every listener is bound:
//! `{"ready":"<component>","pid":<pid>, <fields>...}`. Human-friendly lines
//! may come before it. The fields of each component are listed in
//! `docs/readiness.md`; `mooncake_testkit::Ready` parses the line.

use std::io::Write;

use serde_json::{Map, Value};

/// Print the READY line of `component` with `fields` (a JSON object) and flush.
pub fn announce(component: &str, fields: Value) -> std::io::Result<()> {
    let line = ready_line(component, std::process::id(), fields);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn ready_line(component: &str, pid: u32, fields: Value) -> String {
    let mut obj = Map::new();
    obj.insert("ready".into(), component.into());
    obj.insert("pid".into(), pid.into());
    if let Value::Object(fields) = fields {
        obj.extend(fields);
    }
    Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_that_the_testkit_parses() {
        let line = ready_line(
            "store-node",
            7,
            serde_json::json!({"segment": "127.0.0.1:1", "size": 64}),
        );
        assert!(!line.contains('\n'));
        let r = mooncake_testkit::Ready::parse(&line).unwrap();
        assert_eq!((r.component.as_str(), r.pid), ("store-node", 7));
        assert_eq!((r.str("segment"), r.u64("size")), ("127.0.0.1:1", 64));
    }
}
