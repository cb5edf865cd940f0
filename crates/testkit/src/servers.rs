//! Real metadata servers for tests: an `etcd` and a `redis-server` process on
//! free loopback ports, each with its own temporary data directory, started
//! and awaited with a bounded deadline, and killed when dropped.
//!
//! A missing binary is an error that names the setup script, never a silent
//! skip: the test suite needs both servers (`scripts/test.sh` installs them).
//! Binaries are looked up in `$MOONCAKE_ETCD_BIN` / `$MOONCAKE_REDIS_BIN`,
//! then `/usr/bin`, then `$PATH`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::net::free_port;

/// How long a server may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Attempts to start a server (a free port may be taken between probe and bind).
const START_ATTEMPTS: usize = 3;

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "`{name}` not found (looked in ${env}, /usr/bin and $PATH). The tests need real \
         etcd and redis servers: run scripts/test.sh (it installs etcd-server and \
         redis-server), or `sudo apt-get install etcd-server redis-server`"
    )]
    MissingBinary {
        name: &'static str,
        env: &'static str,
    },
    #[error("cannot start {name}: {source}")]
    Io {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} did not become ready within {deadline:?}; its log ends with:\n{log}")]
    NotReady {
        name: &'static str,
        deadline: Duration,
        log: String,
    },
}

/// The binary `name`: `$env` when set, else `/usr/bin/<name>`, else the first on `$PATH`.
pub fn find_binary(name: &'static str, env: &'static str) -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os(env).map(PathBuf::from) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(HarnessError::MissingBinary { name, env })
        };
    }
    let system = Path::new("/usr/bin").join(name);
    if system.is_file() {
        return Ok(system);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(HarnessError::MissingBinary { name, env })
}

/// A server process with its data directory and log, killed on drop. Both
/// servers dereference to it for [`ServerProcess::kill`], `pid` and `dir`.
#[derive(Debug)]
pub struct ServerProcess {
    name: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    child: Child,
    dir: TempDir,
}

impl ServerProcess {
    fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[String],
        dir: TempDir,
    ) -> Result<Self, HarnessError> {
        let child = Self::spawn_child(name, bin, args, dir.path())?;
        Ok(Self {
            name,
            bin: bin.to_path_buf(),
            args: args.to_vec(),
            child,
            dir,
        })
    }

    fn spawn_child(
        name: &'static str,
        bin: &Path,
        args: &[String],
        dir: &Path,
    ) -> Result<Child, HarnessError> {
        let io = |source| HarnessError::Io { name, source };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .map_err(io)?;
        Command::new(bin)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            .spawn()
            .map_err(io)
    }

    /// Kill the process and start it again with the same arguments and data.
    fn respawn(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.child = Self::spawn_child(self.name, &self.bin, &self.args, self.dir.path())?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Poll `ready` until it holds, the process exits, or the deadline passes.
    fn await_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<(), HarnessError> {
        let start = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || start.elapsed() > READY_DEADLINE {
                return Err(HarnessError::NotReady {
                    name: self.name,
                    deadline: READY_DEADLINE,
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temporary directory holding its data and `server.log` (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kill the server now and reap it (it is also killed on drop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request/answer exchange on a fresh loopback connection, bounded in time.
fn exchange(port: u16, request: &[u8]) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(request).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    // HTTP/1.0 closes after the answer; redis answers one short line.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\r\n") && out.starts_with(b"+") {
            break;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Start `attempt` up to [`START_ATTEMPTS`] times (each picks new ports).
fn with_retries<T>(
    mut attempt: impl FnMut() -> Result<T, HarnessError>,
) -> Result<T, HarnessError> {
    let mut last = None;
    for _ in 0..START_ATTEMPTS {
        match attempt() {
            Ok(v) => return Ok(v),
            Err(e @ HarnessError::MissingBinary { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// A real single-member etcd cluster on loopback.
#[derive(Debug)]
pub struct EtcdServer {
    proc: ServerProcess,
    client_port: u16,
}

impl EtcdServer {
    /// Start etcd on free loopback ports and wait until it reports healthy.
    pub fn start() -> Result<Self, HarnessError> {
        let bin = find_binary("etcd", "MOONCAKE_ETCD_BIN")?;
        with_retries(|| {
            let io = |source| HarnessError::Io {
                name: "etcd",
                source,
            };
            let dir = tempfile::Builder::new()
                .prefix("mooncake-etcd-")
                .tempdir()
                .map_err(io)?;
            let client_port = free_port().map_err(io)?;
            let peer_port = free_port().map_err(io)?;
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let args: Vec<String> = [
                "--name",
                "mooncake-test",
                "--data-dir",
                &dir.path().join("data").to_string_lossy(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("mooncake-test={peer}"),
                "--initial-cluster-state",
                "new",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut this = Self {
                proc: ServerProcess::spawn("etcd", &bin, &args, dir)?,
                client_port,
            };
            this.await_ready()?;
            Ok(this)
        })
    }

    fn await_ready(&mut self) -> Result<(), HarnessError> {
        let port = self.client_port;
        let health = b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        self.proc.await_ready(|| {
            exchange(port, health).is_some_and(|a| a.contains("\"health\":\"true\""))
        })
    }

    /// Kill etcd and start it again on the same ports and data (keys survive);
    /// returns once it is healthy.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.proc.respawn()?;
        self.await_ready()
    }

    /// `127.0.0.1:<port>` of the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:<port>`, for `mooncake_metadata::connect`.
    pub fn conn_string(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }
}

macro_rules! deref_to_process {
    ($server:ty) => {
        impl std::ops::Deref for $server {
            type Target = ServerProcess;
            fn deref(&self) -> &ServerProcess {
                &self.proc
            }
        }
        impl std::ops::DerefMut for $server {
            fn deref_mut(&mut self) -> &mut ServerProcess {
                &mut self.proc
            }
        }
    };
}

deref_to_process!(EtcdServer);
deref_to_process!(RedisServer);

/// A real redis server on loopback, without persistence.
#[derive(Debug)]
pub struct RedisServer {
    proc: ServerProcess,
    port: u16,
}

impl RedisServer {
    /// Start redis-server on a free loopback port and wait until it answers PING.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with(&[])
    }

    /// Start with extra `redis-server` arguments (e.g. `["--rename-command",
    /// "CONFIG", ""]` to model a managed redis).
    pub fn start_with(extra: &[&str]) -> Result<Self, HarnessError> {
        let bin = find_binary("redis-server", "MOONCAKE_REDIS_BIN")?;
        with_retries(|| {
            let io = |source| HarnessError::Io {
                name: "redis-server",
                source,
            };
            let dir = tempfile::Builder::new()
                .prefix("mooncake-redis-")
                .tempdir()
                .map_err(io)?;
            let port = free_port().map_err(io)?;
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.path().to_string_lossy(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut this = Self {
                proc: ServerProcess::spawn("redis-server", &bin, &args, dir)?,
                port,
            };
            this.await_ready()?;
            Ok(this)
        })
    }

    fn await_ready(&mut self) -> Result<(), HarnessError> {
        let port = self.port;
        self.proc
            .await_ready(|| exchange(port, b"PING\r\n").is_some_and(|a| a.starts_with("+PONG")))
    }

    /// Kill redis and start it again on the same port. It keeps no data
    /// (no persistence) and forgets runtime `CONFIG SET`s, as a real restart does.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.proc.respawn()?;
        self.await_ready()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, for `mooncake_metadata::connect`.
    pub fn conn_string(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}
