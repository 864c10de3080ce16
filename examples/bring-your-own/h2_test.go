package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	// net/http's HTTP/2 server advertises and serves extended CONNECT
	// (RFC 8441) only with this package initialized before it.
	_ "github.com/go-upgrade/upgrade/extconnect"
	"github.com/go-upgrade/upgrade/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// libraries are the paths of the three libraries' echoes.
var libraries = []string{"/gorilla", "/coder", "/gobwas"}

// h2Server is newServer served over HTTP/2, with the options to reach it
// over HTTP/2 with websocket.Dial.
type h2Server struct {
	up   *upgrade.Server
	url  string // ws:// or wss://, no path
	opts websocket.DialOptions
}

// startH2 serves newServer(0) on 127.0.0.1 over HTTP/1.1 and HTTP/2: by
// ALPN over TLS if secure, with prior knowledge over cleartext otherwise.
// At cleanup every switched connection is closed, the handlers awaited
// and the client's connections closed.
func startH2(t *testing.T, secure bool) *h2Server {
	t.Helper()
	require.True(t, upgrade.ExtendedConnect(), "the test binary imports extconnect")
	up := newServer(0)
	ts := httptest.NewUnstartedServer(up)
	tr := new(upgrade.HTTP2Transport)
	s := &h2Server{up: up}
	s.opts.Dialer = &upgrade.Dialer{
		Proxy:            func(*http.Request) (*url.URL, error) { return nil, nil },
		HandshakeTimeout: 10 * time.Second,
		HTTP2:            tr,
	}
	if secure {
		ts.EnableHTTP2 = true
		ts.StartTLS()
		pool := x509.NewCertPool()
		pool.AddCert(ts.Certificate())
		s.opts.Dialer.TLSClientConfig = &tls.Config{RootCAs: pool}
		s.url = "wss://" + ts.Listener.Addr().String()
	} else {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		ts.Config.Protocols = &p
		ts.Start()
		tr.UnencryptedHTTP2 = true
		s.url = "ws://" + ts.Listener.Addr().String()
	}
	t.Cleanup(func() {
		assert.NoError(t, up.Close())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, up.Shutdown(ctx))
		tr.CloseIdleConnections()
		ts.Close()
	})
	return s
}

// dial opens a WebSocket to path over HTTP/2 with websocket.Dial, offering
// the subprotocols given, and checks that it is an HTTP/2 stream.
func (s *h2Server) dial(t *testing.T, path string, subprotocols ...string) *upgrade.Conn {
	t.Helper()
	opts := s.opts
	opts.Subprotocols = subprotocols
	c, err := websocket.Dial(timeout(t), s.url+path, &opts)
	require.NoError(t, err, path)
	t.Cleanup(func() { c.Close() })
	require.Equal(t, 2, c.Request.ProtoMajor, "%s: an extended CONNECT on an HTTP/2 stream", path)
	require.Equal(t, http.StatusOK, c.Response.StatusCode, path)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return c
}

// eachTransport runs f over TLS (ALPN h2) and over cleartext with prior
// knowledge.
func eachTransport(t *testing.T, f func(t *testing.T, s *h2Server)) {
	for _, secure := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "prior-knowledge"}[secure], func(t *testing.T) {
			f(t, startH2(t, secure))
		})
	}
}

// TestHTTP2Echo: each library's handler, registered unchanged, switches
// an HTTP/2 extended CONNECT and echoes text and binary messages in its
// own framing; the 200 names the subprotocol it selected, and the stream
// is counted while it lasts.
func TestHTTP2Echo(t *testing.T) {
	eachTransport(t, func(t *testing.T, s *h2Server) {
		// More than a DATA frame holds; less than coder's default read
		// limit (32 KiB).
		binary := make([]byte, 20<<10)
		for i := range binary {
			binary[i] = byte(i * 7)
		}
		for _, path := range libraries {
			c := s.dial(t, path, "other", subprotocol)
			assert.Equal(t, subprotocol, c.Response.Header.Get("Sec-WebSocket-Protocol"), "%s: the 200 names the subprotocol", path)
			assert.Empty(t, c.Response.Header["Sec-Websocket-Accept"], path)

			require.NoError(t, wsutil.WriteClientText(c, []byte("hello "+path)))
			msg, op, err := wsutil.ReadServerData(c)
			require.NoError(t, err, path)
			assert.Equal(t, ws.OpText, op, path)
			assert.Equal(t, "hello "+path, string(msg))

			require.NoError(t, wsutil.WriteClientBinary(c, binary))
			msg, op, err = wsutil.ReadServerData(c)
			require.NoError(t, err, path)
			assert.Equal(t, ws.OpBinary, op, path)
			assert.Equal(t, binary, msg, path)
		}
		assert.Equal(t, map[string]int{"websocket": 3}, s.up.ActiveConns())
	})
}

