"""Sign-in as its owner and as an attacker see it: lockouts hit the guesser, not the owner; every refusal says when
to come back; names are read as ``users add`` stores them; no body makes the server fail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from app.auth.users import UserDirectory
from app.config import Settings
from app.keys import BACKPLANE
from tests.conftest import PASSWORD, Node, NodeFactory
from tests.test_users import run_cli


def from_env(**env: str) -> dict[str, object]:
    """Node settings as ``python -m app`` would read them from these variables."""
    settings = Settings.from_env(env)
    return {name.lower(): getattr(settings, name.lower()) for name in env}


def browser() -> aiohttp.ClientSession:
    """A browser of its own: its own cookie jar (kept for 127.0.0.1)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(
    node: Node, http: aiohttp.ClientSession, user: str, password: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, object]]:
    async with http.post(f"{node.url}/login", json={"username": user, "password": password}, headers=headers) as r:
        return r.status, dict(r.headers), await r.json()


async def test_guessing_at_my_password_does_not_lock_me_out_of_my_own_browser(
    node: Node, make_user: Callable[[str], str]
) -> None:
    alice = make_user("alice")
    async with browser() as hers, browser() as attacker:
        assert (await sign_in(node, hers, alice, PASSWORD))[0] == 200  # she has signed in here before
        async with hers.post(f"{node.url}/logout"):
            pass
        # Someone else guesses, from the same address (the same NAT, or a balancer without TRUSTED_PROXIES),
        # and keeps going well past the lockout — what "one wrong try every 12 s" keeps up for good.
        statuses = [(await sign_in(node, attacker, alice, f"guess-{i}"))[0] for i in range(12)]
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
        status, _, body = await sign_in(node, attacker, alice, PASSWORD)
        assert status == 429, "the guesser is locked out even with the right password"
        # Her browser still gets in; a typo there is an ordinary 401, not a lockout.
        assert (await sign_in(node, hers, alice, "a-typo-here"))[0] == 401
        status, _, body = await sign_in(node, hers, alice, PASSWORD)
        assert (status, body) == (200, {"user": alice})


async def test_a_known_browser_still_has_a_limit_of_its_own(node: Node, make_user: Callable[[str], str]) -> None:
    alice = make_user("alice")
    async with browser() as stolen_cookie:
        assert (await sign_in(node, stolen_cookie, alice, PASSWORD))[0] == 200
        statuses = [(await sign_in(node, stolen_cookie, alice, f"guess-{i}"))[0] for i in range(7)]
        assert statuses == [401] * 5 + [429] * 2
        status, headers, body = await sign_in(node, stolen_cookie, alice, PASSWORD)
        assert status == 429 and int(headers["Retry-After"]) >= 1 and body["error"] == "too-many-attempts"
    async with browser() as elsewhere:  # while alice, from another browser and address, is not affected
        forwarded = {"X-Forwarded-For": "198.51.100.20"}
        assert (await sign_in(node, elsewhere, alice, PASSWORD, forwarded))[0] in (200, 429)


async def test_one_bad_client_behind_a_nat_does_not_lock_out_everyone_behind_it(
    node_factory: NodeFactory, make_user: Callable[[str], str]
) -> None:
    node = await node_factory(**from_env(TRUSTED_PROXIES="127.0.0.1"))  # a balancer on this machine
    bob, carol = make_user("bob"), make_user("carol")
    nat = {"X-Forwarded-For": "203.0.113.7"}  # one office, one public address
    async with browser() as attacker:
        for i in range(40):  # 40 failures against many names from the office's address
            status, _, _ = await sign_in(node, attacker, f"victim-{i % 8}", "guess-guess", nat)
            assert status in (401, 429)
    for user in (bob, carol):  # colleagues behind the same address, on browsers new to Warren
        async with browser() as colleague:
            status, _, body = await sign_in(node, colleague, user, PASSWORD, nat)
            assert (status, body) == (200, {"user": user})


async def test_a_forged_forwarded_for_does_not_dodge_the_throttle(
    node_factory: NodeFactory, make_user: Callable[[str], str]
) -> None:
    alice = make_user("alice")
    untrusting = await node_factory()  # no TRUSTED_PROXIES: the header is ignored
    trusting = await node_factory(**from_env(TRUSTED_PROXIES="127.0.0.0/8"))
    for node in (untrusting, trusting):
        async with browser() as attacker:
            statuses = []
            for i in range(7):
                # A client can only prepend to what the trusted balancer appends (here: 192.0.2.50).
                forged = {"X-Forwarded-For": f"10.9.8.{i}, 192.0.2.50"}
                statuses.append((await sign_in(node, attacker, alice, f"guess-{i}", forged))[0])
            assert statuses[5:] == [429, 429], (node.url, statuses)


async def test_when_sign_ins_pile_up_the_extra_ones_are_told_to_retry_in_a_second(
    node_factory: NodeFactory, make_user: Callable[[str], str]
) -> None:
    node = await node_factory(signin_workers=1, signin_queue=1)
    alice = make_user("alice")
    async with browser() as http:
        answers = await asyncio.gather(*(sign_in(node, http, alice, PASSWORD) for _ in range(12)))
    busy = [(headers, body) for status, headers, body in answers if status == 503]
    assert busy, [status for status, _, _ in answers]
    assert all(headers["Retry-After"] == "1" and body["error"] == "sign-in-busy" for headers, body in busy)
    assert any(status == 200 for status, _, _ in answers)


