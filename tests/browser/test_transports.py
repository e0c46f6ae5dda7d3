"""Every SockJS transport in headless Chromium: sign in, STOMP both ways, hostile and large messages, drops.

Each test page (``tests/transport/pages/chat.html``, served by ``python -m tests.transport.serve``) loads the
same sockjs-client and @stomp/stompjs builds as the chat page and forces one transport with
``new SockJS(url, null, {transports: [T]})``. The server is a separate process started like production
(``web.run_app``: aiohttp's handler cancellation off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from app.auth.users import UserDirectory
from app.config import generate_secret_key
from tests.transport.nodes import ROOT, NodeProcess

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery"
TRANSPORTS = [
    "websocket",
    "xhr-streaming",
    "xhr-polling",
    "eventsource",
    "iframe-eventsource",
    "iframe-htmlfile",
    "iframe-xhr-polling",
    "jsonp-polling",
]
#: (transport, STOMP ack mode) of the drop tests.
DROPPING = [
    ("xhr-polling", "auto"),
    ("jsonp-polling", "auto"),
    ("xhr-polling", "client-individual"),
]
MAX_MESSAGE_BYTES = 64 * 1024
#: Close to MAX_MESSAGE_BYTES (UTF-8 bytes), with two-byte characters so that a size counted in characters fails.
NEAR_LIMIT = "ü" * 1000 + "x" * (MAX_MESSAGE_BYTES - 2000 - 6)
HOSTILE = "</script><script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
PAYLOADS = [
    "plain words",
    "unicode ✓ «ÿ» 日本語 עברית 😀 e\u0301",
    "quotes \" ' ` and a \\ backslash",
    "new\nlines\r\nand\ttabs",
    HOSTILE,
    "line separators \u2028 \u2029 and a nul \u0000",
    NEAR_LIMIT,
]
WAIT_MS = 20_000


def users() -> list[str]:
    names = [f"{transport}-{side}" for transport in TRANSPORTS for side in ("a", "b")]
    drops = [("xhr-polling", "auto"), ("jsonp-polling", "auto"), ("xhr-polling", "client-individual")]
    return names + [f"drop-{transport}-{ack}-{side}" for transport, ack in drops for side in ("a", "b")]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    if not (ROOT / "web" / "node_modules" / "sockjs-client" / "dist" / "sockjs.min.js").is_file():
        pytest.fail("web/node_modules is missing: run `make deps` (or `npm install` in web/) before the browser tests")
    workdir: Path = tmp_path_factory.mktemp("transports")
    directory = UserDirectory(workdir / "users.json")
    for name in users():
        directory.add(name, PASSWORD)
    server = NodeProcess(
        "transports",
        workdir,
        {"USERS_FILE": str(directory.path), "SECRET_KEY": generate_secret_key().decode(), "SHUTDOWN_TIMEOUT": "5"},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Person:
    name: str
    context: BrowserContext
    page: Page
    errors: list[str]

    def open_page(self, url: str) -> Page:
        """A new tab of this person's browser on the test page; the session cookie is the context's."""
        self.page = new_tab(self.context, url, self.errors)
        return self.page

    def connect(self, transport: str, ack: str = "auto") -> str:
        result: str = self.page.evaluate("([t, ack]) => harness.connect(t, ack)", [transport, ack])
        return result

    def send(self, receiver: str, text: str) -> None:
        assert self.page.evaluate("([to, text]) => harness.send(to, text)", [receiver, text]) is True

    def wait_for_contents(self, expected: list[str]) -> list[str]:
        """The contents received, once every expected one arrived (redeliveries with a known id dropped)."""
        self.page.wait_for_function(
            """expected => {
                const seen = new Set(harness.received().map(m => m.content));
                return expected.every(text => seen.has(text));
            }""",
            arg=expected,
            timeout=WAIT_MS,
        )
        seen: set[str] = set()
        contents: list[str] = []
        for message in self.page.evaluate("harness.received()"):
            if message["id"] not in seen:
                seen.add(message["id"])
                contents.append(message["content"])
        return contents


def new_tab(context: BrowserContext, url: str, errors: list[str]) -> Page:
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page


@pytest.fixture
def person(chromium: Browser, node: NodeProcess) -> Iterator[Callable[[str], Person]]:
    opened: list[Person] = []

    def open_person(name: str) -> Person:
        context = chromium.new_context()
        errors: list[str] = []
        someone = Person(name, context, new_tab(context, f"{node.url}/test-pages/chat.html", errors), errors)
        assert someone.page.evaluate("([u, p]) => harness.signIn(u, p)", [name, PASSWORD]) == name
        opened.append(someone)
        return someone

    yield open_person

    problems = []
    for someone in opened:
        for page in someone.context.pages:
            try:
                page.evaluate("harness.disconnect()")
            except Exception:  # the page may be gone already; closing the context ends it anyway
                pass
        someone.context.close()
        if someone.errors:
            problems.append(f"{someone.name}: {'; '.join(someone.errors)}")
    assert not problems, "JavaScript errors in the page:\n" + "\n".join(problems)


def assert_nothing_ran(page: Page) -> None:
    """The markup in HOSTILE stayed text in every frame (the page, sockjs' iframe, the htmlfile inside it)."""
    for frame in page.frames:
        try:
            pwned = frame.evaluate("() => window.__pwned")
        except Exception:  # a transport frame detached while we looked; nothing ran in it then
            continue
        assert pwned is None, f"markup from a message ran in {frame.url}"
    assert page.evaluate("document.querySelectorAll('#messages script, #messages img').length") == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chat_both_ways(transport: str, person: Callable[[str], Person]) -> None:
    alice, bob = person(f"{transport}-a"), person(f"{transport}-b")
    assert alice.connect(transport) == transport
    assert bob.connect(transport) == transport
    for text in PAYLOADS:
        alice.send(bob.name, text)
        bob.send(alice.name, text)
    for receiver, sender in ((bob, alice), (alice, bob)):
        assert receiver.wait_for_contents(PAYLOADS) == PAYLOADS
        senders = {message["from"] for message in receiver.page.evaluate("harness.received()")}
        assert senders == {sender.name}
        shown = receiver.page.evaluate("harness.shown()")
        assert shown[PAYLOADS.index(HOSTILE)] == HOSTILE
        assert_nothing_ran(receiver.page)


@pytest.mark.parametrize(("transport", "ack"), DROPPING)
def test_mail_sent_while_a_polling_client_drops_is_not_lost(
    transport: str, ack: str, person: Callable[[str], Person], node: NodeProcess
) -> None:
    alice, bob = person(f"drop-{transport}-{ack}-a"), person(f"drop-{transport}-{ack}-b")
    assert alice.connect(transport, ack) == transport
    assert bob.connect("websocket") == "websocket"
    bob.send(alice.name, "before the drop")
    assert alice.wait_for_contents(["before the drop"]) == ["before the drop"]

    alice.page.close()  # the tab goes away in the middle of a poll
    while_away = [f"while away {number}" for number in range(1, 4)]
    for text in while_away:
        bob.send(alice.name, text)

    alice.open_page(f"{node.url}/test-pages/chat.html")  # she comes back, still signed in
    assert alice.connect(transport, ack) == transport
    assert alice.wait_for_contents(while_away) == while_away
