"""Request bodies: read under a deadline, and under one byte budget for the whole node.

Without this, a client that sends its headers and part of a body, then stops, keeps the handler waiting in
``request.read()`` with what arrived so far (aiohttp raises the payload buffer to ``client_max_size`` once a handler
reads): 300 such requests held 396 MiB. Here the body of every request that has one is read before the handler
runs, as it arrives:

* **A deadline.** The whole body must arrive within ``REQUEST_BODY_TIMEOUT`` (10 s) of the end of the headers, or
  the request is answered ``408 body-timeout`` (with ``Retry-After``) and its connection closed.
* **One budget for the node.** The bytes of bodies being read or handled, on every request together, are counted
  as they arrive against ``REQUEST_BODY_BUDGET`` (32 MiB), and given back when the handler is done. A request
  that would take the budget past it is answered ``503 busy`` (with ``Retry-After``) and its connection closed,
  freeing what it held, and the memory goes back to the operating system once no body is held (``BodyBudget``).
  What is counted is what arrived, not what a ``Content-Length`` promises: a client that
  announces a large body and sends nothing holds nothing.
* **Multipart forms** (which aiohttp reads from the stream itself) are charged their declared size up front and
  bounded by the same deadline as a whole.
* **A size bound.** A body larger than ``client_max_size`` is refused with ``413 too-large`` as soon as its
  ``Content-Length`` says so, or as soon as that much has arrived.

Handlers then read the body as usual (``request.read()``, ``post()``, ``json()``): aiohttp returns the copy read
here. While a body is joined from its parts it briefly takes twice its size.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Seconds a refused client is told to wait.
RETRY_AFTER = 1


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: nothing to do
    return trim


_TRIM = _malloc_trim()


class BodyBudget:
    """Bytes of request bodies held on this node, bounded by ``limit``.

    Given back to the operating system too: bodies arrive in chunks of up to a few hundred KiB, which glibc's
    allocator serves from its heap and keeps when they are freed (300 stalled bodies left 520 MiB of RSS behind
    after their clients closed). Once the bodies held fall back to nothing after at least ``TRIM_AFTER`` bytes
    were held, ``malloc_trim`` returns the free heap pages, at most once per ``TRIM_INTERVAL`` seconds.
    """

    TRIM_AFTER = 8 * 1024 * 1024
    TRIM_INTERVAL = 5.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        #: Requests refused because the budget was spent, and because their body did not arrive in time (metrics).
        self.refused_busy = 0
        self.refused_timeout = 0
        self._peak = 0
        self._trimmed_at = 0.0
        self._trim_pending = False

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        self._peak = max(self._peak, self.held)
        return True

    def give_back(self, size: int) -> None:
        self.held -= size
        if self.held == 0 and self._peak >= self.TRIM_AFTER and _TRIM is not None and not self._trim_pending:
            self._trim_pending = True
            wait = max(0.0, self._trimmed_at + self.TRIM_INTERVAL - time.monotonic())
            asyncio.get_running_loop().call_later(wait, self._trim)

    def _trim(self) -> None:
        self._trim_pending = False
        if self.held or _TRIM is None:
            return  # bodies again: the next time they are all gone
        self._peak = 0
        self._trimmed_at = time.monotonic()
        _TRIM(0)


BODY_BUDGET: web.AppKey[BodyBudget] = web.AppKey("body_budget", BodyBudget)


def _refusal(status: int, reason: str, message: str, *, retry: bool) -> web.Response:
    response = web.json_response(
        {"error": reason, "message": message},
        status=status,
        headers={"Retry-After": str(RETRY_AFTER)} if retry else None,
    )
    # The rest of the body may still be on its way: do not read it, close the connection after the answer.
    response.force_close()
    return response


def body_middleware(
    budget: BodyBudget, *, timeout: float, max_size: int
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware: read each request's body under ``timeout`` and ``budget``, refuse beyond ``max_size``."""

    @web.middleware
    async def read_body_within_bounds(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        declared = request.content_length
        if declared is not None and declared > max_size:
            return _refusal(413, "too-large", f"the request body is over {max_size} bytes", retry=False)
        if request.content_type.startswith("multipart/"):
            # aiohttp reads multipart bodies from the stream itself, not through ``read()``: charge what the body may
            # hold at most, and bound the whole request by the deadline.
            reserved = declared if declared is not None else max_size
            if not budget.take(reserved):
                budget.refused_busy += 1
                return _refusal(503, "busy", "the server is receiving too many requests; retry in a moment", retry=True)
            try:
                async with asyncio.timeout(timeout):
                    return await handler(request)
            except TimeoutError:
                budget.refused_timeout += 1
                return _refusal(408, "body-timeout", f"the request did not complete within {timeout:g} s", retry=True)
            finally:
                budget.give_back(reserved)
        held = 0
        try:
            try:
                chunks: list[bytes] = []
                async with asyncio.timeout(timeout):
                    while chunk := await request.content.readany():
                        if held + len(chunk) > max_size:
                            return _refusal(413, "too-large", f"the request body is over {max_size} bytes", retry=False)
                        if not budget.take(len(chunk)):
                            budget.refused_busy += 1
                            log.warning("request body refused: the node holds %d bytes of bodies already", budget.held)
                            return _refusal(
                                503, "busy", "the server is receiving too many requests; retry in a moment", retry=True
                            )
                        held += len(chunk)
                        chunks.append(chunk)
            except TimeoutError:
                budget.refused_timeout += 1
                return _refusal(
                    408, "body-timeout", f"the request body did not arrive within {timeout:g} s", retry=True
                )
            body = b"".join(chunks)
            del chunks
            # What ``request.read()`` returns from now on (and ``post()``/``json()`` read through it).
            request._read_bytes = body
            return await handler(request)
        finally:
            budget.give_back(held)

    return read_body_within_bounds