// TestHTTP2NoSubprotocol: a client offering none, or none the libraries
// know, gets a 200 naming none.
func TestHTTP2NoSubprotocol(t *testing.T) {
	eachTransport(t, func(t *testing.T, s *h2Server) {
		for _, path := range libraries {
			for _, offer := range [][]string{nil, {"other"}} {
				c := s.dial(t, path, offer...)
				assert.Empty(t, c.Response.Header["Sec-Websocket-Protocol"], "%s offering %q", path, offer)
				require.NoError(t, wsutil.WriteClientText(c, []byte("ping")))
				msg, err := wsutil.ReadServerText(c)
				require.NoError(t, err, path)
				assert.Equal(t, "ping", string(msg), path)
				c.Close()
			}
		}
	})
}

// TestHTTP2RefusedOrigin: over HTTP/2 too, a cross-origin handshake gets
// the library's own 403 (gorilla's and coder's checks, the example's for
// gobwas) as the stream's answer, and nothing is counted; the same
// origin switches.
func TestHTTP2RefusedOrigin(t *testing.T) {
	eachTransport(t, func(t *testing.T, s *h2Server) {
		bodies := map[string]string{
			"/gorilla": "Forbidden\n",
			"/coder":   `request Origin "evil.example" is not authorized for Host`,
			"/gobwas":  "Forbidden\n",
		}
		for _, path := range libraries {
			opts := s.opts
			opts.Header = http.Header{"Origin": {"https://evil.example"}}
			c, err := websocket.Dial(timeout(t), s.url+path, &opts)
			require.Nil(t, c, path)
			var refused *upgrade.ResponseError
			require.ErrorAs(t, err, &refused, path)
			assert.Equal(t, http.StatusForbidden, refused.StatusCode, path)
			assert.Equal(t, "HTTP/2.0", refused.Proto, path)
			assert.Contains(t, string(refused.Body), bodies[path], "%s: the library's own answer", path)

			u, err := url.Parse(s.url)
			require.NoError(t, err)
			opts.Header = http.Header{"Origin": {"https://" + u.Host}}
			c, err = websocket.Dial(timeout(t), s.url+path, &opts)
			require.NoError(t, err, "%s: same origin", path)
			assert.Equal(t, 2, c.Request.ProtoMajor, path)
			c.Close()
		}
		assert.Eventually(t, func() bool { return len(s.up.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond,
			"%v", s.up.ActiveConns())
	})
}

// TestHTTP2Shutdown: Shutdown tells every HTTP/2 WebSocket 1001 Going
// Away, in each library's framing; the client answers the close, the
// handlers return, each stream ends, and Shutdown returns before its
// deadline with nothing left counted.
func TestHTTP2Shutdown(t *testing.T) {
	eachTransport(t, func(t *testing.T, s *h2Server) {
		conns := make(map[string]*upgrade.Conn)
		for _, path := range libraries {
			c := s.dial(t, path)
			require.NoError(t, wsutil.WriteClientText(c, []byte("ping")))
			msg, err := wsutil.ReadServerText(c)
			require.NoError(t, err, path)
			require.Equal(t, "ping", string(msg), path)
			conns[path] = c
		}
		require.Equal(t, map[string]int{"websocket": 3}, s.up.ActiveConns())

		type result struct {
			path string
			err  error // of the read that got the close frame
			end  error // of the reads after it, until the stream ends
		}
		results := make(chan result, len(conns))
		for path, c := range conns {
			go func() {
				_, _, err := wsutil.ReadServerData(c) // answers the close frame
				_, end := io.Copy(io.Discard, c)
				results <- result{path, err, end}
			}()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		begin := time.Now()
		require.NoError(t, s.up.Shutdown(ctx), "every handler returned when its client answered the close")
		assert.Less(t, time.Since(begin), 5*time.Second)
		for range conns {
			r := <-results
			var closed wsutil.ClosedError
			require.ErrorAs(t, r.err, &closed, r.path)
			assert.Equal(t, ws.StatusGoingAway, closed.Code, r.path)
			assert.Equal(t, goingAway, closed.Reason, r.path)
			assert.NotErrorIs(t, r.end, os.ErrDeadlineExceeded, "%s: the stream ended", r.path)
		}
		assert.Empty(t, s.up.ActiveConns())
	})
}

// TestHTTP2AndHTTP1: on one server, the same routes switch an HTTP/2
// stream and an HTTP/1.1 connection.
func TestHTTP2AndHTTP1(t *testing.T) {
	eachTransport(t, func(t *testing.T, s *h2Server) {
		for _, path := range libraries {
			h2 := s.dial(t, path, subprotocol)
			opts := s.opts
			d := *opts.Dialer
			d.HTTP2 = nil
			opts.Dialer = &d
			opts.Subprotocols = []string{subprotocol}
			h1, err := websocket.Dial(timeout(t), s.url+path, &opts)
			require.NoError(t, err, path)
			defer h1.Close()
			require.NoError(t, h1.SetDeadline(time.Now().Add(10*time.Second)))
			assert.Equal(t, 1, h1.Request.ProtoMajor, path)
			assert.Equal(t, http.StatusSwitchingProtocols, h1.Response.StatusCode, path)
			assert.Equal(t, subprotocol, h1.Response.Header.Get("Sec-WebSocket-Protocol"), path)
			for i, c := range []io.ReadWriter{h2, h1} {
				text := fmt.Sprintf("%s over HTTP/%d", path, 2-i)
				require.NoError(t, wsutil.WriteClientText(c, []byte(text)))
				msg, err := wsutil.ReadServerText(c)
				require.NoError(t, err, text)
				assert.Equal(t, text, string(msg))
			}
		}
		assert.Equal(t, map[string]int{"websocket": 6}, s.up.ActiveConns())
	})
}

// TestHTTP2ShutdownUnanswered: a client that does not answer the 1001
// keeps its stream until the end of Shutdown's grace period; then the
// Server closes every stream and nothing is left counted.
func TestHTTP2ShutdownUnanswered(t *testing.T) {
	eachTransport(t, func(t *testing.T, s *h2Server) {
		type result struct {
			path      string
			header    ws.Header
			payload   []byte
			err       error         // of reading the close frame
			signalled time.Duration // when it arrived
			closedAt  time.Duration // when the stream ended
			end       error
		}
		results := make(chan result, len(libraries))
		var begin time.Time
		started := make(chan struct{})
		for _, path := range libraries {
			c := s.dial(t, path)
			go func() {
				<-started
				r := result{path: path}
				r.header, r.payload, r.err = readFrame(c) // unanswered
				r.signalled = time.Since(begin)
				_, r.end = io.Copy(io.Discard, c)
				r.closedAt = time.Since(begin)
				results <- r
			}()
		}
		require.Eventually(t, func() bool { return s.up.ActiveConns()["websocket"] == 3 }, 10*time.Second, 5*time.Millisecond)

		const grace = 500 * time.Millisecond
		begin = time.Now()
		close(started)
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		assert.ErrorIs(t, s.up.Shutdown(ctx), context.DeadlineExceeded, "the streams were still open at the end of the grace period")
		for range libraries {
			r := <-results
			require.NoError(t, r.err, r.path)
			assert.Equal(t, ws.OpClose, r.header.OpCode, r.path)
			code, reason := ws.ParseCloseFrameData(r.payload)
			assert.Equal(t, ws.StatusGoingAway, code, r.path)
			assert.Equal(t, goingAway, reason, r.path)
			assert.Less(t, r.signalled, grace, "%s: told at the start of Shutdown", r.path)
			assert.GreaterOrEqual(t, r.closedAt, grace, "%s: closed at the end of the grace period", r.path)
			assert.NotErrorIs(t, r.end, os.ErrDeadlineExceeded, r.path)
		}
		assert.Eventually(t, func() bool { return len(s.up.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond)
	})
}

// readFrame reads a server's frame of at most 125 bytes of payload (a
// control frame's bound) from r.
func readFrame(r io.Reader) (ws.Header, []byte, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return h, nil, err
	}
	if h.Length > 125 {
		return h, nil, fmt.Errorf("a frame of %d bytes", h.Length)
	}
	p := make([]byte, h.Length)
	_, err = io.ReadFull(r, p)
	return h, p, err
}
