"""mooncake.store.MooncakeDistributedStore: the behaviours the reference's
object-store tests check (setup forms, put/get/exist/size/remove, batch
forms, zero-copy into registered buffers, leases, teardown), in our words."""

from __future__ import annotations

import ctypes
import json
import os
import threading

import pytest

from conftest import remove_when_unleased
from mooncake.store import BufferHandle, MooncakeDistributedStore, ReplicateConfig, SoftPinAction

OBJECT_NOT_FOUND = -704
OBJECT_HAS_LEASE = -706


def config_dict(cluster, **over):
    d = {
        "local_hostname": "localhost",
        "metadata_server": cluster.metadata_url,
        "global_segment_size": "16MB",
        "local_buffer_size": "16 MB",
        "protocol": "tcp",
        "rdma_devices": "",
        "master_server_addr": cluster.master_addr,
    }
    d.update(over)
    return d


class Registered:
    """A ctypes buffer registered with a store for the test's duration."""

    def __init__(self, store, size):
        self.store, self.size = store, size
        self.buf = (ctypes.c_ubyte * size)()
        self.ptr = ctypes.addressof(self.buf)
        assert store.register_buffer(self.ptr, size) == 0

    def bytes(self, off, n):
        return bytes(self.buf[off:off + n])

    def write(self, off, data):
        ctypes.memmove(self.ptr + off, data, len(data))

    def close(self):
        assert self.store.unregister_buffer(self.ptr) == 0


# ---- setup --------------------------------------------------------------------------

def test_setup_from_dict_with_readable_sizes(cluster, unique):
    s = MooncakeDistributedStore()
    try:
        assert s.setup(config_dict(cluster)) == 0
        k = unique("k")
        assert s.put(k, b"sized by strings") == 0
        assert s.get(k) == b"sized by strings"
    finally:
        s.close()


@pytest.mark.parametrize("bad", ["50%", "lots", -1])
def test_setup_refuses_bad_sizes(cluster, bad):
    s = MooncakeDistributedStore()
    assert s.setup(config_dict(cluster, global_segment_size=bad)) != 0
    assert s.health_check() == 1, "a failed setup leaves the store unset"


def test_setup_from_config_file_in_environment(cluster, tmp_path, monkeypatch, unique):
    path = tmp_path / "mooncake.json"
    path.write_text(json.dumps({
        "local_hostname": "127.0.0.1",
        "metadata_server": cluster.metadata_url,
        "global_segment_size": "8MB",
        "local_buffer_size": 8 << 20,
        "protocol": "tcp",
        "device_name": "",
        "master_server_address": cluster.master_addr,
    }))
    monkeypatch.setenv("MOONCAKE_CONFIG_PATH", str(path))
    s = MooncakeDistributedStore()
    try:
        assert s.setup() == 0
        assert s.get_hostname().startswith("127.0.0.1:")
        assert s.put(unique("k"), b"v") == 0
    finally:
        s.close()


def test_setup_from_mooncake_env_vars(cluster, monkeypatch):
    monkeypatch.delenv("MOONCAKE_CONFIG_PATH", raising=False)
    monkeypatch.setenv("MOONCAKE_MASTER", cluster.master_addr)
    monkeypatch.setenv("MOONCAKE_TE_META_DATA_SERVER", cluster.metadata_url)
    monkeypatch.setenv("MOONCAKE_GLOBAL_SEGMENT_SIZE", "4MB")
    monkeypatch.setenv("MOONCAKE_LOCAL_BUFFER_SIZE", "4MB")
    s = MooncakeDistributedStore()
    try:
        assert s.setup() == 0
        assert s.health_check() == 0
    finally:
        s.close()


def test_setup_without_any_configuration_fails(monkeypatch):
    for v in ("MOONCAKE_CONFIG_PATH", "MOONCAKE_MASTER"):
        monkeypatch.delenv(v, raising=False)
    assert MooncakeDistributedStore().setup() != 0


