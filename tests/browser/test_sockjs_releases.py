"""The seed's page as written, on every SockJS transport, with the sockjs-client releases old pages load.

The seed's page loaded jQuery 3.3.1, sockjs-client 1.1.4 and stomp.js 2.3.3 from a CDN; pages in the field load
any release from 1.0.0 to 1.6.1. Here Chromium opens tests/legacy/seed.html unchanged, and the browser itself
answers its jQuery and sockjs-client script tags with jQuery 3.3.1 and the release under test (Playwright routes,
from web/node_modules: what a CDN would have given it, and not the 1.6.1 that Warren serves under /vendor). Warren
serves only what it serves any page: the iframe page and the iframe's own sockjs-client, which must be the page's
release (sockjs-client refuses any other). The transport is forced by wrapping the page's ``SockJS`` constructor
in an init script of the top frame (``{transports: [T]}``); the page's code stays as written.

Two users per transport sign in once, as the page's form does (one server, one browser, a context each). For each
release and transport, both load the page, connect with ``Stomp.over(new SockJS('/chat-websocket'))``, chat both
ways through ``POST /wsTemplate/sendToUser`` and disconnect; the test checks the transport that carried it and, on
the iframe transports, the release the iframe ran.

The other twelve releases from 1.0.0 to 1.6.1 run the three iframe transports (the only ones that depend on the
release) against ``python -m app.conformance``, whose iframe page must load only what that entry point serves.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from app.auth.users import UserDirectory
from app.transport.iframe import SockJSClients
from tests.browser.conftest import PASSWORD, UI_TIMEOUT_MS, WarrenServer
from tests.browser.test_legacy_page import connect, messages, send, shown
from tests.support.processes import ROOT, free_port, stop_process, wait_http_ok

pytestmark = pytest.mark.browser

NODE_MODULES = ROOT / "web" / "node_modules"
#: The seed's own release first, then the oldest, middle and newest lines.
RELEASES = ["1.1.4", "1.0.3", "1.3.0", "1.5.2", "1.6.1"]
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
#: sockjs-client's JSONP receiver, closed with a poll open: ``_jp.a1b2c3d is not a function``.
JSONP_CLOSE_RACE = re.compile(r"^[\w.-]+: _jp\.\w+ is not a function$")
JQUERY = NODE_MODULES / "jquery-3.3.1" / "dist" / "jquery.min.js"
#: Wraps the SockJS the page's script defines (UMD or IIFE build alike: both assign the global) so that every
#: ``new SockJS(url)`` of the page gets ``{transports: [window.forcedTransport]}``. Top frame only: the iframe
#: runs the real client.
FORCE_TRANSPORT = """(() => {
  if (window.top !== window) { return; }
  let wrapped;
  Object.defineProperty(window, 'SockJS', {
    configurable: true,
    get() { return wrapped; },
    set(Real) {
      wrapped = function (url, protocols, options) {
        return new Real(url, protocols, Object.assign({}, options, {transports: [window.forcedTransport]}));
      };
      Object.assign(wrapped, Real);
      wrapped.prototype = Real.prototype;
    },
  });
})()"""


@dataclass
class SeedBrowsers:
    """One signed-in browser per user on the seed's page; ``release`` is what its sockjs-client script tag gets."""

    server: WarrenServer
    pages: dict[str, Page]
    errors: list[str]
    release: str = ""

    def open(self, name: str, release: str, transport: str) -> Page:
        """``name``'s page, loaded afresh with ``release`` (still signed in) and ``transport`` forced."""
        self.release = release
        page = self.pages[name]
        page.goto(f"{self.server.url}/legacy/seed.html")
        assert page.evaluate("[jQuery.fn.jquery, SockJS.version]") == ["3.3.1", release]
        page.evaluate("transport => { window.forcedTransport = transport; }", transport)
        return page

    def real_errors(self) -> list[str]:
        """Uncaught errors of the pages, but the JSONP close race: every sockjs-client release drops its JSONP
        callback when it closes, and the poll still open then comes back with the close frame and calls the
        missing function (every SockJS server sees it; nothing is lost)."""
        return [error for error in self.errors if not JSONP_CLOSE_RACE.match(error)]


def release_build(version: str) -> Path:
    build = SockJSClients.installed(NODE_MODULES).builds.get(version)
    if build is None:
        pytest.fail(f"sockjs-client {version} is not installed in web/node_modules: run `make deps`")
    return build


def user_names(transport: str) -> tuple[str, str]:
    """Two users per transport: a session of the last test, still expiring on the server, never gets their mail.
    (The seed's page disconnects by STOMP DISCONNECT and closing the socket at once; on the iframe transports the
    close removes the iframe before it sends the DISCONNECT, so the session ends by expiry, 5 s later.)"""
    return f"{transport}-a", f"{transport}-b"


@pytest.fixture(scope="module")
def seed_browsers(chromium: Browser, warren: WarrenServer) -> Iterator[SeedBrowsers]:
    directory = UserDirectory(warren.users_file)
    names = [name for transport in TRANSPORTS for name in user_names(transport)]
    for name in names:
        directory.add(name, PASSWORD)  # the server re-reads its users file when it changes
    browsers = SeedBrowsers(warren, {}, [])

    def sockjs_release(route: Route) -> None:
        route.fulfill(path=str(release_build(browsers.release)), content_type="application/javascript")

    contexts: list[BrowserContext] = []
    try:
        for name in names:
            context = chromium.new_context()
            contexts.append(context)
            context.set_default_timeout(UI_TIMEOUT_MS)
            context.route(
                f"{warren.url}/vendor/jquery/dist/jquery.min.js",
                lambda route: route.fulfill(path=str(JQUERY), content_type="application/javascript"),
            )
            context.route(f"{warren.url}/vendor/sockjs-client/dist/sockjs.min.js", sockjs_release)
            context.add_init_script(script=FORCE_TRANSPORT)
            # The seed's sign-in, as its form sends it (test_legacy_page.py drives the form itself).
            signed_in = context.request.post(f"{warren.url}/login", form={"username": name, "password": PASSWORD})
            assert signed_in.ok, f"sign-in of {name}: {signed_in.status}"
            page = context.new_page()
            page.on("pageerror", lambda exc, name=name: browsers.errors.append(f"{name}: {exc}"))
            browsers.pages[name] = page
        yield browsers
    finally:
        for context in contexts:
            context.close()


