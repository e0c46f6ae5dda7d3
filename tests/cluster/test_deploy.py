"""Deployment the Heroku way, on a private broker: the Procfile's commands, imported definitions, JSON logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from app.config import generate_secret_key
from tests.cluster.conftest import Cluster, eventually
from tests.support.processes import ROOT, PrivateBroker, free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow_broker]


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, _, command = line.partition(":")
            entries[kind.strip()] = command.strip()
    return entries


async def readyz(port: int) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


async def test_procfile_release_then_web_and_readiness_follows_the_broker(
    private_broker: PrivateBroker, tmp_path: Path
) -> None:
    commands = procfile()
    assert set(commands) == {"release", "web"}
    port = free_port()
    # The venv's python first on PATH, as a buildpack's would be.
    venv_bin = str(Path(sys.executable).parent)
    env = dict(
        os.environ,
        PATH=f"{venv_bin}:/usr/bin:/bin",
        PORT=str(port),
        AMQP_URL=private_broker.url,
        SECRET_KEY=generate_secret_key().decode(),
        USERS_FILE=str(tmp_path / "users.json"),
        DYNO="web.1",
        LOG_FORMAT="json",
    )
    release = subprocess.run(commands["release"], shell=True, env=env, cwd=ROOT, capture_output=True, text=True)
    assert release.returncode == 0, release.stderr
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        web = subprocess.Popen(
            ["sh", "-c", f"exec {commands['web']}"], env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
        )
    try:

        async def is_ready() -> bool:
            return await readyz(port) == 200

        await eventually(is_ready, timeout=30, what="/readyz to answer 200 after start")
        await private_broker.stop()

        async def not_ready() -> bool:
            return await readyz(port) == 503

        await eventually(not_ready, timeout=30, what="/readyz to answer 503 while the broker is stopped")
        await private_broker.start()
        await eventually(is_ready, timeout=60, what="/readyz to answer 200 when the broker is back")
        web.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(web.wait, 30) == 0
    finally:
        if web.poll() is None:
            web.kill()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert lines and all(entry["node"] == "web.1" for entry in lines)
    messages = " ".join(entry["msg"] for entry in lines)
    for event in ("ready", "reconnected", "stopped"):
        assert event in messages, f"no log line says {event!r}: {messages[:2000]}"


async def test_nodes_run_on_a_broker_loaded_with_the_shipped_definitions(
    private_broker: PrivateBroker, private_cluster: Cluster
) -> None:
    definitions = json.loads((ROOT / "rabbitmq" / "definitions.json").read_text())
    async with aiohttp.ClientSession(auth=aiohttp.BasicAuth("guest", "guest")) as http:
        async with http.post(f"{private_broker.api}/definitions", json=definitions) as resp:
            assert resp.status in (200, 201, 204), await resp.text()
        async with http.get(f"{private_broker.api}/policies/%2F") as resp:
            policies = {p["name"] for p in await resp.json()}
    assert "warren-mailboxes" in policies
    cluster = private_cluster
    node_a = await cluster.start_node("a")
    node_b = await cluster.start_node("b")
    alice, bob = cluster.user("alice"), cluster.user("bob")
    a = await cluster.online(node_a, alice)
    for i in range(5):
        await a.send_chat(bob, f"while away {i}", receipt=f"r{i}")
        assert (await a.next_frame()).command == "RECEIPT"
    b = await cluster.online(node_b, bob)
    assert [(await b.next_message())["content"] for _ in range(5)] == [f"while away {i}" for i in range(5)]
    await b.send_chat(alice, "back")
    assert (await a.next_message())["content"] == "back"
