"""Run a module under uvloop: ``python -m bench.uvrun app`` serves Warren on uvloop's event loop.

For measuring what uvloop would give Warren (``python -m bench --uvloop``) without changing ``app/``: aiohttp's
``run_app`` makes its loop through the event loop policy, which ``uvloop.install()`` replaces.
"""

from __future__ import annotations

import runpy
import sys

import uvloop

if __name__ == "__main__":
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    uvloop.install()
    runpy.run_module(module, run_name="__main__", alter_sys=True)
