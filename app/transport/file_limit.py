"""The process's file-descriptor limit: raised at start-up, and what it means for connections.

Every client connection is one file descriptor. With the soft ``RLIMIT_NOFILE`` at a common default of 1,024,
about a thousand connections (signed in or not) made a node refuse every new one, ``/healthz`` included. The soft
limit may be raised up to the hard limit without privileges, so the node does that once at start-up and logs how
many connections it can hold (the limit less a reserve for the broker, logs, files served and the listener).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: Descriptors kept for things other than client connections.
RESERVED_DESCRIPTORS = 64


def raise_open_file_limit() -> int:
    """Raise the soft limit to the hard one (where the platform has limits); return the connections that fit."""
    try:
        import resource
    except ImportError:  # not a Unix system: nothing to raise
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        # RLIM_INFINITY is refused as a soft limit for descriptors on some systems; a million is plenty.
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    connections = max(0, soft - RESERVED_DESCRIPTORS)
    log.info("open-file limit %d: room for about %d client connections", soft, connections)
    return connections
