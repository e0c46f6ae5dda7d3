"""The chat page in headless Chromium: sign-in, live chat both ways, offline mail, escaping, transports.

Every test looks at what a person would see on the page (text, status, error messages); ``window.warren`` is only
read where the page also shows the same fact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser.conftest import PASSWORD, BrowserUser, WarrenServer

pytestmark = pytest.mark.browser

OpenBrowser = Callable[[str], BrowserUser]


# -- what a user does ----------------------------------------------------------------------------------------------


def sign_in(user: BrowserUser, server: WarrenServer, *, password: str = PASSWORD, query: str = "") -> Page:
    page = user.page
    page.goto(f"{server.url}/{query}")
    expect(page.get_by_test_id("signin-card")).to_be_visible()
    page.get_by_test_id("username").fill(user.name)
    page.get_by_test_id("password").fill(password)
    page.get_by_test_id("signin-button").click()
    return page


def sign_in_and_connect(user: BrowserUser, server: WarrenServer, *, query: str = "") -> Page:
    page = sign_in(user, server, query=query)
    expect_signed_in(page, user.name)
    expect_connected(page)
    return page


def expect_signed_in(page: Page, name: str) -> None:
    expect(page.get_by_test_id("current-user")).to_have_text(name)
    expect(page.get_by_test_id("signin-card")).to_be_hidden()
    expect(page.get_by_test_id("chat")).to_be_visible()


def expect_connected(page: Page) -> None:
    status = page.get_by_test_id("connection-status")
    expect(status).to_have_text("Connected")
    # The server confirmed the subscription to the chat channel (RECEIPT): mail reaches the page from now on.
    expect(status).to_have_attribute("data-subscribed", "true")
    expect(page.get_by_test_id("send")).to_be_enabled()


def incoming(page: Page, nonce: str) -> Locator:
    return page.locator("[data-testid=message][data-direction=in]").filter(has_text=nonce)


def outgoing(page: Page) -> Locator:
    return page.locator("[data-testid=message][data-direction=out]")


def contents(messages: Locator) -> list[str]:
    return messages.locator("[data-testid=message-content]").all_text_contents()


def send(page: Page, receiver: str, text: str) -> Locator:
    """Send with the form and wait until the page shows the message as stored by the server ("Sent")."""
    before = outgoing(page).count()
    page.get_by_test_id("receiver").fill(receiver)
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send").click()
    expect(outgoing(page)).to_have_count(before + 1)
    mine = outgoing(page).nth(before)
    expect(mine).to_have_attribute("data-status", "sent")
    expect(mine.get_by_test_id("message-status")).to_have_text("Sent")
    expect(page.get_by_test_id("message-input")).to_have_value("")
    return mine


def sign_out(page: Page) -> None:
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("signin-card")).to_be_visible()
    expect(page.get_by_test_id("chat")).to_be_hidden()
    expect(page.get_by_test_id("account")).to_be_hidden()


# -- sign-in ---------------------------------------------------------------------------------------------------


def test_sign_in_page_and_wrong_password(warren: WarrenServer, open_browser: OpenBrowser) -> None:
    alice = open_browser("alice")
    page = sign_in(alice, warren, password="not-the-password")

    expect(page).to_have_title("Warren")
    expect(page.locator("header")).to_contain_text("Warren")
    error = page.get_by_test_id("signin-error")
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(page.get_by_test_id("chat")).to_be_hidden()
    expect(page.get_by_test_id("no-users")).to_be_hidden()  # users exist, so no set-up hint

    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("signin-button").click()
    expect_signed_in(page, "alice")
    expect(error).to_be_hidden()
    expect_connected(page)

    # The session survives a reload: the page signs straight in and reconnects.
    page.reload()
    expect_signed_in(page, "alice")
    expect_connected(page)


def test_sign_in_page_tells_how_to_add_a_user_when_there_are_none(
    tmp_path: Path, chromium: Browser, open_browser: OpenBrowser
) -> None:
    empty = WarrenServer(tmp_path / "empty", users=())
    empty.start()
    try:
        page = open_browser("nobody").page
        page.goto(empty.url)
        expect(page.get_by_test_id("signin-card")).to_be_visible()
        expect(page.get_by_test_id("no-users")).to_be_visible()
        expect(page.get_by_test_id("add-user-hint")).to_have_text("python -m app users add NAME")
    finally:
        empty.stop()


# -- chatting --------------------------------------------------------------------------------------------------


def test_two_users_exchange_messages_both_ways(warren: WarrenServer, open_browser: OpenBrowser, nonce: str) -> None:
    alice = sign_in_and_connect(open_browser("alice"), warren)
    bob = sign_in_and_connect(open_browser("bob"), warren)

    # The page names the SockJS transport in use; by default Chromium gets a WebSocket.
    for page in (alice, bob):
        expect(page.get_by_test_id("transport")).to_have_text("websocket")
        assert page.evaluate("window.warren.transport()") == "websocket"

    send(alice, "bob", f"Hello Bob {nonce}")
    at_bob = incoming(bob, nonce)
    expect(at_bob).to_have_count(1)
    expect(at_bob.get_by_test_id("message-from")).to_have_text("alice")
    expect(at_bob.get_by_test_id("message-content")).to_have_text(f"Hello Bob {nonce}")
    expect(at_bob.get_by_test_id("message-time")).to_have_text(re.compile(r"\d{1,2}[:.]\d{2}"))

    # Bob answers with the Reply button, which fills in the receiver.
    at_bob.get_by_test_id("message-reply").click()
    expect(bob.get_by_test_id("receiver")).to_have_value("alice")
    bob.get_by_test_id("message-input").fill(f"Hi Alice {nonce}")
    bob.get_by_test_id("message-input").press("Enter")
    expect(outgoing(bob).filter(has_text=f"Hi Alice {nonce}")).to_have_attribute("data-status", "sent")

    at_alice = incoming(alice, nonce)
    expect(at_alice).to_have_count(1)
    expect(at_alice.get_by_test_id("message-from")).to_have_text("bob")
    expect(at_alice.get_by_test_id("message-content")).to_have_text(f"Hi Alice {nonce}")

    # A few more each way, interleaved, arrive in the order they were sent.
    for i in range(3):
        send(alice, "bob", f"a{i} {nonce}")
        send(bob, "alice", f"b{i} {nonce}")
    expect(incoming(bob, nonce)).to_have_count(4)
    expect(incoming(alice, nonce)).to_have_count(4)
    assert contents(incoming(bob, nonce)) == [f"Hello Bob {nonce}"] + [f"a{i} {nonce}" for i in range(3)]
    assert contents(incoming(alice, nonce)) == [f"Hi Alice {nonce}"] + [f"b{i} {nonce}" for i in range(3)]


def test_mail_sent_while_signed_out_arrives_in_order(
    warren: WarrenServer, open_browser: OpenBrowser, nonce: str
) -> None:
    alice = sign_in_and_connect(open_browser("alice"), warren)
    bob_user = open_browser("bob")
    bob = sign_in_and_connect(bob_user, warren)
    sign_out(bob)
    assert bob.evaluate("window.warren.connected()") is False

    texts = [f"offline {n} {nonce}" for n in ("one", "two", "three")]
    for text in texts:
        send(alice, "bob", text)

    bob.get_by_test_id("username").fill("bob")
    bob.get_by_test_id("password").fill(PASSWORD)
    bob.get_by_test_id("signin-button").click()
    expect_signed_in(bob, "bob")
    expect_connected(bob)

    waiting = incoming(bob, nonce)
    expect(waiting).to_have_count(3)
    assert contents(waiting) == texts
    assert waiting.get_by_test_id("message-from").all_text_contents() == ["alice"] * 3

    # Live mail after the mailbox, still in order and without repeats.
    send(alice, "bob", f"live {nonce}")
    expect(incoming(bob, nonce)).to_have_count(4)
    assert contents(incoming(bob, nonce)) == [*texts, f"live {nonce}"]


def test_mail_sent_while_disconnected_arrives_on_reconnect(
    warren: WarrenServer, open_browser: OpenBrowser, nonce: str
) -> None:
    alice = sign_in_and_connect(open_browser("alice"), warren)
    bob = sign_in_and_connect(open_browser("bob"), warren)

    bob.get_by_test_id("disconnect").click()
    # "Disconnected" shows once the connection is closed (the server acknowledged DISCONNECT).
    expect(bob.get_by_test_id("connection-status")).to_have_text("Disconnected")
    expect(bob.get_by_test_id("transport")).to_be_hidden()
    expect(bob.get_by_test_id("send")).to_be_disabled()
    expect(bob.get_by_test_id("connect")).to_be_enabled()
    assert bob.evaluate("window.warren.connected()") is False

    texts = [f"while away {n} {nonce}" for n in range(3)]
    for text in texts:
        send(alice, "bob", text)

    bob.get_by_test_id("connect").click()
    expect_connected(bob)
    expect(incoming(bob, nonce)).to_have_count(3)
    assert contents(incoming(bob, nonce)) == texts


def test_markup_in_messages_is_shown_as_text(warren: WarrenServer, open_browser: OpenBrowser, nonce: str) -> None:
    alice = sign_in_and_connect(open_browser("alice"), warren)
    bob = sign_in_and_connect(open_browser("bob"), warren)
    payloads = [
        f"<img src=x onerror=window.__pwned=1> {nonce}",
        f"</script><script>window.__pwned=2</script> {nonce}",
        f"<b>bold?</b> &amp; &lt;tag&gt; {nonce}",
    ]
    for text in payloads:
        send(alice, "bob", text)

    received = incoming(bob, nonce)
    expect(received).to_have_count(len(payloads))
    assert contents(received) == payloads
    assert contents(outgoing(alice).filter(has_text=nonce)) == payloads  # alice's own copies, as text too
    for page in (alice, bob):
        expect(page.get_by_test_id("messages").locator("img, script, b")).to_have_count(0)
        assert page.evaluate("typeof window.__pwned") == "undefined"
    # What bob sees on screen is the literal text.
    expect(received.nth(0).get_by_test_id("message-content")).to_have_text(payloads[0])
    expect(received.nth(1).get_by_test_id("message-content")).to_have_text(payloads[1])


def test_unicode_quotes_and_newlines_survive(warren: WarrenServer, open_browser: OpenBrowser, nonce: str) -> None:
    alice = sign_in_and_connect(open_browser("alice"), warren)
    bob = sign_in_and_connect(open_browser("bob"), warren)
    texts = [
        f"Grüße aus Köln, 你好, здравствуйте, مرحبا, 👋🏽👩‍👩‍👧 {nonce}",
        f'"double" \'single\' `back` \\backslash\\ {{"json": [1, 2]}} {nonce}',
        f"line one\nline two\n\n  indented\ttab {nonce}\n",
        f"colons: and\\c escapes\\n that STOMP headers would need ^@ {nonce}",
    ]
    for text in texts:
        send(alice, "bob", text)
    received = incoming(bob, nonce)
    expect(received).to_have_count(len(texts))
    assert contents(received) == texts
    # Newlines are shown as line breaks, not collapsed.
    lines = received.nth(2).get_by_test_id("message-content").inner_text().split("\n")
    assert lines[:2] == ["line one", "line two"]
    # And a reply in kind goes back intact.
    send(bob, "alice", f"Ünïcödé “quotes” ✓\n{nonce}")
    expect(incoming(alice, nonce)).to_have_count(1)
    assert contents(incoming(alice, nonce)) == [f"Ünïcödé “quotes” ✓\n{nonce}"]


def test_refused_message_is_reported_to_the_sender(warren: WarrenServer, open_browser: OpenBrowser) -> None:
    alice = sign_in_and_connect(open_browser("alice"), warren)
    alice.get_by_test_id("receiver").fill("nobody-by-this-name")
    alice.get_by_test_id("message-input").fill("is anyone there?")
    alice.get_by_test_id("send").click()

    mine = outgoing(alice).last
    expect(mine).to_have_attribute("data-status", "failed")
    expect(mine.get_by_test_id("message-status")).to_contain_text("Not sent")
    error = alice.get_by_test_id("chat-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("nobody-by-this-name")
    # The connection stays up: the refusal came as a message on /user/queue/errors, not as an ERROR frame.
    expect_connected(alice)


def test_ended_session_sends_the_user_back_to_sign_in(warren: WarrenServer, open_browser: OpenBrowser) -> None:
    alice_user = open_browser("alice")
    alice = sign_in_and_connect(alice_user, warren)
    # The session cookie goes away (expired, or cleared): the next connect is refused by the server.
    alice_user.context.clear_cookies()
    alice.get_by_test_id("disconnect").click()
    expect(alice.get_by_test_id("connection-status")).to_have_text("Disconnected")
    alice.get_by_test_id("connect").click()

    expect(alice.get_by_test_id("signin-card")).to_be_visible()
    expect(alice.get_by_test_id("signin-error")).to_have_text("Your session has ended. Please sign in again.")
    expect(alice.get_by_test_id("chat")).to_be_hidden()
    # Signing in again works, and the page connects.
    alice.get_by_test_id("username").fill("alice")
    alice.get_by_test_id("password").fill(PASSWORD)
    alice.get_by_test_id("signin-button").click()
    expect_signed_in(alice, "alice")
    expect_connected(alice)


def test_page_reconnects_after_a_server_restart(tmp_path: Path, open_browser: OpenBrowser, nonce: str) -> None:
    server = WarrenServer(tmp_path / "restart", users=("alice", "bob"))
    server.start()
    try:
        alice = sign_in_and_connect(open_browser("alice"), server)
        bob = sign_in_and_connect(open_browser("bob"), server)

        server.stop()
        for page in (alice, bob):
            expect(page.get_by_test_id("connection-status")).not_to_have_text("Connected")
            expect(page.get_by_test_id("send")).to_be_disabled()
        # While the server is away, the page says it cannot connect and keeps trying.
        expect(alice.get_by_test_id("chat-error")).to_contain_text("Could not connect to the chat server")

        server.start()
        for page in (alice, bob):
            expect_connected(page)
            expect(page.get_by_test_id("chat-error")).to_be_hidden()
        send(alice, "bob", f"after the restart {nonce}")
        expect(incoming(bob, nonce)).to_have_count(1)
    finally:
        server.stop()


# -- transports ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["xhr-streaming", "xhr-polling", "eventsource", "iframe-eventsource"])
def test_chat_over_each_sockjs_transport(
    warren: WarrenServer, open_browser: OpenBrowser, nonce: str, transport: str
) -> None:
    carol = sign_in_and_connect(open_browser("carol"), warren, query=f"?transport={transport}")
    dave = sign_in_and_connect(open_browser("dave"), warren)

    expect(carol.get_by_test_id("transport")).to_have_text(transport)
    expect(carol.get_by_test_id("transport-select")).to_have_value(transport)
    assert carol.evaluate("window.warren.transport()") == transport

    send(carol, "dave", f"over {transport} {nonce}")
    expect(incoming(dave, nonce)).to_have_count(1)
    send(dave, "carol", f"back over {transport} ✓ {nonce}")
    expect(incoming(carol, nonce)).to_have_count(1)
    assert contents(incoming(carol, nonce)) == [f"back over {transport} ✓ {nonce}"]


def test_choosing_a_transport_reconnects_with_it(warren: WarrenServer, open_browser: OpenBrowser, nonce: str) -> None:
    carol = sign_in_and_connect(open_browser("carol"), warren)
    dave = sign_in_and_connect(open_browser("dave"), warren)
    expect(carol.get_by_test_id("transport")).to_have_text("websocket")

    carol.get_by_test_id("transport-select").select_option("xhr-polling")
    expect(carol.get_by_test_id("transport")).to_have_text("xhr-polling")
    expect_connected(carol)
    assert "transport=xhr-polling" in carol.url

    send(dave, "carol", f"after switching {nonce}")
    expect(incoming(carol, nonce)).to_have_count(1)
