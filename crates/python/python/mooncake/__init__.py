"""Mooncake in Rust: the reference's Python API (``mooncake.store``, ``mooncake.engine``)."""

from mooncake._mooncake import __version__

__all__ = ["__version__"]
