"""``concat_arrays_into``: copy a run of C-contiguous arrays back to back into
raw memory (the reference's ``mooncake._fast_copy`` helper for staging many
small tensors into one registered buffer). Each array moves with one
``memmove``; nothing is written unless every array fits.
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional, Sequence


def _address(mv: memoryview) -> Optional[int]:
    if mv.readonly or mv.nbytes == 0:
        return None
    return ctypes.addressof(ctypes.c_char.from_buffer(mv.cast("B")))


def concat_arrays_into(arrays: Sequence[Any], dst_ptr: int, dst_size: int, start: int = 0,
                       count: Optional[int] = None) -> int:
    """Copy ``arrays[start:start + count]`` (all of them from ``start`` when
    ``count`` is None) into ``[dst_ptr, dst_ptr + dst_size)``; the bytes copied.
    ValueError for a non-contiguous array, a bad range or too small a destination."""
    if start < 0 or (count is not None and count < 0) or start > len(arrays):
        raise ValueError("invalid array range")
    chosen = arrays[start:] if count is None else arrays[start:start + count]
    if count is not None and len(chosen) != count:
        raise ValueError("invalid array range")
    views = []
    for a in chosen:
        mv = memoryview(a)
        if not mv.c_contiguous:
            raise ValueError("source arrays must be C-contiguous")
        views.append(mv)
    total = sum(mv.nbytes for mv in views)
    if total > dst_size:
        raise ValueError(f"destination buffer too small: need {total} bytes, have {dst_size}")
    if total and not dst_ptr:
        raise ValueError("null destination")
    off = 0
    for mv in views:
        n = mv.nbytes
        if n:
            src = _address(mv)
            if src is None:
                ctypes.memmove(dst_ptr + off, mv.tobytes(), n)
            else:
                ctypes.memmove(dst_ptr + off, src, n)
        off += n
    return total
