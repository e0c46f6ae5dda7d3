"""Input that costs the node memory, broker work or log lines: bounded, with a clear refusal for the sender and
nothing lost for anybody else."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from app.auth.users import UserDirectory
from app.backplane.memory import MemoryBackplane
from app.config import Settings, generate_secret_key
from app.core.envelope import Envelope
from app.core.errors import MailboxFull
from app.core.hub import SUBSCRIPTIONS_PER_USER_BURST, SUBSCRIPTIONS_PER_USER_RATE
from app.logs import LOG_BURST, LogFlood
from app.server import create_app
from app.stomp.frames import encode
from app.stomp.protocol import PRE_CONNECT_LIMITS
from app.stomp.subscriptions import SUBSCRIPTION_BURST
from tests.conftest import PASSWORD, Node
from tests.support.processes import NodeProcess
from tests.support.stomp_client import StompClient
from tests.test_bad_input import expect_error, still_serving
from tests.test_chat import online


async def test_a_connection_that_has_not_connected_cannot_pin_more_than_a_few_kib(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    """Before: an unfinished frame of up to ~0.5 MiB stayed buffered for every connection, signed in or not."""
    client = await node.client(make_user("alice"))
    stomp_clients.append(client)
    await client.open()
    await client.send_raw("CONNECT\naccept-version:1.2\nx-padding:" + "a" * 3000 + "\n")
    for _ in range(3):  # past 8 KiB, and still no blank line
        await client.send_raw("x-more:" + "a" * 3000 + "\n")
    assert f"longer than {PRE_CONNECT_LIMITS.head_bound} bytes" in await expect_error(client, "malformed-frame")


async def test_an_anonymous_connection_cannot_pin_an_unfinished_frame(
    node: Node, stomp_clients: list[StompClient]
) -> None:
    client = StompClient(aiohttp.ClientSession(), node.url)
    stomp_clients.append(client)
    await client.open()
    await client.send_raw("SEND\ndestination:/message/chat\ncontent-length:1000\n\n" + "a" * 900)
    await client.send_raw("a" * 200)  # a body bigger than allowed before CONNECT
    # Closed either way: with an ERROR from the STOMP layer, or at once by the session layer for not signing in.
    code, _ = await asyncio.wait_for(client.received.closed, 10)
    assert 4000 <= code < 5000 or code in (1002, 3000)


async def test_after_connect_a_connected_client_still_sends_large_messages(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    b = await online(node, bob, stomp_clients)
    await a.send_chat(bob, "x" * 60_000)
    assert (await b.next_message())["content"] == "x" * 60_000


async def test_subscribe_churn_is_refused_with_a_clear_error(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    """Before: about 250 bind/unbind pairs a second from one connection reached the broker, unbounded."""
    client = await node.client(make_user("mallory"))
    stomp_clients.append(client)
    await client.connect()
    for _ in range(SUBSCRIPTION_BURST * 5):
        await client.send_frame("SUBSCRIBE", {"destination": "/user/topic/reply", "id": "churn"})
        await client.send_frame("UNSUBSCRIBE", {"id": "churn"})
    frame = await client.next_frame()
    while frame.command != "ERROR":
        frame = await client.next_frame()
    assert frame.headers["message"] == "rate-limited", frame.headers
    assert "subscribing and unsubscribing too fast" in frame.body.decode()
    assert (await client.received.closed)[0] == 4009
    await still_serving(node, make_user, stomp_clients)


async def test_subscribe_churn_across_reconnects_is_refused_too(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    mallory = make_user("mallory")
    refused = None
    accepted = 0
    started = time.monotonic()
    for attempt in range(40):
        client = await node.client(mallory)
        stomp_clients.append(client)
        await client.connect()
        for pair in range(SUBSCRIPTION_BURST // 2):
            await client.send_frame("SUBSCRIBE", {"destination": "/user/topic/reply", "id": "churn"})
            await client.send_frame("UNSUBSCRIBE", {"id": "churn", "receipt": f"{attempt}-{pair}"})
        frame = await client.next_frame()
        while frame.command == "RECEIPT":
            accepted += 2
            if frame.headers["receipt-id"] == f"{attempt}-{SUBSCRIPTION_BURST // 2 - 1}":
                break
            frame = await client.next_frame()
        await client.close()
        if frame.command == "ERROR":
            refused = frame
            break
    assert refused is not None, "a fresh connection gave a fresh allowance every time"
    assert refused.headers["message"] == "rate-limited" and "for one user" in refused.body.decode()
    allowance = SUBSCRIPTIONS_PER_USER_BURST + SUBSCRIPTIONS_PER_USER_RATE * (time.monotonic() - started)
    assert accepted <= allowance + SUBSCRIPTION_BURST, (accepted, allowance)


async def test_a_page_that_resubscribes_a_few_times_is_not_refused(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    await a.subscribe("/user/queue/errors", sub_id="errors")
    for round_ in range(5):
        await a.send_frame("UNSUBSCRIBE", {"id": "sub-0", "receipt": f"u{round_}"})
        assert (await a.next_frame()).command == "RECEIPT"
        await a.subscribe()
    b = await online(node, bob, stomp_clients)
    await b.send_chat(alice, "still subscribed")
    assert (await a.next_message())["content"] == "still subscribed"


def test_a_flood_of_one_log_line_is_cut_to_a_few_and_counted() -> None:
    """Before: an anonymous client could write about 4,000 log lines a second."""
    now = [0.0]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    flood = LogFlood(handler, rate=10, burst=100, report_every=10, clock=lambda: now[0])
    handler.addFilter(flood)
    log = logging.getLogger("test.flood")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for number in range(4_000):  # one second of the attack
            log.info("STOMP error for %s: %s", "anonymous", number)
        log.info("an unrelated line")  # other templates are untouched
        now[0] = 11.0
        log.info("the next line, 11 s later")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len([line for line in lines if "STOMP error" in line and "suppressed" not in line]) == 100
    assert "INFO an unrelated line" in lines
    assert "WARNING 3900 similar log lines suppressed: STOMP error for %s: %s" in lines
    assert lines[-1] == "INFO the next line, 11 s later"


async def test_thousands_of_bad_sign_ins_write_a_bounded_number_of_log_lines(tmp_path: Path) -> None:
    """A real node (``python -m app``, its log set up as in production) and 2,000 refused sign-ins."""
    users = tmp_path / "users.json"
    UserDirectory(users).add(f"alice-{uuid.uuid4().hex[:6]}", PASSWORD)
    log_path = tmp_path / "node.log"
    node = NodeProcess({"USERS_FILE": str(users), "SECRET_KEY": generate_secret_key().decode()}, log_path)
    await node.start()
    try:
        async with aiohttp.ClientSession() as http:

            async def attempts(count: int) -> None:
                for _ in range(count):
                    body = {"username": "nobody", "password": "wrong-password"}
                    async with http.post(f"{node.url}/login", json=body, headers={"Origin": node.url}) as reply:
                        assert reply.status in (401, 429, 503)  # 503: the sign-in pool is busy

            await asyncio.gather(*(attempts(100) for _ in range(20)))
    finally:
        node.kill()
    lines = [line for line in log_path.read_text().splitlines() if "sign-in" in line]
    # Each refusal used to write a line; now each template writes its burst, then about 10 a second.
    assert len(lines) < 2 * LOG_BURST + 200, len(lines)


# -- NACK ----------------------------------------------------------------------------------------------------------


async def test_a_nacked_message_comes_back_with_its_id_on_the_next_connection(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await online(node, alice, stomp_clients)
    b = await online(node, bob, stomp_clients, ack="client-individual")
    await a.send_chat(bob, "later, please")
    message = await b.next_frame()
    await b.send_frame("NACK", {"id": message.headers["ack"], "receipt": "nack-1"})
    assert (await b.next_frame()).headers["receipt-id"] == "nack-1"
    await b.close()
    b2 = await online(node, bob, stomp_clients, ack="client-individual")
    again = await b2.next_frame()
    assert again.headers["message-id"] == message.headers["message-id"]
    assert json.loads(again.body)["content"] == "later, please"


class RefusingMemoryBackplane(MemoryBackplane):
    """The memory backplane with RabbitMQ's behaviour for a full mailbox: a put-back is refused (reject-publish)."""

    def __init__(self, mailbox_max: int) -> None:
        super().__init__(mailbox_ttl=3600, mailbox_max=mailbox_max)
        self.limit = mailbox_max

    async def store(self, envelope: Envelope) -> None:
        if self.mailbox_size(envelope.receiver) >= self.limit:
            raise MailboxFull(envelope.receiver)
        await super().store(envelope)


