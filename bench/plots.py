"""PNG plots of the scale bench: memory, latency and idle CPU against connections (matplotlib, no display needed).

``python -m bench.plots RESULTS.json --out DIR`` draws them again from the JSON of ``python -m bench.scale --json``;
``bench.scale --plots DIR`` draws them at the end of a run. Files: ``scale-memory.png``, ``scale-latency.png``,
``scale-cpu.png``. Points are medians of the repetitions; bars span min–max; the issue's targets are dashed lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _series(steps: dict[str, Any], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    ns, med, low, high = [], [], [], []
    for n in sorted(steps, key=int):
        value = (steps[n].get("summary") or {}).get(key)
        if isinstance(value, dict) and value.get("median") is not None:
            ns.append(int(n))
            med.append(float(value["median"]))
            low.append(float(value["median"]) - float(value["min"]))
            high.append(float(value["max"]) - float(value["median"]))
    return ns, med, low, high


def _title_suffix(meta: dict[str, Any]) -> str:
    return f"\n{meta.get('date', '')} · {meta.get('mode', '')}"


def write_plots(document: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draw what the document holds; returns the files written (none when there is no curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = ((document.get("results") or {}).get("curve") or {}).get("steps") or {}
    meta = document.get("meta") or {}
    if not steps:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    # Memory: per session (left axis) and the node's RSS (right axis).
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    ns, med, low, high = _series(steps, "kib_per_session")
    if ns:
        ax.errorbar(ns, med, yerr=[low, high], marker="o", capsize=3, label="RSS per idle session, KiB")
        ax.axhline(14.0, linestyle="--", color="grey", linewidth=1, label="target: 14 KiB per session")
    ax.set_xlabel("idle SockJS WebSocket sessions on one node")
    ax.set_ylabel("KiB per session")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ns2, med2, low2, high2 = _series(steps, "rss_mib")
    if ns2:
        ax2.errorbar(ns2, med2, yerr=[low2, high2], marker="s", color="tab:orange", capsize=3, label="node RSS, MiB")
    ax2.set_ylabel("node RSS, MiB")
    ax2.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(handles, labels, loc="lower right", fontsize=8)
    ax.set_title("Warren: memory against connections" + _title_suffix(meta), fontsize=9)
    fig.tight_layout()
    path = out_dir / "scale-memory.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    # Latency at the offered rate.
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    rate = (document.get("params") or {}).get("rate", 1000)
    for key, label, marker in (
        ("latency.p50", "p50", "o"),
        ("latency.p99", "p99", "s"),
        ("latency.p999", "p99.9", "^"),
    ):
        ns, med, low, high = _series(steps, key)
        if ns:
            ax.errorbar(ns, med, yerr=[low, high], marker=marker, capsize=3, label=label)
    ax.axhline(10.0, linestyle="--", color="grey", linewidth=1, label="target: p99 ≤ 10 ms")
    ax.set_xlabel("sessions on the node (100 chatting with a second node, the rest idle)")
    ax.set_ylabel(f"latency at {rate:,} msg/s offered, ms")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Warren: message latency against connections" + _title_suffix(meta), fontsize=9)
    fig.tight_layout()
    path = out_dir / "scale-latency.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    # Idle CPU per session.
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for key, label in (("idle_us_per_session_s", "gross"), ("idle_us_per_session_s_net", "net of the empty node")):
        ns, med, low, high = _series(steps, key)
        if ns:
            ax.errorbar(ns, med, yerr=[low, high], marker="o", capsize=3, label=label)
    ax.axhline(2.25, linestyle="--", color="grey", linewidth=1, label="target: 2.25 µs")
    ax.set_xlabel("idle SockJS WebSocket sessions on one node")
    ax.set_ylabel("CPU per idle session per second, µs")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Warren: idle CPU against connections" + _title_suffix(meta), fontsize=9)
    fig.tight_layout()
    path = out_dir / "scale-cpu.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__)
    parser.add_argument("results", type=Path, help="JSON written by python -m bench.scale --json")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the PNG files")
    args = parser.parse_args(argv)
    for path in write_plots(json.loads(args.results.read_text()), args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
