"""Settings from the environment: defaults, and a clear refusal naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings, generate_secret_key
from app.core.errors import ConfigurationError


def test_defaults_for_a_single_node() -> None:
    settings = Settings.from_env({})
    assert settings.port == 8080
    assert settings.backplane == "memory"
    assert settings.secret_key_generated
    assert settings.max_message_bytes == 64 * 1024
    assert settings.mailbox_ttl == 7 * 86400
    assert settings.mailbox_max == 1000
    assert settings.mailbox_max_bytes == 10 * 1024 * 1024 and settings.mailbox_sender_share == 0.25
    assert settings.request_body_timeout == 10.0 and settings.request_body_budget == 32 * 1024 * 1024


def test_values_are_parsed() -> None:
    key = generate_secret_key().decode()
    settings = Settings.from_env(
        {
            "PORT": "5000",
            "AMQP_URL": "amqp://u:p@broker/vh",
            "SECRET_KEY": f"{key}, {generate_secret_key().decode()}",
            "MAILBOX_TTL": "2h",
            "NODE_ID": "web.1",
            "ALLOWED_ORIGINS": "https://chat.example.com, http://localhost:3000/",
            "LOG_FORMAT": "JSON",
            "SOCKJS_CLIENT_URL": "https://static.example.com/sockjs/{version}/sockjs.min.js",
        }
    )
    assert settings.port == 5000 and settings.backplane == "rabbitmq"
    assert settings.secret_keys[0] == key.encode() and len(settings.secret_keys) == 2
    assert settings.mailbox_ttl == 7200
    assert settings.node_id == "web.1"
    assert settings.allowed_origins == ("https://chat.example.com", "http://localhost:3000")
    assert settings.log_format == "json"
    assert settings.sockjs_client_url == "https://static.example.com/sockjs/{version}/sockjs.min.js"


def test_heroku_names_are_understood() -> None:
    key = generate_secret_key().decode()
    settings = Settings.from_env({"CLOUDAMQP_URL": "amqps://x", "SECRET_KEY": key, "DYNO": "web.2"})
    assert settings.amqp_url == "amqps://x" and settings.node_id == "web.2"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"AMQP_URL": "amqp://x"}, "SECRET_KEY"),
        ({"AMQP_URL": "redis://x"}, "AMQP_URL"),
        ({"MAX_MESSAGE_BYTES": "0"}, "MAX_MESSAGE_BYTES"),
        ({"MAILBOX_TTL": "soon"}, "MAILBOX_TTL"),
        ({"MAILBOX_MAX": "-1"}, "MAILBOX_MAX"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"NODE_ID": "a b"}, "NODE_ID"),
        ({"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS"),
        ({"SOCKJS_CLIENT_URL": "sockjs.min.js"}, "SOCKJS_CLIENT_URL"),
        ({"SOCKJS_CLIENT_URL": "//cdn.example.com/sockjs.min.js"}, "SOCKJS_CLIENT_URL"),
        ({"MAILBOX_MAX_BYTES": "lots"}, "MAILBOX_MAX_BYTES"),
        ({"MAILBOX_MAX_BYTES": "100000"}, "MAILBOX_MAX_BYTES"),  # a sender's share is less than one message
        ({"MAILBOX_SENDER_SHARE": "0"}, "MAILBOX_SENDER_SHARE"),
        ({"MAILBOX_SENDER_SHARE": "1.5"}, "MAILBOX_SENDER_SHARE"),
        ({"MAILBOX_SENDER_SHARE": "a quarter"}, "MAILBOX_SENDER_SHARE"),
        ({"REQUEST_BODY_TIMEOUT": "soon"}, "REQUEST_BODY_TIMEOUT"),
        ({"REQUEST_BODY_BUDGET": "1"}, "REQUEST_BODY_BUDGET"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env(env)


def test_the_server_refuses_to_start_with_a_bad_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env={"PORT": "eighty", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 2
    assert "PORT='eighty' is not a whole number" in result.stderr
