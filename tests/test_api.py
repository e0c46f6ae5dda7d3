"""Sign-in and the HTTP API, as a browser or an old client would use them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
import pytest
from cryptography.fernet import Fernet

from app.auth.sessions import COOKIE_NAME
from app.backplane.topology import mailbox_queue_name
from app.config import generate_secret_key
from tests.conftest import PASSWORD, Node, NodeFactory
from tests.support.stomp_client import StompClient


def fresh_http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_sign_in_and_out(node: Node, make_user: Callable[[str], str]) -> None:
    alice = make_user("alice")
    async with fresh_http() as http:
        async with http.get(f"{node.url}/api/me") as resp:
            assert (await resp.json())["user"] is None
        async with http.post(f"{node.url}/login", data={"username": alice, "password": PASSWORD}) as resp:
            assert resp.status == 200
            cookie = resp.cookies[COOKIE_NAME]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
        async with http.get(f"{node.url}/api/me") as resp:
            assert (await resp.json())["user"] == alice
        async with http.post(f"{node.url}/logout") as resp:
            assert resp.status == 200
        async with http.get(f"{node.url}/api/me") as resp:
            assert (await resp.json())["user"] is None


async def test_wrong_password_and_unknown_user_get_the_same_answer(node: Node, make_user: Callable[[str], str]) -> None:
    alice = make_user("alice")
    answers = []
    async with fresh_http() as http:
        for username in (alice, "nobody-at-all"):
            async with http.post(f"{node.url}/login", json={"username": username, "password": "wrong-password"}) as r:
                answers.append((r.status, await r.json()))
    assert answers[0] == answers[1] == (401, {"error": "bad-credentials", "message": "wrong username or password"})


async def test_first_run_tells_how_to_add_a_user(node: Node) -> None:
    async with fresh_http() as http, http.get(f"{node.url}/api/me") as resp:
        body = await resp.json()
    assert body["users_configured"] == 0 and body["add_user_hint"] == "python -m app users add NAME"


async def test_send_to_user_seed_api(node: Node, make_user: Callable[[str], str]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    http = await node.http_for(alice)
    url = f"{node.url}/wsTemplate/sendToUser"
    async with http.post(url, data={"receiver": bob, "msg": "hi"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["code"] == "200"
    async with http.post(url, data={"receiver": bob}) as resp:
        assert resp.status == 400
    async with http.post(url, data={"receiver": "no-such-user", "msg": "hi"}) as resp:
        assert resp.status == 404 and (await resp.json())["error"] == "unknown-user"
    async with http.post(url, data={"receiver": bob, "msg": "x" * (64 * 1024 + 1)}) as resp:
        assert resp.status == 413 and "MAX_MESSAGE_BYTES" in (await resp.json())["message"]
    await http.close()
    async with fresh_http() as anonymous, anonymous.post(url, data={"receiver": bob, "msg": "hi"}) as resp:
        assert resp.status == 401


async def test_json_api_answers_202_with_id_and_status(node: Node, make_user: Callable[[str], str]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    http = await node.http_for(alice)
    async with http.post(f"{node.url}/api/messages", json={"to": bob, "content": "hello"}) as resp:
        assert resp.status == 202
        body = await resp.json()
    assert len(body["id"]) == 32 and body["status"] in ("queued", "accepted")
    http_b = await node.http_for(bob)
    async with http_b.post(f"{node.url}/api/mail/pull") as resp:
        messages = (await resp.json())["messages"]
    assert [(m["id"], m["from"], m["content"]) for m in messages] == [(body["id"], alice, "hello")]
    await http.close()
    await http_b.close()


async def test_the_sender_is_always_the_session_user(node: Node, make_user: Callable[[str], str]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    http = await node.http_for(alice)
    async with http.post(f"{node.url}/api/messages", json={"to": bob, "content": "x", "from": bob}) as resp:
        assert resp.status == 202
    http_b = await node.http_for(bob)
    async with http_b.post(f"{node.url}/wsTemplate/pullUnreadMessage", data={"destination": "/user/topic/reply"}) as r:
        result = (await r.json())["result"]
    assert json.loads(result[0])["from"] == alice
    await http.close()
    await http_b.close()


async def test_a_message_to_my_name_typed_in_fullwidth_reaches_me(node: Node, make_user: Callable[[str], str]) -> None:
    """Sign-in reads ``ｂｏｂ`` as ``bob``; so does a send (otherwise: 404 unknown-user for a name that exists)."""
    alice, bob = make_user("alice"), make_user("bob")
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in bob)
    http = await node.http_for(alice)
    async with http.post(f"{node.url}/api/messages", json={"to": fullwidth, "content": "typed wide"}) as resp:
        assert resp.status == 202
    http_b = await node.http_for(bob)
    async with http_b.post(f"{node.url}/api/mail/pull") as r:
        messages = (await r.json())["messages"]
    assert [(m["to"], m["content"]) for m in messages] == [(bob, "typed wide")]
    await http.close()
    await http_b.close()


async def test_mailbox_full_is_refused_clearly(
    node_factory: NodeFactory, backplane_kind: str, make_user: Callable[[str], str]
) -> None:
    # No sender's share here: one sender fills the whole mailbox (tests/test_mailbox_bounds.py has the share).
    node = await node_factory(mailbox_max=3, mailbox_sender_share=1.0)
    alice, bob = make_user("alice"), make_user("bob")
    if backplane_kind == "rabbitmq":
        # On RabbitMQ the limit is a broker policy ops own; give bob's mailbox one of its own for this test.
        await set_policy(f"test-{bob}", mailbox_queue_name(bob), {"max-length": 3, "overflow": "reject-publish"})
    http = await node.http_for(alice)
    statuses = []
    for i in range(5):
        async with http.post(f"{node.url}/api/messages", json={"to": bob, "content": f"m{i}"}) as resp:
            statuses.append((resp.status, (await resp.json()).get("error")))
    await http.close()
    if backplane_kind == "rabbitmq":
        await set_policy(f"test-{bob}", None, None)
    assert statuses[:3] == [(202, None)] * 3
    assert statuses[3:] == [(507, "mailbox-full")] * 2


async def set_policy(name: str, queue: str | None, definition: dict[str, object] | None) -> None:
    url = f"http://127.0.0.1:15672/api/policies/%2F/{quote(name, safe='')}"
    async with aiohttp.ClientSession(auth=aiohttp.BasicAuth("guest", "guest")) as http:
        if queue is None:
            async with http.delete(url) as resp:
                assert resp.status in (204, 404)
            return
        body = {"pattern": f"^{re.escape(queue)}$", "definition": definition, "priority": 100, "apply-to": "queues"}
        async with http.put(url, json=body) as resp:
            assert resp.status in (201, 204), await resp.text()


@pytest.mark.parametrize(
    "cookie",
    [
        "garbage",
        Fernet(generate_secret_key()).encrypt(b'{"session": {"user": "alice", "gen": 0}, "created": 1}').decode(),
    ],
    ids=["garbage", "forged-with-another-key"],
)
async def test_forged_or_tampered_cookies_are_refused(node: Node, make_user: Callable[[str], str], cookie: str) -> None:
    make_user("alice")
    async with aiohttp.ClientSession(cookies={COOKIE_NAME: cookie}) as http:
        async with http.get(f"{node.url}/api/me") as resp:
            assert (await resp.json())["user"] is None
        async with http.post(f"{node.url}/api/messages", json={"to": "alice", "content": "x"}) as resp:
            assert resp.status == 401


async def test_tampered_cookie_is_refused(node: Node, make_user: Callable[[str], str]) -> None:
    alice = make_user("alice")
    http = await node.http_for(alice)
    value = next(c.value for c in http.cookie_jar if c.key == COOKIE_NAME)
    flipped = value[:-5] + ("A" if value[-5] != "A" else "B") + value[-4:]
    async with aiohttp.ClientSession(cookies={COOKIE_NAME: flipped}) as forged, forged.get(f"{node.url}/api/me") as r:
        assert (await r.json())["user"] is None
    await http.close()


async def test_cross_site_posts_are_refused(node: Node, make_user: Callable[[str], str]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    http = await node.http_for(alice)
    async with http.post(
        f"{node.url}/wsTemplate/sendToUser",
        data={"receiver": bob, "msg": "csrf"},
        headers={"Origin": "https://evil.example"},
    ) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "origin-not-allowed"
    async with http.post(
        f"{node.url}/wsTemplate/sendToUser", data={"receiver": bob, "msg": "ok"}, headers={"Origin": node.url}
    ) as resp:
        assert resp.status == 200
    await http.close()


async def test_health_and_readiness(node: Node) -> None:
    async with fresh_http() as http:
        async with http.get(f"{node.url}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{node.url}/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ready"


async def test_metrics_count_what_was_sent(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    from tests.test_chat import online

    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    b = await online(node, bob, stomp_clients)
    for i in range(7):
        await a.send_chat(bob, f"m{i}")
    for _ in range(7):
        await b.next_message()
    await a.send_chat("nobody-x", "refused")
    async with fresh_http() as http, http.get(f"{node.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}
    assert samples["warren_messages_accepted_total"] == 7
    assert samples["warren_messages_delivered_live_total"] == 7
    assert samples['warren_messages_refused_total{reason="unknown-user"}'] == 1
    assert samples['warren_sessions{transport="websocket"}'] == 1  # a's session closed after the refusal
    assert samples["warren_users_bound"] == 1
    assert samples["warren_publish_seconds_count"] == 7
    assert samples["warren_delivery_seconds_count"] == 7
