"""Fixtures: a local Mooncake cluster (our `mooncake master` with its embedded
HTTP metadata server) on free loopback ports, and store clients set up
against it. Everything started here is stopped at the end of the session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Sequence

import pytest

REPO = Path(__file__).resolve().parents[3]
LEASE_TTL_MS = 300
STARTUP_DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mooncake_bin() -> str:
    explicit = os.getenv("MOONCAKE_BIN")
    candidates = [Path(explicit)] if explicit else []
    candidates += [REPO / "target" / "debug" / "mooncake", REPO / "target" / "release" / "mooncake"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    pytest.exit(
        "the `mooncake` binary is missing: run `cargo build -p mooncake-cli` "
        "(or set MOONCAKE_BIN)",
        returncode=2,
    )
    raise AssertionError("unreachable")


def wait_until(cond: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    delay = 0.01
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _metadata_up(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}?key=probe", timeout=1)
        return True
    except urllib.error.HTTPError:
        return True  # 404 "metadata not found": the server answers
    except OSError:
        return False


@dataclass
class Cluster:
    master_addr: str
    metadata_url: str
    lease_ttl_ms: int
    proc: subprocess.Popen

    def client_args(self, local_hostname: str = "127.0.0.1", global_segment_size: int = 64 << 20,
                    local_buffer_size: int = 32 << 20) -> tuple:
        return (local_hostname, self.metadata_url, global_segment_size, local_buffer_size, "tcp", "",
                self.master_addr)


def start_master(log: Path, lease_ttl_ms: int = LEASE_TTL_MS, flags: Sequence[str] = ()) -> Cluster:
    """A `mooncake master` with its embedded metadata server on free ports (plus
    `flags`, e.g. eviction settings)."""
    rpc_port, meta_port = free_port(), free_port()
    cmd = [
        mooncake_bin(), "master",
        "--rpc_address=127.0.0.1", f"--rpc_port={rpc_port}",
        "--enable_http_metadata_server=true", "--http_metadata_server_host=127.0.0.1",
        f"--http_metadata_server_port={meta_port}",
        "--metrics_host=127.0.0.1", "--metrics_port=0",
        f"--default_kv_lease_ttl={lease_ttl_ms}",
        *flags,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{meta_port}/metadata"
    try:
        wait_until(lambda: proc.poll() is not None or (_tcp_open(rpc_port) and _metadata_up(url)),
                   STARTUP_DEADLINE_S, "the master to listen")
        if proc.poll() is not None:
            raise RuntimeError(f"master exited with {proc.returncode}:\n{log.read_text()}")
    except BaseException:
        stop(proc)
        raise
    return Cluster(f"127.0.0.1:{rpc_port}", url, lease_ttl_ms, proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    c = start_master(tmp_path_factory.mktemp("master") / "master.log")
    # Clients compare read durations with the master's lease.
    os.environ["DEFAULT_KV_LEASE_TTL"] = str(LEASE_TTL_MS)
    try:
        yield c
    finally:
        stop(c.proc)


@pytest.fixture
def make_store(cluster):
    """Factory of set-up store clients; all closed at the end of the test."""
    from mooncake.store import MooncakeDistributedStore

    made: List[MooncakeDistributedStore] = []

    def make(**kw) -> MooncakeDistributedStore:
        s = MooncakeDistributedStore()
        rc = s.setup(*cluster.client_args(**kw))
        assert rc == 0, f"setup failed with {rc}"
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_store):
    return make_store()


def remove_when_unleased(store, key: str, deadline_s: float = 5.0) -> int:
    """remove(key), retried while a reader's lease still protects it (-706)."""
    rc = store.remove(key)
    end = time.monotonic() + deadline_s
    while rc == -706 and time.monotonic() < end:
        time.sleep(0.02)
        rc = store.remove(key)
    return rc


@pytest.fixture
def unique(request) -> Callable[[str], str]:
    """Keys unique to the test (the cluster is shared by the session)."""
    base = f"{request.node.name}-{os.getpid()}"
    return lambda name: f"{base}/{name}"


def run_python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
