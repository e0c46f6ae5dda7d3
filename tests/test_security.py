"""Security: cookie lifetime and revocation, sign-in throttling, rate limits, session limits, fuzzing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth.sessions import COOKIE_NAME
from app.auth.users import UserDirectory
from tests.conftest import PASSWORD, Node, NodeFactory
from tests.support.stomp_client import StompClient
from tests.test_chat import online


async def whoami(node: Node, http: aiohttp.ClientSession) -> str | None:
    async with http.get(f"{node.url}/api/me") as resp:
        user: str | None = (await resp.json())["user"]
        return user


async def test_expired_cookie_is_refused_on_http_and_sockjs(
    node: Node, make_user: Callable[[str], str], secret_key: bytes, stomp_clients: list[StompClient]
) -> None:
    alice = make_user("alice")
    max_age = 7 * 86400  # SESSION_MAX_AGE's default
    signed_at = time.time() - max_age - 60
    payload = json.dumps({"created": int(signed_at), "session": {"user": alice, "gen": 0, "at": int(signed_at)}})
    stale = Fernet(secret_key).encrypt_at_time(payload.encode(), int(signed_at)).decode()
    async with aiohttp.ClientSession(cookies={COOKIE_NAME: stale}) as http:
        assert await whoami(node, http) is None
        client = StompClient(http, node.url)
        stomp_clients.append(client)
        frame = await client.connect()
        assert frame.command == "ERROR" and frame.headers["message"] == "not-signed-in"


async def test_a_fresh_cookie_at_each_sign_in(node: Node, make_user: Callable[[str], str]) -> None:
    alice = make_user("alice")
    http = await node.http_for(alice)
    first = next(c.value for c in http.cookie_jar if c.key == COOKIE_NAME)
    async with http.post(f"{node.url}/login", json={"username": alice, "password": PASSWORD}):
        pass
    second = next(c.value for c in http.cookie_jar if c.key == COOKIE_NAME)
    assert first != second
    await http.close()


async def test_logout_everywhere_and_password_change_end_old_sessions(
    node: Node, make_user: Callable[[str], str], directory: UserDirectory, stomp_clients: list[StompClient]
) -> None:
    alice = make_user("alice")
    copied = await node.http_for(alice)  # a cookie copied before sign-out
    assert await whoami(node, copied) == alice
    directory.bump_generation(alice)  # python -m app users logout
    assert await whoami(node, copied) is None
    client = StompClient(copied, node.url)
    stomp_clients.append(client)
    assert (await client.connect()).headers["message"] == "not-signed-in"

    again = await node.http_for(alice)
    assert await whoami(node, again) == alice
    directory.add(alice, "a-new-password")  # password change
    assert await whoami(node, again) is None
    await again.close()


async def test_a_signed_out_user_is_disconnected_on_every_node(
    node_factory: NodeFactory, make_user: Callable[[str], str], users_file: Path, stomp_clients: list[StompClient]
) -> None:
    """``users logout`` on the command line (another process: it only writes USERS_FILE) closes the user's open
    connections on every node within a few seconds, with the ERROR the page shows; other users stay connected."""
    first, second = await node_factory(), await node_factory()
    alice, bob = make_user("alice"), make_user("bob")
    tabs = [await online(first, alice, stomp_clients), await online(second, alice, stomp_clients)]
    other = await online(second, bob, stomp_clients)
    UserDirectory(users_file).bump_generation(alice)
    for tab in tabs:
        error = await tab.next_frame(timeout=6)
        assert error.command == "ERROR" and error.headers["message"] == "not-signed-in"
        assert (await asyncio.wait_for(tab.received.closed, 5))[0] == 4001
    await other.send_chat(bob, "still here", receipt="r")
    assert (await other.next_frame()).command in ("RECEIPT", "MESSAGE")


async def test_sign_in_is_throttled_after_repeated_failures(node: Node, make_user: Callable[[str], str]) -> None:
    alice = make_user("alice")
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(6):
            async with http.post(f"{node.url}/login", json={"username": alice, "password": "guess-guess"}) as resp:
                statuses.append(resp.status)
        async with http.post(f"{node.url}/login", json={"username": alice, "password": PASSWORD}) as resp:
            statuses.append(resp.status)
            assert int(resp.headers["Retry-After"]) > 0
    assert statuses == [401] * 5 + [429, 429]


async def test_sending_too_fast_is_refused_with_a_clear_error(
    node_factory: NodeFactory, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    node = await node_factory(message_rate=1, message_burst=3)
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    await a.subscribe("/user/queue/errors", sub_id="errors")
    for i in range(4):
        await a.send_chat(bob, f"m{i}", receipt=f"r{i}")
    frames = [await a.next_frame() for _ in range(4)]
    assert [f.command for f in frames[:3]] == ["RECEIPT"] * 3
    refusal = json.loads(frames[3].body)
    assert refusal["error"] == "rate-limited" and refusal["receipt-id"] == "r3" and "per second" in refusal["message"]
    http = await node.http_for(alice)
    async with http.post(f"{node.url}/api/messages", json={"to": bob, "content": "x"}) as resp:
        assert resp.status == 429 and "Retry-After" in resp.headers
    await http.close()


async def test_sessions_per_user_are_bounded(
    node_factory: NodeFactory, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    node = await node_factory(max_sessions_per_user=2)
    alice = make_user("alice")
    await online(node, alice, stomp_clients)
    await online(node, alice, stomp_clients)
    third = await node.client(alice)
    stomp_clients.append(third)
    # Refused as it opens: every session counts, subscribed or not.
    error = await third.connect()
    assert error.command == "ERROR" and error.headers["message"] == "too-many-sessions"
    assert (await third.received.closed)[0] == 4009


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


async def test_fuzzed_json_api_never_fails_with_a_server_error(node: Node, make_user: Callable[[str], str]) -> None:
    alice = make_user("alice")
    http = await node.http_for(alice)
    bodies: list[object] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(json_values | st.fixed_dictionaries({"to": json_values, "content": json_values}))
    def collect(body: object) -> None:
        bodies.append(body)

    collect()
    for body in bodies:
        for path in ("/api/messages", "/login", "/wsTemplate/sendToUser"):
            async with http.post(f"{node.url}{path}", json=body) as resp:
                assert resp.status < 500, (path, body, resp.status)
    async with http.post(
        f"{node.url}/api/messages", data=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
    await http.close()


async def test_fuzzed_stomp_input_never_crashes_the_node(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice = make_user("alice")
    inputs: list[str] = []

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        st.lists(
            st.sampled_from(["CONNECT\n\n\x00", "SEND\ndestination:/message/chat\n\n", "SUBSCRIBE\n", "\x00", "\n"])
            | st.text(max_size=40),
            max_size=6,
        ).map("".join)
    )
    def collect(text: str) -> None:
        inputs.append(text)

    collect()
    for text in inputs:
        client = await node.client(alice)
        stomp_clients.append(client)
        await client.open()
        await client.send_raw(text)
        await client.close()
    # The node still serves a normal conversation.
    bob = make_user("bob")
    a = await online(node, alice, stomp_clients)
    b = await online(node, bob, stomp_clients)
    await a.send_chat(bob, "after the fuzz")
    assert (await b.next_message())["content"] == "after the fuzz"


async def test_secret_key_rotation_accepts_the_old_key(
    node_factory: NodeFactory, make_user: Callable[[str], str], secret_key: bytes
) -> None:
    alice = make_user("alice")
    old_node = await node_factory()  # SECRET_KEY=old
    http = await old_node.http_for(alice)
    old_cookie = next(c.value for c in http.cookie_jar if c.key == COOKIE_NAME)
    await http.close()
    new_key = Fernet.generate_key()
    rotated = await node_factory(secret_keys=(new_key, secret_key))  # SECRET_KEY=new,old
    async with aiohttp.ClientSession(cookies={COOKIE_NAME: old_cookie}) as old_session:
        assert await whoami(rotated, old_session) == alice
    fresh = await rotated.http_for(alice)
    new_cookie = next(c.value for c in fresh.cookie_jar if c.key == COOKIE_NAME)
    await fresh.close()
    Fernet(new_key).decrypt(new_cookie.encode())  # issued with the new key
    only_new = await node_factory(secret_keys=(new_key,))  # SECRET_KEY=new, once old cookies have expired
    async with aiohttp.ClientSession(cookies={COOKIE_NAME: old_cookie}) as old_session:
        assert await whoami(only_new, old_session) is None
