"""A page of another site cannot make a signed-in Chromium open a SockJS session (issue #11, reproduced there).

The attack: a page of another site sends the victim's browser on a top-level navigation to
``/chat-websocket/000/<an id the attacker chose>/jsonp?c=x``. The SameSite=Lax cookie goes along, and
``Referrer-Policy: no-referrer`` hides the page, so neither ``Origin`` nor ``Referer`` gives it away. Chromium marks
the request with ``Sec-Fetch-Site: cross-site`` / ``Sec-Fetch-Mode: navigate``, and Warren refuses it.
``localhost`` and ``127.0.0.1`` are different sites, which is what the test uses.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from tests.browser.conftest import PASSWORD, BrowserUser, WarrenServer

OpenBrowser = Callable[[str], BrowserUser]


def test_a_link_on_another_site_cannot_open_a_session_in_my_browser(
    warren: WarrenServer, open_browser: OpenBrowser
) -> None:
    victim = open_browser("carol")
    signed_in = victim.context.request.post(f"{warren.url}/login", data={"username": "carol", "password": PASSWORD})
    assert signed_in.status == 200
    chosen = f"{warren.url}/chat-websocket/000/{uuid.uuid4().hex[:12]}"
    other_site = f"http://localhost:{warren.port}/healthz"

    victim.page.goto(other_site)
    with victim.page.expect_navigation():
        victim.page.evaluate(
            """(url) => {
                const meta = document.createElement('meta');
                meta.name = 'referrer';
                meta.content = 'no-referrer';
                document.head.appendChild(meta);
                location.href = url;
            }""",
            chosen + "/jsonp?c=x",
        )
    assert "Cross-site navigation refused" in victim.page.content()
    # No session was opened for carol under the chosen id: sending into it is a 404, with her own cookie.
    sent = victim.context.request.post(
        chosen + "/xhr_send", data='["x"]', headers={"Origin": warren.url, "Content-Type": "text/plain"}
    )
    assert sent.status == 404

    # The same navigation from Warren's own page is a same-origin one, and opens the session as before.
    victim.page.goto(f"{warren.url}/healthz")
    with victim.page.expect_navigation():
        victim.page.evaluate("(url) => { location.href = url; }", chosen + "/jsonp?c=x")
    assert 'x("o")' in victim.page.content()
