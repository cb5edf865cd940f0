"""Mooncake in Rust: the reference's Python API.

* ``mooncake.store`` — ``MooncakeDistributedStore``, ``ReplicateConfig``, ``SoftPinAction``
* ``mooncake.engine`` — ``TransferEngine``, ``TransferOpcode``
"""

from mooncake._mooncake import __version__

__all__ = ["__version__"]
