//! The `mooncake` binary the process tests run.
//!
//! Lookup order: `$MOONCAKE_BIN`; else `<target>/<profile>/mooncake` next to
//! the running test binary (`<target>/<profile>/deps/<test>`), brought up to
//! date once per test process with `cargo build -p mooncake-cli` so that
//! `cargo test -p <any crate>` never runs a stale binary. The build is skipped
//! with `MOONCAKE_TEST_NO_BUILD=1` (iterating while another crate is mid-edit)
//! and inside `mooncake-cli`'s own tests, for which cargo has just built it
//! (with the features under test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (this crate lives in `<root>/crates/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit has a workspace root")
        .to_path_buf()
}

/// `<target>/<profile>` of the running executable.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The `mooncake` binary (see the module docs); panics with the command to run
/// when it cannot be found or built.
pub fn mooncake_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MOONCAKE_BIN") {
            return PathBuf::from(p);
        }
        let dir = profile_dir();
        let in_cli = std::env::var("CARGO_PKG_NAME").is_ok_and(|n| n == "mooncake-cli");
        if std::env::var_os("MOONCAKE_TEST_NO_BUILD").is_none() && !in_cli {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "mooncake-cli", "--quiet"])
                .current_dir(workspace_root());
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("running cargo build -p mooncake-cli");
            assert!(status.success(), "cargo build -p mooncake-cli failed");
        }
        let bin = dir.join("mooncake");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p mooncake-cli` (or set MOONCAKE_BIN)",
            bin.display()
        );
        bin
    })
    .clone()
}
