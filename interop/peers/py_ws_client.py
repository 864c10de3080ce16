#!/usr/bin/python3
"""WebSocket echo client using Debian's python3-websockets (10.x asyncio API).

    /usr/bin/python3 py_ws_client.py URL [--protocol echo] [--timeout 10]

Text echo, 64 KiB binary echo, ping/pong, close 1000 (expects 1000 back).
"""
import argparse
import asyncio
import os
import sys

import websockets
import websockets.exceptions

step = "connect"


async def run(url, protocol):
    global step
    subprotocols = [protocol] if protocol else None
    async with websockets.connect(url, subprotocols=subprotocols, open_timeout=5,
                                  close_timeout=5, max_size=2**20) as ws:
        if protocol and ws.subprotocol != protocol:
            raise RuntimeError(f"server selected subprotocol {ws.subprotocol!r}, wanted {protocol!r}")
        step = "text echo"
        text = "hello " + os.urandom(6).hex()
        await ws.send(text)
        got = await ws.recv()
        if got != text:
            raise RuntimeError(f"sent {text!r}, got {got!r:.80}")
        step = "binary echo (64 KiB)"
        data = os.urandom(64 * 1024)
        await ws.send(data)
        got = await ws.recv()
        if not isinstance(got, bytes):
            raise RuntimeError("echo came back as a text message")
        if got != data:
            raise RuntimeError(f"payload differs (got {len(got)} bytes)")
        step = "ping/pong"
        waiter = await ws.ping(os.urandom(4))
        await waiter
        step = "close handshake"
        await ws.close(code=1000, reason="bye")
        if ws.close_code != 1000:
            raise RuntimeError(f"server close code {ws.close_code}, want 1000")
        return ws.subprotocol


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--protocol", default=None)
    ap.add_argument("--timeout", type=float, default=10)
    a = ap.parse_args()
    try:
        sub = asyncio.run(asyncio.wait_for(run(a.url, a.protocol), a.timeout))
    except asyncio.TimeoutError:
        print(f"py_ws_client: FAIL at {step}: timeout after {a.timeout}s", file=sys.stderr)
        return 1
    except websockets.exceptions.InvalidStatusCode as e:
        print(f"py_ws_client: FAIL at {step}: server answered HTTP {e.status_code} instead of 101", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - report anything as a failure
        print(f"py_ws_client: FAIL at {step}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"ok: websockets {websockets.__version__}: text, 64KiB binary, ping/pong, close 1000 (subprotocol {sub!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
