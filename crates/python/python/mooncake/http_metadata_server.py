"""A standalone HTTP metadata server (``mooncake.http_metadata_server``).

The reference's public names and command line over the one Rust
implementation (``mooncake._mooncake.MetadataServer``, the server that
``mooncake metadata-server`` and ``mooncake master
--enable_http_metadata_server=true`` run): ``PUT /metadata?key=K`` stores the
body under ``K``, ``GET`` returns it (404 when absent), ``DELETE`` drops it,
and ``GET /metadata?prefix=P`` lists the keys under ``P`` with the revision of
their last write (JSON ``{"revision": R, "keys": [{"key": K, "revision": r}]}``).
For programs that start the metadata service from Python
(``KVBootstrapServer(port).run()``) instead of through the master.

Rules (kept by the Rust server): a key is trimmed of surrounding whitespace
and a missing or blank key is refused with 400 for every method; a key
containing ``rpc_meta`` that is present may only be re-published with the
identical value (400 otherwise); the revision grows by one on every
successful PUT or DELETE. Serving runs on the extension's own threads.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Dict, Optional

from mooncake._mooncake import MetadataServer as _MetadataServer

__all__ = ["KVBootstrapServer", "KVPoll", "MetadataResponse", "main"]

_log = logging.getLogger("mooncake")


class KVPoll(Enum):
    """What ``KVBootstrapServer.poll`` reports."""

    Failed = 0
    Bootstrapping = 1
    WaitingForInput = 2
    Transferring = 3
    Success = 4


@dataclass
class MetadataResponse:
    """One answer of the metadata handler (status, body, content type)."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain"


class KVBootstrapServer:
    """Key/value metadata over HTTP; ``run()`` starts serving it."""

    def __init__(self, port: int, host: str = "0.0.0.0"):
        self.port = port
        self.host = host
        self.thread: Optional[threading.Thread] = None
        self._server = _MetadataServer(rpc_meta_write_once=True)
        self._stopped = threading.Event()

    @property
    def store(self) -> Dict[str, bytes]:
        """A snapshot of the table."""
        return self._server.entries()

    @property
    def revision(self) -> int:
        return self._server.revision

    def handle(
        self, method: str, raw_key: Optional[str], body: bytes, prefix: Optional[str] = None
    ) -> MetadataResponse:
        """Apply one request without sockets."""
        status, data, content_type = self._server.handle(method, raw_key, bytes(body), prefix)
        return MetadataResponse(status, data, content_type)

    async def _handle_metadata(self, request) -> MetadataResponse:
        """Handler over an aiohttp-like request (``method``, ``query``, ``await read()``)."""
        body = await request.read() if request.method == "PUT" else b""
        return self.handle(request.method, request.query.get("key"), body, request.query.get("prefix"))

    def run(self) -> threading.Thread:
        """Bind (port 0 picks a free one, stored in ``self.port``) and serve.

        Returns a daemon thread that lives until ``close()`` (the reference
        returns its serving thread)."""
        self.port = self._server.start(self.host, self.port)
        self._stopped.clear()
        self.thread = threading.Thread(target=self._stopped.wait, daemon=True)
        self.thread.start()
        _log.info("HTTP metadata server on %s:%d", self.host, self.port)
        return self.thread

    def close(self) -> None:
        """Stop serving (in-flight requests get up to 2 s)."""
        self._server.stop()
        self._stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=2)

    def poll(self) -> KVPoll:
        """Success while serving, Failed otherwise."""
        return KVPoll.Success if self._server.serving() else KVPoll.Failed


def main(argv: Optional[list] = None) -> int:
    """``python -m mooncake.http_metadata_server --port 8080``."""
    p = argparse.ArgumentParser(description="Mooncake HTTP metadata server")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    args = p.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level))
    server = KVBootstrapServer(port=args.port, host=args.host)
    server.run()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
