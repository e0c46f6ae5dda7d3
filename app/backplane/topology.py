"""Warren's RabbitMQ topology: every name, declaration and policy in one place.

Shared by the backplane (``app.backplane.rabbitmq``) and ``python -m app broker setup`` (``setup_broker``), and the
source of ``rabbitmq/definitions.json`` (``definitions``), so the three never disagree.

::

    publisher ──► warren.messages (topic, durable) ──user.<token>──► warren.node.<node_id>  (exclusive, one per node,
                        │                                                bound once per user online on that node)
                        │ alternate-exchange: nothing bound for user.<token>
                        ▼
                  warren.mailbox (direct, durable) ──user.<token>──► warren.mailbox.<token>  (durable, one per user
                                                                      with mail, created lazily, limits by policy)

Names never contain a raw username: ``user_token`` (``app.core.identity``) encodes it, so ``.``, ``*`` and ``#`` in
a name can never act as topic separators or wildcards. A token too long for an AMQP name (255 bytes) is replaced
by a digest of the name.

Mailbox limits live in a policy (``<prefix>-mailboxes``), not in queue arguments: with queue arguments the lower
of argument and policy would win, so operators could never raise a limit in the management UI.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import aiormq
from aiormq.abc import AbstractChannel
from yarl import URL

from ..config import Settings
from ..core.errors import BackplaneUnavailable, ConfigurationError
from ..core.identity import user_token

log = logging.getLogger(__name__)

#: AMQP short strings (queue names, routing keys) are at most 255 bytes.
MAX_NAME_BYTES = 255
#: Longest token used as is; longer ones (64 CJK characters encode to 384) become a digest.
_MAX_TOKEN = 200
#: RabbitMQ arms Erlang timers with TTLs, and those take at most 2^32 - 1 ms (about 49.7 days).
_MAX_TIMER_MS = 2**32 - 1
#: An unread mailbox is deleted this many message TTLs after it was last declared or read. Publishing does not
#: count as use, so the margin keeps recent mail of a user who is away for a while.
MAILBOX_EXPIRES_FACTOR = 4
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def user_key(user: str) -> str:
    """The user's part of routing keys and mailbox names: ``user_token``, or a digest when that is too long.

    The digest form ``h.<sha256>`` cannot clash with a token: tokens never contain ``.``.
    """
    token = user_token(user)
    if len(token) <= _MAX_TOKEN:
        return token
    return "h." + hashlib.sha256(user.encode("utf-8")).hexdigest()


def routing_key(user: str) -> str:
    return f"user.{user_key(user)}"


@dataclass(frozen=True)
class Topology:
    """The names for one Warren deployment on a vhost. Tests use their own prefix to stay apart."""

    prefix: str = "warren"

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(f"topology prefix {self.prefix!r}: use up to 64 letters, digits, '.', '_' or '-'")

    @property
    def messages_exchange(self) -> str:
        return f"{self.prefix}.messages"

    @property
    def mailbox_exchange(self) -> str:
        return f"{self.prefix}.mailbox"

    @property
    def mailbox_queue_prefix(self) -> str:
        return f"{self.prefix}.mailbox."

    @property
    def node_queue_prefix(self) -> str:
        return f"{self.prefix}.node."

    def node_queue_name(self, node_id: str) -> str:
        return self.node_queue_prefix + node_id

    def mailbox_queue_name(self, user: str) -> str:
        return self.mailbox_queue_prefix + user_key(user)

    @property
    def policy_name(self) -> str:
        return f"{self.prefix}-mailboxes"

    @property
    def policy_pattern(self) -> str:
        # Only "." is special among the characters a prefix may hold.
        return "^" + self.mailbox_queue_prefix.replace(".", r"\.")


DEFAULT_TOPOLOGY = Topology()


def node_queue_name(node_id: str) -> str:
    return DEFAULT_TOPOLOGY.node_queue_name(node_id)


def mailbox_queue_name(user: str) -> str:
    return DEFAULT_TOPOLOGY.mailbox_queue_name(user)


@dataclass(frozen=True)
class MailboxLimits:
    """What the mailbox policy enforces, from ``MAILBOX_TTL``, ``MAILBOX_MAX`` and ``MAILBOX_MAX_BYTES``."""

    ttl_seconds: float = 7 * 86400.0
    max_messages: int = 1000
    #: Bytes of message bodies (``max-length-bytes`` counts bodies only, as the memory backplane does).
    max_bytes: int = 10 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> MailboxLimits:
        return cls(
            ttl_seconds=settings.mailbox_ttl, max_messages=settings.mailbox_max, max_bytes=settings.mailbox_max_bytes
        )

    def policy_definition(self) -> dict[str, Any]:
        ttl_ms = max(1, min(int(self.ttl_seconds * 1000), _MAX_TIMER_MS))
        return {
            "message-ttl": ttl_ms,
            "max-length": self.max_messages,
            "max-length-bytes": self.max_bytes,
            # A full mailbox (either bound) refuses new mail (the publisher's confirm is a nack) instead of dropping
            # old mail.
            "overflow": "reject-publish",
            "expires": min(ttl_ms * MAILBOX_EXPIRES_FACTOR, _MAX_TIMER_MS),
        }


def policy_document(topology: Topology, limits: MailboxLimits) -> dict[str, Any]:
    """The body of ``PUT /api/policies/{vhost}/{name}``."""
    return {
        "pattern": topology.policy_pattern,
        "apply-to": "queues",
        "priority": 0,
        "definition": limits.policy_definition(),
    }


def definitions(
    topology: Topology = DEFAULT_TOPOLOGY, limits: MailboxLimits | None = None, vhost: str = "/"
) -> dict[str, Any]:
    """A definitions document (``rabbitmq/definitions.json``) with the exchanges and the mailbox policy.

    It has no users or permissions, so importing it into a running broker changes nothing else. Queues are not in
    it: node queues belong to a node's connection and mailboxes are created when mail arrives.
    """
    limits = limits or MailboxLimits()
    policy = policy_document(topology, limits)
    return {
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "vhosts": [{"name": vhost}],
        "policies": [{"vhost": vhost, "name": topology.policy_name, **policy}],
        "exchanges": [
            {
                "name": topology.mailbox_exchange,
                "vhost": vhost,
                "type": "direct",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            },
            {
                "name": topology.messages_exchange,
                "vhost": vhost,
                "type": "topic",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {"alternate-exchange": topology.mailbox_exchange},
            },
        ],
        "queues": [],
        "bindings": [],
    }


async def declare_topology(channel: AbstractChannel, topology: Topology = DEFAULT_TOPOLOGY) -> None:
    """Declare both exchanges (idempotent).

    The arguments must equal those in ``definitions``: RabbitMQ refuses a redeclaration whose alternate exchange
    differs from the existing one.
    """
    await channel.exchange_declare(topology.mailbox_exchange, exchange_type="direct", durable=True)
    await channel.exchange_declare(
        topology.messages_exchange,
        exchange_type="topic",
        durable=True,
        arguments={"alternate-exchange": topology.mailbox_exchange},
    )


async def declare_mailbox(channel: AbstractChannel, user: str, topology: Topology = DEFAULT_TOPOLOGY) -> None:
    """Create ``user``'s mailbox and bind it, if missing."""
    name = topology.mailbox_queue_name(user)
    await channel.queue_declare(name, durable=True)
    await channel.queue_bind(name, topology.mailbox_exchange, routing_key=routing_key(user))


