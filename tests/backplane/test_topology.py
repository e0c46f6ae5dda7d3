"""Names, policy values and management API addresses (no broker needed)."""

from __future__ import annotations

import re

import pytest

from app.backplane.topology import (
    DEFAULT_TOPOLOGY,
    MailboxLimits,
    ManagementAPI,
    Topology,
    mailbox_queue_name,
    node_queue_name,
    routing_key,
    user_key,
)
from app.core.identity import normalize_username


def test_default_names() -> None:
    assert DEFAULT_TOPOLOGY.messages_exchange == "warren.messages"
    assert DEFAULT_TOPOLOGY.mailbox_exchange == "warren.mailbox"
    assert node_queue_name("web.1") == "warren.node.web.1"
    assert mailbox_queue_name("bob") == "warren.mailbox.bob"
    assert routing_key("bob") == "user.bob"
    assert DEFAULT_TOPOLOGY.policy_name == "warren-mailboxes"
    assert DEFAULT_TOPOLOGY.policy_pattern == r"^warren\.mailbox\."


@pytest.mark.parametrize(
    ("user", "key"),
    [("a.b", "user.a_2e_b"), ("a*", "user.a_2a_"), ("#", "user._23_"), ("*.x", "user._2a__2e_x"), ("ü", "user._fc_")],
)
def test_routing_syntax_in_names_is_escaped(user: str, key: str) -> None:
    assert routing_key(user) == key


def test_keys_are_distinct_and_free_of_topic_syntax() -> None:
    names = ["a.b", "a*", "#", "*.x", "ü", "a_2e_b", "a_b", "a", "A", "ü" * 64, "ü" * 63 + "u", "中" * 64, "-", "@+"]
    keys = [routing_key(normalize_username(name)) for name in names]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert re.fullmatch(r"user\.(?:[A-Za-z0-9_-]+|h\.[0-9a-f]{64})", key), key
        assert len(key.encode()) <= 255


def test_a_token_too_long_for_an_amqp_name_becomes_a_digest() -> None:
    assert user_key("中" * 64).startswith("h.")
    assert user_key("中" * 64) != user_key("中" * 63)
    assert not user_key("x" * 64).startswith("h.")


def test_prefix_is_validated() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topology(prefix="has space")
    assert Topology(prefix="t-1").policy_pattern == r"^t-1\.mailbox\."


def test_policy_values_come_from_settings_and_stay_within_erlang_timers() -> None:
    assert MailboxLimits(7 * 86400.0, 1000).policy_definition() == {
        "message-ttl": 604_800_000,
        "max-length": 1000,
        "max-length-bytes": 10 * 1024 * 1024,
        "overflow": "reject-publish",
        "expires": 2_419_200_000,
    }
    long = MailboxLimits(90 * 86400.0, 5).policy_definition()
    assert long["message-ttl"] == long["expires"] == 2**32 - 1


@pytest.mark.parametrize(
    ("amqp_url", "management_url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", None, ("http://127.0.0.1:15672", "/", "guest", "guest")),
        ("amqps://u:p@mq.example.com/chat", None, ("https://mq.example.com:15671", "chat", "u", "p")),
        (
            "amqp://u:p@h/%2Fvh",
            "https://admin:s3cret@mgmt.example.com/",
            ("https://mgmt.example.com", "/vh", "admin", "s3cret"),
        ),
        ("amqp://u:p@h", "http://mgmt:8080", ("http://mgmt:8080", "/", "u", "p")),
    ],
)
def test_management_api_address(amqp_url: str, management_url: str | None, expected: tuple[str, ...]) -> None:
    api = ManagementAPI.from_amqp_url(amqp_url, management_url)
    assert (api.base_url, api.vhost, api.login, api.password) == expected
    assert api.url("policies", "/", "warren-mailboxes").endswith("/api/policies/%2F/warren-mailboxes")
