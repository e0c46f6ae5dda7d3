"""The Warren under attack: a checkout given on the command line, its users, its nodes, and what is read from them.

A node is ``python -m app`` run with ``cwd`` and ``PYTHONPATH`` set to the checkout (so its ``app`` is the one
served), a fresh ``SECRET_KEY``, the run's ``USERS_FILE``, on 127.0.0.1 and a free port; it is started per scenario
(so one attack's leftovers never colour the next figure) and ended by its PID. Users are created the way an
operator does: ``python -m app users add NAME --password-stdin``. RabbitMQ figures get a vhost of their own on the
shared broker, deleted at the end, so their queues and policy never meet anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from .common import MGMT_AUTH, MGMT_URL, Child, b64_secret, free_port, log, percentile, rss_bytes

PASSWORD = "attack-bench-Pw-2026"
AMQP_HOST = "127.0.0.1:5672"
#: The checkout the harness runs from (its ``bench`` package); the attacked checkout is another.
HARNESS_ROOT = str(Path(__file__).resolve().parents[1])


def set_priority(nice: int) -> None:
    """This process's niceness, and its autogroup's: with ``sched_autogroup`` on, niceness only orders processes of
    one session, and every node runs in a session of its own."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
        f.write(str(nice))


@dataclass
class Target:
    checkout: Path
    python: str
    workdir: Path
    secret_key: str = ""
    nice: int = 0

    def __post_init__(self) -> None:
        self.secret_key = self.secret_key or b64_secret().decode()
        self.users_file = self.workdir / "users.json"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "CLOUDAMQP_URL", "PYTHONPATH")}
        env.update(
            PYTHONPATH=str(self.checkout),
            PYTHONUNBUFFERED="1",
            USERS_FILE=str(self.users_file),
            SECRET_KEY=self.secret_key,
        )
        return env

    def add_users(self, names: list[str]) -> None:
        """One ``users add`` per name, one after the other (each rewrites the file)."""
        for name in names:
            done = subprocess.run(
                [self.python, "-m", "app", "users", "add", name, "--password-stdin"],
                input=f"{PASSWORD}\n".encode(),
                cwd=self.checkout,
                env=self.env(),
                capture_output=True,
                timeout=60,
            )
            if done.returncode != 0:
                raise RuntimeError(f"users add {name} failed: {done.stderr.decode(errors='replace')[-500:]}")

    def node(self, name: str, *, nofile: int | None = None, **extra: str) -> Node:
        env = self.env()
        port = free_port()
        env.update(PORT=str(port), HOST="127.0.0.1", NODE_ID=f"attacks-{name}-{secrets.token_hex(3)}", **extra)
        node = Node(f"warren:{name}", [self.python, "-m", "app"], env, self.workdir / f"{name}.log", port)
        node.cwd = self.checkout
        node.nofile = nofile
        node.nice = self.nice
        return node


class Node(Child):
    """A Warren node of the checkout; ``nofile`` sets its soft descriptor limit (default: the hard limit)."""

    nofile: int | None = None
    nice: int = 0

    def spawn(self) -> None:
        soft, nice = self.nofile, self.nice

        def limits() -> None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            wanted = hard if soft is None else min(soft, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            if nice:
                set_priority(nice)  # after setsid: the node's own autogroup

        logf = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=logf,
            stderr=logf,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=limits,
        )

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def peak_rss(self) -> int:
        """VmHWM: the most RSS the process had since it started (or since ``reset_peak``)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def reset_peak(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def soft_nofile(self) -> int | None:
        """The node's soft descriptor limit now (a node may raise its own at start-up)."""
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        return int(line.split()[3])
        return None

    def open_fds(self) -> int:
        with contextlib.suppress(OSError):
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        return -1

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.asynccontextmanager
async def running(node: Node, ready: str = "/readyz"):  # type: ignore[no-untyped-def]
    """Start ``node``, wait until ``ready`` answers 200, and always end it (by PID) afterwards."""
    try:
        await node.start(ready, timeout=90)
        yield node
    finally:
        await node.stop(signal.SIGTERM, timeout=30)


