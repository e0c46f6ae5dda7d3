"""Warren nodes as separate processes (``python -m tests.transport.serve``), for the browser and balancer tests.

Each node is started the way an operator starts one (environment variables, ``web.run_app``) and stopped by its
PID: SIGTERM, then SIGKILL if it does not stop in time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ROOT, free_port, log_tail, stop_process, wait_http_ok

START_TIMEOUT = 30.0


@dataclass
class NodeProcess:
    """One Warren node on a loopback port; ``env`` adds to or overrides the node's environment."""

    name: str
    workdir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "NODE_ID": self.name, "PYTHONUNBUFFERED": "1"}
        env.pop("AMQP_URL", None)
        env.pop("CLOUDAMQP_URL", None)
        env.update(self.env)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.transport.serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_http_ok(self.process, f"{self.url}/readyz", START_TIMEOUT, self.log_path)

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)
