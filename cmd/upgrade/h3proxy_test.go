package main

// Wire tests of reverseproxy.Proxy behind http3.Handler, with quic-go's
// client and server in process: HTTP/3 extended CONNECTs (RFC 9220)
// bridged to HTTP/1.1 backends. They live here because the layering of
// the module (imports_test.go) keeps http3/ and reverseproxy/ from
// importing each other, tests included; the command is where the two
// meet.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/http3"
	"github.com/go-upgrade/upgrade/internal/selfsigned"
	"github.com/go-upgrade/upgrade/reverseproxy"
	"github.com/go-upgrade/upgrade/websocket"
	"github.com/quic-go/quic-go"
	qhttp3 "github.com/quic-go/quic-go/http3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- the proxy under test ----

// h3Proxy is a reverseproxy.Proxy served over HTTP/3 on 127.0.0.1 by
// quic-go, through http3.Handler.
type h3Proxy struct {
	p    *reverseproxy.Proxy
	srv  *qhttp3.Server
	pc   net.PacketConn
	addr string      // 127.0.0.1:PORT
	log  *syncBuffer // the Proxy's log, at DEBUG
	done chan error
}

// startH3Proxy serves a Proxy to backend (host:port, HTTP/1.1) over
// HTTP/3. Cleanup closes the server and the relayed pairs, and waits for
// them to end.
func startH3Proxy(t *testing.T, backend string) *h3Proxy {
	t.Helper()
	cert, err := selfsigned.Cert("upgrade (self-signed)")
	require.NoError(t, err)
	p := reverseproxy.New(&url.URL{Scheme: "http", Host: backend})
	hp := &h3Proxy{p: p, log: newSyncBuffer(), done: make(chan error, 1)}
	p.ErrorLog = slog.New(slog.NewTextHandler(hp.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p.Dialer = &upgrade.Dialer{Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }, HandshakeTimeout: testTimeout}
	hp.pc, err = net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	hp.addr = hp.pc.LocalAddr().String()
	hp.srv = &qhttp3.Server{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, Handler: http3.Handler(p)}
	go func() { hp.done <- hp.srv.Serve(hp.pc) }()
	t.Cleanup(func() {
		assert.NoError(t, hp.srv.Close())
		<-hp.done
		hp.pc.Close()
		assert.NoError(t, p.Close())
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx), "pairs still relayed: %v", p.ActiveConns())
	})
	return hp
}

// url returns the proxy's https URL for path.
func (hp *h3Proxy) url(path string) string { return "https://" + hp.addr + path }

// waitIdle waits until the proxy relays no pair.
func (hp *h3Proxy) waitIdle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return len(hp.p.ActiveConns()) == 0 }, testTimeout, 5*time.Millisecond,
		"pairs still relayed: %v", hp.p.ActiveConns())
}

// logLine waits for the Proxy's record of a request that ended with how,
// and returns it.
func (hp *h3Proxy) logLine(t *testing.T, how string) string {
	t.Helper()
	var line string
	require.Eventually(t, func() bool {
		for _, l := range strings.Split(hp.log.String(), "\n") {
			if strings.Contains(l, `msg="upgrade: proxied connection closed"`) && strings.Contains(l, `how="`+how+`"`) {
				line = l
				return true
			}
		}
		return false
	}, testTimeout, 5*time.Millisecond, "no record with how=%q in:\n%s", how, hp.log)
	return line
}

// ---- clients ----

// h3Dialer returns a Dialer that switches HTTP/3 streams with a Transport
// closed at cleanup.
func h3Dialer(t *testing.T) *upgrade.Dialer {
	t.Helper()
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(func() { assert.NoError(t, tr.Close()) })
	return &upgrade.Dialer{HTTP3: tr, HandshakeTimeout: testTimeout}
}

// rawH3 is a client of quic-go's own, for what a Transport does not do:
// resetting a stream.
type rawH3 struct {
	cc *qhttp3.ClientConn
}

