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


def run_server(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``python -m app`` with ``env`` (and nothing else from this environment); a bad setting ends it at once."""
    return subprocess.run(
        [sys.executable, "-m", "app"],
        env={"PATH": "/usr/bin:/bin", "PORT": "0", "USERS_FILE": str(tmp_path / "users.json"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )


def bad_users_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "not-json.json").write_text("users: alice\n")
    (tmp_path / "wrong-shape.json").write_text('{"users": ["alice", "bob"]}')
    (tmp_path / "no-key.json").write_text('{"users": {"alice": {"salt": "AAAA"}}}')
    (tmp_path / "a-directory").mkdir()
    return {name: tmp_path / name for name in ("not-json.json", "wrong-shape.json", "no-key.json", "a-directory")}


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("HOST", "not a host", "HOST='not a host' is not an IP address or host name"),
        ("HOST", "host_with_underscore", "HOST='host_with_underscore'"),
        ("HOST", "192.0.2.1", "cannot listen on HOST='192.0.2.1'"),  # a documentation address: not this machine
        ("HOST", "no-such-host.invalid", "cannot listen on HOST='no-such-host.invalid'"),
        ("USERS_FILE", "not-json.json", "is not a Warren users file"),
        ("USERS_FILE", "wrong-shape.json", "is not a Warren users file"),
        ("USERS_FILE", "no-key.json", "is not a Warren users file"),
        ("USERS_FILE", "a-directory", "is a directory"),
        ("SECRET_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "SECRET_KEY is not random"),
        ("SECRET_KEY", "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=", "SECRET_KEY is not random"),  # "0123456789…"
        ("TRUSTED_PROXIES", "10.0.0.0/8, balancer", "TRUSTED_PROXIES entry 'balancer'"),
        ("SIGNIN_WORKERS", "0", "SIGNIN_WORKERS=0 is out of range"),
        ("SIGNIN_QUEUE", "lots", "SIGNIN_QUEUE='lots' is not a whole number"),
    ],
)
def test_a_bad_setting_stops_the_server_with_exit_2_naming_it(
    variable: str, value: str, says: str, tmp_path: Path
) -> None:
    files = bad_users_files(tmp_path)
    if variable == "USERS_FILE":
        value = str(files[value])
    result = run_server({variable: value}, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("configuration error:") and variable in last and says in last, last


def test_a_weak_secret_key_is_refused_and_a_random_one_accepted() -> None:
    with pytest.raises(ConfigurationError, match="SECRET_KEY is not random"):
        Settings.from_env({"SECRET_KEY": "A" * 43 + "="})
    key = generate_secret_key().decode()
    assert Settings.from_env({"SECRET_KEY": key}).secret_keys == (key.encode(),)


def test_an_allowed_origin_with_its_default_port_matches_what_browsers_send() -> None:
    settings = Settings.from_env(
        {"ALLOWED_ORIGINS": "https://chat.example.com:443, http://intranet.example:80, http://dev.example:8080"}
    )
    assert settings.allowed_origins == ("https://chat.example.com", "http://intranet.example", "http://dev.example:8080")


def test_sign_in_settings_are_parsed() -> None:
    settings = Settings.from_env({"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7, 2001:db8::/32", "SIGNIN_WORKERS": "2"})
    assert [str(network) for network in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert settings.signin_workers == 2 and settings.signin_queue == 32
    assert Settings.from_env({}).trusted_proxies == ()
