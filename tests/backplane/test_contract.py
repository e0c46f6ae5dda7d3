"""The backplane contract (``app.core.abc``), run against every backplane: memory and RabbitMQ.

Only behaviour the contract promises is checked here. Where the backplanes may differ (``PublishResult`` values,
whether delivery happens before ``publish`` returns), the tests accept every allowed outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.backplane.memory import MemoryBackplane
from app.core.abc import Backplane, PublishResult
from app.core.envelope import Envelope
from app.core.errors import BackplaneUnavailable, MailboxFull

from .conftest import RecordingInbox

Node = tuple[Backplane, RecordingInbox]
NodeFactory = Callable[..., Awaitable[Node]]

ODD_NAMES = ["a.b", "a*", "#", "*.x", "ü", "a_2e_b", "a", "b", "a.b.c", "a_b", "*", "a#", "user.a", "ü" * 64]


@pytest.fixture(
    params=[
        "memory",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("rabbitmq-plain", marks=pytest.mark.rabbitmq),
    ]
)
def make_node(request: pytest.FixtureRequest) -> NodeFactory:
    if request.param.startswith("rabbitmq"):
        make_rabbit = request.getfixturevalue("make_rabbit")
        publisher = "plain" if request.param == "rabbitmq-plain" else "batched"

        async def make_rabbit_node(*, mailbox_max: int = 1000, mailbox_max_bytes: int = 10 * 1024 * 1024) -> Node:
            backplane, inbox = await make_rabbit(
                mailbox_max=mailbox_max, mailbox_max_bytes=mailbox_max_bytes, publisher=publisher
            )
            return backplane, inbox

        return make_rabbit_node

    async def make_memory_node(*, mailbox_max: int = 1000, mailbox_max_bytes: int = 10 * 1024 * 1024) -> Node:
        backplane = MemoryBackplane(mailbox_ttl=3600.0, mailbox_max=mailbox_max, mailbox_max_bytes=mailbox_max_bytes)
        inbox = RecordingInbox()
        await backplane.start(inbox)
        return backplane, inbox

    return make_memory_node


def message(receiver: str, content: str, sender: str = "alice") -> Envelope:
    return Envelope.create(sender, receiver, content)


async def publish_all(backplane: Backplane, receiver: str, contents: list[str]) -> list[Envelope]:
    """Publish one after another, as the hub does for one sender's sends."""
    sent = []
    for content in contents:
        envelope = message(receiver, content)
        result = await backplane.publish(envelope)
        assert isinstance(result, PublishResult)
        sent.append(envelope)
    return sent


async def read_mailbox(backplane: Backplane, user: str, max_count: int = 1000) -> list[Envelope]:
    batch = await backplane.fetch_mail(user, max_count)
    envelopes = list(batch.envelopes)
    await batch.settle()
    return envelopes


def same(a: Envelope, b: Envelope) -> bool:
    def fields(e: Envelope) -> tuple[object, ...]:
        return (e.id, e.sender, e.receiver, e.content, e.ts, e.body)

    return fields(a) == fields(b)


async def test_bound_user_gets_published_messages_in_order(make_node: NodeFactory) -> None:
    backplane, inbox = await make_node()
    await backplane.bind("bob")
    sent = await publish_all(backplane, "bob", [f"m{i}" for i in range(30)])
    received = await inbox.wait_for(30, user="bob")
    assert [e.content for e in received] == [e.content for e in sent]
    assert all(same(a, b) for a, b in zip(received, sent, strict=True))
    assert await read_mailbox(backplane, "bob") == []


async def test_mail_for_an_unbound_user_waits_in_the_mailbox_in_order(make_node: NodeFactory) -> None:
    backplane, inbox = await make_node()
    sent = await publish_all(backplane, "carol", [f"m{i}" for i in range(5)])
    mail = await read_mailbox(backplane, "carol")
    assert [e.content for e in mail] == ["m0", "m1", "m2", "m3", "m4"]
    assert all(same(a, b) for a, b in zip(mail, sent, strict=True))
    assert await read_mailbox(backplane, "carol") == []
    assert inbox.envelopes == []


async def test_fetch_takes_at_most_max_count_and_release_restores_order(make_node: NodeFactory) -> None:
    backplane, _ = await make_node()
    await publish_all(backplane, "dave", [f"m{i}" for i in range(7)])

    first = await backplane.fetch_mail("dave", 3)
    assert [e.content for e in first.envelopes] == ["m0", "m1", "m2"]
    await first.settle()

    second = await backplane.fetch_mail("dave", 3)
    assert [e.content for e in second.envelopes] == ["m3", "m4", "m5"]
    await second.release()

    assert [e.content for e in await read_mailbox(backplane, "dave")] == ["m3", "m4", "m5", "m6"]


async def test_an_empty_mailbox_gives_an_empty_batch(make_node: NodeFactory) -> None:
    backplane, _ = await make_node()
    batch = await backplane.fetch_mail("nobody-wrote-to-me", 10)
    assert list(batch.envelopes) == []
    await batch.release()
    # The backplane still works after asking for a mailbox that does not exist.
    await publish_all(backplane, "nobody-wrote-to-me", ["first"])
    assert [e.content for e in await read_mailbox(backplane, "nobody-wrote-to-me")] == ["first"]