// dialRawH3 opens an HTTP/3 connection to addr, closed at cleanup, once
// the server's SETTINGS have arrived.
func dialRawH3(t *testing.T, addr string) *rawH3 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{qhttp3.NextProtoH3}}, nil)
	require.NoError(t, err)
	cc := (&qhttp3.Transport{}).NewClientConn(qc)
	t.Cleanup(func() { _ = cc.CloseWithError(0, "") })
	select {
	case <-cc.ReceivedSettings():
	case <-ctx.Done():
		t.Fatal("no SETTINGS from the server")
	}
	require.True(t, cc.Settings().EnableExtendedConnect)
	return &rawH3{cc: cc}
}

// connect opens an extended CONNECT stream for protocol to path and
// returns it with the response.
func (c *rawH3) connect(t *testing.T, host, path, protocol string) (*qhttp3.RequestStream, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	rs, err := c.cc.OpenRequestStream(ctx)
	require.NoError(t, err)
	require.NoError(t, rs.SetDeadline(time.Now().Add(testTimeout)))
	req := &http.Request{Method: http.MethodConnect, Proto: protocol, Host: host,
		URL: &url.URL{Scheme: "https", Host: host, Path: path}, Header: http.Header{}}
	require.NoError(t, rs.SendRequestHeader(req))
	resp, err := rs.ReadResponse()
	require.NoError(t, err)
	return rs, resp
}

// ---- backends ----

// h1Backend is a raw HTTP/1.1 server on 127.0.0.1 whose connections are
// answered by a script, byte by byte.
type h1Backend struct {
	ln   net.Listener
	wg   sync.WaitGroup
	reqs chan *http.Request
}

// startH1Backend serves script on each connection, with the request head
// read (its body, if any, left in br). Cleanup closes the listener and
// waits for the scripts, each bounded by testTimeout.
func startH1Backend(t *testing.T, script func(nc *net.TCPConn, br *bufio.Reader, req *http.Request)) *h1Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &h1Backend{ln: ln, reqs: make(chan *http.Request, 64)}
	b.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Go(func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(testTimeout))
				br := bufio.NewReader(nc)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				b.reqs <- req
				script(nc.(*net.TCPConn), br, req)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		b.wg.Wait()
	})
	return b
}

func (b *h1Backend) addr() string { return b.ln.Addr().String() }

// request returns the next request the backend read.
func (b *h1Backend) request(t *testing.T) *http.Request {
	t.Helper()
	select {
	case r := <-b.reqs:
		return r
	case <-time.After(testTimeout):
		t.Fatal("no request reached the backend")
		return nil
	}
}

// switch101 writes a 101 to proto with the extra header lines and, in the
// same write, after.
func switch101(nc net.Conn, proto string, after string, extra ...string) error {
	s := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + proto + "\r\nConnection: Upgrade\r\n"
	for _, e := range extra {
		s += e + "\r\n"
	}
	_, err := io.WriteString(nc, s+"\r\n"+after)
	return err
}

// echoUntilEOF echoes br to nc until EOF, then half-closes nc and waits
// for the proxy to close it.
func echoUntilEOF(nc *net.TCPConn, br *bufio.Reader) {
	_, _ = io.Copy(struct{ io.Writer }{nc}, br)
	_ = nc.CloseWrite()
	_, _ = io.Copy(io.Discard, nc)
}

// wsUpgradeServer is an HTTP/1.1 server of an upgrade.Server with a
// WebSocket route that greets with the HTTP version it was reached over,
// then echoes. It records the requests it gets.
func wsUpgradeServer(t *testing.T) (addr string, reqs <-chan *http.Request) {
	t.Helper()
	got := make(chan *http.Request, 16)
	us := new(upgrade.Server)
	us.Handle("websocket", &websocket.Handler{
		Subprotocols: []string{"chat"},
		Serve: func(c *upgrade.Conn, _ string) {
			_, _ = io.WriteString(c, "via "+c.Request.Proto+"|")
			_, _ = io.Copy(c, c)
			_ = c.CloseWrite()
		},
	})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Clone(context.Background())
		us.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		ts.Close()
		assert.NoError(t, us.Close())
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		assert.NoError(t, us.Shutdown(ctx))
	})
	return ts.Listener.Addr().String(), got
}

