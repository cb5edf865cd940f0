"""Host memory helpers of the reference's store module: ``MooncakeHostMemAllocator``
(what SGLang's standalone mode allocates its host KV pool with),
``bind_to_numa_node`` and the allocator function addresses.

``MooncakeHostMemAllocator().alloc(size)`` returns the address of ``size`` bytes of
zeroed, page-aligned shared memory (an anonymous shared mapping, so a process that
forks keeps seeing the same bytes), 0 when the mapping fails; ``free(ptr)`` unmaps
it (0, or -1 for an address it did not hand out). Register the memory with the
store (``register_buffer``) to use it for zero-copy calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import threading
from typing import Dict


class MooncakeHostMemAllocator:
    def __init__(self) -> None:
        self._maps: Dict[int, mmap.mmap] = {}
        self._lock = threading.Lock()

    def alloc(self, size: int) -> int:
        size = int(size)
        if size <= 0:
            return 0
        try:
            m = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        except (OSError, ValueError):
            return 0
        ptr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        with self._lock:
            self._maps[ptr] = m
        return ptr

    def free(self, ptr: int) -> int:
        with self._lock:
            m = self._maps.pop(int(ptr), None)
        if m is None:
            return -1
        try:
            m.close()
        except BufferError:  # a view of it is still alive: keep it mapped
            with self._lock:
                self._maps[int(ptr)] = m
            return -1
        return 0


def bind_to_numa_node(node: int) -> None:
    """Accepted for compatibility; this build does not bind threads to NUMA nodes."""


def _libc_addr(name: str) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return ctypes.cast(getattr(libc, name), ctypes.c_void_p).value or 0


def get_alloc_func_addr() -> int:
    """Address of the C allocator (``malloc``), for allocator plug-ins."""
    return _libc_addr("malloc")


def get_free_func_addr() -> int:
    """Address of the C deallocator (``free``)."""
    return _libc_addr("free")
