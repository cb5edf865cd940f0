"""``get_into_ranges``: copy byte ranges of several objects into registered buffers.

The call is buffer-major: for buffer ``b`` and its ``i``-th key, range ``r``
copies ``sizes[b][i][r]`` bytes from offset ``src_offsets[b][i][r]`` of the
object into ``buffer_ptrs[b] + dst_offsets[b][i][r]``. The answer has the same
nesting: bytes copied per range, or a negative code.

This module only checks the request's shape and flattens it; the store's native
``_read_ranges`` moves the bytes, transferring only the requested ranges of
each object (not whole objects).

Invariants: a range is written only if it lies inside the object and inside
one buffer registered on the store (checked natively, before anything moves);
a key whose three range lists differ in length gets one INVALID_PARAMS and
nothing is written for it; negative (or beyond 64-bit) offsets or sizes are
INVALID_PARAMS; a
missing key gets its error code for each of its ranges. Other keys and ranges
are unaffected.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

INVALID_PARAMS = -600
_LIMIT = 1 << 64  # addresses, offsets and sizes are 64-bit

# read(keys, dst_addrs, src_offsets, sizes) -> one result per range
Reader = Callable[[List[str], List[int], List[int], List[int]], List[int]]


def get_into_ranges(
    read: Reader,
    buffer_ptrs: Sequence[int],
    keys: Sequence[Sequence[str]],
    dst_offsets: Sequence[Sequence[Sequence[int]]],
    src_offsets: Sequence[Sequence[Sequence[int]]],
    sizes: Sequence[Sequence[Sequence[int]]],
) -> List[List[List[int]]]:
    n = len(buffer_ptrs)
    if not (len(keys) == len(dst_offsets) == len(src_offsets) == len(sizes) == n):
        return [[[INVALID_PARAMS] for _ in ks] for ks in keys]
    out: List[List[List[int]]] = []
    # Flat request, and where each flat result goes: (buffer, key, range).
    flat_keys: List[str] = []
    flat_dst: List[int] = []
    flat_src: List[int] = []
    flat_len: List[int] = []
    slots: List[Tuple[int, int, int]] = []
    for b, base in enumerate(buffer_ptrs):
        ks, ds, ss, ls = keys[b], dst_offsets[b], src_offsets[b], sizes[b]
        if not (len(ks) == len(ds) == len(ss) == len(ls)):
            out.append([[INVALID_PARAMS] for _ in ks])
            continue
        per_buffer: List[List[int]] = []
        for i, key in enumerate(ks):
            d, s, ln = ds[i], ss[i], ls[i]
            if not (len(d) == len(s) == len(ln)):
                per_buffer.append([INVALID_PARAMS])
                continue
            res = [INVALID_PARAMS] * len(ln)
            for r, (dst, src, length) in enumerate(zip(d, s, ln)):
                if min(dst, src, length, base) < 0 or max(base + dst, src, length) >= _LIMIT:
                    continue
                flat_keys.append(key)
                flat_dst.append(base + dst)
                flat_src.append(src)
                flat_len.append(length)
                slots.append((b, i, r))
            per_buffer.append(res)
        out.append(per_buffer)
    if flat_keys:
        for (b, i, r), rc in zip(slots, read(flat_keys, flat_dst, flat_src, flat_len)):
            out[b][i][r] = rc
    return out