// ---- the tests ----

// TestH3ProxyWebSocket: a WebSocket over HTTP/3 (RFC 9220, no key)
// reaches an HTTP/1.1 upgrade.Server as the RFC 6455 handshake, with a
// fresh Sec-WebSocket-Key the backend's own check accepts; the client's
// 200 carries the subprotocol and no Sec-WebSocket-Accept. Bytes flow
// both ways, the client's FIN reaches the backend, the backend's end
// reaches the client as FIN, and the proxy logs the stream as HTTP/3.0.
func TestH3ProxyWebSocket(t *testing.T) {
	addr, reqs := wsUpgradeServer(t)
	hp := startH3Proxy(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := websocket.Dial(ctx, "wss://"+hp.addr+"/chat", &websocket.DialOptions{Dialer: h3Dialer(t), Subprotocols: []string{"chat"}})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, 3, c.Request.ProtoMajor)
	assert.Equal(t, http.StatusOK, c.Response.StatusCode)
	assert.Equal(t, "chat", c.Response.Header.Get("Sec-Websocket-Protocol"))
	assert.Empty(t, c.Response.Header.Values("Sec-Websocket-Accept"), "the accept value answers the proxy's key")
	assert.Empty(t, c.Response.Header.Values("Upgrade"))
	assert.Empty(t, c.Response.Header.Values("Connection"))

	req := <-reqs
	assert.Equal(t, http.MethodGet, req.Method)
	assert.Equal(t, "HTTP/1.1", req.Proto)
	assert.Equal(t, "/chat", req.URL.Path)
	assert.Equal(t, "websocket", req.Header.Get("Upgrade"))
	key, err := base64.StdEncoding.DecodeString(req.Header.Get("Sec-Websocket-Key"))
	require.NoError(t, err)
	assert.Len(t, key, 16)
	assert.Equal(t, "13", req.Header.Get("Sec-Websocket-Version"))
	assert.Empty(t, req.Header.Values(":protocol"))

	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	greeting := make([]byte, len("via HTTP/1.1|"))
	_, err = io.ReadFull(c, greeting)
	require.NoError(t, err)
	assert.Equal(t, "via HTTP/1.1|", string(greeting))
	h3RoundTrip(t, c, "over QUIC")
	h3RoundTrip(t, c, strings.Repeat("x", 128<<10))
	assert.Equal(t, map[string]int{"websocket": 1}, hp.p.ActiveConns())
	require.NoError(t, c.CloseWrite())
	rest, err := io.ReadAll(c)
	require.NoError(t, err, "the backend's end reaches the client as FIN")
	assert.Empty(t, rest)
	hp.waitIdle(t)
	assert.Regexp(t, `protocol=websocket remote=127\.0\.0\.1:\d+ proto=HTTP/3\.0 backend=`, hp.logLine(t, "closed by client"))

	// A second WebSocket gets a key of its own.
	c2, err := websocket.Dial(ctx, "wss://"+hp.addr+"/", &websocket.DialOptions{Dialer: h3Dialer(t)})
	require.NoError(t, err)
	require.NoError(t, c2.Close())
	assert.NotEqual(t, req.Header.Get("Sec-Websocket-Key"), (<-reqs).Header.Get("Sec-Websocket-Key"))
}

// h3RoundTrip sends msg on an echo and checks that it comes back.
func h3RoundTrip(t *testing.T, c io.ReadWriter, msg string) {
	t.Helper()
	written := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, msg)
		written <- err
	}()
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	require.NoError(t, <-written)
	require.Equal(t, msg, string(got))
}

