"""Tensor <-> bytes framing for put_tensor/get_tensor.

One object holds a small header then the tensor's raw bytes:
``b"MCT1"``, framework (u8: 0 numpy, 1 torch), dtype name length (u8),
dtype name (ascii), ndim (u8), ndim little-endian u64 dims, data.
The data is the C-contiguous element bytes, so a reader needs nothing but
the header to rebuild dtype and shape.
"""

from __future__ import annotations

import struct
from typing import Any, List, Optional, Tuple

MAGIC = b"MCT1"
NUMPY, TORCH = 0, 1


def _torch():
    try:
        import torch  # noqa: F401

        return torch
    except ImportError:
        return None


def _numpy():
    import numpy

    return numpy


def encode(tensor: Any) -> Tuple[bytes, Any]:
    """(header, data) where data is a bytes-like view of the elements."""
    torch = _torch()
    if torch is not None and isinstance(tensor, torch.Tensor):
        t = tensor.detach().cpu().contiguous()
        dtype = str(t.dtype).replace("torch.", "")
        shape = tuple(t.shape)
        data = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        kind = TORCH
    else:
        np = _numpy()
        a = np.asarray(tensor)
        if not a.flags.c_contiguous:
            a = a.copy(order="C")  # keeps 0-d shapes, unlike ascontiguousarray
        if a.dtype.hasobject:
            raise TypeError("object arrays cannot be stored as tensors")
        dtype = a.dtype.str
        shape = a.shape
        data = a.reshape(-1).view(np.uint8)
        kind = NUMPY
    name = dtype.encode("ascii")
    if len(name) > 255 or len(shape) > 255:
        raise ValueError("dtype name or rank too large")
    header = MAGIC + struct.pack("<BB", kind, len(name)) + name + struct.pack(f"<B{len(shape)}Q", len(shape), *shape)
    return header, data


def decode(blob: bytes) -> Optional[Any]:
    if len(blob) < 7 or blob[:4] != MAGIC:
        return None
    kind, nlen = struct.unpack_from("<BB", blob, 4)
    pos = 6
    dtype = blob[pos : pos + nlen].decode("ascii")
    pos += nlen
    (ndim,) = struct.unpack_from("<B", blob, pos)
    pos += 1
    shape = struct.unpack_from(f"<{ndim}Q", blob, pos)
    pos += 8 * ndim
    payload = bytearray(memoryview(blob)[pos:])
    np = _numpy()
    if kind == TORCH:
        torch = _torch()
        if torch is None:
            raise RuntimeError("this object holds a torch tensor but torch is not installed")
        tdtype = getattr(torch, dtype)
        if not payload:
            return torch.empty(shape, dtype=tdtype)
        return torch.frombuffer(payload, dtype=torch.uint8).view(tdtype).reshape(shape)
    return np.frombuffer(payload, dtype=np.dtype(dtype)).reshape(shape)


def decode_many(blobs: List[bytes]) -> List[Optional[Any]]:
    return [decode(b) if b else None for b in blobs]


def header_len(blob: Any) -> Optional[int]:
    """Bytes of the header at the start of ``blob`` (a buffer), None if not one."""
    mv = memoryview(blob).cast("B")
    if len(mv) < 7 or bytes(mv[:4]) != MAGIC:
        return None
    nlen = mv[5]
    ndim = mv[6 + nlen]
    return 7 + nlen + 8 * ndim


def decode_view(buf: Any) -> Optional[Any]:
    """A numpy array (or torch tensor) over ``buf`` itself, no copy."""
    n = header_len(buf)
    if n is None:
        return None
    head = bytes(memoryview(buf).cast("B")[:n])
    kind, nlen = struct.unpack_from("<BB", head, 4)
    dtype = head[6 : 6 + nlen].decode("ascii")
    (ndim,) = struct.unpack_from("<B", head, 6 + nlen)
    shape = struct.unpack_from(f"<{ndim}Q", head, 7 + nlen)
    data = memoryview(buf).cast("B")[n:]
    if kind == TORCH:
        torch = _torch()
        if torch is None:
            raise RuntimeError("this object holds a torch tensor but torch is not installed")
        tdtype = getattr(torch, dtype)
        if not len(data):
            return torch.empty(shape, dtype=tdtype)
        return torch.frombuffer(data, dtype=torch.uint8).view(tdtype).reshape(shape)
    np = _numpy()
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)


def chunk(tensor: Any, parts: int, dim: int) -> List[Any]:
    """``parts`` pieces along ``dim`` as torch.chunk cuts them (ceil-sized, the
    last may be smaller); numpy arrays and torch tensors alike."""
    if parts < 1:
        raise ValueError("tp_size must be positive")
    n = tensor.shape[dim]
    step = -(-n // parts) if n else 0
    out = []
    for i in range(parts):
        lo, hi = min(i * step, n), min((i + 1) * step, n)
        index = [slice(None)] * len(tensor.shape)
        index[dim] = slice(lo, hi)
        out.append(tensor[tuple(index)])
    return out
