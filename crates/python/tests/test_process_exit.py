"""A process that exits without close() releases its segment at once (the
reference's CI runs file after file against one master): objects placed on it
disappear well before the master's client TTL would expire the process."""

from __future__ import annotations

import time

from conftest import run_python

CHILD = r"""
import sys
from mooncake.store import MooncakeDistributedStore, ReplicateConfig
args = sys.argv[1:]
s = MooncakeDistributedStore()
assert s.setup("127.0.0.1", args[0], 16 << 20, 16 << 20, "tcp", "", args[1]) == 0
cfg = ReplicateConfig()
cfg.preferred_segment = s.get_hostname()
assert s.put(args[2], b"on the child's segment", cfg) == 0
print(s.get_hostname(), flush=True)
# exit without close()
"""


def test_exit_without_close_releases_the_segment(cluster, store, unique):
    key = unique("orphan")
    child = run_python(CHILD, cluster.metadata_url, cluster.master_addr, key)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.strip() and out.strip() != store.get_hostname()
    # The master's client TTL is 10 s; the exit hook unmounted at once.
    deadline = time.monotonic() + 3
    while store.is_exist(key) == 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.is_exist(key) == 0
    # New puts land on live segments only.
    assert store.put(unique("after"), b"x") == 0
