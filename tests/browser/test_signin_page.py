"""Sign-in lockouts in Chromium: someone guessing at alice's password does not lock her out of her own browser.

The page's own ``fetch('/login')`` must carry the device cookie (SameSite=Strict, path ``/login``, HttpOnly) for
this to work, which only a real browser shows.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BrowserUser, WarrenServer
from tests.browser.test_chat_page import expect_signed_in, sign_in, sign_out

pytestmark = pytest.mark.browser

OpenBrowser = Callable[[str], BrowserUser]


def guess(server: WarrenServer, name: str, password: str) -> int:
    """A sign-in attempt from a script on the same address (another machine behind the same NAT, say)."""
    body = json.dumps({"username": name, "password": password}).encode()
    request = urllib.request.Request(
        f"{server.url}/login", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def test_guessing_at_my_password_does_not_lock_me_out_of_my_browser(
    tmp_path: Path, open_browser: OpenBrowser
) -> None:
    # A server of its own: the guessing below must not throttle alice in other tests.
    server = WarrenServer(tmp_path / "warren", users=("alice",))
    server.start()
    try:
        alice = open_browser("alice")
        page = sign_in(alice, server)
        expect_signed_in(page, "alice")
        sign_out(page)

        statuses = [guess(server, "alice", f"guess-{i}") for i in range(10)]
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}

        # Her browser has signed in before: her password still works there.
        page = sign_in(alice, server)
        expect_signed_in(page, "alice")

        # A browser that never signed in as alice is locked out with the guesser, and told for how long.
        newcomer = open_browser("alice")
        page = sign_in(newcomer, server)
        error = page.get_by_test_id("signin-error")
        expect(error).to_contain_text("too many failed sign-ins: wait")
        expect(page.get_by_test_id("chat")).to_be_hidden()
    finally:
        server.stop()