def test_unreachable_master_fails_setup(cluster):
    from conftest import free_port

    s = MooncakeDistributedStore()
    args = list(cluster.client_args())
    args[-1] = f"127.0.0.1:{free_port()}"
    assert s.setup(*args) < 0
    assert s.put("k", b"v") < 0
    assert s.get("k") == b""


def test_hostname_gets_a_port_in_the_reference_range(store, make_store):
    s = make_store(local_hostname="localhost")
    host, port = s.get_hostname().split(":")
    assert host == "localhost" and 12300 <= int(port) <= 14300
    assert store.get_hostname() != s.get_hostname()


def test_setup_dummy_is_reported_unavailable():
    assert MooncakeDistributedStore().setup_dummy(1 << 20, 1 << 20, "127.0.0.1:50052") < 0


# ---- put / get ----------------------------------------------------------------------

def test_put_get_size_exist_remove(store, unique):
    k = unique("basic")
    assert store.put(k, b"Hello, World!") == 0
    assert store.get_size(k) == 13
    assert store.get(k) == b"Hello, World!"
    assert store.is_exist(k) == 1
    assert store.put(k, b"ignored") == 0, "put of an existing key succeeds"
    assert store.get(k) == b"Hello, World!", "...and keeps the stored value"
    assert remove_when_unleased(store, k) == 0
    assert store.is_exist(k) == 0
    assert store.get(k) == b""
    assert store.get_size(k) == OBJECT_NOT_FOUND
    assert store.remove(k) == OBJECT_NOT_FOUND


def test_values_of_any_buffer_type(store, unique):
    import array

    import numpy as np

    values = [bytearray(b"bytearray"), memoryview(b"memoryview"), array.array("i", [1, 2, 3]),
              np.arange(10, dtype=np.int16)]
    for i, v in enumerate(values):
        assert store.put(unique(str(i)), v) == 0
        assert store.get(unique(str(i))) == bytes(memoryview(v).cast("B"))
    with pytest.raises(TypeError):
        store.put(unique("x"), "a str is not bytes")


def test_keyword_names_are_checked(store, unique):
    k = unique("kw")
    assert store.put(key=k, value=b"v", config=ReplicateConfig()) == 0
    for bad in ({"key_x": k, "value": b"v"}, {"key": k, "value_x": b"v"}, {"key": k, "value": b"v", "cfg": None}):
        with pytest.raises(TypeError):
            store.put(**bad)


def test_lease_blocks_remove_until_it_expires_unless_forced(store, unique):
    k = unique("leased")
    # A get grants a short lease; a stall of the whole machine longer than it
    # lets the lease lapse before our remove, so a few tries are allowed.
    for _ in range(5):
        assert store.put(k, b"x" * 1000) == 0
        assert store.get(k) == b"x" * 1000      # grants a lease
        rc = store.remove(k)
        if rc == OBJECT_HAS_LEASE:
            break
        assert rc == 0, "lapsed lease: the remove went through; try again"
    assert rc == OBJECT_HAS_LEASE
    assert store.remove(k, force=True) == 0
    k2 = unique("leased2")
    assert store.put(k2, b"y") == 0
    assert store.get(k2) == b"y"
    assert remove_when_unleased(store, k2) == 0


def test_upsert_replaces(store, unique):
    k = unique("up")
    assert store.upsert(k, b"first") == 0
    assert store.upsert(k, b"second, longer") == 0
    assert store.get(k) == b"second, longer"
    assert store.upsert_parts(k, b"a", b"b", b"c") == 0
    assert store.get(k) == b"abc"
    assert store.upsert_batch([k, unique("up2")], [b"1", b"2"]) == 0
    assert store.get_batch([k, unique("up2")]) == [b"1", b"2"]


def test_put_parts_concatenates(store, unique):
    k = unique("parts")
    assert store.put_parts(k, b"head-", bytearray(b"body-"), memoryview(b"tail")) == 0
    assert store.get(k) == b"head-body-tail"


