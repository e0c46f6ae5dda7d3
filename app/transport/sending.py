"""The HTTP transports that take messages from the client: ``xhr_send`` and ``jsonp_send``.

What this module guarantees:

* **Only the owner's session.** A send is handed to a session of the requester's own owner
  (``SessionManager.identify``) or answered 404, exactly as for an id nobody uses.
* **Strict input.** The body is a JSON array of strings and nothing else (the ``sockjs`` package turned a bare
  string into one message per character): an empty body is ``Payload expected.``, anything else ``Broken JSON
  encoding.``, with ``bad_payload_status`` (400 on Warren); a batch over ``framing``'s message limit is a 413.
  Nothing of a refused body is handed on. ``jsonp_send`` also takes the form field ``d``.
* **Sends survive an aborted request.** The messages are handed to the application in a shielded task, whole
  and in order: a client that gives up on the request cannot cut a STOMP frame's handling in half.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from aiohttp import web

from . import framing
from .framing import BadPayload, TooManyMessages
from .options import EndpointPart
from .responses import TEXT, cors_headers, plain_error, session_headers

#: The sending session URLs and the method each takes.
SENDING = {"xhr_send": "POST", "jsonp_send": "POST"}


def parse_messages(data: bytes | str) -> list[str]:
    """A SockJS send payload: a JSON array of strings. Raises ``BadPayload`` with the protocol's message."""
    return framing.decode_batch(data)


class HttpSending(EndpointPart):
    """Serves the sending session URLs of one endpoint (``SockJSEndpoint.session_url`` routes them here)."""

    async def send(
        self, request: web.Request, transport: str, session_id: str, owner: Hashable | None
    ) -> web.Response:
        """Hand the messages of ``request`` to ``owner``'s session ``session_id``; 404 if there is none."""
        session = self.manager.get(session_id, owner)
        if session is None:
            raise web.HTTPNotFound()
        body = await request.read()
        try:
            if transport == "jsonp_send" and request.content_type == "application/x-www-form-urlencoded":
                body = await framing.form_field(body, "d")
            messages = parse_messages(body)
        except TooManyMessages as exc:
            return plain_error(str(exc), cors_headers(request), status=413)
        except BadPayload as exc:
            return plain_error(str(exc), cors_headers(request), status=self.options.bad_payload_status)
        # Shielded: if the client aborts this request, its messages are still handled whole and in order.
        await asyncio.shield(self.manager.receive(session, messages))
        headers = session_headers(request, TEXT, cookie_needed=self.options.cookie_needed)
        if transport == "jsonp_send":
            # Some old browsers mishandle 204 on a form post; the protocol answers "ok".
            return web.Response(body=b"ok", headers=headers)
        return web.Response(status=204, headers=headers)
