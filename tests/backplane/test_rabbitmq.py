"""The RabbitMQ backplane against the real broker: topology, several nodes in one process, races, reconnects.

Every "node" is a ``RabbitMQBackplane`` with its own AMQP connection. Broker-side state is checked through the
management HTTP API. The reconnect test force-closes only this test's own connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from app.backplane.rabbitmq import RabbitMQBackplane, RetryPolicy
from app.backplane.topology import MailboxLimits, Topology, definitions, policy_document, routing_key, setup_broker
from app.config import Settings
from app.core.envelope import Envelope
from app.core.errors import BackplaneUnavailable, ConfigurationError, MailboxFull

from .conftest import (
    AMQP_URL,
    DEADLINE,
    MANAGEMENT_URL,
    BrokerAdmin,
    RabbitFactory,
    RecordingInbox,
    TcpProxy,
    envelope,
    eventually,
    read_mailbox,
    unique,
)

pytestmark = pytest.mark.rabbitmq

REPO = Path(__file__).resolve().parents[2]


class HubLikeInbox:
    """Does what the hub does when a user comes online: bind, drain the mailbox, then hand over what came live
    meanwhile. Records what each user would see, in order."""

    def __init__(self, batch_size: int = 7) -> None:
        self.seen: dict[str, list[Envelope]] = {}
        self.held: dict[str, list[Envelope]] = {}
        self.batch_size = batch_size
        self._arrived = asyncio.Event()

    async def deliver(self, envelope: Envelope) -> None:
        if envelope.receiver in self.held:
            self.held[envelope.receiver].append(envelope)
        else:
            self.seen.setdefault(envelope.receiver, []).append(envelope)
            self._arrived.set()

    async def come_online(self, backplane: RabbitMQBackplane, user: str) -> None:
        self.held[user] = []
        await backplane.bind(user)
        while True:
            batch = await backplane.fetch_mail(user, self.batch_size)
            if not batch.envelopes:
                await batch.settle()
                break
            self.seen.setdefault(user, []).extend(batch.envelopes)
            await batch.settle()
        self.seen.setdefault(user, []).extend(self.held.pop(user))
        self._arrived.set()

    def contents(self, user: str) -> list[str]:
        return [envelope.content for envelope in self.seen.get(user, [])]

    async def wait_for(self, user: str, count: int, timeout: float = DEADLINE) -> list[str]:
        async with asyncio.timeout(timeout):
            while len(self.seen.get(user, [])) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.contents(user)


# -- topology, as an operator sees it ---------------------------------------------------------------------------


async def test_topology_as_seen_in_the_management_api(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology
) -> None:
    node_id = unique("test")
    backplane, _ = await make_rabbit(node_id=node_id, mailbox_max=250, mailbox_ttl=600.0)
    assert backplane.ready

    messages = await admin.exchange(topology.messages_exchange)
    assert messages is not None
    assert (messages["type"], messages["durable"]) == ("topic", True)
    assert messages["arguments"] == {"alternate-exchange": topology.mailbox_exchange}
    mailbox = await admin.exchange(topology.mailbox_exchange)
    assert mailbox is not None and (mailbox["type"], mailbox["durable"]) == ("direct", True)

    queue = await admin.queue(topology.node_queue_name(node_id))
    assert queue is not None
    assert queue["exclusive"] is True and queue["durable"] is False

    policy = await admin.policy(topology.policy_name)
    assert policy is not None
    assert policy["pattern"] == topology.policy_pattern and policy["apply-to"] == "queues"
    assert policy["definition"] == {
        "message-ttl": 600_000,
        "max-length": 250,
        "max-length-bytes": 10 * 1024 * 1024,
        "overflow": "reject-publish",
        "expires": 2_400_000,
    }

    connection = await admin.wait_for_connection(node_id)
    assert connection["client_properties"]["connection_name"] == node_id


async def test_node_queue_is_bound_to_exactly_its_online_users(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology
) -> None:
    node_id = unique("test")
    backplane, _ = await make_rabbit(node_id=node_id)
    for user in ("alice", "bob", "a.b", "#"):
        await backplane.bind(user)
    await backplane.unbind("bob")
    await backplane.unbind("never-bound")

    keys = await admin.binding_keys(topology.node_queue_name(node_id))
    assert keys == {routing_key("alice"), routing_key("a.b"), routing_key("#")}
    assert routing_key("#") == "user._23_" and routing_key("a.b") == "user.a_2e_b"


async def test_mailboxes_exist_only_for_users_with_mail(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology
) -> None:
    node, _ = await make_rabbit()
    sender, _ = await make_rabbit()
    await node.bind("online")
    await sender.publish(envelope("online", "live"))
    await sender.publish(envelope("offline", "waits"))
    assert (await node.fetch_mail("stranger", 10)).envelopes == []

    assert await admin.queue_names(topology.mailbox_queue_prefix) == {topology.mailbox_queue_name("offline")}
    assert await read_mailbox(node, "offline") == ["waits"]


# -- several nodes ------------------------------------------------------------------------------------------


async def test_cross_node_delivery_and_a_user_on_two_nodes(make_rabbit: RabbitFactory) -> None:
    node_a, inbox_a = await make_rabbit()
    node_b, inbox_b = await make_rabbit()
    sender, sender_inbox = await make_rabbit()
    await node_a.bind("alice")
    await node_b.bind("alice")
    await node_b.bind("bob")

    for i in range(5):
        await sender.publish(envelope("alice", f"a{i}", sender="carol"))
        await sender.publish(envelope("bob", f"b{i}", sender="carol"))

    expected_alice = [f"a{i}" for i in range(5)]
    assert [e.content for e in await inbox_a.wait_for(5, user="alice")] == expected_alice
    assert [e.content for e in await inbox_b.wait_for(5, user="alice")] == expected_alice
    assert [e.content for e in await inbox_b.wait_for(5, user="bob")] == [f"b{i}" for i in range(5)]
    assert inbox_a.of("bob") == [] and sender_inbox.envelopes == []
    assert await read_mailbox(sender, "alice") == [] and await read_mailbox(sender, "bob") == []


async def test_offline_mail_then_live_mail_arrive_in_send_order(make_rabbit: RabbitFactory) -> None:
    hub = HubLikeInbox()
    node, _ = await make_rabbit(inbox=hub)
    sender, _ = await make_rabbit()
    for i in range(20):
        await sender.publish(envelope("dana", f"m{i}"))
    await hub.come_online(node, "dana")
    for i in range(20, 25):
        await sender.publish(envelope("dana", f"m{i}"))
    assert await hub.wait_for("dana", 25) == [f"m{i}" for i in range(25)]
    assert await read_mailbox(node, "dana") == []


@pytest.mark.parametrize("online_after", [0, 1, 17, 60, 119])
async def test_coming_online_while_mail_is_being_sent_loses_nothing_and_keeps_order(
    make_rabbit: RabbitFactory, online_after: int
) -> None:
    """The bind race: messages routed just before the binding land in the mailbox, those just after go live."""
    total = 120
    hub = HubLikeInbox()
    node, _ = await make_rabbit(inbox=hub)
    sender, _ = await make_rabbit()
    user = unique("racer")
    reached = asyncio.Event()

    async def send() -> None:
        for i in range(total):
            if i == online_after:
                reached.set()
            await sender.publish(envelope(user, f"m{i:03}"))

    sending = asyncio.create_task(send())
    await reached.wait()
    await hub.come_online(node, user)
    await sending
    assert await hub.wait_for(user, total) == [f"m{i:03}" for i in range(total)]
    assert await read_mailbox(node, user) == []


async def test_pipelined_publishes_while_coming_online_lose_nothing(make_rabbit: RabbitFactory) -> None:
    total = 300
    hub = HubLikeInbox(batch_size=50)
    node, _ = await make_rabbit(inbox=hub)
    sender, _ = await make_rabbit()
    user = unique("burst")
    in_flight = asyncio.Semaphore(16)

    async def send(i: int) -> None:
        async with in_flight:
            await sender.publish(envelope(user, f"m{i:03}"))

    sending = asyncio.gather(*(send(i) for i in range(total)))
    await asyncio.sleep(0)  # let the first publishes go out before the user comes online
    await hub.come_online(node, user)
    await sending
    received = await hub.wait_for(user, total)
    assert sorted(received) == [f"m{i:03}" for i in range(total)]
    assert await read_mailbox(node, user) == []


# -- mailbox limits and policy ---------------------------------------------------------------------------------


async def test_a_full_mailbox_refuses_publish_and_store(
    make_rabbit: RabbitFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node, _ = await make_rabbit(mailbox_max=3)
    for i in range(3):
        await node.publish(envelope("erin", f"m{i}"))
    with pytest.raises(MailboxFull):
        await node.publish(envelope("erin", "m3"))
    with caplog.at_level(logging.WARNING, logger="app.backplane.rabbitmq"):
        with pytest.raises(MailboxFull):
            await node.store(envelope("erin", "put back"))
    assert "mailbox of 'erin' is full" in caplog.text
    assert await read_mailbox(node, "erin") == ["m0", "m1", "m2"]


async def test_an_operators_policy_is_left_alone(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    await admin.put_policy(topology.policy_name, policy_document(topology, MailboxLimits(600.0, 2)))
    with caplog.at_level(logging.INFO, logger="app.backplane.rabbitmq"):
        node, _ = await make_rabbit(mailbox_max=1000)
    assert "differs from MAILBOX_TTL/MAILBOX_MAX" in caplog.text
    policy = await admin.policy(topology.policy_name)
    assert policy is not None and policy["definition"]["max-length"] == 2
    await node.publish(envelope("fay", "one"))
    await node.publish(envelope("fay", "two"))
    with pytest.raises(MailboxFull):
        await node.publish(envelope("fay", "three"))


async def test_works_without_the_management_api(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.backplane.rabbitmq"):
        node, inbox = await make_rabbit(management_url="http://127.0.0.1:9")
    assert "could not check the RabbitMQ mailbox policy" in caplog.text
    assert await admin.policy(topology.policy_name) is None
    await node.bind("gus")
    await node.publish(envelope("gus", "live"))
    await node.publish(envelope("hal", "mail"))
    assert [e.content for e in await inbox.wait_for(1, user="gus")] == ["live"]
    assert await read_mailbox(node, "hal") == ["mail"]


def test_the_shipped_definitions_match_the_code() -> None:
    shipped = json.loads((REPO / "rabbitmq" / "definitions.json").read_text())
    assert shipped == definitions()


async def test_works_on_a_broker_that_imported_the_definitions(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology
) -> None:
    limits = MailboxLimits(ttl_seconds=900.0, max_messages=5)
    await admin.import_definitions(definitions(topology, limits))
    node, inbox = await make_rabbit(mailbox_max=1000)  # the imported policy stays in charge
    policy = await admin.policy(topology.policy_name)
    assert policy is not None and policy["definition"] == limits.policy_definition()
    await node.bind("ivy")
    await node.publish(envelope("ivy", "live"))
    assert [e.content for e in await inbox.wait_for(1)] == ["live"]


async def test_broker_setup_declares_everything_and_can_run_again(admin: BrokerAdmin, topology: Topology) -> None:
    settings = Settings(amqp_url=AMQP_URL, node_id=unique("test"), mailbox_max=42, mailbox_ttl=60.0)
    first = await setup_broker(settings, topology=topology, management_url=MANAGEMENT_URL)
    assert first[0].startswith("declared exchanges") and first[1].startswith("created RabbitMQ policy")
    exchange = await admin.exchange(topology.messages_exchange)
    assert exchange is not None and exchange["arguments"] == {"alternate-exchange": topology.mailbox_exchange}
    policy = await admin.policy(topology.policy_name)
    assert policy is not None and policy["definition"]["max-length"] == 42
    again = await setup_broker(settings, topology=topology, management_url=MANAGEMENT_URL)
    assert again[1] == f"RabbitMQ policy {topology.policy_name!r} is in place"

    no_api = await setup_broker(settings, topology=topology, management_url="http://127.0.0.1:9")
    assert no_api[1].startswith("WARNING: could not create the mailbox policy")
    unreachable = Settings(amqp_url="amqp://guest:guest@127.0.0.1:1/", node_id="x")
    with pytest.raises(BackplaneUnavailable):
        await setup_broker(unreachable, topology=topology)


# -- start-up failures --------------------------------------------------------------------------------------


async def test_an_unreachable_broker_fails_start_quickly(make_rabbit: RabbitFactory) -> None:
    node, _ = await make_rabbit(amqp_url="amqp://guest:guest@127.0.0.1:1/", start=False)
    started = time.monotonic()
    with pytest.raises(BackplaneUnavailable, match="cannot connect to RabbitMQ"):
        await node.start(RecordingInbox())
    assert time.monotonic() - started < 5
    assert not node.ready


async def test_two_processes_with_one_node_id_are_refused(make_rabbit: RabbitFactory) -> None:
    node_id = unique("test")
    await make_rabbit(node_id=node_id)
    twin, _ = await make_rabbit(node_id=node_id, start=False)
    with pytest.raises(ConfigurationError, match="NODE_ID"):
        await twin.start(RecordingInbox())


# -- usernames that look like routing syntax ----------------------------------------------------------------


async def test_odd_usernames_across_nodes(make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology) -> None:
    names = ["a.b", "a*", "#", "*.x", "ü", "a_2e_b", "a", "b", "a.b.c", "*", "ü" * 64, "中" * 64, "中" * 63 + "x"]
    node_id = unique("test")
    node, inbox = await make_rabbit(node_id=node_id)
    sender, _ = await make_rabbit()
    online = names[::2]
    for user in online:
        await node.bind(user)
    for user in names:
        await sender.publish(envelope(user, f"for {user}"))
    await inbox.wait_for(len(online))
    for user in names:
        assert inbox.contents(user) == ([f"for {user}"] if user in online else []), user
        assert len(routing_key(user).encode()) <= 255
        assert len(topology.mailbox_queue_name(user).encode()) <= 255
    for user in names[1::2]:
        assert await read_mailbox(node, user) == [f"for {user}"], user
    assert await admin.binding_keys(topology.node_queue_name(node_id)) == {routing_key(user) for user in online}


# -- failures while running -------------------------------------------------------------------------------------


async def test_a_failed_delivery_is_redelivered(make_rabbit: RabbitFactory) -> None:
    node, inbox = await make_rabbit()
    await node.bind("jay")
    inbox.fail = 2
    await node.publish(envelope("jay", "eventually"))
    assert [e.content for e in await inbox.wait_for(1)] == ["eventually"]
    assert inbox.failures == 2


async def test_a_delivery_that_keeps_failing_holds_up_nobody_and_is_dropped_in_the_end(
    make_rabbit: RabbitFactory, caplog: pytest.LogCaptureFixture
) -> None:

    class Refusing(RecordingInbox):
        async def deliver(self, envelope: Envelope) -> None:
            if envelope.receiver == "stuck":
                self.failures += 1
                raise MailboxFull("stuck")
            await super().deliver(envelope)

    node, inbox = await make_rabbit(inbox=Refusing(), retries=RetryPolicy(max_attempts=3, first_pause=1.0))
    await node.bind("stuck")
    await node.bind("free")
    await node.publish(envelope("stuck", "cannot go anywhere"))
    for i in range(20):
        await node.publish(envelope("free", f"m{i}"))
    await inbox.wait_for(20, user="free")
    assert inbox.failures == 1, "other users' messages waited for the failed delivery's pause"
    assert inbox.contents("free") == [f"m{i}" for i in range(20)]

    async def given_up() -> bool:
        return "giving up on message" in caplog.text

    with caplog.at_level(logging.WARNING, logger="app.backplane.rabbitmq"):
        await eventually(given_up, what="the third failure")
    assert inbox.failures == 3
    assert await read_mailbox(node, "stuck") == []


async def test_broker_outage_refuses_calls_then_rebinds_and_delivers_what_came_meanwhile(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology, proxy: TcpProxy
) -> None:
    node_id = unique("test")
    node, inbox = await make_rabbit(node_id=node_id, amqp_url=proxy.amqp_url, reconnect_interval=0.2)
    sender, _ = await make_rabbit()
    for user in ("kim", "lee", "max"):
        await node.bind(user)
    await sender.publish(envelope("kim", "before"))
    await inbox.wait_for(1, user="kim")

    await proxy.cut()

    async def is_down() -> bool:
        return not node.ready

    await eventually(is_down, what="the backplane to notice the lost connection")
    started = time.monotonic()
    with pytest.raises(BackplaneUnavailable, match="connection to RabbitMQ is lost"):
        await node.publish(envelope("kim", "refused"))
    with pytest.raises(BackplaneUnavailable):
        await node.bind("newcomer")
    with pytest.raises(BackplaneUnavailable):
        await node.fetch_mail("kim", 10)
    assert time.monotonic() - started < 0.5, "while down, calls fail at once"
    await node.unbind("max")  # leaves during the outage: must not come back with the reconnect

    async def queue_gone() -> bool:
        return await admin.queue(topology.node_queue_name(node_id)) is None

    await eventually(queue_gone, what="the broker to drop the node's queue with its connection")
    await sender.publish(envelope("kim", "gap-1"))
    await sender.publish(envelope("kim", "gap-2"))
    await sender.publish(envelope("max", "for later"))

    await proxy.start()

    async def is_up() -> bool:
        return node.ready

    await eventually(is_up, what="the reconnect")

    async def bound_again() -> bool:
        return await admin.binding_keys(topology.node_queue_name(node_id)) == {routing_key("kim"), routing_key("lee")}

    await eventually(bound_again, what="kim and lee (only) to be bound again")
    await sender.publish(envelope("kim", "after"))

    received = await inbox.wait_for(4, user="kim")
    assert [e.content for e in received] == ["before", "gap-1", "gap-2", "after"]
    assert inbox.of("max") == [] and inbox.of("lee") == []
    assert await read_mailbox(node, "max") == ["for later"]
    assert await read_mailbox(node, "kim") == []


async def test_a_connection_closed_by_the_broker_comes_back_with_its_bindings(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology
) -> None:
    """What an operator's "Force close" in the management UI does to a node."""
    node_id = unique("test")
    node, inbox = await make_rabbit(node_id=node_id, reconnect_interval=0.2)
    sender, _ = await make_rabbit()
    await node.bind("kim")
    await node.bind("lee")
    await sender.publish(envelope("kim", "before"))
    await inbox.wait_for(1, user="kim")
    old = await admin.wait_for_connection(node_id)

    await admin.close_connection(node_id)
    for i in range(3):
        # Live, or through the mailbox while the node is away: either way in order.
        await sender.publish(envelope("kim", f"during-{i}"))

    async def reconnected() -> bool:
        connection = await admin.connection(node_id)
        return connection is not None and connection["name"] != old["name"] and node.ready

    await eventually(reconnected, what="a new connection named after the node")

    async def bound_again() -> bool:
        return await admin.binding_keys(topology.node_queue_name(node_id)) == {routing_key("kim"), routing_key("lee")}

    await eventually(bound_again, what="the bindings to be restored")
    await sender.publish(envelope("kim", "after"))
    received = await inbox.wait_for(5, user="kim")
    assert [e.content for e in received] == ["before", "during-0", "during-1", "during-2", "after"]
    assert await read_mailbox(node, "kim") == []


