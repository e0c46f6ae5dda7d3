"""The envelope: one chat message as it travels between nodes and waits in mailboxes.

An envelope is immutable and is serialised once, when it is built; every hop (broker, mailbox, STOMP MESSAGE
body, REST pull) reuses those bytes. ``id`` is unique and stable across redeliveries, so clients can drop
duplicates by it.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidMessage

_last_stamp = 0


def new_message_id() -> str:
    """32 hex digits: this process's clock in nanoseconds (strictly increasing), then 64 random bits.

    Unique across nodes without coordination, and in send order within one node: the hub sorts mailbox batches by
    ``(ts, id)``, so one sender's messages keep their order even when several share a millisecond.
    """
    global _last_stamp
    stamp = max(time.time_ns(), _last_stamp + 1)
    _last_stamp = stamp
    return f"{stamp:016x}{secrets.randbits(64):016x}"


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    sender: str
    receiver: str
    content: str
    #: Milliseconds since the epoch when the sending node accepted the message.
    ts: int
    #: The JSON body clients see: ``{"id", "from", "to", "content", "ts"}``.
    body: bytes = field(repr=False, compare=False, default=b"")

    @classmethod
    def create(cls, sender: str, receiver: str, content: str) -> Envelope:
        return cls.build(new_message_id(), sender, receiver, content, int(time.time() * 1000))

    @classmethod
    def build(cls, message_id: str, sender: str, receiver: str, content: str, ts: int) -> Envelope:
        body = json.dumps(
            {"id": message_id, "from": sender, "to": receiver, "content": content, "ts": ts},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        return cls(message_id, sender, receiver, content, ts, body)

    @classmethod
    def from_body(cls, body: bytes) -> Envelope:
        """Rebuild an envelope from the bytes another node (or a mailbox) holds."""
        try:
            data: Any = json.loads(body)
            envelope = cls(
                str(data["id"]), str(data["from"]), str(data["to"]), str(data["content"]), int(data["ts"]), body
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidMessage(f"not a Warren envelope: {exc}") from exc
        return envelope

    @property
    def text(self) -> str:
        return self.body.decode()
