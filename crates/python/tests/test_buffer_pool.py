"""BufferPool (= RegisteredBufferPool): registered host buffers lent and taken
back, bounded in bytes and leases; a lease's memory outlives its views; and
MooncakeHostMemAllocator's shared host memory."""

from __future__ import annotations

import gc
import threading

import pytest


def test_lease_memory_is_registered_and_bounded(store):
    from mooncake import BufferPool, RegisteredBufferPool

    assert BufferPool is RegisteredBufferPool
    pool = BufferPool(store, min_size_class=4096, alignment=4096, max_regions=1, block_on_exhaustion=False)
    lease = pool.acquire(1000)
    assert lease.size == 1000 and len(lease.buffer) == 1000 and lease.ptr % 4096 == 0
    # Registered: zero-copy calls accept it.
    lease.buffer[:5] = b"hello"
    assert store.put_from("pool-key", lease.ptr, 5) == 0
    with pytest.raises(RuntimeError, match="exhausted"):
        pool.acquire(1)
    with pytest.raises(RuntimeError, match="active leases"):
        pool.close()
    lease.release()
    with pytest.raises(RuntimeError, match="closed"):
        lease.release()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.acquire(1)


def test_views_keep_the_lease_and_waiters_wake(store):
    from mooncake.buffer_pool import BufferPool

    pool = BufferPool(store, 8192, min_size_class=4096, alignment=4096, max_regions=1)
    lease = pool.acquire(4)
    view = lease.buffer
    with pytest.raises(RuntimeError, match="exported views"):
        lease.release()
    got = []
    t = threading.Thread(target=lambda: got.append(pool.acquire(4, timeout=10)))
    t.start()
    del view
    gc.collect()
    lease.release()
    t.join(10)
    assert not t.is_alive() and got[0].size == 4
    with pytest.raises(RuntimeError, match="timed out"):
        pool.acquire(4, timeout=0.05)
    got[0].release()
    with pytest.raises(RuntimeError, match="capacity"):
        pool.acquire(1 << 40)
    with pytest.raises(RuntimeError, match="alignment"):
        BufferPool(store, alignment=12345)
    pool.close()


def test_pool_needs_a_set_up_store():
    from mooncake.buffer_pool import BufferPool
    from mooncake.store import MooncakeDistributedStore

    with pytest.raises(RuntimeError, match="not initialized|local buffer"):
        BufferPool(MooncakeDistributedStore())


def test_host_mem_allocator(store):
    import ctypes

    from mooncake.store import MooncakeHostMemAllocator

    a = MooncakeHostMemAllocator()
    ptr = a.alloc(1 << 20)
    assert ptr and ptr % 4096 == 0
    assert store.register_buffer(ptr, 1 << 20) == 0
    ctypes.memmove(ptr, b"shared", 6)
    assert store.put_from("host-mem-key", ptr, 6) == 0
    assert store.get("host-mem-key") == b"shared"
    assert store.unregister_buffer(ptr) == 0
    assert a.free(ptr) == 0 and a.free(ptr) == -1
    assert a.alloc(0) == 0


def test_concat_arrays_into_stages_a_run_of_arrays():
    import ctypes

    import numpy as np

    from mooncake._fast_copy import concat_arrays_into

    arrays = [np.arange(3, dtype=np.uint8), b"xyz", np.arange(4, dtype=np.int16)]
    dst = ctypes.create_string_buffer(32)
    assert concat_arrays_into(arrays, ctypes.addressof(dst), 32, 1, 2) == 3 + 8
    assert dst.raw[:11] == b"xyz" + np.arange(4, dtype=np.int16).tobytes()
    before = dst.raw
    with pytest.raises(ValueError, match="too small"):
        concat_arrays_into(arrays, ctypes.addressof(dst), 10)
    with pytest.raises(ValueError, match="C-contiguous"):
        concat_arrays_into([np.arange(8)[::2]], ctypes.addressof(dst), 32)
    assert dst.raw == before  # refusals write nothing
