"""Settings: every environment variable Warren reads, parsed and validated once at start-up.

``Settings.from_env()`` raises ``ConfigurationError`` naming the variable whose value it cannot use; ``python -m
app`` prints that message and exits with status 2 instead of starting half-configured.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import ConfigurationError

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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
    node_id: str = "local"
    users_file: Path = Path("users.json")
    max_message_bytes: int = 64 * 1024
    mailbox_ttl: float = 7 * 86400.0
    mailbox_max: int = 1000
    session_max_age: int = 7 * 86400
    allowed_origins: tuple[str, ...] = ()
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
            host=_text(env, "HOST") or "0.0.0.0",
            secret_keys=secret_keys,
            secret_key_generated=generated,
            amqp_url=amqp_url,
            rabbitmq_management_url=_management_url(env),
            node_id=_node_id(env),
            users_file=Path(_text(env, "USERS_FILE") or "users.json"),
            max_message_bytes=_integer(env, "MAX_MESSAGE_BYTES", 64 * 1024, 1, 16 * 1024 * 1024),
            mailbox_ttl=_duration(env, "MAILBOX_TTL", 7 * 86400.0),
            mailbox_max=_integer(env, "MAILBOX_MAX", 1000, 1, 10_000_000),
            session_max_age=int(_duration(env, "SESSION_MAX_AGE", 7 * 86400.0)),
            allowed_origins=_origins(env),
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


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name}={value} is out of range: use {low} to {high}")
    return value


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    match = _DURATION.match(raw)
    if match is None:
        raise ConfigurationError(f"{name}={raw!r} is not a duration: use seconds, or a number with ms, s, m, h or d")
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if value <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be more than zero")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], upper: bool = False) -> str:
    raw = _text(env, name)
    if raw is None:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise ConfigurationError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return value


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name)
    if raw is None:
        return default
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
        origins.append(origin.lower())
    return tuple(origins)