# -- the management HTTP API: policies can only be set there (or with rabbitmqctl), not over AMQP ----------------


@dataclass(frozen=True)
class ManagementAPI:
    base_url: str
    vhost: str
    login: str
    password: str

    @classmethod
    def from_amqp_url(cls, amqp_url: str, management_url: str | None = None) -> ManagementAPI:
        """The API beside the broker: same host and credentials, port 15672 (15671 with amqps) unless given."""
        url = URL(amqp_url)
        vhost = "/" if url.path in ("", "/") else url.path[1:].replace("%2F", "/")
        login = url.user or "guest"
        password = url.password or "guest"
        if management_url:
            base = URL(management_url)
            login = base.user or login
            password = base.password or password
            base = base.with_user(None).with_password(None)
        elif url.scheme == "amqps":
            base = URL.build(scheme="https", host=url.host or "localhost", port=15671)
        else:
            base = URL.build(scheme="http", host=url.host or "localhost", port=15672)
        return cls(str(base).rstrip("/"), vhost, login, password)

    def url(self, *parts: str) -> str:
        return self.base_url + "/api/" + "/".join(quote(part, safe="") for part in parts)

    def session(self, timeout: float = 5.0) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            headers={"Authorization": aiohttp.encode_basic_auth(self.login, self.password)},
            timeout=aiohttp.ClientTimeout(total=timeout),
        )