async def test_a_nack_into_a_full_mailbox_is_refused_clearly_and_the_rest_of_the_batch_is_handled(
    make_user: Callable[[str], str], directory: UserDirectory, secret_key: bytes, users_file: Path,
    stomp_clients: list[StompClient],
) -> None:
    """Before: MailboxFull escaped the NACK handler; the frames after the NACK in the same SockJS message were lost."""
    backplane = RefusingMemoryBackplane(mailbox_max=2)
    settings = Settings(port=0, host="127.0.0.1", secret_keys=(secret_key,), users_file=users_file, mailbox_max=2)
    server = TestServer(create_app(settings, backplane=backplane, directory=directory), host="127.0.0.1")
    await server.start_server()
    try:
        node = Node(str(server.make_url("")).rstrip("/"), server.app, server)
        alice, bob = make_user("alice"), make_user("bob")
        a = await online(node, alice, stomp_clients)
        b = await online(node, bob, stomp_clients, ack="client-individual")
        await b.subscribe("/user/queue/errors", sub_id="errors")
        await a.send_chat(bob, "keep me")
        message = await b.next_frame()
        for text in ("one", "two"):  # bob's mailbox fills up (mail put back by his other tabs, say)
            await backplane.store(Envelope.create(alice, bob, text))
        nack = encode("NACK", {"id": message.headers["ack"], "receipt": "nack"})
        chat = json.dumps({"to": alice, "msg": "hi"}).encode()
        send = encode("SEND", {"destination": "/message/chat", "receipt": "after"}, chat)
        assert b.ws is not None
        await b.ws.send_str(json.dumps([nack + send]))  # one SockJS message, two frames
        refusal = await b.next_frame()
        assert refusal.headers["destination"] == "/user/queue/errors", refusal
        assert json.loads(refusal.body)["error"] == "mailbox-full"
        assert json.loads(refusal.body)["receipt-id"] == "nack"
        assert (await b.next_frame()).headers["receipt-id"] == "after"  # the frame after the NACK was handled
        assert (await a.next_message())["content"] == "hi"
        # The refused message is still bob's: he can acknowledge it now.
        await b.send_frame("ACK", {"id": message.headers["ack"], "receipt": "ack"})
        assert (await b.next_frame()).headers["receipt-id"] == "ack"
    finally:
        await server.close()


async def test_a_send_body_of_deeply_nested_json_is_refused_like_any_bad_body(
    node: Node, make_user: Callable[[str], str], stomp_clients: list[StompClient]
) -> None:
    """Before: RecursionError escaped the SEND handler (a traceback in the log, no answer for the sender)."""
    alice = make_user("alice")
    a = await online(node, alice, stomp_clients)
    await a.subscribe("/user/queue/errors", sub_id="errors")
    await a.send_frame("SEND", {"destination": "/message/chat", "receipt": "deep"}, b"[" * 100_000)
    refusal = json.loads((await a.next_frame()).body)
    assert (refusal["error"], refusal["receipt-id"]) == ("invalid-message", "deep")
    await a.send_chat(alice, "still here")
    assert (await a.next_message())["content"] == "still here"
