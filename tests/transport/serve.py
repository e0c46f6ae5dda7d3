"""``python -m tests.transport.serve``: a Warren node, configured from the environment exactly like
``python -m app``, that also serves the transport test pages under ``/test-pages/`` (tests only, never deployed).

It runs through ``web.run_app`` like production, so aiohttp's handler cancellation is off, as it is for users.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

from app.__main__ import configure_logging
from app.config import Settings
from app.server import create_app

PAGES = Path(__file__).resolve().parent / "pages"


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings)
    app = create_app(settings)
    app.router.add_static("/test-pages/", PAGES, show_index=False)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
