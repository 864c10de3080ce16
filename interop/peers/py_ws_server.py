#!/usr/bin/python3
"""WebSocket echo server using Debian's python3-websockets (10.x asyncio API).

    /usr/bin/python3 py_ws_server.py [--count 1] [--timeout 15]

Listens on 127.0.0.1, random port, prints the port on the first stdout line,
echoes messages (pings answered by the library), selects subprotocol "echo"
if offered. Exits 0 after COUNT connections that sent at least one message
closed with 1000/1005; exits 1 on timeout.
"""
import argparse
import asyncio
import sys

import websockets
import websockets.exceptions


async def main_async(count, timeout):
    done = 0
    finished = asyncio.get_running_loop().create_future()

    async def handler(ws, path=None):
        nonlocal done
        msgs = 0
        print(f"py_ws_server: connection, subprotocol {ws.subprotocol!r}", file=sys.stderr, flush=True)
        try:
            async for msg in ws:
                msgs += 1
                await ws.send(msg)
        except websockets.exceptions.ConnectionClosed:
            pass
        print(f"py_ws_server: closed, code {ws.close_code}, {msgs} messages echoed", file=sys.stderr, flush=True)
        if msgs > 0 and ws.close_code in (1000, 1005):
            done += 1
        if done >= count and not finished.done():
            finished.set_result(True)

    async with websockets.serve(handler, "127.0.0.1", 0, subprotocols=["echo"],
                                select_subprotocol=None, max_size=2**20) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        try:
            await asyncio.wait_for(finished, timeout)
        except asyncio.TimeoutError:
            print(f"py_ws_server: FAIL: timeout after {timeout}s, {done}/{count} connections completed",
                  file=sys.stderr, flush=True)
            return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=15)
    a = ap.parse_args()
    return asyncio.run(main_async(a.count, a.timeout))


if __name__ == "__main__":
    sys.exit(main())
