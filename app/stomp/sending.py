"""A client's SEND: where it may go, what its body must hold, how fast one connection may send, and how a
refusal is told.

Guarantees:

* The sender is always the connection's signed-in user; the body names only the receiver and the text
  (``{"receiver", "msg"}``, or ``{"to", "content"}``). A body that is not such JSON — including JSON nested deeper
  than the interpreter's stack — is ``InvalidMessage``, never an exception of the parser.
* One connection sends at most ``CONNECTION_MESSAGE_RATE`` messages a second (its own token bucket, so one runaway
  tab cannot use its user's whole allowance; the hub limits the user as well).
* A refusal by the application (``WarrenError``) does not end the connection: it is told as a JSON MESSAGE
  ``{"error", "message", "receipt-id"}`` on ``/user/queue/errors`` (see ``refusal_body``).
"""

from __future__ import annotations

import json

from ..core.errors import InvalidMessage, RateLimited, WarrenError
from ..core.hub import Hub
from ..core.limits import TokenBucket
from .frames import Frame, FrameError

SEND_DESTINATIONS = frozenset({"/message/chat", "/app/chat"})


async def send_chat(hub: Hub, sender: str, bucket: TokenBucket | None, frame: Frame) -> None:
    """Send the chat message of a SEND frame from ``sender``: a ``FrameError`` for a destination that is not the
    chat, a ``WarrenError`` for a refusal (too fast, a bad body, or the hub's own refusals)."""
    destination = frame.get("destination")
    if destination not in SEND_DESTINATIONS:
        raise FrameError(f"cannot SEND to {str(destination)[:60]!r}: use /message/chat")
    if bucket is not None and not bucket.take():
        raise RateLimited(
            f"this connection sends too fast: at most {bucket.rate:g} messages per second", bucket.retry_after()
        )
    receiver, content = chat_fields(frame.body)
    await hub.send(sender, receiver, content)


def chat_fields(body: bytes) -> tuple[str, str]:
    """The receiver and the text of a SEND body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nested deeper than the interpreter's stack ("[[[[..."), a crafted body.
        raise InvalidMessage('the body must be JSON like {"receiver": "bob", "msg": "hi"}') from None
    if not isinstance(data, dict):
        raise InvalidMessage('the body must be a JSON object like {"receiver": "bob", "msg": "hi"}')
    receiver = data.get("receiver", data.get("to"))
    content = data.get("msg", data.get("content"))
    if not isinstance(receiver, str) or not isinstance(content, str):
        raise InvalidMessage('the body needs "receiver" and "msg", both strings')
    return receiver, content


def refusal_body(exc: WarrenError, receipt: str | None) -> str:
    """The JSON a refusal is told with on ``/user/queue/errors``."""
    payload: dict[str, str] = {"error": exc.reason, "message": str(exc)}
    if receipt is not None:
        payload["receipt-id"] = receipt
    return json.dumps(payload, ensure_ascii=False)
