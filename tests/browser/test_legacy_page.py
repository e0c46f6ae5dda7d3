"""The seed's client style against Warren: jQuery + sockjs-client + the legacy stomp.js 2.3.3 (STOMP 1.1).

tests/legacy/seed.html (served at /legacy/seed.html with WARREN_SERVE_LEGACY=1) signs in with a form POST,
connects with ``Stomp.over(new SockJS('/chat-websocket'))``, subscribes to ``/user/topic/reply``, sends with
``$.post('/wsTemplate/sendToUser', {receiver, msg})`` and fetches offline mail with
``$.post('/wsTemplate/pullUnreadMessage', {destination: '/user/topic/reply'})``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import PASSWORD, BrowserUser, WarrenServer

pytestmark = pytest.mark.browser

OpenBrowser = Callable[[str], BrowserUser]


def open_seed_page(user: BrowserUser, server: WarrenServer) -> Page:
    page = user.page
    response = page.goto(f"{server.url}/legacy/seed.html")
    assert response is not None and response.status == 200, "the server must serve /legacy/seed.html in tests"
    page.locator("#username").fill(user.name)
    page.locator("#password").fill(PASSWORD)
    page.locator("#loginBtn").click()
    expect(page.locator("#loginStatus")).to_have_text(f"logged in as {user.name}")
    return page


def connect(page: Page, name: str) -> None:
    page.locator("#connect").click()
    expect(page.locator("#status")).to_have_text(f"connected as {name}")


def send(page: Page, receiver: str, text: str) -> None:
    status = page.locator("#sendStatus")
    before = status.text_content() or ""
    sent = int(m.group(1)) if (m := re.match(r"sent (\d+)", before)) else 0
    page.locator("#receiver").fill(receiver)
    page.locator("#msg").fill(text)
    page.locator("#send").click()
    expect(status).to_have_text(f"sent {sent + 1}")


def messages(page: Page, nonce: str) -> Locator:
    return page.locator("#messages li.message").filter(has_text=nonce)


def shown(page: Page, nonce: str) -> list[tuple[str, str, str]]:
    """(sender, text, how it came) for each message carrying ``nonce``, top to bottom."""
    rows: list[tuple[str, str, str]] = []
    for item in messages(page, nonce).all():
        rows.append(
            (
                item.locator(".from").text_content() or "",
                item.locator(".content").text_content() or "",
                item.get_attribute("data-via") or "",
            )
        )
    return rows


def test_seed_page_chats_both_ways_and_pulls_offline_mail(
    warren: WarrenServer, open_browser: OpenBrowser, nonce: str
) -> None:
    alice = open_seed_page(open_browser("alice"), warren)
    bob = open_seed_page(open_browser("bob"), warren)
    connect(alice, "alice")

    # Bob is signed in but not connected: alice's mail waits in his mailbox.
    offline = [f"while you were out {n} {nonce}" for n in (1, 2)]
    for text in offline:
        send(alice, "bob", text)

    bob.locator("#pull").click()
    expect(bob.locator("#pullStatus")).to_have_text(re.compile(r"^code 200, pulled \d+$"))
    expect(messages(bob, nonce)).to_have_count(2)
    assert shown(bob, nonce) == [("alice", text, "pull") for text in offline]

    # Pulled mail is gone from the mailbox: a second pull brings nothing of it back.
    bob.locator("#pull").click()
    expect(bob.locator("#pullStatus")).to_have_text("code 200, pulled 0")

    # Now both are connected: live messages both ways over STOMP.
    connect(bob, "bob")
    send(alice, "bob", f"live to bob {nonce}")
    expect(messages(bob, nonce)).to_have_count(3)
    send(bob, "alice", f"live to alice, ünïcödé ✓ {nonce}")
    expect(messages(alice, nonce)).to_have_count(1)

    assert shown(bob, nonce) == [
        *[("alice", text, "pull") for text in offline],
        ("alice", f"live to bob {nonce}", "stomp"),
    ]
    assert shown(alice, nonce) == [("bob", f"live to alice, ünïcödé ✓ {nonce}", "stomp")]


def test_seed_page_gets_mail_pushed_when_it_subscribes(
    warren: WarrenServer, open_browser: OpenBrowser, nonce: str
) -> None:
    alice = open_seed_page(open_browser("alice"), warren)
    bob = open_seed_page(open_browser("bob"), warren)

    # Mail for bob while he has no connection; sent with the seed API by a page that is not connected either.
    waiting = [f"queued {n} {nonce}" for n in range(3)]
    for text in waiting:
        send(alice, "bob", text)

    connect(bob, "bob")
    expect(messages(bob, nonce)).to_have_count(3)
    assert shown(bob, nonce) == [("alice", text, "stomp") for text in waiting]


def test_seed_page_reports_wrong_password(warren: WarrenServer, open_browser: OpenBrowser) -> None:
    page = open_browser("alice").page
    page.goto(f"{warren.url}/legacy/seed.html")
    page.locator("#username").fill("alice")
    page.locator("#password").fill("wrong-password")
    page.locator("#loginBtn").click()
    expect(page.locator("#loginStatus")).to_have_text("login failed: 401")
    # Without a session the STOMP connection is refused with an ERROR frame.
    page.locator("#connect").click()
    expect(page.locator("#status")).to_have_text(re.compile(r"^error: "))
    expect(page.locator("#status")).to_contain_text("not-signed-in")
