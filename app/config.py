"""Settings: every environment variable Warren reads, parsed and validated once at start-up.

``Settings.from_env()`` raises ``ConfigurationError`` naming the variable whose value it cannot use; ``python -m
app`` prints that message and exits with status 2 instead of starting half-configured.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from .auth.addresses import IPNetwork, parse_networks
from .auth.origins import canonical_origin
from .core.errors import ConfigurationError

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
#: A SECRET_KEY with fewer distinct bytes than this is not random (a random 32-byte key has about 30).
_MIN_DISTINCT_KEY_BYTES = 16


def _default_signin_workers() -> int:
    # Leave a core for the event loop; each worker is a process of ~30 MB. Two check ~40 sign-ins a second.
    return min(2, max(1, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    host: str = "0.0.0.0"
    #: Fernet keys for the cookie session; the first issues cookies, all are accepted (rotation).
    secret_keys: tuple[bytes, ...] = ()
    #: True when no SECRET_KEY was given and one was generated for this process.
    secret_key_generated: bool = False
    amqp_url: str | None = None
    #: The broker's management HTTP API (policies); default: the AMQP host on port 15672 with the same credentials.
    rabbitmq_management_url: str | None = None
    #: How publishes are written: ``batched`` (many per socket write; relies on aiormq's channel internals, see
    #: ``app.backplane.amqp``) or ``plain`` (aiormq's public ``basic_publish``, one write each).
    amqp_publisher: str = "batched"
    node_id: str = "local"
    users_file: Path = Path("users.json")
    max_message_bytes: int = 64 * 1024
    mailbox_ttl: float = 7 * 86400.0
    mailbox_max: int = 1000
    session_max_age: int = 7 * 86400
    allowed_origins: tuple[str, ...] = ()
    #: Where the SockJS iframe loads a sockjs-client release Warren does not ship (``{version}``: the page's).
    sockjs_client_url: str | None = None
    #: Balancers whose X-Forwarded-For is believed for the client address (sign-in throttles); see app.auth.addresses.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: Worker processes that check passwords (scrypt), and how many more sign-ins may wait for one before 503.
    signin_workers: int = field(default_factory=_default_signin_workers)
    signin_queue: int = 32
    log_level: str = "INFO"
    log_format: str = "text"
    #: Outgoing bytes one SockJS session may have queued before it is closed as a slow consumer.
    send_buffer_bytes: int = 1024 * 1024
    heartbeat_seconds: float = 25.0
    disconnect_delay_seconds: float = 5.0
    #: Seconds a signed-in SockJS session may go without sending STOMP CONNECT before it is closed.
    connect_timeout_seconds: float = 10.0
    shutdown_timeout_seconds: float = 25.0
    #: Messages per second one user may send through one node (0: no limit), and the burst allowed above it.
    message_rate: float = 50.0
    message_burst: int = 200
    connection_message_rate: float = 30.0
    connection_message_burst: int = 100
    max_sessions_per_user: int = 32
    #: ``uvloop`` (default where installed) or ``asyncio``: the event loop implementation.
    event_loop: str = "auto"
    metrics_enabled: bool = True
    metrics_token: str | None = None
    # -- memory bounds (issue #11): mailbox bytes, a sender's share of a mailbox, request bodies ----------------
    #: Bytes of stored messages (as stored, JSON escapes included) one mailbox holds; past it sends are refused.
    mailbox_max_bytes: int = 10 * 1024 * 1024
    #: Fraction of a mailbox (of MAILBOX_MAX and of MAILBOX_MAX_BYTES) one sender's mail may fill (1: no share).
    mailbox_sender_share: float = 0.25
    #: Seconds a client has to send a request body, from the end of its headers.
    request_body_timeout: float = 10.0
    #: Bytes of request bodies all requests on this node may hold at once while they are read and handled.
    request_body_budget: int = 32 * 1024 * 1024
    web_root: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent / "web")

    @property
    def log_level_number(self) -> int:
        return int(logging.getLevelName(self.log_level))

    @property
    def backplane(self) -> str:
        return "rabbitmq" if self.amqp_url else "memory"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        amqp_url = _text(env, "AMQP_URL") or _text(env, "CLOUDAMQP_URL")
        if amqp_url is not None and not amqp_url.startswith(("amqp://", "amqps://")):
            var = "AMQP_URL" if _text(env, "AMQP_URL") else "CLOUDAMQP_URL"
            raise ConfigurationError(f"{var} must start with amqp:// or amqps://")
        secret_keys, generated = _secret_keys(env, multi_node=amqp_url is not None)
        settings = cls(
            port=_integer(env, "PORT", 8080, 0, 65535),
            host=_host(env),
            secret_keys=secret_keys,
            secret_key_generated=generated,
            amqp_url=amqp_url,
            rabbitmq_management_url=_management_url(env),
            amqp_publisher=_choice(env, "AMQP_PUBLISHER", "batched", ("batched", "plain")),
            node_id=_node_id(env),
            users_file=_users_file(env),
            max_message_bytes=_integer(env, "MAX_MESSAGE_BYTES", 64 * 1024, 1, 16 * 1024 * 1024),
            mailbox_ttl=_duration(env, "MAILBOX_TTL", 7 * 86400.0),
            mailbox_max=_integer(env, "MAILBOX_MAX", 1000, 1, 10_000_000),
            session_max_age=int(_duration(env, "SESSION_MAX_AGE", 7 * 86400.0)),
            allowed_origins=_origins(env),
            sockjs_client_url=_sockjs_client_url(env),
            trusted_proxies=_trusted_proxies(env),
            signin_workers=_integer(env, "SIGNIN_WORKERS", _default_signin_workers(), 1, 64),
            signin_queue=_integer(env, "SIGNIN_QUEUE", 32, 0, 10_000),
            log_level=_choice(env, "LOG_LEVEL", "INFO", _LOG_LEVELS, upper=True),
            log_format=_choice(env, "LOG_FORMAT", "text", ("text", "json")),
            send_buffer_bytes=_integer(env, "SEND_BUFFER_BYTES", 1024 * 1024, 1024, 1024 * 1024 * 1024),
            heartbeat_seconds=_duration(env, "SOCKJS_HEARTBEAT", 25.0),
            disconnect_delay_seconds=_duration(env, "SOCKJS_DISCONNECT_DELAY", 5.0),
            connect_timeout_seconds=_duration(env, "CONNECT_TIMEOUT", 10.0),
            shutdown_timeout_seconds=_duration(env, "SHUTDOWN_TIMEOUT", 25.0),
            message_rate=float(_integer(env, "MESSAGE_RATE", 50, 0, 1_000_000)),
            message_burst=_integer(env, "MESSAGE_BURST", 200, 1, 1_000_000),
            connection_message_rate=float(_integer(env, "CONNECTION_MESSAGE_RATE", 30, 0, 1_000_000)),
            connection_message_burst=_integer(env, "CONNECTION_MESSAGE_BURST", 100, 1, 1_000_000),
            max_sessions_per_user=_integer(env, "MAX_SESSIONS_PER_USER", 32, 1, 100_000),
            event_loop=_choice(env, "EVENT_LOOP", "auto", ("auto", "uvloop", "asyncio")),
            metrics_enabled=_boolean(env, "METRICS_ENABLED", True),
            metrics_token=_text(env, "METRICS_TOKEN"),
            mailbox_max_bytes=_integer(env, "MAILBOX_MAX_BYTES", 10 * 1024 * 1024, 1024, 1024**4),
            mailbox_sender_share=_fraction(env, "MAILBOX_SENDER_SHARE", 0.25),
            request_body_timeout=_duration(env, "REQUEST_BODY_TIMEOUT", 10.0),
            request_body_budget=_integer(env, "REQUEST_BODY_BUDGET", 32 * 1024 * 1024, 1024 * 1024, 1024**4),
        )
        if settings.mailbox_max_bytes * settings.mailbox_sender_share < settings.max_message_bytes + 1024:
            raise ConfigurationError(
                f"MAILBOX_MAX_BYTES={settings.mailbox_max_bytes} with MAILBOX_SENDER_SHARE="
                f"{settings.mailbox_sender_share:g} leaves a sender less room than one message of MAX_MESSAGE_BYTES="
                f"{settings.max_message_bytes} (plus 1024 bytes of envelope): raise MAILBOX_MAX_BYTES"
            )
        return settings


def generate_secret_key() -> bytes:
    """A fresh Fernet key (what ``SECRET_KEY`` expects)."""
    return base64.urlsafe_b64encode(os.urandom(32))


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _or_default(
    parse: Callable[Concatenate[str, str, _P], _T],
) -> Callable[Concatenate[Mapping[str, str], str, _T, _P], _T]:
    """A typed setting: ``parse(name, text, ...)`` reads a value that is set; unset or blank, the default holds."""

    def read(env: Mapping[str, str], name: str, default: _T, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        raw = _text(env, name)
        return default if raw is None else parse(name, raw, *args, **kwargs)

    return read


def _converted(name: str, raw: str, convert: Callable[[str], _T], what: str) -> _T:
    try:
        return convert(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not {what}") from None


@_or_default
def _integer(name: str, raw: str, low: int, high: int) -> int:
    value = _converted(name, raw, int, "a whole number")
    if not low <= value <= high:
        raise ConfigurationError(f"{name}={value} is out of range: use {low} to {high}")
    return value


@_or_default
def _duration(name: str, raw: str) -> float:
    match = _DURATION.match(raw)
    if match is None:
        raise ConfigurationError(f"{name}={raw!r} is not a duration: use seconds, or a number with ms, s, m, h or d")
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if value <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be more than zero")
    return value


@_or_default
def _fraction(name: str, raw: str) -> float:
    value = _converted(name, raw, float, "a number: use a fraction such as 0.25")
    if not 0 < value <= 1:
        raise ConfigurationError(f"{name}={raw!r} is out of range: use a fraction above 0 and at most 1")
    return value


@_or_default
def _choice(name: str, raw: str, choices: tuple[str, ...], upper: bool = False) -> str:
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise ConfigurationError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return value


@_or_default
def _boolean(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use true or false")


def _secret_keys(env: Mapping[str, str], *, multi_node: bool) -> tuple[tuple[bytes, ...], bool]:
    raw = _text(env, "SECRET_KEY")
    if raw is None:
        if multi_node:
            raise ConfigurationError(
                "SECRET_KEY is required with AMQP_URL: every node must read the same session cookies. "
                "Generate one with: python -m app secret"
            )
        return (generate_secret_key(),), True
    keys = []
    for part in raw.split(","):
        key = part.strip().encode()
        try:
            decoded = base64.urlsafe_b64decode(key)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 32:
            raise ConfigurationError(
                "SECRET_KEY must be a Fernet key (32 bytes, url-safe base64), or several separated by commas "
                "(the first signs new cookies). Generate one with: python -m app secret"
            )
        if len(set(decoded)) < _MIN_DISTINCT_KEY_BYTES:
            raise ConfigurationError(
                "SECRET_KEY is not random (too few distinct bytes: all zeros or a pattern): anyone could forge "
                "sign-in cookies with it. Generate one with: python -m app secret"
            )
        keys.append(key)
    return tuple(keys), False


def _node_id(env: Mapping[str, str]) -> str:
    raw = _text(env, "NODE_ID") or _text(env, "DYNO")
    if raw is None:
        return f"{socket.gethostname()}-{os.getpid()}"
    if not _NODE_ID.match(raw):
        name = "NODE_ID" if _text(env, "NODE_ID") else "DYNO"
        raise ConfigurationError(f"{name}={raw!r}: use up to 100 letters, digits, '.', '_' or '-'")
    return raw


def _management_url(env: Mapping[str, str]) -> str | None:
    raw = _text(env, "RABBITMQ_MANAGEMENT_URL")
    if raw is not None and not re.match(r"^https?://", raw):
        raise ConfigurationError("RABBITMQ_MANAGEMENT_URL must start with http:// or https://")
    return raw


def _sockjs_client_url(env: Mapping[str, str]) -> str | None:
    raw = _text(env, "SOCKJS_CLIENT_URL")
    if raw is not None and not re.match(r"^(https?://[^/\s\"'<>]+)?/(?!/)[^\s\"'<>]*$", raw):
        raise ConfigurationError(
            f"SOCKJS_CLIENT_URL={raw!r} is not a URL or an absolute path like "
            "https://static.example.com/sockjs/{version}/sockjs.min.js"
        )
    return raw


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _text(env, "ALLOWED_ORIGINS")
    if raw is None:
        return ()
    origins = []
    for part in raw.split(","):
        origin = part.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigurationError(
                f"ALLOWED_ORIGINS entry {origin!r} is not an origin like https://chat.example.com"
            )
        origins.append(canonical_origin(origin))
    return tuple(origins)


def _host(env: Mapping[str, str]) -> str:
    raw = _text(env, "HOST")
    if raw is None:
        return "0.0.0.0"
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not _HOSTNAME.match(raw):
            raise ConfigurationError(
                f"HOST={raw!r} is not an IP address or host name: use 0.0.0.0 (every interface), 127.0.0.1 or ::"
            ) from None
    return raw


def _users_file(env: Mapping[str, str]) -> Path:
    path = Path(_text(env, "USERS_FILE") or "users.json")
    if path.is_dir():
        raise ConfigurationError(f"USERS_FILE={str(path)!r} is a directory: name a file, such as users.json")
    if path.exists():
        from .auth.users import UsersFileError, read_users_file

        try:
            read_users_file(path)
        except UsersFileError as exc:
            raise ConfigurationError(str(exc)) from None
    return path


def _trusted_proxies(env: Mapping[str, str]) -> tuple[IPNetwork, ...]:
    raw = _text(env, "TRUSTED_PROXIES")
    if raw is None:
        return ()
    try:
        return parse_networks(raw)
    except ValueError as exc:
        raise ConfigurationError(f"TRUSTED_PROXIES entry {exc}; separate several with commas") from None
