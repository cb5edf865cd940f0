"""A standalone HTTP metadata server (``mooncake.http_metadata_server``).

The same ``/metadata?key=K`` protocol as the one embedded in ``mooncake master
--enable_http_metadata_server=true``: ``PUT`` stores the request body under
``K``, ``GET`` returns it (404 when absent), ``DELETE`` drops it, and
``GET /metadata?prefix=P`` lists the keys under ``P`` with the revision of their
last write (JSON ``{"revision": R, "keys": [{"key": K, "revision": r}]}``),
which our transfer engines use to watch segment records. For programs
that start the metadata service from Python (``KVBootstrapServer(port).run()``)
instead of through the master. Standard library only.

Invariants: a key is trimmed of surrounding whitespace before use and an empty
or blank key is refused with 400 for every method, so nothing is ever stored
under ``""``; a key containing ``rpc_meta`` that is already present may only be
re-published with the identical value (another value gets 400: two processes
claiming one RPC endpoint is a configuration error, not an update); the table's
revision grows by one on every successful PUT or DELETE.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional
from urllib.parse import parse_qs, urlsplit

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


def _text(status: int, msg: str) -> MetadataResponse:
    return MetadataResponse(status, msg.encode())


def _bad_request(msg: str) -> MetadataResponse:
    """A 400 as the reference answers it: a JSON error document."""
    return MetadataResponse(400, json.dumps({"error": msg}).encode(), "application/json")


class KVBootstrapServer:
    """Key/value metadata over HTTP; ``run()`` serves it on a background thread."""

    def __init__(self, port: int, host: str = "0.0.0.0"):
        self.port = port
        self.host = host
        self.store: Dict[str, bytes] = {}
        self.revision = 0
        self._key_revision: Dict[str, int] = {}
        self.lock = threading.Lock()
        self.thread: Optional[threading.Thread] = None
        self._httpd: Optional[ThreadingHTTPServer] = None

    # -- protocol core (no sockets) ---------------------------------------
    def handle(
        self, method: str, raw_key: Optional[str], body: bytes, prefix: Optional[str] = None
    ) -> MetadataResponse:
        """Apply one request; the whole protocol lives here."""
        if raw_key is None and prefix is not None and method == "GET":
            return self._listing(prefix)
        key = (raw_key or "").strip()
        if not key:
            return _bad_request("metadata key is required")
        with self.lock:
            if method == "GET":
                value = self.store.get(key)
                if value is None:
                    return _text(404, "metadata not found")
                return MetadataResponse(200, value, "application/json")
            if method == "PUT":
                old = self.store.get(key)
                if old is not None and "rpc_meta" in key and old != body:
                    return _bad_request("rpc_meta key already published with another value")
                self.store[key] = body
                self.revision += 1
                self._key_revision[key] = self.revision
                return _text(200, "metadata updated")
            if method == "DELETE":
                if self.store.pop(key, None) is None:
                    return _text(404, "metadata not found")
                self._key_revision.pop(key, None)
                self.revision += 1
                return _text(200, "metadata deleted")
        return _text(405, "method not allowed")

    def _listing(self, prefix: str) -> MetadataResponse:
        with self.lock:
            keys = [
                {"key": k, "revision": self._key_revision[k]} for k in sorted(self.store) if k.startswith(prefix)
            ]
            doc = {"revision": self.revision, "keys": keys}
        return MetadataResponse(200, json.dumps(doc).encode(), "application/json")

    async def _handle_metadata(self, request) -> MetadataResponse:
        """Handler over an aiohttp-like request (``method``, ``query``, ``await read()``)."""
        body = await request.read() if request.method == "PUT" else b""
        return self.handle(request.method, request.query.get("key"), body, request.query.get("prefix"))

    # -- serving ----------------------------------------------------------
    def run(self) -> threading.Thread:
        """Bind (port 0 picks a free one, stored in ``self.port``) and serve in a daemon thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/metadata":
                    resp = _text(404, "not found")
                else:
                    q = parse_qs(url.query, keep_blank_values=True)
                    n = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(n) if n > 0 else b""
                    key, prefix = (q[name][0] if name in q else None for name in ("key", "prefix"))
                    resp = server.handle(self.command, key, body, prefix)
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                self.wfile.write(resp.body)

            do_GET = do_PUT = do_DELETE = do_POST = _serve

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
                _log.debug("metadata server: " + format, *args)

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        _log.info("HTTP metadata server on %s:%d", self.host, self.port)
        return self.thread

    def close(self) -> None:
        """Stop serving and wait (bounded) for the thread."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self.thread is not None:
            self.thread.join(timeout=2)

    def poll(self) -> KVPoll:
        """Success while the serving thread runs, Failed otherwise."""
        alive = self.thread is not None and self.thread.is_alive()
        return KVPoll.Success if alive else KVPoll.Failed


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