async def ensure_mailbox_policy(
    api: ManagementAPI, topology: Topology, limits: MailboxLimits, *, timeout: float = 5.0
) -> str:
    """Create the mailbox policy if it is absent; never overwrite one (operators own it once it exists).

    Returns a sentence for logs and the setup command. Raises ``aiohttp.ClientError`` or ``TimeoutError`` when
    the API cannot be reached.
    """
    url = api.url("policies", api.vhost, topology.policy_name)
    wanted = policy_document(topology, limits)
    async with api.session(timeout) as session:
        async with session.get(url) as response:
            if response.status == 200:
                current: dict[str, Any] = await response.json()
                return _compare_policy(topology, current, wanted)
            if response.status != 404:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message=await response.text()
                )
        async with session.put(url, json=wanted) as response:
            if response.status not in (201, 204):
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status, message=await response.text()
                )
    return f"created RabbitMQ policy {topology.policy_name!r}: {wanted['definition']}"


def _compare_policy(topology: Topology, current: dict[str, Any], wanted: dict[str, Any]) -> str:
    have = current.get("definition", {})
    differs = {key: have.get(key) for key, value in wanted["definition"].items() if have.get(key) != value}
    if current.get("pattern") != wanted["pattern"]:
        differs["pattern"] = current.get("pattern")
    if not differs:
        return f"RabbitMQ policy {topology.policy_name!r} is in place"
    return (
        f"RabbitMQ policy {topology.policy_name!r} differs from MAILBOX_TTL/MAILBOX_MAX ({differs}); the broker's "
        "policy wins. Edit it in the management UI (Admin > Policies) to change mailbox limits."
        + (
            " It has no max-length-bytes: a mailbox's size in bytes is unbounded until you add it (MAILBOX_MAX_BYTES)."
            if "max-length-bytes" not in have
            else ""
        )
    )


async def setup_broker(
    settings: Settings, *, topology: Topology = DEFAULT_TOPOLOGY, management_url: str | None = None
) -> list[str]:
    """``python -m app broker setup``: declare the exchanges and create the mailbox policy if absent.

    Safe to run any number of times against a live deployment. Returns what it did, one line each, for the command
    to print. Raises ``BackplaneUnavailable`` when the broker cannot be reached or refuses the exchanges. Not being
    able to create the policy is not fatal (nodes run without it, with a warning): the returned lines say so.
    """
    if not settings.amqp_url:
        raise ConfigurationError("AMQP_URL is not set: there is no broker to set up")
    report: list[str] = []
    try:
        async with asyncio.timeout(10):
            connection = await aiormq.connect(
                settings.amqp_url, client_properties={"connection_name": f"{settings.node_id} setup"}
            )
            try:
                await declare_topology(await connection.channel(), topology)
            finally:
                await connection.close()
    except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, OSError) as exc:
        raise BackplaneUnavailable(
            f"could not declare Warren's exchanges on RabbitMQ: {exc or type(exc).__name__}"
        ) from exc
    report.append(f"declared exchanges {topology.messages_exchange!r} and {topology.mailbox_exchange!r}")
    api = ManagementAPI.from_amqp_url(settings.amqp_url, management_url)
    try:
        report.append(await ensure_mailbox_policy(api, topology, MailboxLimits.from_settings(settings)))
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        report.append(
            f"WARNING: could not create the mailbox policy {topology.policy_name!r} through the management API at "
            f"{api.base_url} ({exc or type(exc).__name__}); import rabbitmq/definitions.json, or set it in the "
            "management UI (rabbitmq/README.md)"
        )
    return report