def test_zero_local_buffer_cannot_put_bytes(make_store, unique):
    s = make_store(local_buffer_size=0)
    k = unique("zero")
    assert s.put(k, b"needs staging") != 0
    assert s.is_exist(k) == 0
    # Registered memory still works.
    reg = Registered(s, 4096)
    reg.write(0, b"zero-copy")
    assert s.put_from(k, reg.ptr, 9) == 0
    assert s.get_into(k, reg.ptr + 100, 100) == 9
    assert reg.bytes(100, 9) == b"zero-copy"
    reg.close()


def test_large_values_round_trip(store, unique):
    for size in (1, 4095, 1 << 20, (5 << 20) + 3):
        data = os.urandom(size)
        k = unique(str(size))
        assert store.put(k, data) == 0
        assert store.get(k) == data


def test_empty_value_and_bad_keys_are_refused(store):
    assert store.put("", b"v") < 0
    assert store.put("empty-value", b"") < 0
    assert store.is_exist("empty-value") == 0


# ---- batches ------------------------------------------------------------------------

def test_batch_is_exist_mixed(store, unique):
    keys = [unique(f"e{i}") for i in range(20)]
    assert store.put_batch(keys[:10], [b"v"] * 10) == 0
    res = store.batch_is_exist(keys)
    assert res == [1] * 10 + [0] * 10
    assert store.batch_is_exist([]) == []
    assert store.batch_is_exist([keys[0]]) == [1]


def test_put_batch_get_batch(store, unique):
    keys = [unique(f"b{i}") for i in range(8)]
    vals = [os.urandom(100 * (i + 1)) for i in range(8)]
    assert store.put_batch(keys, vals) == 0
    assert store.get_batch(keys + [unique("missing")]) == vals + [b""]
    assert store.put_batch(keys[:2], [b"x"]) < 0, "length mismatch"
    assert store.get_batch([]) == []
    assert [r for r in store.batch_remove(keys, force=True)] == [0] * 8


def test_get_buffer_handles(store, unique):
    keys = [unique("g1"), unique("g2")]
    assert store.put_batch(keys, [b"one" * 100, b"two" * 200]) == 0
    h = store.get_buffer(keys[0])
    assert isinstance(h, BufferHandle) and h.size() == 300 and bytes(memoryview(h)) == b"one" * 100
    hs = store.batch_get_buffer([keys[1], unique("none")])
    assert hs[0].size() == 600 and hs[1] is None
    assert store.get_buffer(unique("none")) is None


def test_remove_by_regex_and_remove_all(store, unique):
    prefix = unique("rx")
    keys = [f"{prefix}-{i}" for i in range(5)] + [f"{prefix}-keep"]
    assert store.put_batch(keys, [b"v"] * 6) == 0
    import re

    assert store.remove_by_regex("^" + re.escape(prefix) + r"-\d$") == 5
    assert store.batch_is_exist(keys) == [0] * 5 + [1]
    assert store.remove_all() >= 1
    assert store.is_exist(keys[-1]) == 0


# ---- zero copy ----------------------------------------------------------------------