// TestH3ProxyBadSwitchIs502: a backend whose 101 does not answer the
// HTTP/3 client's request — a Sec-WebSocket-Accept that does not match the
// proxy's key, or a protocol the client did not offer — gets the client a
// 502, never a switch; the backend connection is closed, and the client's
// QUIC connection serves the next stream.
func TestH3ProxyBadSwitchIs502(t *testing.T) {
	closed := make(chan error, 4)
	b := startH1Backend(t, func(nc *net.TCPConn, br *bufio.Reader, req *http.Request) {
		var err error
		switch req.URL.Path {
		case "/wrong-accept":
			err = switch101(nc, "websocket", "", "Sec-WebSocket-Accept: "+websocket.AcceptKey("another key"))
		case "/wrong-protocol":
			err = switch101(nc, "chat", "")
		case "/no-accept":
			err = switch101(nc, "websocket", "")
		}
		if err == nil {
			_, err = br.ReadByte()
		}
		closed <- err
	})
	hp := startH3Proxy(t, b.addr())
	d := h3Dialer(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, path := range []string{"/wrong-accept", "/wrong-protocol", "/no-accept"} {
		_, err := websocket.Dial(ctx, "wss://"+hp.addr+path, &websocket.DialOptions{Dialer: d})
		var re *upgrade.ResponseError
		require.ErrorAs(t, err, &re, path)
		assert.Equal(t, http.StatusBadGateway, re.StatusCode, path)
		assert.Equal(t, "HTTP/3.0", re.Proto, path)
		assert.Empty(t, re.Header.Values("Sec-Websocket-Accept"), path)
		select {
		case err := <-closed:
			assert.ErrorIs(t, err, io.EOF, "%s: the proxy closes the backend connection", path)
		case <-time.After(testTimeout):
			t.Fatalf("%s: the backend connection was kept open", path)
		}
	}
	assert.Contains(t, hp.log.String(), "Sec-WebSocket-Accept does not match")
	hp.waitIdle(t)
}

// TestH3ProxyKeepsBytesBehind101: bytes a backend sends in the same write
// as its 101 reach the HTTP/3 client first, before the echo; a protocol
// other than websocket passes with no WebSocket field added.
func TestH3ProxyKeepsBytesBehind101(t *testing.T) {
	b := startH1Backend(t, func(nc *net.TCPConn, br *bufio.Reader, req *http.Request) {
		if switch101(nc, "chat", "hello behind the 101|", "X-Backend: yes") == nil {
			echoUntilEOF(nc, br)
		}
	})
	hp := startH3Proxy(t, b.addr())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := h3Dialer(t).Dial(ctx, hp.url("/room"), upgrade.Protocol{Name: "chat"})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "yes", c.Response.Header.Get("X-Backend"))
	req := b.request(t)
	assert.Equal(t, "chat", req.Header.Get("Upgrade"))
	assert.Empty(t, req.Header.Values("Sec-Websocket-Key"))

	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	first := make([]byte, len("hello behind the 101|"))
	_, err = io.ReadFull(c, first)
	require.NoError(t, err)
	assert.Equal(t, "hello behind the 101|", string(first))
	h3RoundTrip(t, c, "and then the echo")
	require.NoError(t, c.CloseWrite())
	rest, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Empty(t, rest)
	hp.waitIdle(t)
}

