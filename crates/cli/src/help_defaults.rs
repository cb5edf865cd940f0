//! `--help` shows each configuration flag's default, read from the configuration struct the
//! flag overlays (its `Default`, the one place a default is written), so no flag restates one.
//! A flag matches a setting by its id, which is the setting's field name (`#[arg(long = ..)]`
//! keeps the command-line spelling).

use clap::Command;
use mooncake_config::format_size;
use mooncake_master::MasterConfig;
use mooncake_store::client::ClientConfig;
use serde::Serialize;
use serde_json::Value;

use crate::cmd;

/// `cli` with the defaults of the commands whose flags overlay a configuration struct.
pub fn add(cli: Command) -> Command {
    cli.mut_subcommand("master", |c| annotate(c, &MasterConfig::default()))
        .mut_subcommand("segment", |c| annotate(c, &cmd::segment::defaults()))
        .mut_subcommand("client", |c| annotate(c, &ClientConfig::default()))
        .mut_subcommand("store-node", |c| annotate(c, &ClientConfig::default()))
        .mut_subcommand("real-client", |c| {
            annotate(c, &cmd::real_client::defaults())
        })
}

fn annotate(mut c: Command, defaults: &impl Serialize) -> Command {
    let Ok(Value::Object(fields)) = serde_json::to_value(defaults) else {
        return c;
    };
    let ids: Vec<String> = c
        .get_arguments()
        .filter(|a| a.get_default_values().is_empty())
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        let shown = match fields.get(&id) {
            // An empty value means "none", which the flag's own text explains.
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.is_empty() => continue,
            Some(Value::Array(a)) if a.is_empty() => continue,
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
            Some(v) => v.to_string(),
        };
        c = c.mut_arg(&id, |a| {
            let size = a
                .get_value_names()
                .is_some_and(|n| n.iter().any(|n| n.as_str() == "SIZE"));
            let shown = match fields.get(&id).and_then(Value::as_u64) {
                Some(n) if size => format_size(n),
                _ => shown,
            };
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            a.help(format!("{help} [default: {shown}]"))
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    fn help(path: &[&str], id: &str) -> String {
        let mut c = super::add(crate::Cli::command());
        for p in path {
            c = c.find_subcommand(p).unwrap().clone();
        }
        let a = c.get_arguments().find(|a| a.get_id() == id).unwrap();
        a.get_help().map(|h| h.to_string()).unwrap_or_default()
    }

    #[test]
    fn defaults_come_from_the_config_structs() {
        assert!(help(&["master"], "rpc_port").ends_with("[default: 50051]"));
        assert!(help(&["master"], "max_slice_size").ends_with("[default: 16MiB]"));
        assert!(help(&["master"], "allocation_strategy").ends_with("[default: random]"));
        assert!(!help(&["master"], "snapshot_dir").contains("[default: ]"));
        assert!(help(&["client"], "master_server_addr").ends_with("[default: 127.0.0.1:50051]"));
        assert!(help(&["segment"], "metadata_server").ends_with("[default: P2PHANDSHAKE]"));
        assert!(help(&["segment"], "protocols").ends_with("[default: tcp,shm]"));
        assert!(help(&["real-client"], "global_segment_size").ends_with("[default: 1GiB]"));
    }
}
