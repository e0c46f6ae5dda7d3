"""``GET /metrics``: Prometheus text format, read from the hub's counters at scrape time.

Counters live in the core as plain integers (``HubStats``) so the message path pays nothing for metrics; this
module turns them into Prometheus families when scraped. Each app has its own registry, so several nodes in one
test process never mix their figures. Exposure is a setting: ``METRICS_ENABLED`` (default true) and, when
``METRICS_TOKEN`` is set, a ``Authorization: Bearer <token>`` requirement.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .core.stats import LatencyHistogram
from .keys import BACKPLANE, HUB, SETTINGS, SOCKJS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)


class _WarrenCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        hub, stats = self.app[HUB], self.app[HUB].stats
        sessions = GaugeMetricFamily("warren_sessions", "Open SockJS sessions by transport", labels=["transport"])
        for transport, count in sorted(self.app[SOCKJS].count_by_transport().items()):
            sessions.add_metric([transport], count)
        yield sessions
        yield GaugeMetricFamily("warren_users_bound", "Users online on this node", value=len(hub.online_users()))
        yield CounterMetricFamily(
            "warren_setup_steps_deferred",
            "Connection set-up steps that waited for a later loop iteration (a burst of connections)",
            value=hub.pacer.deferred,
        )
        yield GaugeMetricFamily(
            "warren_setup_steps_waiting", "Connection set-up steps waiting now", value=hub.pacer.waiting
        )
        for name, value, text in (
            ("accepted", stats.accepted, "Messages accepted (stored by the backplane)"),
            ("delivered_live", stats.delivered_live, "Messages written to a connection on this node"),
            ("moved_to_mailbox", stats.moved_to_mailbox, "Live messages moved to a mailbox (receiver left)"),
            ("mailbox_delivered", stats.mailbox_delivered, "Mailbox messages delivered (push or pull)"),
            ("returned_unacked", stats.returned_unacked, "Unacknowledged messages returned to a mailbox"),
        ):
            yield CounterMetricFamily(f"warren_messages_{name}", text, value=value)
        refused = CounterMetricFamily("warren_messages_refused", "Messages refused, by reason", labels=["reason"])
        for reason, count in sorted(stats.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield _histogram("warren_publish_seconds", "Send to stored (publisher confirm)", stats.publish_latency)
        yield _histogram("warren_delivery_seconds", "Accepted to written to the receiver", stats.delivery_latency)
        backplane = self.app[BACKPLANE]
        yield CounterMetricFamily(
            "warren_broker_reconnects", "Broker connections re-established", value=getattr(backplane, "reconnects", 0)
        )
        yield GaugeMetricFamily("warren_backplane_ready", "1 when the backplane accepts", value=backplane.ready)


def _histogram(name: str, documentation: str, histogram: LatencyHistogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip((*LatencyHistogram.BUCKETS, float("inf")), histogram.counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.total)


async def metrics(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.metrics_token:
        supplied = request.headers.get("Authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {settings.metrics_token}".encode()):
            return web.Response(status=401, text="metrics need Authorization: Bearer <METRICS_TOKEN>\n")
    return web.Response(body=generate_latest(request.app[METRICS_REGISTRY]), headers={"Content-Type": CONTENT_TYPE})


def add_metrics(app: web.Application) -> None:
    if not app[SETTINGS].metrics_enabled:
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WarrenCollector(app))
    app[METRICS_REGISTRY] = registry
    app.router.add_get("/metrics", metrics)