class RssSampler:
    """The node's RSS every ``interval`` seconds while it runs; ``peak`` is the most seen."""

    def __init__(self, node: Node, interval: float = 0.02) -> None:
        self.node = node
        self.interval = interval
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> RssSampler:
        self.peak = self.node.rss()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(OSError):
            self.peak = max(self.peak, self.node.rss())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.node.rss())
            await asyncio.sleep(self.interval)


class Prober:
    """``/healthz`` probed from a child process (``bench.attack_clients probe``); answers read as they come."""

    def __init__(self, python: str, url: str, interval: float = 0.02) -> None:
        self.argv = [python, "-m", "bench.attack_clients", "probe", url, str(interval)]
        self.samples: list[tuple[float, float, str]] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Prober:
        env = dict(os.environ, PYTHONPATH=HARNESS_ROOT)
        self._process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=HARNESS_ROOT, env=env
        )
        self._reader = asyncio.create_task(self._read())
        deadline = time.monotonic() + 20
        while len(self.samples) < 10 and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a list
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 70)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 5)

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            start, seconds, outcome = line.decode().split()
            self.samples.append((float(start), float(seconds), outcome))

    def between(self, start: float, end: float) -> list[float]:
        """Latencies of the probes that were in flight at any moment of [start, end]."""
        return sorted(s for t, s, _ in self.samples if t <= end and t + s >= start)

    def failures_between(self, start: float, end: float) -> int:
        return sum(1 for t, s, outcome in self.samples if t <= end and t + s >= start and outcome != "200")

    def quiet_since(self, moment: float, window: float = 0.5, bound: float = 0.1) -> bool:
        """True when every probe finished in the last ``window`` seconds was quick, and some were."""
        now = time.monotonic()
        recent = [s for t, s, _ in self.samples if t + s >= now - window and t >= moment]
        return len(recent) >= 5 and max(recent) < bound

    async def settle(self, since: float, minimum: float = 3.0, cap: float = 90.0) -> float:
        """Wait until the node answers quickly again after ``since`` (at least ``minimum`` s, at most ``cap``)."""
        while True:
            elapsed = time.monotonic() - since
            if (elapsed >= minimum and self.quiet_since(since)) or elapsed >= cap:
                return elapsed
            await asyncio.sleep(0.1)


def latency_summary(values: list[float]) -> str:
    if not values:
        return "no answers"
    return (
        f"max {fmt_s(values[-1])}, p99 {fmt_s(percentile(values, 99))}, "
        f"median {fmt_s(percentile(values, 50))} ({len(values)} probes)"
    )


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# -- RabbitMQ: a vhost of the run's own ----------------------------------------------------------------------


class Vhost:
    def __init__(self) -> None:
        self.name = f"warren-attacks-{secrets.token_hex(4)}"
        self.http = aiohttp.ClientSession(auth=MGMT_AUTH, timeout=aiohttp.ClientTimeout(total=30))

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{AMQP_HOST}/{quote(self.name, safe='')}"

    async def __aenter__(self) -> Vhost:
        vhost = quote(self.name, safe="")
        async with self.http.put(f"{MGMT_URL}/api/vhosts/{vhost}", json={}) as resp:
            resp.raise_for_status()
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        async with self.http.put(f"{MGMT_URL}/api/permissions/{vhost}/guest", json=permissions) as resp:
            resp.raise_for_status()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            async with self.http.delete(f"{MGMT_URL}/api/vhosts/{quote(self.name, safe='')}") as resp:
                if resp.status not in (200, 204, 404):
                    log(f"could not delete vhost {self.name}: {resp.status}")
        await self.http.close()

    async def queues(self) -> list[dict[str, object]]:
        async with self.http.get(f"{MGMT_URL}/api/queues/{quote(self.name, safe='')}") as resp:
            resp.raise_for_status()
            data: list[dict[str, object]] = await resp.json()
            return data


def broker_reachable() -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5672), timeout=1):
        return True
    return False


def python_default() -> str:
    return sys.executable
