#!/usr/bin/python3
"""WebSocket client check with Autobahn|Python (asyncio flavour), Debian's python3-autobahn.

    /usr/bin/python3 autobahn_client.py ws://HOST:PORT/PATH [--protocol echo] [--timeout 10]

Opening handshake, one text echo, one binary echo, then a clean close with
code 1000 (the close code the server sends back must be 1000).
"""
import argparse
import asyncio
import os
import sys
from urllib.parse import urlparse

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

result = {"step": "connect", "error": None, "ok": False, "protocol": None}


class EchoCheck(WebSocketClientProtocol):
    def onConnect(self, response):
        result["protocol"] = response.protocol

    def onOpen(self):
        result["step"] = "text echo"
        self.text = "hello " + os.urandom(6).hex()
        self.binary = os.urandom(4096)
        self.sendMessage(self.text.encode(), isBinary=False)

    def onMessage(self, payload, isBinary):
        if result["step"] == "text echo":
            if isBinary or payload.decode() != self.text:
                return self.bad(f"sent {self.text!r}, got {payload[:80]!r}")
            result["step"] = "binary echo"
            self.sendMessage(self.binary, isBinary=True)
        elif result["step"] == "binary echo":
            if not isBinary or payload != self.binary:
                return self.bad("binary payload differs")
            result["step"] = "close handshake"
            self.sendClose(code=1000, reason="bye")
        else:
            self.bad(f"unexpected message in step {result['step']}")

    def bad(self, msg):
        result["error"] = msg
        self.sendClose(code=1000)

    def onClose(self, wasClean, code, reason):
        if result["error"] is None:
            if result["step"] != "close handshake":
                result["error"] = f"closed early (clean={wasClean}, code={code}, reason={reason!r})"
            elif not wasClean:
                result["error"] = f"close was not clean: {reason}"
            elif code != 1000:
                result["error"] = f"server close code {code}, want 1000"
            else:
                result["ok"] = True
        fut = self.factory.finished
        if not fut.done():
            fut.set_result(None)


async def run(url, protocol):
    u = urlparse(url)
    loop = asyncio.get_running_loop()
    factory = WebSocketClientFactory(url, protocols=[protocol] if protocol else None)
    factory.protocol = EchoCheck
    factory.finished = loop.create_future()
    port = u.port or (443 if u.scheme == "wss" else 80)
    await loop.create_connection(factory, u.hostname, port)
    await factory.finished


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--protocol", default=None)
    ap.add_argument("--timeout", type=float, default=10)
    a = ap.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(a.url, a.protocol), a.timeout))
    except asyncio.TimeoutError:
        result["error"] = f"timeout after {a.timeout}s"
    except Exception as e:  # noqa: BLE001
        result["error"] = f"{type(e).__name__}: {e}"
    if not result["ok"]:
        print(f"autobahn_client: FAIL at {result['step']}: {result['error']}", file=sys.stderr)
        return 1
    import autobahn
    print(f"ok: autobahn {autobahn.__version__}: handshake, text+binary echo, close 1000 (subprotocol {result['protocol']!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
