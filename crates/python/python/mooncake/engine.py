"""Transfer Engine: one-sided reads and writes between registered memory of
processes (``from mooncake.engine import TransferEngine``).

Same names, arguments and return codes as the reference's module:
``TransferEngine().initialize("127.0.0.1:12345", "http://127.0.0.1:8080/metadata", "tcp", "")``
returns 0; transfers return 0 or -1; ``batch_transfer_async_*`` returns a
non-zero batch id for ``get_batch_transfer_status``.
"""

from mooncake._mooncake import TransferEngine, TransferOpcode

__all__ = ["TransferEngine", "TransferOpcode"]
