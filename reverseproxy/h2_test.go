package reverseproxy

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/go-upgrade/upgrade/internal/wskey"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// TestProxyBridgesHTTP2WebSocket: an HTTP/2 WebSocket (RFC 8441 §5, no
// key) reaches an HTTP/1.1 backend as an RFC 6455 opening handshake — a
// GET with a fresh 16-byte Sec-WebSocket-Key and version 13 — whose
// Sec-WebSocket-Accept the proxy checks and keeps from the client's 200.
// Bytes then flow both ways, those behind the backend's 101 first, and
// the client's END_STREAM is the backend's EOF.
func TestProxyBridgesHTTP2WebSocket(t *testing.T) {
	b := startBackend(t, wsBackend(false, "from-backend|"))
	p := proxyTo(b)
	addr := startH2Proxy(t, p)
	c := wiretest.DialH2(t, addr, nil)
	st := c.Connect("http", "example.com", "/chat", "websocket",
		[2]string{"sec-websocket-version", "13"}, [2]string{"sec-websocket-protocol", "chat"})
	h := st.Header()
	require.Equal(t, []string{"200"}, h[":status"])
	assert.NotContains(t, h, "sec-websocket-accept", "the accept value answers the proxy's key, not the client's")
	assert.Equal(t, []string{"chat"}, h["sec-websocket-protocol"])

	req := b.request()
	assert.Equal(t, http.MethodGet, req.Method)
	assert.Equal(t, "/chat", req.URL.Path)
	assert.Equal(t, "websocket", req.Header.Get("Upgrade"))
	assert.True(t, hasConnectionOption(req.Header, "upgrade"))
	key, err := base64.StdEncoding.DecodeString(req.Header.Get("Sec-WebSocket-Key"))
	require.NoError(t, err)
	assert.Len(t, key, 16)
	assert.Equal(t, "13", req.Header.Get("Sec-WebSocket-Version"))
	assert.Empty(t, req.Header.Values(":protocol"))

	assert.Equal(t, "from-backend|", string(st.Read(len("from-backend|"))))
	st.Write([]byte("ping"))
	assert.Equal(t, "ping", string(st.Read(4)))
	assert.Equal(t, map[string]int{"websocket": 1}, p.ActiveConns())
	st.CloseWrite()
	rest, ended, reset := st.End()
	assert.Empty(t, rest)
	assert.True(t, ended, "the backend's half-close ends the stream once both sides are done")
	assert.Nil(t, reset)
	require.Eventually(t, func() bool { return len(p.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond)
}

// TestProxyHTTP2BadAcceptIs502: a backend whose Sec-WebSocket-Accept does
// not answer the proxy's key gets the HTTP/2 client a 502, and only that
// stream fails: the client's connection goes on (no GOAWAY).
func TestProxyHTTP2BadAcceptIs502(t *testing.T) {
	bad := startBackend(t, wsBackend(true, ""))
	addr := startH2Proxy(t, proxyTo(bad))
	c := wiretest.DialH2(t, addr, nil)
	st := c.Connect("http", "example.com", "/", "websocket", [2]string{"sec-websocket-version", "13"})
	assert.Equal(t, "502", st.Status())
	st2 := c.Connect("http", "example.com", "/", "websocket", [2]string{"sec-websocket-version", "13"})
	assert.Equal(t, "502", st2.Status(), "the connection serves another stream")
	assert.Nil(t, c.GoAway())
}

// TestProxyHTTP2Protocols: any allowed protocol is bridged (echo/1 with no
// WebSocket fields added); h2c is not forwarded by default, a refusal by
// the backend is relayed (a 426 as 400, since HTTP/2 has no Upgrade), and
// none of them ends the client's connection.
func TestProxyHTTP2Protocols(t *testing.T) {
	var refuse atomic.Bool
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if refuse.Load() {
			_, _ = io.WriteString(nc, "HTTP/1.1 426 Upgrade Required\r\nUpgrade: echo/2\r\nConnection: Upgrade\r\nContent-Length: 4\r\n\r\nnope")
			return
		}
		echoScript(nc, br, req)
	})
	addr := startH2Proxy(t, proxyTo(b))
	c := wiretest.DialH2(t, addr, nil)

	st := c.Connect("http", "example.com", "/", "echo/1")
	require.Equal(t, "200", st.Status())
	req := b.request()
	assert.Equal(t, "echo/1", req.Header.Get("Upgrade"))
	assert.Empty(t, req.Header.Get("Sec-WebSocket-Key"))
	st.Write([]byte("hello"))
	assert.Equal(t, "hello", string(st.Read(5)))
	st.CloseWrite()
	_, ended, _ := st.End()
	assert.True(t, ended)

	st = c.Connect("http", "example.com", "/", "h2c")
	assert.Equal(t, "403", st.Status(), "h2c is not forwarded by default")

	refuse.Store(true)
	st = c.Connect("http", "example.com", "/", "echo/1")
	h := st.Header()
	assert.Equal(t, []string{"400"}, h[":status"])
	assert.NotContains(t, h, "upgrade")
	assert.NotContains(t, h, "connection")
	rest, _, _ := st.End()
	assert.Equal(t, "nope", string(rest))
	assert.Nil(t, c.GoAway())
}

