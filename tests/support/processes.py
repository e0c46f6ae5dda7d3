"""Real processes for multi-node and fault tests: Warren nodes and a private RabbitMQ node.

A private broker has its own node name, ports, data directory and Erlang cookie, so a test may stop, kill and
restart it without touching the shared broker at 127.0.0.1:5672. Every process started here is ended by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate`` (sync or async callable) until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


class PrivateBroker:
    """A RabbitMQ node of the test's own: ``start``, ``stop`` (graceful), ``kill`` (SIGKILL), ``start`` again."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.name = f"warren-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.management_port = free_port()
        self.dist_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        (base / "home").mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "loopback_users = none\n"
        )
        (base / "enabled_plugins").write_text("[rabbitmq_management].\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.management_port}/api"

    @staticmethod
    def available() -> bool:
        return RABBITMQ_SERVER.exists()

    async def start(self, timeout: float = 60) -> None:
        env = dict(
            os.environ,
            HOME=str(self.base / "home"),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
        )
        log = open(self.base / "broker.log", "ab")
        self.process = subprocess.Popen(
            [str(RABBITMQ_SERVER)], env=env, stdout=log, stderr=log, cwd=self.base, start_new_session=True
        )
        await wait_until(self._management_ready, timeout, f"private broker {self.name} to start")

    async def _management_ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"private broker exited: see {self.base / 'broker.log'}")
        if not port_open(self.port):
            return False
        try:
            async with aiohttp.ClientSession(auth=aiohttp.BasicAuth("guest", "guest")) as http:
                async with http.get(f"{self.api}/overview") as resp:
                    return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def stop(self, timeout: float = 60) -> None:
        """Graceful stop (what an operator's restart does)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        await wait_until(lambda: self.process is None or self.process.poll() is not None, timeout, "broker stop")
        self.process = None
        await wait_until(lambda: not port_open(self.port), timeout, "broker port to close")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # The script's child (the Erlang VM) is in the same process group as the script.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(self.process.pid), signal.SIGKILL)
        self.process = None


class NodeProcess:
    """``python -m app`` as a child process."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = dict(os.environ, PORT=str(self.port), HOST="127.0.0.1", **env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30, ready: bool = True) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app"], env=self.env, stdout=log, stderr=log, cwd=ROOT, start_new_session=True
        )
        await wait_until(lambda: self._status("/readyz" if ready else "/healthz"), timeout, f"node on {self.port}")

    async def _status(self, path: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"node exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
        try:
            async with aiohttp.ClientSession() as http, http.get(self.url + path) as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    async def wait(self, timeout: float = 40) -> int:
        assert self.process is not None
        await wait_until(lambda: self.process is not None and self.process.poll() is not None, timeout, "node exit")
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# -- synchronous helpers for fixtures that run outside an event loop (the browser and transport tests) ------------


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def wait_http_ok(process: subprocess.Popen[bytes], url: str, timeout: float, log_path: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the process' log if it exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode} before serving:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.1)  # poll interval while the server starts
    stop_process(process)
    raise AssertionError(f"{url} did not answer 200 within {timeout:.0f} s ({last_error}):\n{log_tail(log_path)}")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM by PID, then SIGKILL if it does not stop within 15 s."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
