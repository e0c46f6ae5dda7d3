"""Summaries of py-spy's collapsed stacks (``py-spy record --format raw``): where a node's CPU goes.

``python -m bench.profile FILE...`` prints the same summary for files kept from an earlier run.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

#: (label, substring of the frame's file path or function) — first match wins, checked from the leaf upwards.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("json encode/decode", ("json/encoder.py", "json/decoder.py", "json/__init__.py")),
    ("uuid", ("uuid.py",)),
    ("STOMP frames (app/stomp/frames.py)", ("app/stomp/frames.py",)),
    (
        "STOMP connection (app/stomp/, but frames.py)",
        (
            "app/stomp/protocol.py",
            "app/stomp/output.py",
            "app/stomp/delivery.py",
            "app/stomp/subscriptions.py",
            "app/stomp/sending.py",
        ),
    ),
    ("hub (app/core)", ("app/core/",)),
    ("backplane (app/backplane)", ("app/backplane/",)),
    ("SockJS transport (app/transport)", ("app/transport/",)),
    ("sockjs package", ("sockjs/",)),
    ("aio-pika / aiormq / pamqp", ("aio_pika/", "aiormq/", "pamqp/")),
    ("aiohttp (HTTP + WebSocket)", ("aiohttp/",)),
    ("asyncio event loop", ("asyncio/",)),
    ("logging", ("logging/",)),
]


#: Which part of a message's path a sample belongs to: the first rule whose marker is anywhere in the stack.
PATHS: list[tuple[str, tuple[str, ...]]] = [
    ("AMQP socket writes (aiormq writer task)", ("Connection.__writer",)),
    ("AMQP socket reads + frame parsing (aiormq reader task)", ("Connection.__reader",)),
    (
        "WebSocket writes (the manager's per-tick flush; the writer task before it)",
        ("SessionManager._flush", "WebSocketReceiver.flush", "_ws_writer", "WebSocketWriter.send_frame"),
    ),
    (
        "consume: deliver frame → DeliveredMessage → a task per delivery",
        # The last two: profiles of Warren before it consumed with aiormq directly.
        (
            "_on_deliver_frame",
            "NodeConsumer._on_delivery",
            "RabbitMQBackplane._on_delivery",
            "aio_pika/queue.py",
            "RabbitMQBackplane._on_node_message",
        ),
    ),
    (
        "delivery: backplane worker → hub.deliver → STOMP MESSAGE → session queue, ack",
        ("NodeConsumer._work", "RabbitMQBackplane._work"),
    ),
    (
        "send: WebSocket message → STOMP SEND → hub.send → publish → confirm",
        (
            "StompConnection.on_text",
            "_on_send",
            "Hub.send",
            "RabbitMQBackplane.publish",
            "ConfirmingPublisher._write",
            "PlainPublisher._queue",
        ),
    ),
    (
        "WebSocket reads + SockJS decode",
        ("WebSocketTransport.handle", "_run_websocket", "SockJSEndpoint._websocket", "web_ws.py"),
    ),
    ("event loop: waiting in epoll", ("EpollSelector.select",)),
]

#: Functions whose inclusive share is worth seeing on every run (the per-message hot path).
KEY_FUNCTIONS = (
    "StompConnection._on_send",
    "send_chat",
    "chat_fields",
    "Hub.check_message",
    "UserDirectory.exists",
    "Envelope.create",
    "uuid4",
    "Publishing.publish",
    "RabbitMQBackplane._publish",
    "Channel.basic_publish",
    "Publisher.publish",
    "ConfirmingPublisher._queue",
    "ConfirmingPublisher._write",
    "encode_publish",
    "NodeConsumer._on_delivery",
    "NodeConsumer._handle",
    "Envelope.from_body",
    "Hub.deliver",
    "StompDelivery.push",
    "IncomingMessage.__init__",
    "IncomingMessage.ack",
    "Channel.basic_ack",
    "_SelectorSocketTransport.write",
)


def _parse(line: str) -> tuple[list[str], int] | None:
    line = line.rstrip("\n")
    if not line:
        return None
    stack, _, count = line.rpartition(" ")
    try:
        n = int(count)
    except ValueError:
        return None
    return stack.split(";"), n


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def _category(stack: list[str]) -> str:
    for frame in reversed(stack):
        for label, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return label
    return "other"


def summarize(paths: list[Path], top: int = 15, rate: int = 200) -> dict[str, Any]:
    """Per file (node) and combined: samples, self time by function, inclusive time by function, by category."""
    combined_self: Counter[str] = Counter()
    combined_incl: Counter[str] = Counter()
    combined_cat: Counter[str] = Counter()
    combined_path: Counter[str] = Counter()
    total = 0
    per_node = []
    for path in paths:
        node_total = 0
        for line in path.read_text(errors="replace").splitlines():
            parsed = _parse(line)
            if parsed is None:
                continue
            stack, n = parsed
            # py-spy puts the thread first ("process 123:..."/"thread ..."); frames run root → leaf.
            frames = [f for f in stack if " (" in f]
            if not frames:
                continue
            node_total += n
            combined_self[_short(frames[-1])] += n
            for name in {_short(f) for f in frames}:
                combined_incl[name] += n
            combined_cat[_category(frames)] += n
            joined = ";".join(frames)
            combined_path[next((label for label, marks in PATHS if any(m in joined for m in marks)), "other")] += n
        per_node.append({"file": str(path), "samples": node_total, "cpu_seconds": node_total / rate})
        total += node_total

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / max(total, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "cpu_seconds": total / rate,
        "nodes": per_node,
        "self": share(combined_self),
        "inclusive": share(combined_incl),
        "categories": [(name, 100.0 * n / max(total, 1)) for name, n in combined_cat.most_common()],
        "paths": [(name, 100.0 * n / max(total, 1)) for name, n in combined_path.most_common()],
        "key_functions": [
            (name, 100.0 * n / max(total, 1))
            for name, n in (
                (k, sum(v for f, v in combined_incl.items() if f.split(" (")[0] == k)) for k in KEY_FUNCTIONS
            )
        ],
    }


def render(summary: dict[str, Any], cpu_us_per_msg: float | None = None) -> str:
    """The summary as text; with the nodes' measured CPU per message, each share also in µs per message."""
    if not summary or not summary.get("samples"):
        return "(no profile)"

    def line(pct: float, name: str) -> str:
        us = f"{pct / 100 * cpu_us_per_msg:6.0f} µs" if cpu_us_per_msg else ""
        return f"    {pct:5.1f}% {us}  {name}"

    head = f"Profile (py-spy, both Warren nodes under saturation): {summary['samples']} samples"
    if cpu_us_per_msg:
        head += f"; the nodes used {cpu_us_per_msg:.0f} µs of CPU per delivered message (both nodes together)"
    lines = [head, "  by step of the message path (shares of samples; µs = share × CPU per message):"]
    lines += [line(pct, name) for name, pct in summary.get("paths", [])]
    lines.append("  by layer (leaf-most match):")
    lines += [line(pct, name) for name, pct in summary["categories"]]
    lines.append("  hot-path functions, inclusive:")
    lines += [line(pct, name) for name, pct in summary.get("key_functions", [])]
    lines.append("  self time (top functions):")
    lines += [line(pct, name) for name, pct in summary["self"]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(summarize([Path(p) for p in sys.argv[1:]], top=30)))
