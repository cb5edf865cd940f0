"""P2P Store: share large read-mostly objects (checkpoints, RL weights)
between many nodes; every reader becomes a source (``from mooncake.p2p import P2PStore``).

    store = P2PStore("etcd://10.0.0.1:2379", local_hostname="10.0.0.2")
    store.register("ckpt", [weights])                 # numpy / torch CPU / bytearray
    other.get_replica("ckpt", [np.empty_like(weights)])
    store.list("ck")                                   # [{"name": "ckpt", ...}]
    other.delete_replica("ckpt"); store.unregister("ckpt"); store.close()

Buffers are C-contiguous numpy arrays, CPU torch tensors, bytearrays,
memoryviews, or raw ``(address, length)`` pairs of caller memory. They stay
referenced (and registered with the transfer engine) while served.
Errors raise ``KeyError`` (unknown name), ``ValueError`` (bad input) or
``RuntimeError``.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Sequence

from mooncake._mooncake import P2PStore as _P2PStore

__all__ = ["P2PStore"]


def _buffer(x: Any) -> Any:
    """A buffer-protocol view (or raw pair) the native module accepts."""
    if isinstance(x, tuple):
        return x
    try:
        import torch

        if isinstance(x, torch.Tensor):
            if x.device.type != "cpu":
                raise ValueError("only CPU tensors can be shared")
            if not x.is_contiguous():
                raise ValueError("tensor must be contiguous")
            return x.detach().view(torch.uint8).numpy() if x.numel() else x.numpy()
    except ImportError:
        pass
    try:
        import numpy as np

        if isinstance(x, np.ndarray):
            if not x.flags.c_contiguous:
                raise ValueError("array must be C-contiguous")
            return x.reshape(-1).view(np.uint8)
    except ImportError:
        pass
    return x


class P2PStore:
    """One node of the P2P store (its own transfer engine)."""

    def __init__(self, metadata_server: str, local_hostname: str = "127.0.0.1",
                 protocol: str = "tcp", ttl_s: float = 10.0):
        self._native = _P2PStore(metadata_server, local_hostname, protocol, ttl_s)

    @property
    def segment(self) -> str:
        return self._native.segment()

    def register(self, name: str, buffers: Sequence[Any], max_shard_size: int = 64 << 20) -> Dict:
        """Publish ``buffers`` (in order) as object ``name``."""
        return json.loads(self._native._register(name, [_buffer(b) for b in buffers], max_shard_size))

    def get_replica(self, name: str, buffers: Sequence[Any]) -> Dict:
        """Fetch ``name`` into ``buffers`` (in order, at least its size); this node then serves it."""
        return json.loads(self._native._get_replica(name, [_buffer(b) for b in buffers]))

    def delete_replica(self, name: str) -> None:
        """Stop serving this node's copy."""
        self._native.delete_replica(name)

    def unregister(self, name: str) -> None:
        """Withdraw the object everywhere."""
        self._native.unregister(name)

    def list(self, prefix: str = "") -> List[Dict]:
        """Objects whose names start with ``prefix``."""
        return json.loads(self._native._list(prefix))

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "P2PStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