// TestH3ProxyBackendEndsStream: the backend's close or half-close ends the
// sending side of the HTTP/3 client's stream with FIN, after the bytes it
// sent, though the client never writes; the client's FIN then ends the
// pair, the backend seeing EOF. A backend's reset resets the stream with
// H3_CONNECT_ERROR (RFC 9114 §8.1) and ends the pair at once.
func TestH3ProxyBackendEndsStream(t *testing.T) {
	for _, how := range []string{"close", "half-close", "reset"} {
		t.Run(how, func(t *testing.T) {
			backendGot := make(chan error, 1)
			b := startH1Backend(t, func(nc *net.TCPConn, br *bufio.Reader, req *http.Request) {
				if switch101(nc, "chat", "bye") != nil {
					return
				}
				switch how {
				case "half-close":
					_ = nc.CloseWrite()
					_, err := br.ReadByte()
					backendGot <- err
				case "reset":
					time.Sleep(50 * time.Millisecond) // "bye" first
					_ = nc.SetLinger(0)
				}
			})
			hp := startH3Proxy(t, b.addr())
			rs, resp := dialRawH3(t, hp.addr).connect(t, hp.addr, "/", "chat")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			got, err := io.ReadAll(rs)
			if how == "reset" {
				var se *quic.StreamError
				require.ErrorAs(t, err, &se, "got %q", got)
				assert.True(t, se.Remote)
				assert.Equal(t, quic.StreamErrorCode(qhttp3.ErrCodeConnectError), se.ErrorCode)
				hp.waitIdle(t)
				assert.Contains(t, hp.logLine(t, "reset by backend"), "proto=HTTP/3.0")
				return
			}
			require.NoError(t, err, "FIN")
			assert.Equal(t, "bye", string(got))
			assert.Equal(t, map[string]int{"chat": 1}, hp.p.ActiveConns(), "the client may still send")
			require.NoError(t, rs.Close())
			hp.waitIdle(t)
			if how == "half-close" {
				select {
				case err := <-backendGot:
					assert.ErrorIs(t, err, io.EOF)
				case <-time.After(testTimeout):
					t.Fatal("the backend connection was not ended")
				}
			}
			assert.Contains(t, hp.logLine(t, "closed by backend"), "proto=HTTP/3.0")
		})
	}
}

// TestH3ProxyClientResetClosesBackend: the HTTP/3 client resetting its
// stream, or closing its QUIC connection with the stream open, resets the
// backend connection, as a TCP reset would, and the proxy logs a reset by
// the client (not its own shutdown).
func TestH3ProxyClientResetClosesBackend(t *testing.T) {
	for _, how := range []string{"stream reset", "connection closed"} {
		t.Run(how, func(t *testing.T) {
			readErr := make(chan error, 1)
			b := startH1Backend(t, func(nc *net.TCPConn, br *bufio.Reader, req *http.Request) {
				if switch101(nc, "chat", "") != nil {
					return
				}
				_, err := io.Copy(io.Discard, br)
				readErr <- err
			})
			hp := startH3Proxy(t, b.addr())
			rc := dialRawH3(t, hp.addr)
			rs, resp := rc.connect(t, hp.addr, "/", "chat")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			_, err := rs.Write([]byte("x"))
			require.NoError(t, err)
			if how == "stream reset" {
				rs.CancelWrite(quic.StreamErrorCode(qhttp3.ErrCodeRequestCanceled))
				rs.CancelRead(quic.StreamErrorCode(qhttp3.ErrCodeRequestCanceled))
			} else {
				require.NoError(t, rc.cc.CloseWithError(quic.ApplicationErrorCode(qhttp3.ErrCodeNoError), ""))
			}
			select {
			case err := <-readErr:
				assert.True(t, errors.Is(err, syscall.ECONNRESET), "the backend sees a reset, got %v", err)
			case <-time.After(testTimeout):
				t.Fatal("the backend connection was not ended")
			}
			hp.waitIdle(t)
			assert.Contains(t, hp.logLine(t, "reset by client"), "proto=HTTP/3.0")
		})
	}
}

