"""Serve Warren on the bench's own RabbitMQ names: ``BENCH_TOPOLOGY_PREFIX=bench-x1 python -m bench.noderun``.

Warren reads no topology prefix from its environment (one deployment per vhost: ``warren.messages``,
``warren.node.<NODE_ID>``, ``warren.mailbox.<user>``, policy ``warren-mailboxes``). The tests hand the backplane a
``Topology`` of their own; the scale bench does the same from outside, so that its 18,000 bindings and its storm
never share an exchange with anything else on the broker, and it can delete everything it made by prefix
afterwards. It sets the default of ``RabbitMQBackplane``'s keyword argument ``topology`` before the app starts, and
refuses to start (exit 2) if that argument is gone, rather than silently running on the shared names.
"""

from __future__ import annotations

import os
import runpy
import sys

if __name__ == "__main__":
    prefix = os.environ.get("BENCH_TOPOLOGY_PREFIX")
    if prefix:
        from app.backplane.rabbitmq import RabbitMQBackplane
        from app.backplane.topology import Topology

        defaults = RabbitMQBackplane.__init__.__kwdefaults__
        if not defaults or "topology" not in defaults:
            print(
                "bench.noderun: RabbitMQBackplane takes no topology= any more; update bench/noderun.py", file=sys.stderr
            )
            sys.exit(2)
        defaults["topology"] = Topology(prefix)
    sys.argv = ["app", *sys.argv[1:]]
    runpy.run_module("app", run_name="__main__", alter_sys=True)