class ClosingHub(RecordingInbox):
    """Like the hub at shutdown: once its users are gone, what still arrives goes back to the mailbox."""

    def __init__(self) -> None:
        super().__init__()
        self.backplane: RabbitMQBackplane | None = None
        self.gone = False
        self.stored: list[Envelope] = []

    async def deliver(self, envelope: Envelope) -> None:
        await asyncio.sleep(0.001)  # a slow consumer, so that messages are still in flight at close
        if self.gone and self.backplane is not None:
            await self.backplane.store(envelope)
            self.stored.append(envelope)
        else:
            await super().deliver(envelope)


async def test_close_unbinds_and_hands_in_flight_mail_to_the_mailbox(
    make_rabbit: RabbitFactory, admin: BrokerAdmin, topology: Topology
) -> None:
    node_id = unique("test")
    hub = ClosingHub()
    node, _ = await make_rabbit(node_id=node_id, inbox=hub, mailbox_max=5000)
    hub.backplane = node
    sender, _ = await make_rabbit(mailbox_max=5000)
    await node.bind("nia")
    sent = [envelope("nia", f"m{i:03}") for i in range(300)]
    await asyncio.gather(*(sender.publish(e) for e in sent))
    hub.gone = True
    await node.close()

    assert not node.ready
    with pytest.raises(BackplaneUnavailable):
        await node.publish(envelope("nia", "late"))
    live = [e.content for e in hub.envelopes]
    mail = await read_mailbox(sender, "nia")
    assert hub.stored, "some messages were still in flight at close"
    assert sorted(live + mail) == sorted(e.content for e in sent)

    async def queue_gone() -> bool:
        return await admin.queue(topology.node_queue_name(node_id)) is None

    await eventually(queue_gone, what="the node queue to go with the connection")


