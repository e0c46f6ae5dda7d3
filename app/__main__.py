"""``python -m app``: serve (the default), manage users, make a secret key, set up the broker.

    python -m app                      serve on $PORT (see the README for every variable)
    python -m app users add NAME       add a user or change a password (prompted, or --password-stdin)
    python -m app users remove NAME
    python -m app users list
    python -m app users check          list names that break today's username rules (exit 1 if any)
    python -m app users logout NAME    end every session of NAME on every node
    python -m app secret               print a new SECRET_KEY
    python -m app broker setup         declare exchanges and policies on $AMQP_URL (Procfile release phase)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from .auth.users import UserDirectory

from . import logs
from .config import Settings, generate_secret_key
from .core.errors import ConfigurationError, InvalidUsername, WarrenError


class _JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node": self.node_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter(settings.node_id))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s [{settings.node_id}] %(name)s: %(message)s")
        )
    # Many lines are caused by what clients send: bounded per message template, so no client can flood the log.
    logs.install(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, settings.log_level_number))


def serve(settings: Settings) -> int:
    from aiohttp import web

    from .server import create_app, request_grace

    legacy = os.environ.get("WARREN_SERVE_LEGACY") == "1"
    legacy_dir = Path(__file__).resolve().parent.parent / "tests" / "legacy" if legacy else None
    app = create_app(settings, legacy_page_dir=legacy_dir)
    if settings.secret_key_generated:
        logging.getLogger("app").warning(
            "SECRET_KEY is not set: generated one for this process, so sign-ins end when it restarts. "
            "Set SECRET_KEY (python -m app secret) to keep them."
        )
    app.on_startup.append(_install_collector_policy)
    loop = _new_event_loop(settings.event_loop)
    try:
        web.run_app(
            app,
            loop=loop,
            host=settings.host,
            port=settings.port,
            # Only the wait for running requests: the rest of SHUTDOWN_TIMEOUT is shared out in app.server.
            shutdown_timeout=request_grace(settings),
            print=None,
            access_log=None,
            handle_signals=True,
        )
    except OSError as exc:
        variable = _unusable_setting(exc, settings)
        if variable is None:
            raise
        # Binding is the first thing that touches the network: the address or the port cannot be used.
        print(f"configuration error: cannot listen on {variable}: {exc}", file=sys.stderr)
        return 2
    return 0


def _unusable_setting(exc: OSError, settings: Settings) -> str | None:
    """``HOST=…`` or ``PORT=…`` when ``exc`` says that setting cannot be listened on, else None."""
    import errno
    import socket

    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"HOST={settings.host!r}"
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        return f"PORT={settings.port}"
    return None


async def _install_collector_policy(app: web.Application) -> None:
    from .collector import CollectorPolicy
    from .keys import HUB

    CollectorPolicy().install(app[HUB].pacer)


def _new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop where available: measured ~10% less CPU per message than the stock loop (bench/README.md)."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise SystemExit("EVENT_LOOP=uvloop, but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("the passwords differ; nothing changed")
    return first


def users_command(args: argparse.Namespace) -> int:
    from .auth.users import PasswordTooShort, UserDirectory, UsersFileError

    path = Path(os.environ.get("USERS_FILE") or "users.json")
    directory = UserDirectory(path)
    try:
        directory.reload()
        return _users_action(args, directory, path)
    except UsersFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (InvalidUsername, PasswordTooShort) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _users_action(args: argparse.Namespace, directory: UserDirectory, path: Path) -> int:
    if args.action == "list":
        for name in directory.names():
            print(name)
        return 0
    if args.action == "check":
        problems = directory.legacy_names()
        for name, problem in problems:
            print(f"{name!r}: {problem}")
        if problems:
            print("these users still sign in; rename them (add a new name, remove the old) to retire look-alikes")
        return 1 if problems else 0
    if args.action == "add":
        name = directory.add(args.name, _read_password(args.password_stdin))
        print(f"user {name} saved in {path}")
        return 0
    if args.action == "remove":
        if not directory.remove(args.name):
            print(f"error: no user named {args.name!r} in {path}", file=sys.stderr)
            return 1
        print(f"user {args.name} removed; their sessions end on every node")
        return 0
    if args.action == "logout":
        if directory.resolve(args.name) is None:
            print(f"error: no user named {args.name!r} in {path}", file=sys.stderr)
            return 1
        directory.bump_generation(args.name)
        print(f"every session of {args.name} has ended")
        return 0
    return 2


def broker_command(settings: Settings) -> int:
    if not settings.amqp_url:
        # A single-node deployment on the embedded backplane: the release phase has nothing to do.
        print("AMQP_URL (or CLOUDAMQP_URL) is not set: single node, nothing to set up on a broker")
        return 0
    from .backplane.rabbitmq import setup_broker

    try:
        report = asyncio.run(setup_broker(settings, management_url=settings.rabbitmq_management_url))
    except WarrenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Warren real-time messaging server")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve on $PORT (default)")
    users = sub.add_parser("users", help="manage the user directory in $USERS_FILE")
    users_sub = users.add_subparsers(dest="action", required=True)
    add = users_sub.add_parser("add", help="add a user or change their password")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    users_sub.add_parser("remove").add_argument("name")
    users_sub.add_parser("list")
    users_sub.add_parser("check", help="list names that break today's username rules")
    users_sub.add_parser("logout", help="end every session of a user").add_argument("name")
    sub.add_parser("secret", help="print a new SECRET_KEY")
    broker = sub.add_parser("broker", help="broker administration")
    broker.add_argument("action", choices=["setup"])
    args = parser.parse_args(argv)

    if args.command == "users":
        return users_command(args)
    if args.command == "secret":
        print(generate_secret_key().decode())
        return 0
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if args.command == "broker":
        return broker_command(settings)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
