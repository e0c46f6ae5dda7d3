"""The user directory, the username rules and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth.users import PasswordTooShort, UserDirectory
from app.core.errors import InvalidUsername
from app.core.identity import normalize_username, user_token

ROOT = Path(__file__).resolve().parent.parent


def test_passwords_are_hashed_and_verified(tmp_path: Path) -> None:
    directory = UserDirectory(tmp_path / "users.json")
    directory.add("alice", "correct-horse")
    assert directory.verify("alice", "correct-horse")
    assert not directory.verify("alice", "wrong-horse")
    assert not directory.verify("mallory", "correct-horse")
    stored = (tmp_path / "users.json").read_text()
    assert "correct-horse" not in stored
    assert json.loads(stored)["users"]["alice"]["kdf"].startswith("scrypt")


def test_a_second_process_sees_new_users(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    reader = UserDirectory(path, recheck_seconds=0)  # a running node looks again at most once a second
    assert not reader.exists("bob")
    UserDirectory(path).add("bob", "long-enough")
    assert reader.exists("bob")


def test_password_change_bumps_the_session_generation(tmp_path: Path) -> None:
    directory = UserDirectory(tmp_path / "users.json")
    directory.add("alice", "password-1")
    assert directory.generation("alice") == 0
    directory.add("alice", "password-2")
    assert directory.generation("alice") == 1


def test_short_passwords_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PasswordTooShort):
        UserDirectory(tmp_path / "u.json").add("alice", "short")


@pytest.mark.parametrize("name", ["", "a b", "a/b", "tab\there", "x" * 65, "semi;colon", "per%cent"])
def test_usernames_outside_the_rules_are_refused(name: str) -> None:
    with pytest.raises(InvalidUsername):
        normalize_username(name)


@pytest.mark.parametrize("name", ["alice", "a.b", "a*", "#", "*.x", "ü", "名前", "a_2e_b", "bob@example.com"])
def test_odd_but_allowed_usernames(name: str) -> None:
    assert normalize_username(name) == name


def test_user_tokens_are_injective_and_wildcard_free() -> None:
    names = ["a.b", "a*", "#", "*.x", "ü", "a_2e_b", "a_b", "a-b", "ab", "A.b", "a_2e_", "_"]
    tokens = [user_token(name) for name in names]
    assert len(set(tokens)) == len(names)
    for token in tokens:
        assert not set(token) & set(".*#% ")
    assert user_token("alice") == "alice"


def run_cli(*args: str, users: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={"USERS_FILE": str(users), "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        timeout=60,
    )


def test_cli_add_list_remove(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    assert run_cli("users", "add", "alice", "--password-stdin", users=users, stdin="long-password\n").returncode == 0
    assert run_cli("users", "list", users=users).stdout.split() == ["alice"]
    refused = run_cli("users", "add", "a b", "--password-stdin", users=users, stdin="long-password\n")
    assert refused.returncode == 2 and "not allowed in a username" in refused.stderr
    assert run_cli("users", "remove", "alice", users=users).returncode == 0
    assert run_cli("users", "list", users=users).stdout == ""


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("\u0430lice", "one script"),  # Cyrillic а in a Latin name
        ("p\u0430yp\u0430l", "one script"),
        ("alice\u3164", "invisible"),  # HANGUL FILLER: a letter that draws nothing
        ("\u3164", "invisible"),
        ("\uffa0bob", "invisible"),  # HALFWIDTH HANGUL FILLER
        ("al\u200bice", "invisible"),  # zero-width space
        ("al\u200dice", "invisible"),  # zero-width joiner
        ("\u202eecila", "invisible"),  # right-to-left override
        ("ali\u00adce", "invisible"),  # soft hyphen
        ("alice\ufe0f", "invisible"),  # variation selector
    ],
)
def test_look_alike_and_invisible_names_are_refused(name: str, why: str) -> None:
    with pytest.raises(InvalidUsername, match=why):
        normalize_username(name)


@pytest.mark.parametrize(("typed", "stored"), [("ａｌｉｃｅ", "alice"), ("ﬁona", "fiona"), ("Ｂｏｂ２", "Bob2")])
def test_compatibility_forms_become_the_plain_name(typed: str, stored: str) -> None:
    assert normalize_username(typed) == stored


@pytest.mark.parametrize(
    "impostor", ["Alice", "ALICE", "aIice", "a1ice", "\u0430\u04cf\u0456\u0441\u0435", "ａｌｉｃｅ"]
)
def test_nobody_can_be_added_under_a_name_that_looks_like_an_existing_user(impostor: str, tmp_path: Path) -> None:
    directory = UserDirectory(tmp_path / "users.json")
    directory.add("alice", "alice-password")
    if normalize_username(impostor) == "alice":
        # The same name written differently is alice herself: this changes her password, adds nobody.
        assert directory.add(impostor, "new-password") == "alice" and directory.names() == ["alice"]
        return
    with pytest.raises(InvalidUsername, match="looks too much like the existing user 'alice'"):
        directory.add(impostor, "mallory-password")
    assert directory.names() == ["alice"]


def test_the_cli_refuses_a_look_alike_and_explains(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    assert run_cli("users", "add", "alice", "--password-stdin", users=users, stdin="long-password\n").returncode == 0
    impostor = run_cli("users", "add", "\u0430lice", "--password-stdin", users=users, stdin="long-password\n")
    assert impostor.returncode == 2 and "one script" in impostor.stderr
    whole_cyrillic = "\u0430\u04cf\u0456\u0441\u0435"
    lookalike = run_cli("users", "add", whole_cyrillic, "--password-stdin", users=users, stdin="long-password\n")
    assert lookalike.returncode == 2 and "looks too much like the existing user 'alice'" in lookalike.stderr
    assert run_cli("users", "list", users=users).stdout.split() == ["alice"]
    assert run_cli("users", "check", users=users).returncode == 0


def test_the_cli_never_overwrites_a_users_file_it_cannot_read(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text('{"users": {"alice": ')  # half an edit
    result = run_cli("users", "add", "bob", "--password-stdin", users=users, stdin="long-password\n")
    assert result.returncode == 2 and "is not a Warren users file" in result.stderr
    assert users.read_text() == '{"users": {"alice": '


def test_a_running_node_keeps_its_users_when_the_file_is_half_written(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    UserDirectory(path).add("alice", "alice-password")
    running = UserDirectory(path, recheck_seconds=0)
    assert running.verify("alice", "alice-password")
    path.write_text("{")  # an editor saving in place, or a full disk
    assert running.verify("alice", "alice-password") and running.names() == ["alice"]
