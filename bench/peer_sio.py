"""The peer: python-socketio ``AsyncServer`` + ``AsyncAioPikaManager`` on aiohttp, one node per process.

What a Python team would write instead of Warren: each client joins a room named after its user when it
connects (``auth={"user": name}``), and a ``chat`` event ``{"receiver", "msg"}`` is emitted as ``message`` to the
receiver's room, with the same JSON fields Warren delivers (``id``, ``from``, ``to``, ``content``, ``ts``). The
manager broadcasts every emit through one fanout exchange (``SIO_CHANNEL``) to every node.

Run: ``PORT=... AMQP_URL=... SIO_CHANNEL=... python -m bench.peer_sio``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

import socketio
from aiohttp import web


def create_app() -> web.Application:
    manager = socketio.AsyncAioPikaManager(
        os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        channel=os.environ.get("SIO_CHANNEL", "socketio"),
    )
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=manager, cors_allowed_origins="*", logger=False, engineio_logger=False
    )
    app = web.Application()
    sio.attach(app)
    users: dict[str, str] = {}

    @sio.event
    async def connect(sid: str, environ: dict[str, object], auth: dict[str, str] | None) -> bool:
        user = (auth or {}).get("user")
        if not user:
            return False
        users[sid] = user
        await sio.enter_room(sid, user)
        return True

    @sio.event
    async def disconnect(sid: str, *_args: object) -> None:
        users.pop(sid, None)

    @sio.event
    async def chat(sid: str, data: dict[str, str]) -> None:
        sender = users.get(sid)
        if sender is None:
            return
        receiver = data["receiver"]
        message = {
            "id": uuid.uuid4().hex,
            "from": sender,
            "to": receiver,
            "content": data["msg"],
            "ts": int(time.time() * 1000),
        }
        await sio.emit("message", message, room=receiver)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def start_manager(_app: web.Application) -> None:
        # The manager starts its listener on the first connection; start it now so the node is ready at once.
        sio.manager_initialized = True
        sio.manager.initialize()

    app.router.add_get("/healthz", healthz)
    app.on_startup.append(start_manager)
    return app


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None)


if __name__ == "__main__":
    main()
