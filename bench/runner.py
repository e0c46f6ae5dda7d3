"""Worker-process handles and the run context (servers, client workers, users, cleanup)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

from .common import ROOT, Child, Management, b64_secret, child_setup, log, make_users_file, raise_nofile


class WorkerError(RuntimeError):
    pass


class Proc:
    """A client worker (``bench.loadgen``) or a ceiling process (``bench.ceiling``), driven over stdin/stdout."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        logf = open(self.log_path, "ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=logf,
            cwd=ROOT,
            env=self.env or dict(os.environ),
            limit=256 * 1024 * 1024,
            start_new_session=True,
            preexec_fn=child_setup,
        )

    async def call(self, cmd: str, timeout: float = 600, **kwargs: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write((json.dumps({"cmd": cmd, **kwargs}) + "\n").encode())
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise WorkerError(f"{self.name} ended during {cmd}:\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.name} {cmd}: {answer['error']}")
        return answer

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.write(b'{"cmd": "exit"}\n')
            await proc.stdin.drain()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


def loadgen(ctx: Context, name: str) -> Proc:
    return ctx.track_proc(Proc(name, [sys.executable, "-m", "bench.loadgen"], ctx.workdir / f"{name}.log"))


def ceiling_proc(ctx: Context, role: str) -> Proc:
    env = dict(
        os.environ, CEILING_EXCHANGE=f"bench.ceiling.{ctx.run_id}", CEILING_QUEUE=f"bench.ceiling.{ctx.run_id}.q"
    )
    return ctx.track_proc(
        Proc(f"ceiling-{role}", [sys.executable, "-m", "bench.ceiling", role], ctx.workdir / f"ceiling-{role}.log", env)
    )


@dataclass
class Context:
    """One bench run: its scratch directory, users, secret, every process it started, and the results."""

    quick: bool = False
    keep: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="warren-bench-")))
    secret_key: bytes = field(default_factory=b64_secret)
    results: dict[str, Any] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    shms: list[shared_memory.SharedMemory] = field(default_factory=list)
    mgmt: Management | None = None
    users_file: Path | None = None
    started: float = field(default_factory=time.monotonic)

    def user(self, group: str, i: int) -> str:
        return f"b{self.run_id}-{group}{i}"

    def prepare_users(self, counts: dict[str, int]) -> None:
        names = [self.user(group, i) for group, n in counts.items() for i in range(n)]
        self.users_file = self.workdir / "users.json"
        started = time.monotonic()
        make_users_file(self.users_file, names)
        log(f"user directory with {len(names)} users in {time.monotonic() - started:.1f} s")

    def track_child(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def track_proc(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def shm(self, slots: int) -> shared_memory.SharedMemory:
        segment = shared_memory.SharedMemory(create=True, size=8 * max(1, slots))
        segment.buf[:] = bytes(len(segment.buf))
        self.shms.append(segment)
        return segment

    async def management(self) -> Management:
        if self.mgmt is None:
            self.mgmt = Management()
        return self.mgmt

    async def cleanup(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                await proc.stop()
        for child in self.children:
            with contextlib.suppress(Exception):
                await child.stop(timeout=20)
        for segment in self.shms:
            with contextlib.suppress(Exception):
                segment.close()
                segment.unlink()
        if self.mgmt is not None:
            with contextlib.suppress(Exception):
                await self._broker_cleanup()
            await self.mgmt.close()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def _broker_cleanup(self) -> None:
        """Delete what this run left on the broker: bench mailboxes, peer queues and exchanges, its policy."""
        assert self.mgmt is not None
        mgmt = self.mgmt
        for name in await mgmt.queues_matching(f"warren.mailbox.b{self.run_id}-"):
            await mgmt.delete(f"queues/%2F/{name}")
        for exchange in (f"bench-sio-{self.run_id}", f"bench-sio4-{self.run_id}", f"bench-siom-{self.run_id}"):
            with contextlib.suppress(Exception):
                for queue in await mgmt.exchange_destinations(exchange):
                    await mgmt.delete(f"queues/%2F/{queue}")
            await mgmt.delete(f"exchanges/%2F/{exchange}")
        await mgmt.delete(f"exchanges/%2F/bench.ceiling.{self.run_id}")
        await mgmt.delete(f"policies/%2F/bench-{self.run_id}-mailboxes")


def setup_process() -> None:
    raise_nofile(65536)
