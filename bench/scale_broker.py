"""The broker's side: RabbitMQ memory and CPU per mailbox queue, at 10,000 and 100,000 mailboxes.

Mailboxes as Warren makes them (durable classic queues ``<prefix>.mailbox.<user>`` under a policy with Warren's
``MailboxLimits`` definition: message TTL, max-length with reject-publish, expires), each holding one persistent
message of ``MESSAGE_BYTES`` (a mailbox exists because it has mail). Created on ``CHANNELS`` AMQP channels in
parallel, up to each count in turn (10,000, then 100,000); at each count:

* declare (+ publish) rate, mailboxes/s;
* memory per mailbox: of its queue process (the management API's ``memory`` of each queue, summed over the run's
  mailboxes: what other clients of a shared broker do not disturb), and of the whole broker: RSS (/proc of
  beam.smp), ``mem_used``, and its Mnesia + ETS tables (queue records, bindings), each (after − before) ÷ count,
  read 5 s after the last one was made and again after the idle window (idle classic queues hibernate);
* the broker's CPU per idle mailbox per second over ``mailbox_idle_window`` seconds, net of its CPU before.

Then every mailbox is deleted (deletes/s). The policy's TTL is one hour, so even a run killed before its cleanup
leaves nothing for more than four hours (``expires``). The creation stops early, with a note, when the broker's
memory reaches ``broker_memory_guard`` of its high watermark: a memory alarm would block every publisher on the
shared broker.

Per bound user (bindings on a node queue) the figures come from the curve (``bench.scale_curve``): the broker's
memory and CPU before and after N users are bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import quote

from .common import AMQP_URL, broker_pid, log
from .scale_common import FineCpuMeter, ScaleParams, ScaleRun, broker_memory, queues_memory

MESSAGE_BYTES = 300
CHANNELS = 8


async def _create(channels: list[Any], names: list[str], body: bytes) -> None:
    import aiormq

    properties = aiormq.spec.Basic.Properties(delivery_mode=2)

    async def worker(channel: Any, part: list[str]) -> None:
        # Declares one after another; the publishes' confirms (each waits for the message store's fsync) are
        # awaited together, or the fsync latency alone would set the rate.
        confirms = []
        for name in part:
            await channel.queue_declare(name, durable=True)
            confirms.append(asyncio.ensure_future(channel.basic_publish(body, routing_key=name, properties=properties)))
        await asyncio.gather(*confirms)

    await asyncio.gather(*(worker(ch, names[i :: len(channels)]) for i, ch in enumerate(channels)))


async def _delete(channels: list[Any], names: list[str]) -> None:
    async def worker(channel: Any, part: list[str]) -> None:
        for name in part:
            await channel.queue_delete(name)

    await asyncio.gather(*(worker(ch, names[i :: len(channels)]) for i, ch in enumerate(channels)))


async def scenario_mailboxes(run: ScaleRun, p: ScaleParams) -> dict[str, Any]:
    import aiormq

    from app.backplane.topology import MailboxLimits

    mgmt = await run.ctx.management()
    queue_prefix = f"{run.prefix}.mailbox."
    policy = f"{run.prefix}-mailboxes"
    await mgmt.put(
        f"policies/%2F/{quote(policy, safe='')}",
        {
            "pattern": "^" + queue_prefix.replace(".", r"\."),
            "apply-to": "queues",
            "priority": 0,
            "definition": MailboxLimits(ttl_seconds=3600, max_messages=1000).policy_definition(),
        },
    )
    out: dict[str, Any] = {"message_bytes": MESSAGE_BYTES, "channels": CHANNELS, "counts": {}}
    body = b"x" * MESSAGE_BYTES
    made: list[str] = []
    connection = await aiormq.connect(AMQP_URL)
    try:
        channels = [await connection.channel(publisher_confirms=True) for _ in range(CHANNELS)]
        beam = broker_pid()
        meter = FineCpuMeter({"broker": beam} if beam else {})
        await asyncio.sleep(2.0)
        meter.start()
        await asyncio.sleep(10.0)
        base_used = meter.stop()
        base_cores = base_used.get("broker", 0.0) / base_used["_wall"]
        before = await broker_memory(mgmt)
        out["before"] = before
        for target in sorted(p.mailboxes):
            log(f"mailboxes: creating up to {target:,}")
            started = time.monotonic()
            first = len(made)
            stopped = None
            while len(made) < target:
                batch = [f"{queue_prefix}u{i}" for i in range(len(made), min(target, len(made) + 1000))]
                await _create(channels, batch, body)
                made.extend(batch)
                mem = await broker_memory(mgmt)
                if mem.get("mem_alarm") or (
                    mem.get("mem_limit") and mem.get("mem_used", 0) > p.broker_memory_guard * mem["mem_limit"]
                ):
                    stopped = (
                        f"stopped at {len(made):,} mailboxes: the broker's memory reached "
                        f"{mem.get('mem_used', 0) / 2**20:,.0f} MiB of a {mem.get('mem_limit', 0) / 2**20:,.0f} MiB "
                        "watermark"
                    )
                    break
            seconds = time.monotonic() - started
            row: dict[str, Any] = {"mailboxes": len(made), "create_per_s": (len(made) - first) / seconds}
            await asyncio.sleep(5.0)
            awake = await broker_memory(mgmt)
            meter.start()
            await asyncio.sleep(p.mailbox_idle_window)
            used = meter.stop()
            idle = await broker_memory(mgmt)
            with contextlib.suppress(Exception):
                count, memory = await queues_memory(mgmt, queue_prefix)
                row["queue_process_bytes_per_mailbox"] = memory / max(count, 1)
            for key in ("rss", "mem_used", "tables"):
                if key in before and key in awake:
                    row[f"{key}_bytes_per_mailbox"] = (awake[key] - before[key]) / len(made)
                if key in before and key in idle:
                    row[f"{key}_bytes_per_mailbox_idle"] = (idle[key] - before[key]) / len(made)
            if "broker" in used:
                cores = used["broker"] / used["_wall"]
                row["broker_cores"] = cores
                row["broker_us_per_mailbox_s_net"] = (cores - base_cores) / len(made) * 1e6
            row["other_cores"] = (used["_machine"] - used.get("broker", 0.0)) / used["_wall"]
            if stopped:
                row["note"] = stopped
            out["counts"][str(target)] = row
            log(
                f"mailboxes: {len(made):,} made at {row['create_per_s']:.0f}/s; broker "
                f"{row.get('rss_bytes_per_mailbox', float('nan')) / 1024:.1f} KiB per mailbox awake, "
                f"{row.get('rss_bytes_per_mailbox_idle', float('nan')) / 1024:.1f} KiB idle, "
                f"{row.get('broker_us_per_mailbox_s_net', float('nan')):.2f} µs CPU per mailbox per s"
            )
            if stopped:
                log(f"mailboxes: {stopped}")
                break
        started = time.monotonic()
        await _delete(channels, made)
        out["delete_per_s"] = len(made) / (time.monotonic() - started)
        log(f"mailboxes: {len(made):,} deleted at {out['delete_per_s']:.0f}/s")
        made = []
    finally:
        if made:
            # Whatever is left (an error half-way): the management API sweep of the run's prefix deletes it.
            log(f"mailboxes: {len(made):,} left for the cleanup")
        await connection.close()
        await mgmt.delete(f"policies/%2F/{quote(policy, safe='')}")
    return out
