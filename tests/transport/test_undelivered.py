"""What a session hands back when it ends: the envelopes of the chat messages its client may not have, the very
objects the hub pushed (never text parsed back), in order; never a receipt or an error, never what was written.

Through the seams the SockJS endpoint uses: the STOMP connection queues frames on its ``WarrenSession`` (``push``,
``on_text``), a receiver writes them (``next_frame``/``commit``/``polled``), and ``on_close`` takes what is left
(``take_undelivered``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from app.auth.users import UserDirectory
from app.backplane.memory import MemoryBackplane
from app.core.envelope import Envelope
from app.core.hub import Hub
from app.stomp.frames import encode
from app.stomp.protocol import StompConnection
from app.transport.sockjs import WarrenSession, refuse

#: Everything JSON and STOMP escape, and text outside the BMP: what a re-parse could get wrong.
AWKWARD = 'tab\t "quotes" \\back\\slash\\ new\nline colon: ünïcødé 日本語 💬 \u2028 }]\x01'


@pytest.fixture
async def hub(directory: UserDirectory) -> AsyncIterator[Hub]:
    backplane = MemoryBackplane(mailbox_ttl=3600.0, mailbox_max=100)
    hub = Hub(backplane, directory, max_message_bytes=64 * 1024)
    await backplane.start(hub)
    yield hub
    await backplane.close()


async def connected(hub: Hub, user: str, *, ack: str = "auto") -> tuple[WarrenSession, StompConnection]:
    """An open polling session carrying a STOMP connection subscribed to the chat, nothing written yet."""
    session = WarrenSession("s", "xhr-polling")
    session.begin_open()
    stomp = StompConnection(hub, user, session, max_frame_body=1024 * 1024, send_buffer_bytes=1024 * 1024)
    await stomp.on_text(encode("CONNECT", {"accept-version": "1.2", "host": "localhost"}))
    await stomp.on_text(
        encode("SUBSCRIBE", {"id": "chat", "destination": "/user/topic/reply", "ack": ack, "receipt": "subscribed"})
    )
    return session, stomp


def write_all(session: WarrenSession, *, await_next_poll: bool = False) -> None:
    while (pending := session.next_frame()) is not None:
        session.commit(pending, await_next_poll=await_next_poll)


async def test_an_unwritten_chat_message_comes_back_as_its_envelope_and_a_receipt_or_error_never_does(
    hub: Hub, make_user: Callable[[str], str]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    session, stomp = await connected(hub, bob)  # CONNECTED and RECEIPT queued, never written
    first = Envelope.create(alice, bob, AWKWARD)
    second = Envelope.create(alice, bob, "second")
    assert stomp.push(first) and stomp.push(second)
    refuse(session, 4002, "bad", "an ERROR queued behind the mail")

    returned = session.take_undelivered()

    assert returned == [first, second]
    assert returned[0] is first  # the envelope the hub pushed, not a copy rebuilt from the frame
    assert (returned[0].id, returned[0].sender, returned[0].content) == (first.id, alice, AWKWARD)
    assert not session.send("too late")  # taken: nothing queued from now on is lost silently


async def test_what_was_written_is_not_handed_back_but_an_unconfirmed_polling_answer_is(
    hub: Hub, make_user: Callable[[str], str]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    session, stomp = await connected(hub, bob)
    read = Envelope.create(alice, bob, "read: the client polled again")
    stomp.push(read)
    write_all(session, await_next_poll=True)
    session.polled()  # the next poll arrived: the client has it
    unconfirmed = Envelope.create(alice, bob, "in the last answer, never confirmed")
    stomp.push(unconfirmed)
    write_all(session, await_next_poll=True)
    queued = Envelope.create(alice, bob, "never written")
    stomp.push(queued)

    assert session.take_undelivered() == [unconfirmed, queued]


async def test_a_client_ack_message_is_returned_by_the_stomp_layer_only_not_by_the_session_too(
    hub: Hub, make_user: Callable[[str], str]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    session, stomp = await connected(hub, bob, ack="client-individual")
    held = Envelope.create(alice, bob, AWKWARD)
    assert stomp.push(held)

    assert session.take_undelivered() == []
    assert list(stomp.take_unacknowledged()) == [held]
