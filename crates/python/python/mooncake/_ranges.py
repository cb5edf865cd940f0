"""``get_into_ranges``: copy byte ranges of several objects into registered buffers.

The call is buffer-major: for buffer ``b`` and its ``i``-th key, range ``r``
copies ``sizes[b][i][r]`` bytes from offset ``src_offsets[b][i][r]`` of the
object into ``buffer_ptrs[b] + dst_offsets[b][i][r]``. The answer has the same
nesting: bytes copied per range, or a negative code.

Invariants: a range is written only if it lies inside the object and inside
one registered buffer (the store's ``register_buffer`` bookkeeping, passed in
as ``registered``); a key whose three range lists differ in length gets one
INVALID_PARAMS and nothing is written for it; a missing key gets its error
code for each of its ranges. Other keys and ranges are unaffected.
"""

from __future__ import annotations

import ctypes
from typing import Callable, Dict, List, Sequence, Tuple

INVALID_PARAMS = -600


def _inside(registered: Dict[int, int], start: int, length: int) -> bool:
    return any(p <= start and start + length <= p + n for p, n in registered.items())


def get_into_ranges(
    fetch: Callable[[str], Tuple[int, bytes]],
    registered: Dict[int, int],
    buffer_ptrs: Sequence[int],
    keys: Sequence[Sequence[str]],
    dst_offsets: Sequence[Sequence[Sequence[int]]],
    src_offsets: Sequence[Sequence[Sequence[int]]],
    sizes: Sequence[Sequence[Sequence[int]]],
) -> List[List[List[int]]]:
    """`fetch(key)` gives (0, bytes) or (negative code, b"")."""
    n = len(buffer_ptrs)
    if not (len(keys) == len(dst_offsets) == len(src_offsets) == len(sizes) == n):
        return [[[INVALID_PARAMS] for _ in ks] for ks in keys]
    cache: Dict[str, Tuple[int, bytes]] = {}
    out: List[List[List[int]]] = []
    for b, base in enumerate(buffer_ptrs):
        per_buffer: List[List[int]] = []
        ks, ds, ss, ls = keys[b], dst_offsets[b], src_offsets[b], sizes[b]
        if not (len(ks) == len(ds) == len(ss) == len(ls)):
            out.append([[INVALID_PARAMS] for _ in ks])
            continue
        for i, key in enumerate(ks):
            d, s, ln = ds[i], ss[i], ls[i]
            if not (len(d) == len(s) == len(ln)):
                per_buffer.append([INVALID_PARAMS])
                continue
            if not ln:
                per_buffer.append([])
                continue
            if key not in cache:
                cache[key] = fetch(key)
            rc, data = cache[key]
            res: List[int] = []
            for dst, src, length in zip(d, s, ln):
                if rc < 0:
                    res.append(rc)
                elif min(dst, src, length) < 0 or src + length > len(data) or not _inside(registered, base + dst, length):
                    res.append(INVALID_PARAMS)
                else:
                    ctypes.memmove(base + dst, data[src : src + length], length)
                    res.append(length)
            per_buffer.append(res)
        out.append(per_buffer)
    return out
