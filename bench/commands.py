"""The command loop of the bench's child processes (load generators, probers, the ceiling's workers).

The parent writes one JSON object a line on the child's stdin, ``{"cmd": name, ...}``; the child answers each with
one JSON line on stdout: what ``worker.cmd_<name>(**rest)`` returned, or ``{"error": ...}`` when it raised. The loop
ends at ``{"cmd": "exit"}`` or end of input. Kept free of heavy imports: children start it first.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def serve_commands(worker: Any, *, line_limit: int) -> None:
    """Answer the parent's commands until it says ``exit`` or closes stdin (``line_limit``: longest request)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=line_limit)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    while True:
        line = await reader.readline()
        if not line:
            return
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "exit":
            return
        try:
            answer = await getattr(worker, f"cmd_{cmd}")(**request)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        out.write(json.dumps(answer) + "\n")
        out.flush()
