"""Shared helpers: statistics, /proc readings, users and cookies, server processes, the management API.

Everything the bench starts is a child process ended by its PID; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MGMT_URL = os.environ.get("BENCH_MGMT_URL", "http://127.0.0.1:15672")
MGMT_AUTH = aiohttp.BasicAuth("guest", "guest")
PASSWORD = "bench-password-1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def raise_nofile(wanted: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: Niceness for every process the bench starts (``--nice``): negative values shield the measurement from other
#: work on a shared machine (needs root). RabbitMQ is not touched.
NICE = int(os.environ.get("BENCH_NICE", "0") or 0)


#: Serve Warren's nodes on uvloop (``--uvloop``), to measure what it would give.
UVLOOP_NODES = os.environ.get("BENCH_UVLOOP_NODES") == "1"


def child_setup() -> None:
    """Runs in each child before exec: more file descriptors, and the bench's niceness."""
    raise_nofile(65536)
    if NICE:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, NICE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- statistics ---------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[rank])


@dataclass
class Spread:
    """Median of repetitions with min and max."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "values": self.values}


# -- /proc --------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (to see how much else ran during a measurement)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / CLK_TCK


def broker_pid() -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == "beam.smp":
                    return int(entry)
        except OSError:
            continue
    return None


class CpuMeter:
    """CPU seconds of given processes (and of the whole machine) between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._start["_machine"] = machine_busy_seconds()
        self._start["_wall"] = time.monotonic()

    def stop(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["_machine"] = machine_busy_seconds()
        now["_wall"] = time.monotonic()
        self.used = {name: now[name] - self._start[name] for name in now}
        return self.used


# -- users and cookies ----------------------------------------------------------------------------------------


def make_users_file(path: Path, names: Sequence[str]) -> None:
    """A Warren user directory with ``names``, all with ``PASSWORD``.

    One scrypt derivation (``UserDirectory.add``), then its record is copied to every other name: each real ``add``
    costs ~50 ms, which for thousands of users would dominate the run. Falls back to ``add`` for every user if the
    file format is not the one this expects.
    """
    from app.auth.users import UserDirectory

    if path.exists():
        path.unlink()
    directory = UserDirectory(path)
    directory.add(names[0], PASSWORD)
    data = json.loads(path.read_text())
    users = data.get("users")
    if isinstance(users, dict) and names[0] in users:
        record = users[names[0]]
        for name in names[1:]:
            users[name] = dict(record)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
        check = UserDirectory(path)
        if check.verify(names[-1], PASSWORD):
            return
    for name in names[1:]:
        directory.add(name, PASSWORD)


def mint_cookie(secret_key: bytes, user: str, generation: int = 0) -> str:
    """The value of Warren's session cookie for ``user``, as ``POST /login`` would set it.

    aiohttp-session's ``EncryptedCookieStorage`` format: Fernet over ``{"created", "session"}``. The bench checks
    one minted cookie against a node (``/api/me``) and falls back to real sign-ins if the format changed.
    """
    from cryptography.fernet import Fernet

    now = int(time.time())
    payload = {"created": now, "session": {"user": user, "gen": generation, "at": now}}
    return Fernet(secret_key).encrypt(json.dumps(payload).encode()).decode()


COOKIE_NAME = "WARREN_SESSION"


async def login_cookie(base_url: str, user: str, http: aiohttp.ClientSession | None = None) -> str:
    own = http is None
    http = http or aiohttp.ClientSession()
    try:
        async with http.post(
            f"{base_url}/login", json={"username": user, "password": PASSWORD}, headers={"Origin": base_url}
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"login of {user} failed: {resp.status} {await resp.text()}")
            morsel = resp.cookies.get(COOKIE_NAME)
            if morsel is None:
                raise RuntimeError("login answered without a session cookie")
            return morsel.value
    finally:
        if own:
            await http.close()


async def cookie_works(base_url: str, user: str, cookie: str) -> bool:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/api/me", headers={"Cookie": f"{COOKIE_NAME}={cookie}"}) as resp:
            if resp.status != 200:
                return False
            data = await resp.json()
            return bool(data.get("user") == user)


async def cookies_for(
    base_url: str, secret_key: bytes, users: Sequence[str], *, real_logins: bool = False
) -> dict[str, str]:
    """Session cookies for ``users``: minted, or (fallback, or when asked) from ``POST /login``."""
    if not real_logins:
        minted = {user: mint_cookie(secret_key, user) for user in users}
        if await cookie_works(base_url, users[0], minted[users[0]]):
            return minted
        log("minted cookies are refused; signing in for real (slow: scrypt per user)")
    cookies: dict[str, str] = {}
    sem = asyncio.Semaphore(4)
    async with aiohttp.ClientSession() as http:

        async def one(user: str) -> None:
            async with sem:
                cookies[user] = await login_cookie(base_url, user, http)

        await asyncio.gather(*(one(u) for u in users))
    return cookies


# -- child processes ------------------------------------------------------------------------------------------


class Child:
    """A server process started by the bench; ended by its PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.port = port
        #: Where it runs: ``python -m app`` imports the ``app`` of this directory (``bench.ab`` points it elsewhere).
        self.cwd = ROOT
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self) -> None:
        logf = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=logf,
            stderr=logf,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=child_setup,
        )

    async def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    tail = self.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with http.get(self.url + path) as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready after {timeout} s (see {self.log_path})")
                await asyncio.sleep(0.05)

    async def start(self, path: str, timeout: float = 60) -> None:
        self.spawn()
        await self.wait_ready(path, timeout)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a child
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)

    def kill(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def warren_node(
    node_id: str, workdir: Path, users_file: Path, secret_key: bytes, *, amqp: bool = True, **extra: str
) -> Child:
    port = free_port()
    env = dict(os.environ)
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        USERS_FILE=str(users_file),
        SECRET_KEY=secret_key.decode(),
        NODE_ID=node_id,
        LOG_LEVEL="WARNING",
        # The bench measures the server, not its per-user abuse limits.
        MESSAGE_RATE="0",
        CONNECTION_MESSAGE_RATE="0",
        MAX_SESSIONS_PER_USER="100000",
        PYTHONUNBUFFERED="1",
    )
    if amqp:
        env["AMQP_URL"] = AMQP_URL
    else:
        env.pop("AMQP_URL", None)
        env.pop("CLOUDAMQP_URL", None)
    env.update(extra)
    argv = [sys.executable, "-m", "bench.uvrun", "app"] if UVLOOP_NODES else [sys.executable, "-m", "app"]
    return Child(f"warren:{node_id}", argv, env, workdir / f"{node_id}.log", port)


def peer_node(node_id: str, workdir: Path, channel: str) -> Child:
    port = free_port()
    env = dict(os.environ, PORT=str(port), SIO_CHANNEL=channel, AMQP_URL=AMQP_URL, PYTHONUNBUFFERED="1")
    return Child(f"sio:{node_id}", [sys.executable, "-m", "bench.peer_sio"], env, workdir / f"{node_id}.log", port)


def bare_node(workdir: Path) -> Child:
    port = free_port()
    env = dict(os.environ, PORT=str(port), PYTHONUNBUFFERED="1")
    return Child("bare-aiohttp", [sys.executable, "-m", "bench.bare_ws"], env, workdir / "bare.log", port)


# -- the management API -------------------------------------------------------------------------------------


class Management:
    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(auth=MGMT_AUTH, timeout=aiohttp.ClientTimeout(total=10))

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str) -> Any:
        async with self.http.get(MGMT_URL + "/api/" + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def put(self, path: str, body: dict[str, Any]) -> None:
        async with self.http.put(MGMT_URL + "/api/" + path, json=body) as resp:
            if resp.status not in (200, 201, 204):
                raise RuntimeError(f"PUT {path}: {resp.status} {await resp.text()}")

    async def delete(self, path: str) -> None:
        async with self.http.delete(MGMT_URL + "/api/" + path) as resp:
            if resp.status not in (200, 204, 404):
                raise RuntimeError(f"DELETE {path}: {resp.status} {await resp.text()}")

    async def queue(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.get(f"queues/%2F/{quote(name, safe='')}")
        return data

    async def queue_delivered(self, names: Sequence[str]) -> int:
        """deliver_get plus messages still in the queue (to be delivered), summed over queues (missing ones: 0).

        A node that lags behind (python-socketio's consumers run with prefetch 1) still holds part of its share
        when the figure is read; those messages are delivered later, so they count.
        """
        total = 0
        for name in names:
            with contextlib.suppress(aiohttp.ClientResponseError):
                q = await self.queue(name)
                total += int(q.get("message_stats", {}).get("deliver_get", 0)) + int(q.get("messages", 0) or 0)
        return total

    async def bindings_count(self, queue: str) -> int:
        data = await self.get(f"queues/%2F/{quote(queue, safe='')}/bindings")
        return len(data)

    async def exchange_destinations(self, exchange: str) -> list[str]:
        data = await self.get(f"exchanges/%2F/{quote(exchange, safe='')}/bindings/source")
        return [b["destination"] for b in data if b.get("destination_type") == "queue"]

    async def queues_matching(self, prefix: str) -> list[str]:
        data = await self.get("queues/%2F?columns=name")
        return [q["name"] for q in data if q["name"].startswith(prefix)]


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll until ``predicate`` (sync or async) is true; returns the seconds it took."""
    started = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def b64_secret() -> bytes:
    return base64.urlsafe_b64encode(os.urandom(32))
