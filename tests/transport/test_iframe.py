"""The SockJS iframe serves every sockjs-client release from 1.0.0 to 1.6.1, each to the pages of that release.

``app.transport.iframe``: the iframe page loads Warren's loader, which asks the framing page for its release
(sockjs-client posts it to the iframe) and loads ``sockjs-client-<release>.min.js`` from the same endpoint. These
tests check what the server answers; tests/browser/test_sockjs_releases.py runs the releases in Chromium.
"""

from __future__ import annotations

import re

import pytest

from tests.transport.conftest import ServerFactory
from tests.transport.support import Http

#: Every sockjs-client release on npm from 1.0.0 to 1.6.1 (1.0.0 to 1.1.1 are built by web/build-sockjs.mjs).
RELEASES = [
    "1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.1.0", "1.1.1", "1.1.2", "1.1.4", "1.1.5",
    "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.5.1", "1.5.2", "1.6.0", "1.6.1",
]  # fmt: skip
SELF_HOSTED = "https://static.example.com/sockjs/{version}/sockjs.min.js"


async def test_every_release_from_1_0_0_to_1_6_1_is_served_by_the_endpoint(conformance: str, http: Http) -> None:
    for release in RELEASES:
        reply = await http.get(f"{conformance}/echo/sockjs-client-{release}.min.js")
        assert reply.status == 200, release
        assert reply.headers["Content-Type"].startswith("application/javascript"), release
        # A release never changes: browsers keep it for a year without asking again.
        assert reply.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        # The build defines that very version (sockjs-client compares SockJS.version with the page's).
        assert f'"{release}"' in reply.text, release
        assert "bootstrap_iframe" in reply.text, release


async def test_the_iframe_page_runs_the_loader_that_asks_the_page_for_its_release(conformance: str, http: Http) -> None:
    page = await http.get(f"{conformance}/close/iframe.html")
    assert '<script src="/close/iframe-loader.js"></script>' in page.text
    assert "SockJS.bootstrap_iframe();" in page.text

    loader = await http.get(f"{conformance}/close/iframe-loader.js")
    assert loader.status == 200 and loader.headers["Content-Type"].startswith("application/javascript")
    # The page is kept a year, the loader a day (then a 304 when unchanged).
    assert loader.headers["Cache-Control"] == "public, max-age=86400"
    again = await http.get(f"{conformance}/close/iframe-loader.js", headers={"If-None-Match": loader.headers["ETag"]})
    assert again.status == 304 and again.body == b""
    # It answers the page's "s" message and loads the release from this endpoint, relative to the iframe page.
    assert '"sockjs-client-" + version + ".min.js"' in loader.text
    assert 'type: "s"' in loader.text


async def test_a_release_not_installed_is_not_found_and_says_what_to_set(conformance: str, http: Http) -> None:
    reply = await http.get(f"{conformance}/echo/sockjs-client-1.9.9.min.js")
    assert reply.status == 404
    assert "sockjs-client 1.9.9 is not installed" in reply.text and "SOCKJS_CLIENT_URL" in reply.text


async def test_a_release_not_installed_comes_from_the_self_hosted_url(
    conformance_factory: ServerFactory, http: Http
) -> None:
    server = await conformance_factory(sockjs_client_url=SELF_HOSTED)
    async with http.session.get(f"{server.url}/echo/sockjs-client-1.9.9-custom.1.min.js", allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "https://static.example.com/sockjs/1.9.9-custom.1/sockjs.min.js"
    # What Warren installed is still served from here: the same bytes as the release on npm.
    shipped = await http.get(f"{server.url}/echo/sockjs-client-1.1.4.min.js")
    assert shipped.status == 200 and '"1.1.4"' in shipped.text


@pytest.mark.parametrize(
    "name",
    [
        "sockjs-client-..%2F..%2Fpackage.min.js",
        "sockjs-client-1.1.4%2F..%2F..%2Fjquery.min.js",
        "sockjs-client-1.1.min.js",
        "sockjs-client-1.1.4x.min.js",
        "sockjs-client-1.1.4.js",
        "sockjs-client-latest.min.js",
    ],
)
async def test_only_a_release_number_names_a_file(conformance_factory: ServerFactory, http: Http, name: str) -> None:
    server = await conformance_factory(sockjs_client_url=SELF_HOSTED)
    async with http.session.get(f"{server.url}/echo/{name}", allow_redirects=False) as reply:
        assert reply.status == 404, name


async def test_warren_serves_the_loader_and_releases_under_its_endpoint(
    warren_factory: ServerFactory, http: Http
) -> None:
    node = await warren_factory(allowed_origins=("https://chat.example.com",))
    page = await http.get(f"{node.url}/chat-websocket/iframe.html")
    # Who may frame the page is unchanged: this origin and the allowed ones.
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'self' https://chat.example.com"
    loader_url = re.search(r'<script src="([^"]+)"></script>', page.text)
    assert loader_url is not None and loader_url.group(1) == "/chat-websocket/iframe-loader.js"
    assert (await http.get(f"{node.url}{loader_url.group(1)}")).status == 200
    build = await http.get(f"{node.url}/chat-websocket/sockjs-client-1.0.3.min.js")
    assert build.status == 200 and '"1.0.3"' in build.text
