"""The safetensors file format (an 8-byte little-endian header length, a JSON
header naming each tensor's dtype, shape and byte range, then the bytes), written
and read here without the ``safetensors`` package, for
``save_tensor_to_safetensor`` / ``load_tensor_from_safetensor``.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Any, Dict, Optional, Tuple

_log = logging.getLogger("mooncake")

# numpy dtype (kind, itemsize) / torch dtype name -> safetensors dtype.
_NUMPY = {
    ("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16",
    ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16", ("i", 1): "I8",
    ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8", ("b", 1): "BOOL",
}
_TORCH = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}
_TO_NUMPY = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_TO_TORCH = {v: k for k, v in _TORCH.items()}


def write(path: str, name: str, tensor: Any) -> None:
    """Write ``tensor`` (numpy array or torch tensor) as the one tensor ``name``."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and isinstance(tensor, torch.Tensor):
        t = tensor.detach().cpu().contiguous()
        code = _TORCH.get(str(t.dtype).replace("torch.", ""))
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        shape = list(t.shape)
    else:
        import numpy as np

        a = np.ascontiguousarray(tensor)
        code = _NUMPY.get((a.dtype.kind, a.dtype.itemsize))
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        shape = list(a.shape)
    if code is None:
        raise ValueError(f"dtype of {name!r} has no safetensors code")
    header = json.dumps({name: {"dtype": code, "shape": shape, "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.write(data)


def read(path: str, name: Optional[str]) -> Tuple[str, Any]:
    """(name, tensor) of ``name`` in the file, or of its first tensor (with a
    warning) when ``name`` is absent; a torch tensor when torch is installed."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file")
    (n,) = struct.unpack_from("<Q", blob)
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header runs past the end of the file")
    header: Dict[str, Any] = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    if not header:
        raise ValueError(f"{path}: no tensors")
    if name not in header:
        first = next(iter(header))
        if name is not None:
            _log.warning("load_tensor_from_safetensor: %r not in %s; using %r", name, path, first)
        name = first
    info = header[name]
    lo, hi = info["data_offsets"]
    data = blob[8 + n + lo:8 + n + hi]
    shape = tuple(info["shape"])
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and info["dtype"] in _TO_TORCH:
        dt = getattr(torch, _TO_TORCH[info["dtype"]])
        if not data:
            return name, torch.empty(shape, dtype=dt)
        return name, torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dt).reshape(shape)
    import numpy as np

    if info["dtype"] not in _TO_NUMPY:
        raise ValueError(f"{path}: dtype {info['dtype']} needs torch")
    return name, np.frombuffer(data, dtype=np.dtype(_TO_NUMPY[info["dtype"]])).reshape(shape).copy()