// TestProxyHTTP2ResetPassedOn: the HTTP/2 client resetting its stream
// resets the backend connection, as a TCP reset would.
func TestProxyHTTP2ResetPassedOn(t *testing.T) {
	readErr := make(chan error, 1)
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if backend101(nc, "echo/1", nil, "") != nil {
			return
		}
		_, err := io.Copy(io.Discard, br)
		readErr <- err
	})
	addr := startH2Proxy(t, proxyTo(b))
	c := wiretest.DialH2(t, addr, nil)
	st := c.Connect("http", "example.com", "/", "echo/1")
	require.Equal(t, "200", st.Status())
	st.Write([]byte("x"))
	st.Reset(http2.ErrCodeCancel)
	select {
	case err := <-readErr:
		assert.True(t, errors.Is(err, syscall.ECONNRESET), "the backend sees a reset, got %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the backend connection was not ended")
	}
}

// TestProxyHTTP2BackendCloseEndsStream: the backend's close reaches an
// HTTP/2 client within a second, though the client never writes: a FIN
// (half-close or close) ends the stream with END_STREAM and the proxy
// closes its backend connection; a reset resets the stream (with
// INTERNAL_ERROR, the code net/http's server resets with). Both sides are
// gone once either is.
func TestProxyHTTP2BackendCloseEndsStream(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"close", "END_STREAM"},
		{"half-close", "END_STREAM"},
		{"reset", "RST_STREAM INTERNAL_ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxyClosed := make(chan error, 1)
			b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
				if backend101(nc, "echo/1", nil, "bye") != nil {
					return
				}
				switch tc.name {
				case "half-close":
					_ = nc.(*net.TCPConn).CloseWrite()
					_, err := br.ReadByte()
					proxyClosed <- err
				case "reset":
					time.Sleep(50 * time.Millisecond) // "bye" first
					_ = nc.(*net.TCPConn).SetLinger(0)
				}
			})
			p := proxyTo(b)
			addr := startH2Proxy(t, p)
			c := wiretest.DialH2(t, addr, nil)
			st := c.Connect("http", "example.com", "/", "echo/1")
			require.Equal(t, "200", st.Status())
			if tc.name != "reset" {
				assert.Equal(t, "bye", string(st.Read(3)))
			}
			assert.Equal(t, tc.want, streamEnd(c, st.ID, time.Second), "frames: %q", c.Log())
			if tc.name == "half-close" {
				select {
				case err := <-proxyClosed:
					assert.ErrorIs(t, err, io.EOF, "the proxy closes its backend connection")
				case <-time.After(time.Second):
					t.Error("the proxy kept its backend connection open")
				}
			}
			require.Eventually(t, func() bool { return len(p.ActiveConns()) == 0 }, time.Second, 5*time.Millisecond,
				"the pair is still relayed: %v", p.ActiveConns())
			assert.Nil(t, c.GoAway())
		})
	}
}

// wsRoute is a websocket route for a test backend: its Accepter answers
// an HTTP/1.1 key as RFC 6455 says, and the protocol says which HTTP
// version the request came over, then echoes.
type wsRoute struct{}

