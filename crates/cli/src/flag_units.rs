//! Every size and duration flag of every command reads the same spellings the same way: this
//! walks the whole command tree, finds the flags marked `value_name = "SIZE"` / `"DURATION"`
//! and parses `mooncake_config::units`' shared spelling tables through each of them with clap.
//! It also fails when a flag holds a `Duration`, or an integer named like a byte size, without
//! that mark (so a new flag cannot slip past the one parser).

use std::any::TypeId;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command, CommandFactory};
use mooncake_config::units::{DURATION_SPELLINGS, SIZE_SPELLINGS};

use crate::Cli;

/// Integer flags named like sizes that are counts, not bytes (command path, flag).
const NOT_BYTES: &[(&str, &str)] = &[
    ("bench transfer", "batch-size"),
    ("router", "block-size"),
    ("sim", "block-size"),
    ("sim sweep", "block-size"),
];

fn leaves(cmd: &Command, path: &str, out: &mut Vec<(String, Command)>) {
    out.push((path.to_string(), cmd.clone()));
    for sub in cmd.get_subcommands() {
        let p = if path.is_empty() {
            sub.get_name().to_string()
        } else {
            format!("{path} {}", sub.get_name())
        };
        leaves(sub, &p, out);
    }
}

fn has_value_name(a: &Arg, name: &str) -> bool {
    a.get_value_names()
        .is_some_and(|v| v.iter().any(|n| n.as_str() == name))
}

/// Parse `--flag=value` through `cmd` with every other argument made optional.
fn parse(cmd: &Command, long: &str, value: &str) -> Result<ArgMatches, clap::Error> {
    cmd.clone()
        .mut_args(|a| a.required(false))
        .subcommand_required(false)
        .no_binary_name(true)
        .try_get_matches_from([format!("--{long}={value}")])
}

fn value_of(m: &ArgMatches, id: &str) -> Option<u128> {
    if let Ok(Some(v)) = m.try_get_one::<u64>(id) {
        return Some(*v as u128);
    }
    if let Ok(Some(v)) = m.try_get_one::<usize>(id) {
        return Some(*v as u128);
    }
    if let Ok(Some(v)) = m.try_get_one::<Duration>(id) {
        return Some(v.as_nanos());
    }
    None
}

#[test]
fn every_size_and_duration_flag_reads_the_shared_spellings() {
    let mut all = Vec::new();
    leaves(&Cli::command(), "", &mut all);
    let (mut sizes, mut durations) = (0, 0);
    for (path, cmd) in &all {
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            let ty = a.get_value_parser().type_id();
            let is_size = has_value_name(a, "SIZE");
            let is_duration = has_value_name(a, "DURATION");
            assert!(
                is_duration || ty != TypeId::of::<Duration>(),
                "`mooncake {path} --{long}` holds a Duration: parse it with \
                 mooncake_config::parse_duration and value_name = \"DURATION\""
            );
            let integer = ty == TypeId::of::<u64>() || ty == TypeId::of::<usize>();
            let named_like_bytes = ["size", "bytes", "capacity"]
                .iter()
                .any(|w| long.contains(w));
            assert!(
                is_size || !integer || !named_like_bytes || NOT_BYTES.contains(&(path, long)),
                "`mooncake {path} --{long}` looks like a byte size: parse it with \
                 mooncake_config::parse_size and value_name = \"SIZE\" (or list it in NOT_BYTES)"
            );
            let id = a.get_id().as_str();
            if is_size {
                sizes += 1;
                for &(s, want) in SIZE_SPELLINGS {
                    let got = parse(cmd, long, s).ok().and_then(|m| value_of(&m, id));
                    assert_eq!(got, want.map(u128::from), "`mooncake {path} --{long}={s}`");
                }
            }
            if is_duration {
                durations += 1;
                for &(s, want) in DURATION_SPELLINGS {
                    let got = parse(cmd, long, s).ok().and_then(|m| value_of(&m, id));
                    assert_eq!(
                        got,
                        want.map(|d| d.as_nanos()),
                        "`mooncake {path} --{long}={s}`"
                    );
                }
            }
        }
    }
    // The walk found the flags it is meant to cover (segment, store-node, up, benches, p2p, ...).
    assert!(sizes >= 12, "only {sizes} size flags found");
    assert!(durations >= 8, "only {durations} duration flags found");
}
