"""SockJS framing: the bytes each transport writes, and how messages are encoded into them.

The SockJS protocol (sockjs-protocol 0.3.3, the version sockjs-client 1.x speaks) sends four frames: ``o`` (open),
``h`` (heartbeat), ``a[...]`` (a JSON array of messages) and ``c[code,"reason"]`` (close). Each HTTP transport wraps
them differently; the wrappers live here so that the escaping rules sit in one place:

* **JSON.** Frames are compact JSON (``,`` and ``:`` without spaces). Besides what ``json.dumps`` escapes, the
  characters browsers mangle or refuse (lone surrogates, U+200C–U+200F, U+2028–U+202F, U+2060–U+206F,
  U+FFF0–U+FFFF) are written as ``\\uXXXX``, the set sockjs-node escapes; a lone surrogate could not even be
  encoded as UTF-8 otherwise.
* **Frames inside a script** (``htmlfile`` writes ``<script>p("...")</script>``, ``jsonp`` writes
  ``callback("...")``): the frame is a JSON string literal in which ``<``, ``>`` and ``&`` are also written as
  ``\\u003c``, ``\\u003e`` and ``\\u0026``. Without that a chat message containing ``</script>`` ends the script
  element early: the rest of the batch is lost and markup in the message runs as script in Warren's origin. The
  escapes are inside a string literal, so the script receives the exact text.
* **What clients send** (``decode_batch``): a JSON array of strings, at most ``MAX_MESSAGES_PER_BATCH`` of them
  per WebSocket frame or ``xhr_send``/``jsonp_send`` body. Anything else (broken, deeply nested or non-string
  JSON, invalid UTF-8) raises ``BadPayload`` with the protocol's text; never another exception, so a crafted
  body cannot end in a server error. Decoding is bounded by the transports' size limits (a 1 MiB body decodes in
  about 15 ms); the STOMP layer then yields to the event loop between messages.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from ..core.budget import INPUT_BUDGET

OPEN = "o"
HEARTBEAT = "h"

#: SockJS messages one WebSocket frame or one send request may carry. sockjs-client batches what the page sends
#: while a request is in flight (an ACK per message of a mailbox drain, at most 1,000 unacknowledged): a few
#: hundred at most. 10,000 one-byte messages is an attack.
MAX_MESSAGES_PER_BATCH = 4096

#: ``Cache-Control`` for everything carrying session data: never stored by a browser or a proxy.
NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
#: One year, the protocol's expectation for the cacheable answers (iframe page, CORS preflight).
ONE_YEAR = 365 * 24 * 3600

#: Characters written as ``\\uXXXX`` in every frame (``json.dumps`` already escapes U+0000–U+001F).
_SERVER_ESCAPABLE = re.compile("[\ud800-\udfff\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufff0-\uffff]")
#: Additionally escaped when the JSON sits inside HTML or a script: nothing in a message can end the element.
_SCRIPT_ESCAPABLE = re.compile("[<>&]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


#: One encoder for every frame (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: object) -> str:
    """Compact JSON with the SockJS server escapes."""
    text = _ENCODER.encode(value)
    # Everything the server escapes is outside ASCII, and ``isascii`` reads a flag of the string: most frames skip
    # the scan.
    return text if text.isascii() else _SERVER_ESCAPABLE.sub(_escape, text)


class BadPayload(Exception):
    """A send payload SockJS does not allow; the message is the protocol's text (``Broken JSON encoding.``)."""


class TooManyMessages(BadPayload):
    """More than ``MAX_MESSAGES_PER_BATCH`` messages in one frame or request."""

    def __init__(self, count: int) -> None:
        super().__init__(f"Too many messages: {count} in one batch, at most {MAX_MESSAGES_PER_BATCH}.")