func (wsRoute) AcceptUpgrade(r *http.Request, h http.Header) error {
	if r.ProtoMajor == 1 {
		h.Set("Sec-WebSocket-Accept", wskey.AcceptString(r.Header.Get("Sec-WebSocket-Key")))
	}
	return nil
}

func (wsRoute) ServeUpgrade(c *upgrade.Conn) {
	_, _ = io.WriteString(c, "via "+c.Request.Proto+"|")
	echo(c)
}

// TestProxyHTTP2DialerUpgradesOverHTTP11: a Proxy whose Dialer can switch
// HTTP/2 streams (HTTP2 set) still reaches the backend with an HTTP/1.1
// upgrade, as net/http's Transport does for httputil.ReverseProxy: both
// kinds of client (HTTP/1.1 Upgrade, HTTP/2 extended CONNECT) get a
// correct switch — a 101 naming the protocol with the Sec-WebSocket-Accept
// of their key, or a 200 — from both kinds of backend (HTTP/1.1 only, and
// one serving extended CONNECT over HTTP/2 too).
func TestProxyHTTP2DialerUpgradesOverHTTP11(t *testing.T) {
	h1 := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if req.Header.Get("Upgrade") == "websocket" {
			wsBackend(false, "via HTTP/1.1|")(nc, br, req)
			return
		}
		echoScript(nc, br, req)
	})
	up := echoServer("echo/1")
	up.Handle("websocket", wsRoute{})
	protos := make(chan string, 16)
	h2 := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos <- r.Proto
		up.ServeHTTP(w, r)
	}))
	h2.Config.Protocols = new(http.Protocols)
	h2.Config.Protocols.SetHTTP1(true)
	h2.Config.Protocols.SetUnencryptedHTTP2(true)
	h2.Start()
	t.Cleanup(func() {
		h2.Close()
		closeAndWait(t, up)
	})
	h2URL, err := url.Parse(h2.URL)
	require.NoError(t, err)

	for _, backend := range []struct {
		name string
		url  *url.URL
	}{{"HTTP/1.1 backend", h1.url()}, {"HTTP/2 backend", h2URL}} {
		t.Run(backend.name, func(t *testing.T) {
			tr := newTransport(t)
			p := New(backend.url)
			p.Dialer = &upgrade.Dialer{Proxy: noProxy, HTTP2: tr}
			addr := startH2Proxy(t, p)

			c := wiretest.Dial(t, addr)
			c.Send(upgradeReq("GET", "websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"))
			resp := c.Response(http.MethodGet)
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			assert.Equal(t, []string{"websocket"}, resp.Header["Upgrade"])
			assert.Equal(t, []string{"Upgrade"}, resp.Header["Connection"])
			assert.Equal(t, []string{"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}, resp.Header["Sec-Websocket-Accept"])
			assert.Equal(t, "via HTTP/1.1|", c.ReadN(len("via HTTP/1.1|")))
			checkEcho(t, c.NC, c.BR, "over HTTP/1.1")

			c = wiretest.Dial(t, addr)
			c.Send(upgradeReq("GET", "echo/1"))
			resp = c.Response(http.MethodGet)
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			assert.Equal(t, []string{"echo/1"}, resp.Header["Upgrade"])
			checkEcho(t, c.NC, c.BR, "echo over HTTP/1.1")

			hc := wiretest.DialH2(t, addr, nil)
			ws := hc.Connect("http", "example.com", "/", "websocket", [2]string{"sec-websocket-version", "13"})
			h := ws.Header()
			require.Equal(t, []string{"200"}, h[":status"])
			assert.NotContains(t, h, "sec-websocket-accept")
			assert.Equal(t, "via HTTP/1.1|", string(ws.Read(len("via HTTP/1.1|"))))
			ws.Write([]byte("over HTTP/2"))
			assert.Equal(t, "over HTTP/2", string(ws.Read(len("over HTTP/2"))))

			e := hc.Connect("http", "example.com", "/", "echo/1")
			require.Equal(t, "200", e.Status())
			e.Write([]byte("echo over HTTP/2"))
			assert.Equal(t, "echo over HTTP/2", string(e.Read(len("echo over HTTP/2"))))
		})
	}
	close(protos)
	for proto := range protos {
		assert.Equal(t, "HTTP/1.1", proto, "the backend is reached over HTTP/1.1")
	}
}