async def test_after_unbind_mail_goes_to_the_mailbox(make_node: NodeFactory) -> None:
    backplane, inbox = await make_node()
    await backplane.bind("erin")
    await publish_all(backplane, "erin", ["live"])
    await inbox.wait_for(1, user="erin")
    await backplane.unbind("erin")
    await publish_all(backplane, "erin", ["kept"])
    assert [e.content for e in await read_mailbox(backplane, "erin")] == ["kept"]
    assert inbox.contents("erin") == ["live"]


async def test_a_full_mailbox_refuses_publish(make_node: NodeFactory) -> None:
    backplane, _ = await make_node(mailbox_max=3)
    await publish_all(backplane, "frank", ["m0", "m1", "m2"])
    with pytest.raises(MailboxFull) as refused:
        await backplane.publish(message("frank", "m3"))
    assert refused.value.username == "frank"
    assert [e.content for e in await read_mailbox(backplane, "frank")] == ["m0", "m1", "m2"]
    # Read mail makes room again.
    await publish_all(backplane, "frank", ["m4"])
    assert [e.content for e in await read_mailbox(backplane, "frank")] == ["m4"]


async def test_a_mailbox_full_in_bytes_refuses_publish_and_keeps_its_mail(make_node: NodeFactory) -> None:
    """MAILBOX_MAX_BYTES counts what is stored (the envelope, escapes included), not the number of messages."""
    backplane, _ = await make_node(mailbox_max=1000, mailbox_max_bytes=64 * 1024)
    escaped = "\x01" * 3000  # 3,000 characters, stored as 18,000 bytes of JSON escapes
    await publish_all(backplane, "gail", [f"{i}{escaped}" for i in range(3)])
    with pytest.raises(MailboxFull):
        await backplane.publish(message("gail", f"3{escaped}"))
    assert [e.content[0] for e in await read_mailbox(backplane, "gail")] == ["0", "1", "2"]
    await publish_all(backplane, "gail", [f"4{escaped}"])  # read mail makes room again


async def test_a_full_mailbox_refuses_store_too_and_keeps_what_it_holds(make_node: NodeFactory) -> None:
    """The contract (``app.core.abc``): a full mailbox refuses with ``MailboxFull``; no backplane drops old mail."""
    backplane, _ = await make_node(mailbox_max=2)
    await publish_all(backplane, "fern", ["m0", "m1"])
    with pytest.raises(MailboxFull) as refused:
        await backplane.store(message("fern", "put back"))
    assert refused.value.username == "fern"
    assert [e.content for e in await read_mailbox(backplane, "fern")] == ["m0", "m1"]


async def test_unbind_all_sends_everyones_mail_to_their_mailboxes(make_node: NodeFactory) -> None:
    backplane, inbox = await make_node()
    users = [f"u{i}" for i in range(30)]
    for user in users:
        await backplane.bind(user)
    await backplane.unbind_all(users)
    for user in users:
        await publish_all(backplane, user, [f"for {user}"])
    for user in users:
        assert [e.content for e in await read_mailbox(backplane, user)] == [f"for {user}"]
    assert inbox.envelopes == []


async def test_store_puts_an_envelope_in_the_mailbox_unchanged(make_node: NodeFactory) -> None:
    backplane, inbox = await make_node()
    envelope = message("gina", "put back ✓ with ünïcode")
    await backplane.store(envelope)
    mail = await read_mailbox(backplane, "gina")
    assert len(mail) == 1 and same(mail[0], envelope)
    assert inbox.envelopes == []


async def test_odd_usernames_never_receive_each_others_mail(make_node: NodeFactory) -> None:
    backplane, inbox = await make_node()
    online = ODD_NAMES[::2]
    offline = ODD_NAMES[1::2]
    for user in online:
        await backplane.bind(user)
    for user in ODD_NAMES:
        await publish_all(backplane, user, [f"for {user}"])
    await inbox.wait_for(len(online))
    for user in online:
        assert inbox.contents(user) == [f"for {user}"]
    assert sorted(e.receiver for e in inbox.envelopes) == sorted(online)
    for user in ODD_NAMES:
        mail = await read_mailbox(backplane, user)
        assert [e.content for e in mail] == ([] if user in online else [f"for {user}"]), user
    assert offline


async def test_close_stops_accepting(make_node: NodeFactory) -> None:
    backplane, _ = await make_node()
    assert backplane.ready
    await backplane.bind("hank")
    await backplane.close()
    assert not backplane.ready
    with pytest.raises(BackplaneUnavailable):
        await backplane.publish(message("hank", "too late"))


def test_every_backplane_has_a_name() -> None:
    names: set[Any] = {MemoryBackplane.name}
    from app.backplane.rabbitmq import RabbitMQBackplane

    names.add(RabbitMQBackplane.name)
    assert names == {"memory", "rabbitmq"}
