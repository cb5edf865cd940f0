"""mooncake.engine.TransferEngine: the reference's initiator/target behaviours
(random single writes and reads, batch sync and async transfers with status
polling) against a target in another process, plus registration, managed
buffers and refusal of bad addresses."""

from __future__ import annotations

import ctypes
import os
import random

import pytest

from conftest import free_port, run_python
from mooncake.engine import TransferEngine, TransferOpcode

TARGET = r"""
import sys
from mooncake.engine import TransferEngine
e = TransferEngine()
rc = e.initialize(sys.argv[1], sys.argv[2], "tcp", "")
name = e.get_local_segment_name()
print("ready", rc, name, e.get_first_buffer_address(name), flush=True)
sys.stdin.read()   # serve until the test closes our stdin
"""


@pytest.fixture(scope="module")
def target(cluster):
    """A TransferEngine serving its managed pool from another process."""
    name = f"127.0.0.1:{free_port()}"
    proc = run_python(TARGET, name, cluster.metadata_url)
    try:
        line = proc.stdout.readline().split()
        assert line[:2] == ["ready", "0"], (line, proc.stderr.read() if proc.poll() is not None else "")
        assert line[2] == name
        yield name, int(line[3])
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()


@pytest.fixture(scope="module")
def initiator(cluster):
    e = TransferEngine()
    assert e.initialize(f"127.0.0.1:{free_port()}", cluster.metadata_url, "tcp", "") == 0
    yield e
    e.shutdown()


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def test_initialize_reports_port_and_first_buffer(initiator):
    name = initiator.get_local_segment_name()
    assert initiator.get_rpc_port() == int(name.rsplit(":", 1)[1])
    assert initiator.get_first_buffer_address(name) != 0


def test_single_write_then_read_round_trips(initiator, target):
    peer, dst = target
    src = initiator.get_first_buffer_address(initiator.get_local_segment_name())
    for i in range(50):
        data = random_bytes(random.randint(16, 256))
        assert initiator.write_bytes_to_buffer(src, data, len(data)) == 0
        assert initiator.transfer_sync_write(peer, src, dst, len(data)) == 0
        assert initiator.write_bytes_to_buffer(src, bytes(len(data)), len(data)) == 0
        assert initiator.transfer_sync_read(peer, src, dst, len(data)) == 0
        assert initiator.read_bytes_from_buffer(src, len(data)) == data, f"round {i}"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_batches_of_one_hundred(initiator, target, mode):
    peer, dst_base = target
    src_base = initiator.get_first_buffer_address(initiator.get_local_segment_name())
    srcs = [src_base + 1024 * i for i in range(100)]
    dsts = [dst_base + 1024 * i for i in range(100)]
    for round_ in range(3):
        data = [random_bytes(random.randint(32, 128)) for _ in range(100)]
        lens = [len(d) for d in data]
        for s, d in zip(srcs, data):
            assert initiator.write_bytes_to_buffer(s, d, len(d)) == 0
        if mode == "sync":
            assert initiator.batch_transfer_sync_write(peer, srcs, dsts, lens) == 0
        else:
            bid = initiator.batch_transfer_async_write(peer, srcs, dsts, lens)
            assert bid != 0
            assert initiator.get_batch_transfer_status([bid]) == 0
        for s, n in zip(srcs, lens):
            initiator.write_bytes_to_buffer(s, bytes(n), n)
        if mode == "sync":
            assert initiator.batch_transfer_sync_read(peer, srcs, dsts, lens) == 0
        else:
            bid = initiator.batch_transfer_async_read(peer, srcs, dsts, lens)
            assert bid != 0
            assert initiator.get_batch_transfer_status([bid]) == 0
        for s, d in zip(srcs, data):
            assert initiator.read_bytes_from_buffer(s, len(d)) == d, f"round {round_}"


def test_opcode_forms_and_submit_check(initiator, target):
    peer, dst = target
    src = initiator.allocate_managed_buffer(4096)
    assert src != 0
    payload = random_bytes(4096)
    initiator.write_bytes_to_buffer(src, payload, len(payload))
    assert TransferEngine.TransferOpcode is TransferOpcode
    assert int(TransferOpcode.Read) == 0 and int(TransferOpcode.Write) == 1
    assert initiator.transfer_sync(peer, src, dst + 8192, 4096, TransferOpcode.Write) == 0
    initiator.write_bytes_to_buffer(src, bytes(4096), 4096)
    bid = initiator.batch_transfer_async(peer, [src], [dst + 8192], [4096], TransferOpcode.Read)
    assert initiator.get_batch_transfer_status([bid]) == 0
    assert initiator.read_bytes_from_buffer(src, 4096) == payload
    bid = initiator.transfer_submit_write(peer, src, dst + 16384, 4096)
    assert bid > 0
    status = 0
    for _ in range(10_000):
        status = initiator.transfer_check_status(bid)
        if status != 0:
            break
    assert status in (0, 1)  # in flight or done; never failed
    assert initiator.free_managed_buffer(src, 4096) == 0
    assert initiator.free_managed_buffer(src, 4096) == -1, "double free is refused"


