"""Connection-level limits uvicorn lacks: header size (431), header deadline (408), connection cap.

An ASGI app only sees a request once its headers are complete, so a client that never finishes
them (slowloris), or sends megabytes of them, is invisible to any middleware. These limits live in
the HTTP protocol object instead: a subclass of uvicorn's httptools protocol (the one uvicorn picks
by default) that counts header bytes as the parser reports them and arms a timer from a request's
first byte until its headers are complete. The body's own deadline is the ASGI middleware's job
(`serving.transformer.server.RequestLimits`), where the body is read.
"""
from __future__ import annotations

import asyncio
import json
import logging

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from serving.transformer.config import HttpLimits

log = logging.getLogger(__name__)

ONE_READ = 256 * 1024  # the largest single read of asyncio's and uvloop's transports: a chunk may end one
# request's headers and start its body


class _HeadersTooLarge(Exception):
    pass


def guarded_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits` applied (pass it as uvicorn.Config(http=...))."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_bytes = 0
            self._raw_header_bytes, self._reading_headers = 0, True
            self._header_deadline: asyncio.TimerHandle | None = None
            self._rejected = False
            if len(self.connections) > limits.max_connections:
                self._reject(503, "too many open connections; retry later")
                return
            self._arm_header_deadline()  # a connection that never sends a byte is cut off too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._rejected:
                return
            if self._reading_headers:
                # httptools hands a header over only once it is whole, buffering it until then: a 32 MiB header
                # would be in memory (copied as it grows) before `_count` saw a byte of it. So the bytes are
                # counted as they arrive, too, with one read of slack.
                self._raw_header_bytes += len(data)
                if self._raw_header_bytes > limits.max_header_bytes + ONE_READ:
                    self._reject(431, f"request headers are larger than {limits.max_header_bytes} bytes")
                    return
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._reject(400, "protocol upgrades are not supported")
            except httptools.HttpParserError:
                if self._header_bytes > limits.max_header_bytes:
                    self._reject(431, f"request headers are larger than {limits.max_header_bytes} bytes")
                else:
                    self._reject(400, "invalid HTTP request")

        # -- parser callbacks ----------------------------------------------------------------

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            self._raw_header_bytes, self._reading_headers = 0, True
            self._arm_header_deadline()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            self._disarm_header_deadline()
            super().on_headers_complete()

        # -- helpers -------------------------------------------------------------------------

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > limits.max_header_bytes:
                raise _HeadersTooLarge()  # httptools turns it into HttpParserCallbackError

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_deadline = self.loop.call_later(limits.header_timeout_s, self._headers_timed_out)

        def _disarm_header_deadline(self) -> None:
            deadline = getattr(self, "_header_deadline", None)
            if deadline is not None:
                deadline.cancel()
                self._header_deadline = None

        def _headers_timed_out(self) -> None:
            self._header_deadline = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # headers are done; the request is the app's now (body deadline there)
            if self.transport.is_closing():
                return
            self._reject(408, f"request headers not received within {limits.header_timeout_s:g}s")

        def _reject(self, status: int, message: str) -> None:
            """Answer `status` with a JSON error and close, whatever state the parser is in."""
            self._rejected = True
            self._disarm_header_deadline()
            log.warning("HTTP %d to %s: %s", status, self.client[0] if self.client else "?", message)
            body = json.dumps({"error": message}).encode()
            head = STATUS_LINE.get(status) or f"HTTP/1.1 {status} Error\r\n".encode()
            self.transport.write(b"".join([
                head, b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n", b"connection: close\r\n\r\n", body]))
            self.transport.close()

    return GuardedHttpToolsProtocol
