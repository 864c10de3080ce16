#!/usr/bin/python3
"""An HTTP/2 server (prior knowledge, cleartext) with python3-h2 (Debian's)
that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and answers an extended
CONNECT (RFC 8441) for echo/1 with 200, then echoes the stream and ends it
after the client's END_STREAM. Other :protocol values get 501.

    /usr/bin/python3 py_h2_server.py [--count N] [--timeout S]

Prints its port on stdout, then exits 0 after N streams (default 1) were
echoed and ended cleanly; exit 1 and a reason on stderr otherwise.
"""
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings

ENABLE_CONNECT_PROTOCOL = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL


def fail(msg):
    print("py_h2_server: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def serve(sock, count):
    """Serves one connection; returns the streams still to echo."""
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    conn.local_settings = h2.settings.Settings(client=False, initial_values={ENABLE_CONNECT_PROTOCOL: 1})
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    echoing = {}  # stream id -> :authority and :path
    while count > 0:
        data = sock.recv(65536)
        if not data:
            return count
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                h = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                     for k, v in ev.headers}
                if h.get(":method") != "CONNECT" or ":protocol" not in h:
                    conn.send_headers(ev.stream_id, [(":status", "400")])
                    conn.send_data(ev.stream_id, b"not an extended CONNECT\n", end_stream=True)
                elif h[":protocol"] != "echo/1":
                    conn.send_headers(ev.stream_id, [(":status", "501")])
                    conn.send_data(ev.stream_id, b"protocol %s not served\n" % h[":protocol"].encode(),
                                   end_stream=True)
                else:
                    conn.send_headers(ev.stream_id, [(":status", "200")])
                    echoing[ev.stream_id] = h.get(":authority", "") + h.get(":path", "")
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if ev.stream_id in echoing and ev.data:
                    conn.send_data(ev.stream_id, ev.data)
            elif isinstance(ev, h2.events.StreamEnded):
                if ev.stream_id in echoing:
                    conn.end_stream(ev.stream_id)
                    print("echoed a stream for %s" % echoing.pop(ev.stream_id), file=sys.stderr)
                    count -= 1
            elif isinstance(ev, h2.events.StreamReset):
                if ev.stream_id in echoing:
                    fail("stream %d reset by the client with %s" % (ev.stream_id, ev.error_code))
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return count


def main():
    args = sys.argv[1:]
    count, timeout = 1, 15.0
    while args:
        if args[0] == "--count":
            count = int(args[1])
        elif args[0] == "--timeout":
            timeout = float(args[1])
        else:
            fail("usage: py_h2_server.py [--count N] [--timeout S]")
        args = args[2:]
    ln = socket.socket()
    ln.bind(("127.0.0.1", 0))
    ln.listen(8)
    ln.settimeout(timeout)
    print(ln.getsockname()[1], flush=True)
    while count > 0:
        try:
            sock, _ = ln.accept()
        except socket.timeout:
            fail("timeout after %s s with %d streams to go" % (timeout, count))
        sock.settimeout(timeout)
        try:
            count = serve(sock, count)
        except socket.timeout:
            fail("timeout after %s s with %d streams to go" % (timeout, count))
        finally:
            sock.close()


if __name__ == "__main__":
    main()