async def test_mail_put_back_for_a_user_bound_here_is_handed_over(make_rabbit: RabbitFactory) -> None:
    """A connection closed with unacknowledged mail while another connection of the user is online here."""
    node, inbox = await make_rabbit()
    await node.bind("oli")
    await node.store(envelope("oli", "back from a closed tab"))
    assert [e.content for e in await inbox.wait_for(1, user="oli")] == ["back from a closed tab"]
    assert await read_mailbox(node, "oli") == []


async def test_mail_the_inbox_bounces_stays_in_the_mailbox(make_rabbit: RabbitFactory) -> None:
    """The hub puts a live message back when no connection takes it: it must not come straight back."""

    class Bouncing(RecordingInbox):
        backplane: RabbitMQBackplane | None = None
        offered = 0
        put_back = 0

        async def deliver(self, envelope: Envelope) -> None:
            if envelope.receiver == "busy":
                self.offered += 1
                assert self.backplane is not None
                await self.backplane.store(envelope)
                self.put_back += 1
            else:
                await super().deliver(envelope)

    inbox = Bouncing()
    node, _ = await make_rabbit(inbox=inbox)
    inbox.backplane = node
    await node.bind("busy")
    await node.bind("probe")
    await node.publish(envelope("busy", "refused by every connection"))

    async def bounced() -> bool:
        return inbox.put_back >= 1

    await eventually(bounced, what="the first offer to be put back")
    # The worker works in order: once this arrives, any hand-over the put-back could have queued has run.
    await node.publish(envelope("probe", "after"))
    await inbox.wait_for(1, user="probe")
    assert inbox.offered == 1
    assert await read_mailbox(node, "busy") == ["refused by every connection"]


