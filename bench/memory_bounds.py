"""Issue #11's memory figures on loopback: escaped mail to one offline user, and stalled request bodies.

    python -m bench.memory_bounds [--src DIR] [--amqp] [--only escaped,bodies]

``--src`` runs the Warren of another checkout (the commit before the change, for "before" figures). It starts one
node as a child process (ended by its PID), adds two users, and prints JSON lines:

* ``escaped``: RSS before; after one sender sent 1,000 messages of the largest content the node accepts, made of
  control characters (64 KiB of them before the change; as many as fit 64 KiB once escaped, after), to a user who
  is offline; and the peak RSS while that user pulls their mail once; with ``--amqp`` also the broker's bytes in the
  mailbox. Four more senders then try the same (the sender's share stops the first one early).
* ``bodies``: RSS before, with 300 requests that sent their headers and 999,999 bytes of a 1,000,000-byte body
  and stopped, and 3 s after the clients closed them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from .common import AMQP_URL, MGMT_AUTH, MGMT_URL, PASSWORD, free_port, log

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class WarrenNode:
    def __init__(self, src: Path, amqp: bool, workdir: Path) -> None:
        self.src = src
        self.port = free_port()
        self.users = workdir / "users.json"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "USERS_FILE": str(self.users),
            "MESSAGE_RATE": "0",
            "CONNECTION_MESSAGE_RATE": "0",
            "LOG_LEVEL": "WARNING",
            "NODE_ID": f"membench-{uuid.uuid4().hex[:6]}",
        }
        # Settings to try, passed through from this process's environment.
        for name in ("REQUEST_BODY_BUDGET", "REQUEST_BODY_TIMEOUT", "MAILBOX_MAX_BYTES", "MAILBOX_SENDER_SHARE"):
            if name in os.environ:
                self.env[name] = os.environ[name]
        if amqp:
            key = subprocess.run(
                [sys.executable, "-m", "app", "secret"], cwd=src, capture_output=True, text=True, check=True
            )
            self.env.update({"AMQP_URL": AMQP_URL, "SECRET_KEY": key.stdout.strip()})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_user(self, name: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "app", "users", "add", name, "--password-stdin"],
            cwd=self.src,
            env=self.env,
            input=PASSWORD.encode(),
            check=True,
            capture_output=True,
        )

    async def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "app"], cwd=self.src, env=self.env)
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the node did not become ready")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)

    @property
    def rss(self) -> float:
        assert self.process is not None
        return rss_mib(self.process.pid)


async def signed_in(node: WarrenNode, user: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Origin": node.url})
    async with http.post(f"{node.url}/login", json={"username": user, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
    return http


async def mailbox_bytes(user: str) -> int | None:
    async with aiohttp.ClientSession(auth=MGMT_AUTH) as http:
        async with http.get(f"{MGMT_URL}/api/queues/%2F/warren.mailbox.{user}") as resp:
            if resp.status != 200:
                return None
            return int((await resp.json()).get("message_bytes", 0))


async def put_policy(name: str, queue: str, definition: dict[str, Any] | None) -> None:
    url = f"{MGMT_URL}/api/policies/%2F/{name}"
    async with aiohttp.ClientSession(auth=MGMT_AUTH) as http:
        if definition is None:
            async with http.delete(url):
                return
        body = {"pattern": f"^{queue}$", "definition": definition, "priority": 50, "apply-to": "queues"}
        async with http.put(url, json=body) as resp:
            assert resp.status in (201, 204), await resp.text()


async def escaped(node: WarrenNode, amqp: bool, fresh_policy: bool) -> dict[str, Any]:
    senders = [f"sender{i}-{uuid.uuid4().hex[:4]}" for i in range(5)]
    receiver = f"offline-{uuid.uuid4().hex[:6]}"
    for name in [*senders, receiver]:
        node.add_user(name)
    if fresh_policy:
        # The shared broker's policy predates max-length-bytes: give this mailbox the one `broker setup` now creates.
        from app.backplane.topology import MailboxLimits

        await put_policy(f"membench-{receiver}", f"warren\\.mailbox\\.{receiver}", MailboxLimits().policy_definition())
    try:
        return await _escaped(node, amqp, senders, receiver)
    finally:
        if fresh_policy:
            await put_policy(f"membench-{receiver}", "", None)


async def _escaped(node: WarrenNode, amqp: bool, senders: list[str], receiver: str) -> dict[str, Any]:
    await node.start()
    out: dict[str, Any] = {"scenario": "escaped", "src": str(node.src), "backplane": "rabbitmq" if amqp else "memory"}
    out["rss_before_mib"] = round(node.rss, 1)
    http = await signed_in(node, senders[0])
    content = "\x01" * 65536
    async with http.post(f"{node.url}/api/messages", json={"to": receiver, "content": content}) as resp:
        if resp.status == 413:
            content = "\x01" * (65536 // 6)  # the largest control-character content accepted once escapes count
    out["content_chars"] = len(content)
    statuses: dict[int, int] = {}
    for _ in range(1000):
        async with http.post(f"{node.url}/api/messages", json={"to": receiver, "content": content}) as resp:
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
    await http.close()
    out["one_sender_statuses"] = dict(statuses)
    out["rss_after_one_sender_mib"] = round(node.rss, 1)
    for sender in senders[1:]:
        http = await signed_in(node, sender)
        for _ in range(1000):
            async with http.post(f"{node.url}/api/messages", json={"to": receiver, "content": content}) as resp:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status != 202:
                    break
        await http.close()
    out["five_senders_statuses"] = statuses
    out["rss_after_five_senders_mib"] = round(node.rss, 1)
    if amqp:
        out["broker_mailbox_bytes"] = await mailbox_bytes(receiver)
    peak = node.rss
    reader = await signed_in(node, receiver)
    pulling = asyncio.ensure_future(reader.post(f"{node.url}/wsTemplate/pullUnreadMessage", data={"d": "x"}))
    while not pulling.done():
        peak = max(peak, node.rss)
        await asyncio.sleep(0.01)
    resp = await pulling
    body = await resp.read()
    resp.release()
    await reader.close()
    out["pull_response_mib"] = round(len(body) / 2**20, 1)
    out["rss_peak_during_pull_mib"] = round(peak, 1)
    return out


async def bodies(node: WarrenNode) -> dict[str, Any]:
    user = f"poster-{uuid.uuid4().hex[:6]}"
    node.add_user(user)
    await node.start()
    out: dict[str, Any] = {"scenario": "bodies", "src": str(node.src)}
    http = await signed_in(node, user)
    cookie = "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)
    await http.close()
    out["rss_before_mib"] = round(node.rss, 1)
    head = (
        f"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\nOrigin: {node.url}\r\nCookie: {cookie}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    part = b'{"to": "' + b"x" * (999_999 - 8)
    writers: list[asyncio.StreamWriter] = []
    answered = 0

    async def stall() -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writers.append(writer)
        writer.write(head + part)
        await writer.drain()
        if await reader.readline():
            answered += 1

    tasks = [asyncio.ensure_future(stall()) for _ in range(300)]
    # Let the node read what they sent (RSS stops growing), within 8 s: before a 10 s body deadline.
    last, stable_since, started = 0.0, time.monotonic(), time.monotonic()
    while time.monotonic() - started < 8:
        await asyncio.sleep(0.25)
        now = node.rss
        if abs(now - last) > 1:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 2:
            break
    out["rss_with_300_stalled_mib"] = round(node.rss, 1)
    out["answered_while_stalled"] = answered
    for task in tasks:
        task.cancel()
    for writer in writers:
        writer.close()
    await asyncio.sleep(3)
    out["rss_3s_after_close_mib"] = round(node.rss, 1)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", type=Path, default=ROOT)
    parser.add_argument("--amqp", action="store_true")
    parser.add_argument("--only", default="escaped,bodies")
    parser.add_argument("--fresh-policy", action="store_true", help="RabbitMQ: the mailbox policy of this checkout")
    args = parser.parse_args()
    import tempfile

    for scenario in args.only.split(","):
        with tempfile.TemporaryDirectory() as workdir:
            node = WarrenNode(args.src.resolve(), args.amqp, Path(workdir))
            try:
                result = await (escaped(node, args.amqp, args.fresh_policy) if scenario == "escaped" else bodies(node))
            finally:
                node.stop()
            log(scenario, "done")
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
