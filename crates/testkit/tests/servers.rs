//! The etcd/redis starters: servers are really gone after drop, and a
//! missing binary is a loud error naming the setup script. Runs in its own
//! process (its own test binary) because it changes environment variables.

use mooncake_testkit::{EtcdServer, HarnessError, RedisServer};

fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn servers_are_killed_and_cleaned_up_on_drop_and_missing_binaries_fail_loudly() {
    let etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let pids = [etcd.pid(), redis.pid()];
    let dirs = [etcd.dir().to_path_buf(), redis.dir().to_path_buf()];
    assert!(pids.iter().all(|p| alive(*p)));
    assert!(dirs.iter().all(|d| d.join("server.log").exists()));
    drop((etcd, redis));
    for (pid, dir) in pids.iter().zip(&dirs) {
        assert!(!alive(*pid), "server {pid} still running after drop");
        assert!(!dir.exists(), "{dir:?} left behind");
    }

    // Missing binaries: an error that says what to run, never a silent skip.
    // (Sequential in this one test: the environment is process-wide.)
    std::env::set_var("MOONCAKE_ETCD_BIN", "/nonexistent/etcd");
    std::env::set_var("MOONCAKE_REDIS_BIN", "/nonexistent/redis-server");
    let errors = [
        EtcdServer::start().map(drop).unwrap_err(),
        RedisServer::start().map(drop).unwrap_err(),
    ];
    std::env::remove_var("MOONCAKE_ETCD_BIN");
    std::env::remove_var("MOONCAKE_REDIS_BIN");
    for e in errors {
        assert!(matches!(e, HarnessError::MissingBinary { .. }), "{e:?}");
        assert!(e.to_string().contains("scripts/test.sh"), "{e}");
    }
}
