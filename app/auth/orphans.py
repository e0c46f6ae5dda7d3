"""Die with the parent: imported first in the hashing forkserver and run in each hashing worker (``app.auth.hashing``).

A node killed with SIGKILL cannot stop its helper processes, and a forkserver outlives its parent: without this,
each killed node would leave its forkserver and workers running. On Linux ``PR_SET_PDEATHSIG`` has the kernel
send SIGKILL to this process when its parent ends; elsewhere nothing is done (the helpers then end when they next
read from their closed pipes).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


die_with_parent()  # importing this module (the forkserver's preload) is the call