def test_caller_memory_registration(initiator, target):
    peer, dst = target
    buf = (ctypes.c_ubyte * 8192)()
    addr = ctypes.addressof(buf)
    assert initiator.register_memory(addr, 8192) == 0
    ctypes.memmove(addr, b"registered by caller", 20)
    assert initiator.transfer_sync_write(peer, addr, dst + 65536, 20) == 0
    ctypes.memset(addr, 0, 8192)
    assert initiator.transfer_sync_read(peer, addr + 100, dst + 65536, 20) == 0
    assert bytes(buf[100:120]) == b"registered by caller"
    assert initiator.unregister_memory(addr) == 0
    assert initiator.unregister_memory(addr) != 0
    more = [(ctypes.c_ubyte * 4096)() for _ in range(3)]
    addrs = [ctypes.addressof(b) for b in more]
    assert initiator.batch_register_memory(addrs, [4096] * 3) == 0
    assert initiator.batch_unregister_memory(addrs) == 0


def test_large_managed_buffer_gets_its_own_mapping(initiator):
    pool = initiator.get_first_buffer_address(initiator.get_local_segment_name())
    big = initiator.allocate_managed_buffer(2 << 30)  # larger than the 1 GiB pool
    assert big != 0 and not (pool <= big < pool + (1 << 30))
    initiator.write_bytes_to_buffer(big + (1 << 30), b"far", 3)
    assert initiator.read_bytes_from_buffer(big + (1 << 30), 3) == b"far"
    assert initiator.free_managed_buffer(big, 2 << 30) == 0


def test_bad_addresses_are_refused_and_change_nothing(initiator, target):
    peer, dst = target
    src = initiator.get_first_buffer_address(initiator.get_local_segment_name())
    initiator.write_bytes_to_buffer(src, b"keep", 4)
    assert initiator.transfer_sync_write(peer, src, dst, 4) == 0
    # Remote range outside every registered buffer of the target.
    assert initiator.transfer_sync_write(peer, src, 4096, 4) == -1
    # Local source outside registered memory.
    stray = (ctypes.c_ubyte * 64)()
    assert initiator.transfer_sync_write(peer, ctypes.addressof(stray), dst, 4) == -1
    # Unknown peer; mismatched batch lists.
    assert initiator.transfer_sync_write("127.0.0.1:1", src, dst, 4) == -1
    assert initiator.batch_transfer_sync_write(peer, [src, src], [dst], [4, 4]) == -1
    assert initiator.batch_transfer_async_write(peer, [src], [dst], [4, 4]) == 0
    # The byte accessors only reach memory registered through the engine.
    with pytest.raises(ValueError):
        initiator.read_bytes_from_buffer(ctypes.addressof(stray), 4)
    assert initiator.write_bytes_to_buffer(ctypes.addressof(stray), b"x", 1) == -1
    initiator.write_bytes_to_buffer(src, bytes(4), 4)
    assert initiator.transfer_sync_read(peer, src, dst, 4) == 0
    assert initiator.read_bytes_from_buffer(src, 4) == b"keep"


def test_p2p_handshake_needs_no_metadata_server():
    a, b = TransferEngine(), TransferEngine()
    assert a.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    assert b.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    try:
        bn = b.get_local_segment_name()
        src = a.allocate_managed_buffer(1 << 20)
        dst = a.get_first_buffer_address(bn)
        data = random_bytes(1 << 20)
        a.write_bytes_to_buffer(src, data, len(data))
        assert a.transfer_sync_write(bn, src, dst, len(data)) == 0
        assert b.read_bytes_from_buffer(dst, len(data)) == data
    finally:
        a.shutdown()
        b.shutdown()


def test_initialize_failures_return_minus_one():
    e = TransferEngine()
    assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "carrier-pigeon", "") == -1
    assert e.initialize("127.0.0.1", "bogus://x", "tcp", "") == -1
    assert e.get_rpc_port() == -1
    assert e.transfer_sync_write("127.0.0.1:1", 1, 1, 1) == -1
    assert e.allocate_managed_buffer(10) == 0


def test_topology_and_cuda_names_without_a_gpu(cluster):
    """The GPU API exists everywhere; without CUDA it says so and refuses cleanly
    (tests/test_gpu.py covers a GPU)."""
    import json

    e = TransferEngine()
    name = f"127.0.0.1:{free_port()}"
    assert e.initialize(name, cluster.metadata_url, "tcp", "") == 0
    topo = json.loads(e.get_local_topology())
    assert "cpu:0" in topo
    if any(k.startswith("cuda:") for k in topo):
        pytest.skip("CUDA present: covered by test_gpu.py")
    buf = ctypes.create_string_buffer(4096)
    addr = ctypes.addressof(buf)
    assert e.register_memory(addr, 4096, "cuda:0") != 0, "cuda:0 without CUDA is refused"
    assert e.register_memory(addr, 4096) == 0
    assert e.transfer_write_on_cuda(name, addr, addr, 16, 0) == -1
    assert e.unregister_memory(addr) == 0
