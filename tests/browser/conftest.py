"""Browser fixtures: a real Warren server in a subprocess and headless Debian Chromium driven by Playwright.

The server is started the way an operator starts it (``python -m app`` with ``PORT``, ``USERS_FILE``,
``SECRET_KEY``), with users made by the CLI (``python -m app users add NAME --password-stdin``). It also gets
``WARREN_SERVE_LEGACY=1`` so that ``/legacy/seed.html`` (tests/legacy/) is served.

Chromium is Debian's (``/usr/bin/chromium``); Playwright never downloads a browser here. Without it the tests are
skipped with the reason; CI installs it.

Users: ``alice`` and ``bob`` for the chat scenarios, ``carol`` and ``dave`` for the transport tests, so that a
SockJS session still closing on the server after one test never takes mail meant for another test's receiver.
Tests also put a fresh nonce into every message they send and only look at messages carrying it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.support.processes import ROOT, free_port, log_tail, stop_process, wait_http_ok

CHROMIUM = Path(os.environ.get("WARREN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery"
USERS = ("alice", "bob", "carol", "dave")
#: How long a user-visible change may take to show (Playwright's expect timeout), in milliseconds.
UI_TIMEOUT_MS = 15_000
SERVER_START_TIMEOUT = 30.0
#: Run in every page at the end of a test: the chat page's hook, or the seed page's global disconnect().
LEAVE_CLEANLY = """async () => {
  if (window.warren && typeof window.warren.disconnect === 'function') { await window.warren.disconnect(); }
  else if (typeof window.disconnect === 'function') { window.disconnect(); }
}"""


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def add_user(users_file: Path, name: str, password: str = PASSWORD) -> None:
    env = {**os.environ, "USERS_FILE": str(users_file)}
    result = subprocess.run(
        [sys.executable, "-m", "app", "users", "add", name, "--password-stdin"],
        cwd=ROOT,
        env=env,
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"`python -m app users add {name}` failed ({result.returncode}):\n{result.stderr}")


@dataclass
class WarrenServer:
    """One ``python -m app`` process on a loopback port."""

    workdir: Path
    users: tuple[str, ...] = USERS
    port: int = 0
    secret_key: str = field(default_factory=fernet_key)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def users_file(self) -> Path:
        return self.workdir / "users.json"

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def start(self) -> None:
        """Start the server; a restart keeps the port, the users and the cookie key (so sign-ins survive)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            for name in self.users:
                add_user(self.users_file, name)
            self.port = free_port()
        env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "USERS_FILE": str(self.users_file),
            "SECRET_KEY": self.secret_key,
            "WARREN_SERVE_LEGACY": "1",
            "SHUTDOWN_TIMEOUT": "5",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("AMQP_URL", None)
        env.pop("CLOUDAMQP_URL", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_http_ok(self.process, f"{self.url}/healthz", SERVER_START_TIMEOUT, self.log_path)

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)


def _require_web_dependencies() -> None:
    if not (ROOT / "web" / "node_modules" / "sockjs-client" / "dist" / "sockjs.min.js").is_file():
        pytest.fail("web/node_modules is missing: run `make deps` (or `npm install` in web/) before the browser tests")


@pytest.fixture(scope="session")
def warren(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarrenServer]:
    """A Warren server (memory backplane) with the users alice, bob, carol and dave."""
    _require_web_dependencies()
    server = WarrenServer(tmp_path_factory.mktemp("warren"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Chromium for one test module. Not session-wide: while Playwright's sync API is started it leaves its event
    loop marked as running in this thread, which breaks the asyncio tests that run after the browser tests."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI installs it")
    expect.set_options(timeout=UI_TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@dataclass
class BrowserUser:
    """One person at one browser: a separate context (own cookies) and its page."""

    name: str
    context: BrowserContext
    page: Page
    errors: list[str]


@pytest.fixture
def open_browser(chromium: Browser) -> Iterator[Callable[[str], BrowserUser]]:
    """Open a fresh browser context for a user; every page is closed (and its errors checked) after the test."""
    opened: list[BrowserUser] = []

    def open_for(name: str) -> BrowserUser:
        context = chromium.new_context(viewport={"width": 1100, "height": 900})
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = context.new_page()
        errors: list[str] = []
        # Uncaught exceptions only: failed requests (a 401 for a wrong password) are logged as console errors.
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        user = BrowserUser(name, context, page, errors)
        opened.append(user)
        return user

    yield open_for

    problems = []
    for user in opened:
        # Leave the chat cleanly (STOMP DISCONNECT) so no half-closed session lingers on the server.
        try:
            user.page.evaluate(LEAVE_CLEANLY)
        except Exception:  # the page may already be closed; closing the context below is enough then
            pass
        user.context.close()
        if user.errors:
            problems.append(f"{user.name}: " + "; ".join(user.errors))
    if problems:
        pytest.fail("JavaScript errors in the page:\n" + "\n".join(problems))


@pytest.fixture
def nonce() -> str:
    """A token unique to this test, put into every message it sends."""
    return uuid.uuid4().hex[:8]