// TestH3ProxyRefusals: a backend's refusal reaches the HTTP/3 client
// without Upgrade or Connection fields, which HTTP/3 lacks: a 426 as 400,
// another status as it is, with its body; a 2xx without a switch is a
// 502, as it would read as a switched stream; h2c is refused by the proxy
// itself. None of them ends the client's QUIC connection.
func TestH3ProxyRefusals(t *testing.T) {
	b := startH1Backend(t, func(nc *net.TCPConn, br *bufio.Reader, req *http.Request) {
		switch req.URL.Path {
		case "/required":
			_, _ = io.WriteString(nc, "HTTP/1.1 426 Upgrade Required\r\nUpgrade: chat/2\r\nConnection: Upgrade\r\nContent-Length: 4\r\n\r\nnope")
		case "/forbidden":
			_, _ = io.WriteString(nc, "HTTP/1.1 403 Forbidden\r\nX-Why: policy\r\nContent-Length: 6\r\n\r\ndenied")
		case "/ok":
			_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	hp := startH3Proxy(t, b.addr())
	rc := dialRawH3(t, hp.addr)
	for _, tc := range []struct {
		path, protocol string
		status         int
		body           string
	}{
		{"/required", "chat", http.StatusBadRequest, "nope"},
		{"/forbidden", "chat", http.StatusForbidden, "denied"},
		{"/ok", "chat", http.StatusBadGateway, ""},
		{"/", "h2c", http.StatusForbidden, ""},
	} {
		rs, resp := rc.connect(t, hp.addr, tc.path, tc.protocol)
		assert.Equal(t, tc.status, resp.StatusCode, tc.path)
		assert.Empty(t, resp.Header.Values("Upgrade"), tc.path)
		assert.Empty(t, resp.Header.Values("Connection"), tc.path)
		body, err := io.ReadAll(rs)
		require.NoError(t, err, tc.path)
		if tc.body != "" {
			assert.Equal(t, tc.body, string(body), tc.path)
		}
		if tc.path == "/forbidden" {
			assert.Equal(t, "policy", resp.Header.Get("X-Why"))
		}
	}
	assert.NoError(t, rc.cc.Context().Err(), "the connection serves on")
	assert.Contains(t, hp.logLine(t, "refused by backend with 426"), "proto=HTTP/3.0")
	hp.waitIdle(t)
}

// TestH3ProxyShutdownGrace: during the Proxy's Shutdown an HTTP/3 pair
// keeps relaying and a new extended CONNECT is answered 503; Shutdown
// returns once the client ends its pair. A pair still open when the grace
// period ends is closed, and Shutdown says so.
func TestH3ProxyShutdownGrace(t *testing.T) {
	b := startH1Backend(t, func(nc *net.TCPConn, br *bufio.Reader, req *http.Request) {
		if switch101(nc, "chat", "") == nil {
			echoUntilEOF(nc, br)
		}
	})
	for _, clientEnds := range []bool{true, false} {
		hp := startH3Proxy(t, b.addr())
		d := h3Dialer(t)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		c, err := d.Dial(ctx, hp.url("/"), upgrade.Protocol{Name: "chat"})
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))

		const grace = 500 * time.Millisecond
		sctx, scancel := context.WithTimeout(context.Background(), grace)
		defer scancel()
		shut := make(chan error, 1)
		start := time.Now()
		go func() { shut <- hp.p.Shutdown(sctx) }()
		require.Eventually(t, func() bool {
			_, err := d.Dial(ctx, hp.url("/"), upgrade.Protocol{Name: "chat"})
			var re *upgrade.ResponseError
			return errors.As(err, &re) && re.StatusCode == http.StatusServiceUnavailable
		}, testTimeout, 5*time.Millisecond, "new streams are refused during Shutdown")
		h3RoundTrip(t, c, "still relayed")

		if clientEnds {
			require.NoError(t, c.CloseWrite())
			_, err = io.ReadAll(c)
			require.NoError(t, err)
			assert.NoError(t, <-shut)
			assert.Less(t, time.Since(start), grace)
		} else {
			assert.ErrorIs(t, <-shut, context.DeadlineExceeded)
			assert.GreaterOrEqual(t, time.Since(start), grace)
			_, err = io.ReadAll(c)
			assert.NoError(t, err, "the stream ends when the grace period does")
			assert.Contains(t, hp.logLine(t, "closed by proxy shutdown"), "proto=HTTP/3.0")
		}
		require.NoError(t, c.Close())
		hp.waitIdle(t)
	}
}
