"""Idle WebSocket clients in a process of their own, for measuring the server's memory.

Run by ``test_idle_memory.py``, not by hand::

    python tests/realtime/idle_clients.py WS_URL TOKEN COUNT

Opens COUNT signed-in connections (each waits for ``ready`` and a ``pong``), prints
``open N`` with how many made it, then holds them idle until stdin closes or says
anything, and closes them. Its own allocations stay out of the server's tracemalloc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CONCURRENCY = 20
TIMEOUT = 30.0


async def open_one(url: str, token: str, gate: asyncio.Semaphore) -> ClientConnection | None:
    async with gate:
        try:
            ws = await connect(url, compression=None, ping_interval=None, open_timeout=TIMEOUT)
            await ws.send(json.dumps({"type": "auth", "token": token}))
            async with asyncio.timeout(TIMEOUT):
                if json.loads(await ws.recv()).get("type") != "ready":
                    return None
                await ws.send('{"type":"ping"}')
                while json.loads(await ws.recv()).get("type") != "pong":
                    pass
        except (OSError, TimeoutError, ValueError, ConnectionClosed) as exc:
            print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return None
        return ws


async def main(url: str, token: str, count: int) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    opened = await asyncio.gather(*(open_one(url, token, gate) for _ in range(count)))
    live = [ws for ws in opened if ws is not None]
    print(f"open {len(live)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for ws in live:
        with contextlib.suppress(Exception):
            await ws.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