def iframe_release(page: Page) -> str | None:
    """The sockjs-client release the SockJS iframe runs, or None without one."""
    for frame in page.frames:
        if "/chat-websocket/iframe" in frame.url:
            return str(frame.evaluate("() => window.SockJS && window.SockJS.version"))
    return None


@pytest.mark.parametrize(("version", "transport"), [(v, t) for v in RELEASES for t in TRANSPORTS])
def test_seed_page_chats_on_every_transport_with_each_sockjs_client_release(
    seed_browsers: SeedBrowsers, version: str, transport: str, nonce: str
) -> None:
    a, b = user_names(transport)
    seed_browsers.errors.clear()
    alice, bob = seed_browsers.open(a, version, transport), seed_browsers.open(b, version, transport)
    for name, page in ((a, alice), (b, bob)):
        connect(page, name)
        assert page.evaluate("stomp.ws.transport") == transport
        if transport.startswith("iframe-"):
            assert iframe_release(page) == version

    send(alice, b, f"to {b} {nonce}")
    send(bob, a, f"to {a}, ünïcödé ✓ {nonce}")
    expect(messages(bob, nonce)).to_have_count(1)
    expect(messages(alice, nonce)).to_have_count(1)
    assert shown(bob, nonce) == [(a, f"to {b} {nonce}", "stomp")]
    assert shown(alice, nonce) == [(b, f"to {a}, ünïcödé ✓ {nonce}", "stomp")]

    for page in (alice, bob):
        page.locator("#disconnect").click()
        expect(page.locator("#status")).to_have_text("disconnected")
    errors = seed_browsers.real_errors()
    assert not errors, "JavaScript errors in the page:\n" + "\n".join(errors)


# -- the other releases, on the iframe transports, against ``python -m app.conformance`` ---------------------------

#: Every sockjs-client release on npm from 1.0.0 to 1.6.1.
EVERY_RELEASE = [
    "1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.1.0", "1.1.1", "1.1.2", "1.1.4", "1.1.5",
    "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.5.1", "1.5.2", "1.6.0", "1.6.1",
]  # fmt: skip
#: The releases the seed's page does not run above: with those, every release meets the iframe transports.
OTHER_RELEASES = [version for version in EVERY_RELEASE if version not in RELEASES]
IFRAME_TRANSPORTS = [transport for transport in TRANSPORTS if transport.startswith("iframe-")]
#: A page of the conformance server's origin for one release, answered by the browser (the server has no pages).
ECHO_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><script src="/page/sockjs-client-%s.min.js"></script></head></html>"""
#: Opens the echo service on one transport, sends a message, and gives back what came back and how.
ECHO = """([transport, text]) => new Promise((resolve, reject) => {
  const sock = new SockJS('/echo', null, {transports: [transport]});
  sock.onopen = () => sock.send(text);
  sock.onmessage = event => {
    const frame = [...document.querySelectorAll('iframe')].map(f => f.contentWindow).find(w => w && w.SockJS);
    resolve({transport: sock.transport, echo: event.data, iframe: frame ? frame.SockJS.version : null});
    sock.close();
  };
  sock.onclose = event => reject(new Error(`closed ${event.code} ${event.reason}`));
})"""
PAGE_PATH = re.compile(r"/page/(?:(?P<page>[0-9.]+)\.html|sockjs-client-(?P<script>[0-9.]+)\.min\.js)$")


@pytest.fixture(scope="module")
def conformance_pages(
    chromium: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, BrowserContext]]:
    """``python -m app.conformance`` started as an operator starts it, and a browser context whose pages on its
    origin (``/page/<release>.html``) load that sockjs-client release; its iframe page must load only what the
    conformance server serves."""
    log_path = tmp_path_factory.mktemp("conformance") / "conformance.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.conformance", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    context = chromium.new_context()

    def answer(route: Route) -> None:
        match = PAGE_PATH.search(route.request.url)
        if match is None:
            route.fulfill(status=404)
        elif match["page"]:
            route.fulfill(body=ECHO_PAGE % match["page"], content_type="text/html")
        else:
            route.fulfill(path=str(release_build(match["script"])), content_type="application/javascript")

    try:
        wait_http_ok(process, f"{url}/echo", 30.0, log_path)
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.route(f"{url}/page/**", answer)
        yield url, context
    finally:
        context.close()
        stop_process(process)


@pytest.mark.parametrize("version", OTHER_RELEASES)
def test_every_release_runs_the_iframe_transports_against_the_conformance_server(
    version: str, conformance_pages: tuple[str, BrowserContext], nonce: str
) -> None:
    url, context = conformance_pages
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{url}/page/{version}.html")
        assert page.evaluate("SockJS.version") == version
        for transport in IFRAME_TRANSPORTS:
            text = f"echo over {transport}, ünïcödé ✓ {nonce}"
            assert page.evaluate(ECHO, [transport, text]) == {"transport": transport, "echo": text, "iframe": version}
        assert not errors, errors
    finally:
        page.close()