def test_put_from_get_into(store, unique):
    data = b"Hello, Zero-Copy World! " * 1000
    reg = Registered(store, len(data) + 1024)
    reg.write(0, data)
    k = unique("zc")
    assert store.put_from(k, reg.ptr, len(data)) == 0
    assert store.get(k) == data
    ctypes.memset(reg.ptr, 0, reg.size)
    assert store.get_into(k, reg.ptr, reg.size) == len(data)
    assert reg.bytes(0, len(data)) == data
    small = Registered(store, len(data) // 2)
    assert store.get_into(k, small.ptr, small.size) < 0, "buffer smaller than the object"
    small.close()
    reg.close()


def test_unregistered_memory_is_refused(store, unique):
    k = unique("unreg")
    assert store.put(k, b"data") == 0
    stray = (ctypes.c_ubyte * 64)()
    assert store.get_into(k, ctypes.addressof(stray), 64) < 0
    assert store.put_from(unique("x"), ctypes.addressof(stray), 4) < 0
    assert bytes(stray[:4]) == b"\0\0\0\0"
    reg = Registered(store, 64)
    # Straddling the end of a registered buffer is refused too.
    assert store.get_into(k, reg.ptr + 62, 4) < 0
    reg.close()
    assert store.get_into(k, reg.ptr, 64) < 0, "unregistered again"


def test_batch_get_into_and_batch_put_from(store, unique):
    spacing = 1 << 20
    data = [os.urandom(2300), os.urandom(4600), os.urandom(3500)]
    keys = [unique(f"bp{i}") for i in range(3)]
    reg = Registered(store, spacing * 3)
    ptrs = [reg.ptr + i * spacing for i in range(3)]
    for p, d in zip(ptrs, data):
        ctypes.memmove(p, d, len(d))
    assert store.batch_put_from(keys, ptrs, [len(d) for d in data]) == [0, 0, 0]
    assert store.get_batch(keys) == data
    ctypes.memset(reg.ptr, 0, reg.size)
    res = store.batch_get_into(keys + [unique("absent")], ptrs + [reg.ptr + 100], [spacing] * 3 + [10])
    assert res[:3] == [len(d) for d in data] and res[3] == OBJECT_NOT_FOUND
    for p, d in zip(ptrs, data):
        assert reg.bytes(p - reg.ptr, len(d)) == d
    mism = store.batch_get_into(keys[:2], ptrs, [spacing] * 3)
    assert len(mism) == 2 and all(r < 0 for r in mism)
    mism = store.batch_put_from(keys[:2], ptrs, [10] * 3)
    assert len(mism) == 2 and all(r < 0 for r in mism)
    assert store.batch_get_into([], [], []) == []
    assert store.batch_put_from([], [], []) == []
    reg.close()


def test_upsert_from_forms(store, unique):
    reg = Registered(store, 8192)
    reg.write(0, b"A" * 100)
    reg.write(4096, b"B" * 50)
    k = unique("uf")
    assert store.upsert_from(k, reg.ptr, 100) == 0
    assert store.upsert_from(k, reg.ptr + 4096, 50) == 0
    assert store.get(k) == b"B" * 50
    assert store.batch_upsert_from([k, unique("uf2")], [reg.ptr, reg.ptr + 4096], [10, 20]) == [0, 0]
    assert store.get(k) == b"A" * 10
    reg.close()


# ---- config objects -----------------------------------------------------------------

def test_replicate_config_properties_and_type_checks():
    c = ReplicateConfig()
    assert (c.replica_num, c.with_soft_pin, c.preferred_segment, c.preferred_segments) == (1, False, "", [])
    assert c.soft_pin_ttl_ms is None and c.soft_pin_action == SoftPinAction.PRESERVE
    c.replica_num = 3
    c.with_soft_pin = True
    c.preferred_segment = "node1:12345"
    c.preferred_segments = ["a:1", "b:2"]
    c.soft_pin_ttl_ms = 5000
    assert c.replica_num == 3 and c.with_soft_pin and c.soft_pin_action == SoftPinAction.ENABLE
    assert c.preferred_segment == "node1:12345" and c.preferred_segments == ["a:1", "b:2"]
    assert c.soft_pin_ttl_ms == 5000
    assert "3" in str(c)
    c.soft_pin_ttl_ms = None
    assert c.soft_pin_ttl_ms is None
    for bad in (-1, 1.5, "10"):
        with pytest.raises(TypeError):
            c.soft_pin_ttl_ms = bad
        with pytest.raises(TypeError):
            c.replica_num = bad
    with pytest.raises(TypeError):
        c.with_soft_pin = "yes"
    c.soft_pin_action = SoftPinAction.DISABLE
    assert not c.with_soft_pin
    assert [int(a) for a in (SoftPinAction.PRESERVE, SoftPinAction.ENABLE, SoftPinAction.DISABLE)] == [0, 1, 2]


def test_put_honours_preferred_segment(make_store, unique):
    a, b = make_store(), make_store()
    c = ReplicateConfig()
    c.preferred_segment = b.get_hostname()
    k = unique("pref")
    assert a.put(k, os.urandom(4096), config=c) == 0
    assert a.is_exist(k) == 1


# ---- lifecycle ----------------------------------------------------------------------

def test_health_close_and_setup_again(cluster, unique):
    s = MooncakeDistributedStore()
    assert s.health_check() == 1
    assert s.setup(*cluster.client_args()) == 0
    assert s.health_check() == 0
    k = unique("teardown")
    assert s.put(k, b"Hello") == 0
    assert s.close() == 0
    assert s.health_check() == 1
    assert s.close() == 0, "close is idempotent"
    assert s.setup(*cluster.client_args()) == 0
    assert s.get(k) == b"", "objects on the closed client's segment are gone"
    assert s.put(k, b"Hello") == 0 and s.get(k) == b"Hello"
    s.close()


def test_concurrent_threads(store, unique):
    errors = []
    value = os.urandom(256 << 10)

    def worker(t):
        try:
            keys = [unique(f"t{t}-{i}") for i in range(20)]
            for k in keys:
                assert store.put(k, value) == 0
            for k in keys:
                assert store.get(k) == value
        except AssertionError as e:  # reported below
            errors.append(f"thread {t}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def test_blocking_calls_release_the_gil():
    """setup() against a silent 'master' served by a Python thread: the thread
    can only run its Python code after accept() while setup is still blocked
    if setup released the GIL."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    state = {"setup_returned": False, "seen_during_setup": None}

    def fake_master():
        conn, _ = srv.accept()
        state["seen_during_setup"] = not state["setup_returned"]
        conn.close()          # setup fails promptly once we hang up
        srv.close()

    t = threading.Thread(target=fake_master)
    t.start()
    s = MooncakeDistributedStore()
    # A segment to mount means setup must wait for the master's answer.
    rc = s.setup("127.0.0.1", "P2PHANDSHAKE", 1 << 20, 1 << 20, "tcp", "", f"127.0.0.1:{port}")
    state["setup_returned"] = True
    t.join(timeout=60)
    assert rc < 0
    assert state["seen_during_setup"] is True


def test_init_all_takes_the_rest_from_the_environment(cluster, monkeypatch, unique):
    monkeypatch.delenv("MOONCAKE_CONFIG_PATH", raising=False)
    monkeypatch.setenv("MOONCAKE_MASTER", cluster.master_addr)
    monkeypatch.setenv("MOONCAKE_TE_META_DATA_SERVER", cluster.metadata_url)
    monkeypatch.setenv("MOONCAKE_LOCAL_BUFFER_SIZE", "8MB")
    s = MooncakeDistributedStore()
    try:
        assert s.init_all("tcp", "", 8 << 20) == 0
        k = unique("init_all")
        assert s.put(k, b"v") == 0 and s.get(k) == b"v"
    finally:
        s.close()


def test_config_dict_accepts_the_config_file_spellings(cluster):
    s = MooncakeDistributedStore()
    d = config_dict(cluster)
    d["master_server_address"] = d.pop("master_server_addr")
    d["device_name"] = d.pop("rdma_devices")
    try:
        assert s.setup(config=d) == 0
    finally:
        s.close()


def test_dead_master_is_reported_not_hung(tmp_path, unique):
    from conftest import start_master, stop

    own = start_master(tmp_path / "master.log")
    s = MooncakeDistributedStore()
    try:
        assert s.setup(*own.client_args()) == 0
        k = unique("before")
        assert s.put(k, b"v") == 0
        assert s.health_check() == 0
        stop(own.proc)
        assert s.health_check() == 2
        assert s.put(unique("after"), b"v") < 0
        assert s.get(k) == b""
        assert s.is_exist(k) < 0
    finally:
        stop(own.proc)
        s.close()