# -- throughput ------------------------------------------------------------------------------------------------


async def test_concurrent_publish_throughput(make_rabbit: RabbitFactory, capsys: pytest.CaptureFixture[str]) -> None:
    total = 2000
    node, inbox = await make_rabbit(mailbox_max=5000)
    sender, _ = await make_rabbit(mailbox_max=5000)
    await node.bind("fast")

    live = [envelope("fast", f"m{i:04}") for i in range(total)]
    started = time.perf_counter()
    await asyncio.gather(*(sender.publish(e) for e in live))
    confirmed = time.perf_counter() - started
    await inbox.wait_for(total)
    delivered = time.perf_counter() - started

    offline = [envelope("slow", f"m{i:04}") for i in range(total)]
    started = time.perf_counter()
    await asyncio.gather(*(sender.publish(e) for e in offline))
    stored = time.perf_counter() - started

    with capsys.disabled():
        print(
            f"\n[throughput] {total} confirmed publishes to a bound user: {total / confirmed:,.0f} msg/s "
            f"(all delivered after {delivered:.2f} s); to a mailbox (persistent): {total / stored:,.0f} msg/s"
        )
    assert sorted(inbox.contents()) == [e.content for e in live]
    assert sorted(await read_mailbox(node, "slow")) == [e.content for e in offline]
