"""Smoke test of the benchmark harness (``python -m bench``): its quickest subset produces numbers.

Two Warren nodes on the RabbitMQ backplane, 20 protocol clients, one short saturation run and one short open-loop
rate. It checks that the harness works end to end, not how fast Warren is (``make bench`` measures that).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import broker_reachable

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.skipif(
        not (ROOT / "app" / "backplane" / "rabbitmq.py").exists(), reason="the RabbitMQ backplane does not exist yet"
    ),
    pytest.mark.skipif(not broker_reachable(), reason="RabbitMQ is not reachable at 127.0.0.1:5672"),
]


@pytest.mark.timeout(90)
def test_quickest_bench_subset_produces_numbers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "chat",
            "--systems",
            "warren",
            "--duration",
            "1",
            "--paced-duration",
            "1",
            "--rates",
            "300",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| Cross-node deliveries/s at saturation" in completed.stdout
    results = json.loads(out.read_text())["results"]["chat"]["warren"]
    throughput = results["saturation"]["throughput"]["median"]
    assert throughput > 0
    latency = results["paced"]["300"]
    assert 0 < latency["p50"]["median"] <= latency["p99"]["median"]
    assert latency["lost"]["median"] == 0
    assert results["deliveries_per_msg_2"] == pytest.approx(1.0, abs=0.05)
