"""The hub's counters and latency histograms, read by ``/metrics`` (``app.metrics``).

Guarantees: plain ints and lists, updated in a few operations per message on the hot path and never locked (one
event loop writes them); every refusal is counted under its reason (``WarrenError.reason``, or ``internal``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


class LatencyHistogram:
    """A fixed-bucket histogram of seconds: a few list operations per observation, read at scrape time."""

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1


@dataclass
class HubStats:
    """Counters for /metrics; plain ints, cheap on the hot path."""

    accepted: int = 0
    delivered_live: int = 0
    moved_to_mailbox: int = 0
    mailbox_delivered: int = 0
    returned_unacked: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    #: Time from send to the backplane's "stored" (for RabbitMQ: the publisher confirm).
    publish_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: Time from acceptance on the sending node to the write into a receiver's connection here.
    delivery_latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
