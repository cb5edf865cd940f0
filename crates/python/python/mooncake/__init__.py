"""Mooncake in Rust: the reference's Python API.

* ``mooncake.store`` — ``MooncakeDistributedStore``, ``ReplicateConfig``, ``SoftPinAction``
* ``mooncake.engine`` — ``TransferEngine``, ``TransferOpcode``
* ``mooncake.buffer_pool`` — ``BufferPool`` (= ``RegisteredBufferPool``), registered host buffers
"""

from mooncake._mooncake import __version__
from mooncake._mooncake import TransferEngine as mooncake_vllm_adaptor  # the reference's old name
from mooncake.buffer_pool import BufferPool, RegisteredBufferPool

__all__ = ["__version__", "mooncake_vllm_adaptor", "BufferPool", "RegisteredBufferPool"]
