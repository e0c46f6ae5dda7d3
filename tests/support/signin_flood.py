"""A sign-in flood from its own process: ``python -m tests.support.signin_flood URL USER PASSWORD SECONDS [CLIENTS]``.

CLIENTS (default 16) clients post ``/login`` with the right password as fast as the server answers, for SECONDS.
It runs in a process of its own so that its work does not share an event loop (or a GIL) with the test that
measures the node. It prints ``started`` as it begins, then one JSON line: how many answers of each status it got.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time

import aiohttp


async def flood(url: str, user: str, password: str, seconds: float, clients: int) -> dict[str, int]:
    statuses: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds

    async def client() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            while time.monotonic() < deadline:
                try:
                    async with http.post(f"{url}/login", json={"username": user, "password": password}) as resp:
                        await resp.read()
                        statuses[str(resp.status)] += 1
                except aiohttp.ClientError as exc:
                    statuses[type(exc).__name__] += 1

    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        await resp.read()
    print("started", flush=True)
    await asyncio.gather(*(client() for _ in range(clients)))
    return dict(statuses)


def main() -> None:
    url, user, password, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    clients = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    print(json.dumps(asyncio.run(flood(url, user, password, seconds, clients))), flush=True)


if __name__ == "__main__":
    main()
