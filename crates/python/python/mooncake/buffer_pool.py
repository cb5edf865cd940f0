"""Pools of registered host buffers for zero-copy store calls (``BufferPool``,
also exported as ``RegisteredBufferPool``).

``pool.acquire(size)`` lends a buffer of at least ``size`` bytes that is registered
with the store, so ``put_from`` / ``get_into`` / ``batch_*_multi_buffers`` on it are
zero-copy; ``lease.buffer`` is a writable ``memoryview`` of exactly ``size`` bytes,
``lease.ptr`` its address. ``lease.release()`` (or leaving a ``with`` block, or
dropping the lease) gives it back.

Each lease's memory is its own anonymous mapping (page aligned, so any alignment up
to the page size holds; larger alignments are honoured by over-mapping), registered
with the store for the lease's lifetime and unregistered and unmapped on release.
The pool bounds the bytes and leases out at once: ``max_bytes`` (default twice the
store's ``local_buffer_size``) and ``max_regions``. When a request does not fit, it
waits for a release (``block=True``, optionally up to ``timeout`` seconds) or fails
at once with ``RuntimeError("buffer pool is exhausted")``.

Invariant: a lease's memory stays mapped and registered while any view of it
exists; ``release`` refuses (``RuntimeError``) while ``lease.buffer`` views are
alive, and the memory is unmapped only after the last one is gone.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading
import time
from typing import Any, Optional

__all__ = [
    "BufferPool",
    "RegisteredBufferPool",
    "BufferLease",
    "RegisteredBufferLease",
    "BufferLeaseView",
    "RegisteredBufferLeaseView",
]

_PAGE = mmap.PAGESIZE


class BufferLeaseView:
    """The memory of a lease as a buffer-protocol object (``.buffer``)."""

    def __init__(self, lease: "BufferLease") -> None:
        self._lease = lease

    @property
    def buffer(self) -> memoryview:
        return self._lease.buffer


class _Region:
    """One anonymous mapping registered with the store."""

    def __init__(self, store: Any, size: int, alignment: int) -> None:
        extra = alignment - _PAGE if alignment > _PAGE else 0
        self.map = mmap.mmap(-1, size + extra)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.ptr = (base + alignment - 1) // alignment * alignment if extra else base
        self.size = size
        # The object every view of this lease points at: its reference count
        # tells whether views are alive.
        self.array = (ctypes.c_char * size).from_address(self.ptr)
        self.store = store
        rc = store.register_buffer(self.ptr, max(size, 1))
        if rc != 0:
            self.map.close()
            raise RuntimeError(f"buffer registration failed ({rc})")

    def views_alive(self) -> bool:
        # Held here (self.array) and by getrefcount's argument; more = views.
        return sys.getrefcount(self.array) > 2

    def free(self) -> None:
        self.store.unregister_buffer(self.ptr)
        del self.array
        try:
            self.map.close()
        except BufferError:  # a view escaped: leave the mapping to the GC
            pass


class BufferLease:
    """A buffer lent by a :class:`BufferPool`."""

    def __init__(self, pool: "BufferPool", region: _Region, size: int) -> None:
        self._pool: Optional[BufferPool] = pool
        self._region: Optional[_Region] = region
        self._size = size

    def _live(self) -> _Region:
        if self._region is None:
            raise RuntimeError("buffer lease is closed")
        return self._region

    @property
    def ptr(self) -> int:
        return self._live().ptr

    @property
    def size(self) -> int:
        return self._size

    @property
    def buffer(self) -> memoryview:
        return memoryview(self._live().array).cast("B")[: self._size]

    def release(self) -> None:
        region = self._live()
        if region.views_alive():
            raise RuntimeError("cannot release buffer while exported views exist")
        pool, self._pool, self._region = self._pool, None, None
        assert pool is not None
        pool._give_back(region)

    def __enter__(self) -> "BufferLease":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._region is not None:
            self.release()

    def __del__(self) -> None:
        if getattr(self, "_region", None) is not None:
            try:
                self.release()
            except Exception:  # views alive at interpreter exit: nothing to do
                pass


class BufferPool:
    """Registered host buffers on demand, bounded in bytes and in count."""

    def __init__(
        self,
        store: Any,
        max_bytes: int = 0,
        min_size_class: int = 64 * 1024,
        max_size_class: Optional[int] = None,
        alignment: int = 8 * 1024 * 1024,
        block_on_exhaustion: bool = True,
        default_timeout: Optional[float] = None,
        max_regions: Optional[int] = None,
        prewarm_size: Optional[int] = None,
        prewarm_count: int = 0,
    ) -> None:
        if store is None or not hasattr(store, "register_buffer"):
            raise RuntimeError("BufferPool needs a MooncakeDistributedStore")
        if min_size_class <= 0 or alignment <= 0:
            raise RuntimeError("min_size_class and alignment must be positive")
        if alignment < ctypes.sizeof(ctypes.c_void_p) or alignment & (alignment - 1):
            raise RuntimeError("alignment must be a power of two and at least sizeof(void*)")
        local = int(store._local_buffer_size()) if hasattr(store, "_local_buffer_size") else 0
        if store.health_check() == 1:
            raise RuntimeError("MooncakeDistributedStore is not initialized")
        if local <= 0:
            raise RuntimeError("BufferPool requires a store configured with a local buffer")
        self._store = store
        self._max_bytes = max(int(max_bytes), local) if max_bytes else 2 * local
        self._max_size_class = self._max_bytes if max_size_class is None else int(max_size_class)
        # Mappings are page aligned; a larger alignment is only worth its
        # over-mapping for leases big enough to care.
        self._alignment = alignment
        self._block = block_on_exhaustion
        self._timeout = default_timeout
        self._max_regions = max_regions
        self._cond = threading.Condition()
        self._bytes = 0
        self._active = 0
        self._closed = False

    # ---- lending -----------------------------------------------------------------
    def acquire(self, size: int, block: Optional[bool] = None, timeout: Optional[float] = None) -> BufferLease:
        size = int(size)
        if size < 0:
            raise RuntimeError("size must be non-negative")
        need = max(size, 1)
        if need > self._max_bytes:
            raise RuntimeError("requested buffer size exceeds pool capacity (overflow)")
        should_block = self._block if block is None else bool(block)
        wait = self._timeout if timeout is None else timeout
        if wait is not None and wait < 0:
            raise RuntimeError("timeout must be non-negative")
        deadline = None if wait is None else time.monotonic() + wait
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("buffer pool is closed")
                if self._fits(need):
                    self._bytes += need
                    self._active += 1
                    break
                if not should_block:
                    raise RuntimeError("buffer pool is exhausted")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RuntimeError("timed out waiting for buffer")
                self._cond.wait(left)  # releases the GIL while waiting
        align = self._alignment if need >= self._alignment else _PAGE
        try:
            region = _Region(self._store, need, align)
        except BaseException:
            with self._cond:
                self._bytes -= need
                self._active -= 1
                self._cond.notify_all()
            raise
        return BufferLease(self, region, size)

    def buffer(self, size: int, block: Optional[bool] = None, timeout: Optional[float] = None) -> BufferLease:
        return self.acquire(size, block, timeout)

    def prewarm(self, size: int, count: int) -> None:
        """Accepted for compatibility: leases are mapped on demand."""

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            if self._active:
                raise RuntimeError("cannot close buffer pool with active leases")
            self._closed = True

    # ---- internals ---------------------------------------------------------------
    def _fits(self, need: int) -> bool:
        if self._bytes + need > self._max_bytes:
            return False
        return self._max_regions is None or self._active < self._max_regions

    def _give_back(self, region: _Region) -> None:
        try:
            region.free()
        finally:
            with self._cond:
                self._bytes -= max(region.size, 1)
                self._active -= 1
                self._cond.notify_all()


RegisteredBufferPool = BufferPool
RegisteredBufferLease = BufferLease
RegisteredBufferLeaseView = BufferLeaseView
