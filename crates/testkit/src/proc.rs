//! Child processes for tests and benches.
//!
//! A [`Proc`] runs in its own process group (so a child's own children, e.g.
//! the etcd of `mooncake up --ha`, go with it), has stdin closed, its stdout
//! read line by line on a thread (it never blocks on a full pipe) and its
//! stderr captured in a temporary file (its tail is in every panic message
//! about the child). Dropping a `Proc` SIGKILLs the group and reaps the child.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::ready::Ready;

/// How long a `mooncake` server may take to print its READY line (debug
/// builds on a loaded 2-core machine).
pub const READY_LIMIT: Duration = Duration::from_secs(60);

/// A child process killed (with its process group) and reaped on drop.
pub struct Proc {
    child: Child,
    name: String,
    lines: Receiver<String>,
    /// Stdout lines already taken off the channel.
    seen: Vec<String>,
    stderr: tempfile::NamedTempFile,
}

impl Proc {
    /// A `mooncake` command with `MOONCAKE_LOG=warn`, to adjust before [`Proc::spawn`].
    pub fn mooncake_command(args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::bin::mooncake_bin());
        cmd.args(args).env("MOONCAKE_LOG", "warn");
        cmd
    }

    /// Spawn `mooncake <args>`.
    pub fn mooncake(args: &[&str]) -> Proc {
        Proc::spawn(Self::mooncake_command(args))
    }

    /// Spawn `mooncake <args>` with extra environment variables.
    pub fn mooncake_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Self::mooncake_command(args);
        cmd.envs(env.iter().copied());
        Proc::spawn(cmd)
    }

    /// Spawn `cmd` (its stdio is replaced: stdin closed, stdout read here,
    /// stderr captured). Panics when it cannot be started.
    pub fn spawn(cmd: Command) -> Proc {
        Self::spawn_stdin(cmd, Stdio::null())
    }

    /// [`Proc::spawn`] with a pipe to the child's stdin, taken with [`Proc::stdin`].
    pub fn spawn_with_stdin(cmd: Command) -> Proc {
        Self::spawn_stdin(cmd, Stdio::piped())
    }

    /// The pipe to the child's stdin ([`Proc::spawn_with_stdin`] only; once).
    pub fn stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    fn spawn_stdin(mut cmd: Command, stdin: Stdio) -> Proc {
        let name = std::iter::once(cmd.get_program())
            .chain(cmd.get_args().take(1))
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let stderr = tempfile::Builder::new()
            .prefix("mooncake-test-stderr-")
            .tempfile()
            .expect("a temporary file for the child's stderr");
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("reopen the stderr file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{name}`: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        // The receiver may be gone; keep draining regardless.
                        let _ = tx.send(line);
                    }
                }
            }
        });
        Proc {
            child,
            name,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Wait (at most `limit`) for the READY line (see [`crate::ready`]) and
    /// return it; panics, with the child's stderr, when it exits or times out first.
    pub fn ready(&mut self, limit: Duration) -> Ready {
        let line = self.line_where(limit, "its READY line", |l| Ready::parse(l).is_some());
        Ready::parse(&line).expect("checked above")
    }

    /// The next stdout line (at most `limit`); `None` at end of output or timeout.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(limit).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The next stdout line for which `pred` holds (earlier lines are skipped,
    /// and kept in [`Proc::stdout_seen`]); panics naming `what` when the child
    /// exits or `limit` passes first.
    pub fn line_where(
        &mut self,
        limit: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait(Duration::from_secs(10));
                    panic!(
                        "`{}` closed its stdout ({status}) before {what}; stdout:\n{}\nstderr:\n{}",
                        self.name,
                        self.seen.join("\n"),
                        self.stderr_tail()
                    );
                }
                Err(RecvTimeoutError::Timeout) if left.is_zero() => panic!(
                    "`{}` did not print {what} within {limit:?}; stdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.seen.join("\n"),
                    self.stderr_tail()
                ),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// The next stdout line parsed as JSON (at most `limit`).
    pub fn json_line(&mut self, limit: Duration) -> serde_json::Value {
        let line = self.line_where(limit, "a line", |_| true);
        serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "`{}` printed {line:?}, not JSON ({e}); stderr:\n{}",
                self.name,
                self.stderr_tail()
            )
        })
    }

    /// Stdout lines read so far.
    pub fn stdout_seen(&self) -> &[String] {
        &self.seen
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// The last 40 lines of [`Proc::stderr`].
    pub fn stderr_tail(&self) -> String {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Path of the file holding the child's stderr.
    pub fn stderr_path(&self) -> PathBuf {
        self.stderr.path().to_path_buf()
    }

    /// Process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has not exited yet.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send `sig` to the child itself (SIGSTOP, SIGCONT, SIGTERM, ...).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet (we
        // hold its `Child`), so the pid cannot name another process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// SIGKILL the child's process group and reap the child.
    pub fn kill9(&mut self) {
        // SAFETY: kill(2) on the process group this child leads; a group id
        // is not reused while any member lives.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait at most `limit` for a clean exit; SIGKILL after
    /// that. Returns the exit status when it exited by itself in time.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = self.try_wait_for(limit);
        if status.is_none() {
            self.kill9();
        }
        status
    }

    /// The exit status once the child exits by itself, waiting at most `limit`.
    pub fn try_wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(crate::wait::POLL);
        }
    }

    /// The exit status, waiting at most `limit`; panics (with stderr) when it
    /// is still running then.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        self.try_wait_for(limit).unwrap_or_else(|| {
            panic!(
                "`{}` still running after {limit:?}; stderr:\n{}",
                self.name,
                self.stderr_tail()
            )
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Proc {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        Proc::spawn(cmd)
    }

    #[test]
    fn ready_skips_human_lines_and_stderr_is_captured() {
        let mut p =
            sh(r#"echo hello; echo oops >&2; echo '{"ready":"x","pid":7,"port":9}'; sleep 30"#);
        let r = p.ready(Duration::from_secs(10));
        assert_eq!((r.component.as_str(), r.u64("port")), ("x", 9));
        assert_eq!(p.stdout_seen()[0], "hello");
        assert!(p.is_alive());
        wait_until_stderr(&p, "oops");
    }

    fn wait_until_stderr(p: &Proc, what: &str) {
        crate::wait::wait_until("stderr", Duration::from_secs(5), || {
            p.stderr().contains(what)
        });
    }

    #[test]
    fn drop_kills_the_whole_process_group() {
        let mut p = sh("sleep 30 & echo $!; wait");
        let grandchild: i32 = p
            .next_line(Duration::from_secs(10))
            .unwrap()
            .parse()
            .unwrap();
        drop(p);
        // Gone, or a zombie waiting for init to reap it.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
        };
        crate::wait::wait_until("the grandchild to go", Duration::from_secs(10), || !alive());
    }

    #[test]
    #[should_panic(expected = "closed its stdout")]
    fn a_child_exiting_before_ready_panics_with_its_stderr() {
        let mut p = sh("echo dying >&2; exit 3");
        p.ready(Duration::from_secs(10));
    }

    #[test]
    fn terminate_returns_the_exit_status() {
        let mut p = sh("trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done");
        p.next_line(Duration::from_secs(10)).unwrap();
        let st = p
            .terminate(Duration::from_secs(10))
            .expect("exits on SIGTERM");
        assert!(st.success());
    }
}
