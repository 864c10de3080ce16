#!/usr/bin/python3
"""An RFC 8441 extended CONNECT with python3-h2 (Debian's): HTTP/2 with prior
knowledge to HOST:PORT, :protocol echo/1, a token sent and echoed back, then
END_STREAM both ways.

    /usr/bin/python3 py_h2_client.py HOST:PORT [--timeout 10]

h2 does not check the server's SETTINGS_ENABLE_CONNECT_PROTOCOL itself:
this script does, before it sends the request. Exit 0 and "ok ..." on
stdout; exit 1 and a reason on stderr.
"""
import os
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings

ENABLE_CONNECT_PROTOCOL = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL


def fail(msg):
    print("py_h2_client: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    args = sys.argv[1:]
    timeout = 10.0
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        fail("usage: py_h2_client.py HOST:PORT [--timeout S]")
    host, port = args[0].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.settimeout(timeout)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    token = b"tok" + os.urandom(6).hex().encode()
    sid = None
    got = b""
    status = None
    ended = False
    while True:
        data = sock.recv(65536)
        if not data:
            fail("connection closed (status %s, %d bytes)" % (status, len(got)))
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged) and sid is None:
                if conn.remote_settings.get(ENABLE_CONNECT_PROTOCOL, 0) != 1:
                    fail("the server does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL")
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "echo/1"), (":scheme", "http"),
                                        (":path", "/"), (":authority", args[0])])
                conn.send_data(sid, token)
            elif isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status")
                if status != b"200":
                    fail("status %r, want 200" % status)
            elif isinstance(ev, h2.events.DataReceived):
                got += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if got == token and not ended:
                    ended = True
                    conn.end_stream(sid)
            elif isinstance(ev, h2.events.StreamEnded):
                if got != token:
                    fail("echo %r, want %r" % (got, token))
                print("ok echo/1 over HTTP/2 with python3-h2: status 200, echo of %s" % token.decode())
                conn.close_connection()
                sock.sendall(conn.data_to_send())
                sock.close()
                return
            elif isinstance(ev, h2.events.StreamReset):
                fail("stream reset with %s" % ev.error_code)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)


if __name__ == "__main__":
    main()