async def test_every_429_and_503_says_when_to_retry(
    node_factory: NodeFactory, make_user: Callable[[str], str]
) -> None:
    node = await node_factory(message_rate=1, message_burst=1)
    alice, bob = make_user("alice"), make_user("bob")
    async with browser() as http:
        assert (await sign_in(node, http, alice, PASSWORD))[0] == 200
        statuses = []
        for path, body in [("/api/messages", {"to": bob, "content": "x"})] * 3:
            async with http.post(f"{node.url}{path}", json=body) as resp:
                statuses.append(resp.status)
                if resp.status in (429, 503):
                    assert int(resp.headers["Retry-After"]) >= 1
        assert 429 in statuses
    await node.app[BACKPLANE].close()  # the broker is gone: the node is not ready
    async with browser() as http, http.get(f"{node.url}/readyz") as resp:
        assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1


async def test_a_page_on_an_allowed_origin_written_with_its_default_port_may_sign_in(
    node_factory: NodeFactory, make_user: Callable[[str], str]
) -> None:
    node = await node_factory(**from_env(ALLOWED_ORIGINS="https://chat.example.com:443"))
    alice = make_user("alice")
    for page in ({"Origin": "https://chat.example.com"}, {"Referer": "https://chat.example.com:443/chat"}):
        async with browser() as http:
            assert (await sign_in(node, http, alice, PASSWORD, page))[0] == 200, page
    async with browser() as http:
        assert (await sign_in(node, http, alice, PASSWORD, {"Origin": "https://evil.example"}))[0] == 403


async def test_i_can_sign_in_with_my_name_typed_in_fullwidth(node: Node, directory: UserDirectory) -> None:
    name = directory.add("wide", PASSWORD)
    async with browser() as http:
        status, _, body = await sign_in(node, http, "ｗｉｄｅ", PASSWORD)  # a phone keyboard in full-width mode
    assert (status, body) == (200, {"user": name})


def write_legacy_users(users_file: Path, names: list[str]) -> None:
    """A users file as an older Warren wrote it (NFC names only), every user with the password ``PASSWORD``."""
    scratch = users_file.parent / "scratch.json"
    UserDirectory(scratch).add("template", PASSWORD)
    entry = json.loads(scratch.read_text())["users"]["template"]
    users_file.write_text(json.dumps({"users": {name: entry for name in names}}, ensure_ascii=False))


async def test_users_stored_before_the_name_rules_still_sign_in(node: Node, users_file: Path) -> None:
    """A users file written by an older Warren may hold names today's rules refuse; they keep working as typed."""
    legacy = ["ｏｌｄｗｉｄｅ", "old\u3164filler", "mix\u0435d"]  # fullwidth, invisible filler, Cyrillic е
    write_legacy_users(users_file, legacy)
    for name in legacy:
        async with browser() as http:
            status, _, body = await sign_in(node, http, name, PASSWORD)
            assert (status, body) == (200, {"user": name})
    check = run_cli("users", "check", users=users_file)
    assert check.returncode == 1
    assert all(repr(name) in check.stdout for name in legacy), check.stdout


BROKEN_BODIES = [
    b"[" * 100_000,
    b'{"username":' * 50_000,
    b'{"username": "alice", "password": ',
    b"\xff\xfe{",
    b"",
    b"null",
    b'"just a string"',
]


@pytest.mark.parametrize(
    "body", BROKEN_BODIES, ids=["deep-list", "deep-object", "cut-off", "not-utf8", "empty", "null", "str"]
)
async def test_malformed_or_deeply_nested_json_is_a_400_everywhere(
    node: Node, make_user: Callable[[str], str], body: bytes
) -> None:
    alice = make_user("alice")
    signed_in = await node.http_for(alice)
    try:
        for path in ("/login", "/api/messages", "/wsTemplate/sendToUser"):
            for http in (signed_in, None):
                session = http or browser()
                try:
                    async with session.post(
                        f"{node.url}{path}", data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        answer = await resp.text()
                        if http is None and path != "/login":
                            assert resp.status == 401, (path, resp.status)  # not signed in: said first
                        else:
                            assert resp.status == 400, (path, resp.status, answer[:200])
                            assert json.loads(answer)["error"] == "invalid-message"
                finally:
                    if http is None:
                        await session.close()
    finally:
        await signed_in.close()


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded; charset=nope",
        "application/json; charset=nope",
    ],
)
async def test_a_broken_form_is_a_400_not_a_server_error(node: Node, content_type: str) -> None:
    body = b"--x\r\nContent-Disposition: nonsense\r\n\r\n\xff"
    headers = {"Content-Type": content_type}
    async with browser() as http, http.post(f"{node.url}/login", data=body, headers=headers) as resp:
        assert resp.status == 400, await resp.text()
