"""``encode_publish`` writes exactly the bytes pamqp (aiormq's codec) would, and pamqp reads them back."""

from __future__ import annotations

from datetime import UTC, datetime

import pamqp.frame
import pytest
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from app.backplane.amqp import encode_publish


def pamqp_publish(channel: int, max_body: int, exchange: str, key: str, body: bytes, **properties: object) -> bytes:
    mandatory = bool(properties.pop("mandatory", False))
    if "timestamp" in properties:
        properties["timestamp"] = datetime.fromtimestamp(int(properties["timestamp"]), UTC)  # type: ignore[call-overload]
    frames = [
        pamqp.frame.marshal(spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory), channel),
        pamqp.frame.marshal(ContentHeader(0, len(body), spec.Basic.Properties(**properties)), channel),  # type: ignore[arg-type]
    ]
    for start in range(0, len(body), max_body):
        frames.append(pamqp.frame.marshal(ContentBody(body[start : start + max_body]), channel))
    return b"".join(frames)


CASES = [
    dict(
        mandatory=True,
        content_type="application/json",
        delivery_mode=2,
        message_id="0123456789abcdef0123456789abcdef",
        timestamp=1_790_000_000,
        app_id="warren",
    ),
    dict(mandatory=True, message_id="drain-ab", message_type="warren.drain-marker"),
    dict(message_id="x"),
]


@pytest.mark.parametrize("properties", CASES, ids=["envelope", "marker", "bare"])
@pytest.mark.parametrize(
    "body", [b"", '{"content":"hé"}'.encode(), bytes(range(256)) * 40], ids=["empty", "small", "split"]
)
@pytest.mark.parametrize(
    "exchange,key", [("warren.messages", "user.b0b"), ("", "warren.node.n1"), ("x" * 127, "é" * 100)]
)
def test_matches_pamqp(properties: dict[str, object], body: bytes, exchange: str, key: str) -> None:
    max_body = 4096
    ours = encode_publish(
        7,
        max_body,
        exchange,
        key,
        body,
        mandatory=bool(properties.get("mandatory")),
        content_type=properties.get("content_type"),  # type: ignore[arg-type]
        delivery_mode=properties.get("delivery_mode"),  # type: ignore[arg-type]
        message_id=properties.get("message_id"),  # type: ignore[arg-type]
        timestamp=properties.get("timestamp"),  # type: ignore[arg-type]
        message_type=properties.get("message_type"),  # type: ignore[arg-type]
        app_id=properties.get("app_id"),  # type: ignore[arg-type]
    )
    assert ours == pamqp_publish(7, max_body, exchange, key, body, **properties)

    # And it reads back as what was meant.
    offset, frames = 0, []
    while offset < len(ours):
        consumed, channel, frame = pamqp.frame.unmarshal(ours[offset:])
        assert channel == 7
        frames.append(frame)
        offset += consumed
    publish, header, *chunks = frames
    assert isinstance(publish, spec.Basic.Publish) and isinstance(header, ContentHeader)
    assert (publish.exchange, publish.routing_key) == (exchange, key)
    assert header.body_size == len(body) and b"".join(c.value for c in chunks if isinstance(c, ContentBody)) == body
    assert header.properties.message_id == properties["message_id"]


def test_names_longer_than_a_short_string_are_refused() -> None:
    with pytest.raises(ValueError, match="255 bytes"):
        encode_publish(1, 4096, "", "k" * 256, b"", message_id="m")