def decode_batch(data: bytes | str, *, single_string: bool = False) -> list[str]:
    """The messages of a client's batch: a JSON array of strings (or, with ``single_string``, as sockjs-node
    accepts on a WebSocket, one JSON string). Raises ``BadPayload``; ``TooManyMessages`` past the bound."""
    if not data:
        raise BadPayload("Payload expected.")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the interpreter's stack ("[[[[..."), a crafted body.
        raise BadPayload("Broken JSON encoding.") from None
    if single_string and isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise BadPayload("Broken JSON encoding.")
    if len(value) > MAX_MESSAGES_PER_BATCH:
        raise TooManyMessages(len(value))
    if not all(type(message) is str for message in value):
        raise BadPayload("Broken JSON encoding.")
    return value


#: Form bytes URL-decoded between two checks of the loop budget: at most ~5,500 escapes, a few milliseconds.
_FORM_CHUNK = 16 * 1024


async def form_field(body: bytes, name: str) -> bytes:
    """The first ``name`` field of an ``application/x-www-form-urlencoded`` body (``jsonp_send``'s ``d``), decoded.

    Not ``urllib.parse.parse_qs``: it decodes every field, a Python step per ``%XX``, and a 1 MiB body of escapes
    or of 250,000 fields held the event loop for a second. Here a regular expression finds the field and the
    value is decoded in chunks, yielding to the loop between them (``app.core.budget``).
    """
    found = re.search(rb"(?:^|&)" + re.escape(name.encode()) + rb"=([^&]*)", body)
    if found is None or not found.group(1):
        raise BadPayload("Payload expected.")
    value = found.group(1).replace(b"+", b" ")
    parts: list[bytes] = []
    start = 0
    while start < len(value):
        end = min(len(value), start + _FORM_CHUNK)
        # Never cut an escape in two: end before a "%" in the last two bytes of the chunk.
        percent = value.rfind(b"%", max(start, end - 2), end)
        if percent != -1 and end < len(value):
            end = percent
        parts.append(unquote_to_bytes(value[start:end]))
        start = end
        await INPUT_BUDGET.spend()
    return b"".join(parts)


def close_frame(code: int, reason: str) -> str:
    return "c" + dumps([code, reason])


def message_frame(messages: Sequence[str]) -> str:
    return "a" + dumps(list(messages))


def script_string(frame: str) -> str:
    """``frame`` as a JavaScript string literal that is also safe inside an HTML ``<script>`` element."""
    return _SCRIPT_ESCAPABLE.sub(_escape, dumps(frame))


# -- per-transport wrappers ----------------------------------------------------------------------------------


def xhr(frame: str) -> bytes:
    return (frame + "\n").encode()


def eventsource(frame: str) -> bytes:
    return f"data: {frame}\r\n\r\n".encode()


def htmlfile(frame: str) -> bytes:
    return f"<script>\np({script_string(frame)});\n</script>\r\n".encode()


def jsonp(callback: str, frame: str) -> bytes:
    # "/**/" keeps a callback name from being read as something else (the Rosetta Flash fix sockjs-node ships).
    return f"/**/{callback}({script_string(frame)});\r\n".encode()


#: The xhr-streaming prelude: 2 KiB so that old browsers start handing the response to the page.
XHR_STREAMING_PRELUDE = b"h" * 2048 + b"\n"
#: The eventsource prelude (an empty line, for old Opera).
EVENTSOURCE_PRELUDE = b"\r\n"

_HTMLFILE_HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.%s;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"""


def htmlfile_prelude(callback: str) -> bytes:
    """The htmlfile page head, padded past 1 KiB so browsers start rendering (and running) it at once.

    ``callback`` must already be validated (``CALLBACK``): it is written into the script as is.
    """
    head = (_HTMLFILE_HEAD % callback).encode()
    return head + b" " * max(0, 1025 - len(head)) + b"\r\n"


#: What a JSONP or htmlfile callback name may be (sockjs-protocol): it is written into a script verbatim.
CALLBACK = re.compile(r"^[a-zA-Z0-9_.]+$")


def cache_for_a_year() -> dict[str, str]:
    """Headers of a response every browser and proxy may keep for a year (iframe page, CORS preflight)."""
    return {
        "Cache-Control": f"public, max-age={ONE_YEAR}",
        "Expires": email.utils.formatdate(time.time() + ONE_YEAR, usegmt=True),
    }
