package upgrade

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// startH2Proxy serves p with HTTP/1.1 and HTTP/2 with prior knowledge on
// 127.0.0.1; cleanup closes the relayed pairs and waits for them.
func startH2Proxy(t *testing.T, p *Proxy) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(p)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	ts.Config.Protocols = &protocols
	ts.Start()
	t.Cleanup(func() {
		assert.NoError(t, p.Close())
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx), "still active: %v", p.ActiveConns())
	})
	return ts.Listener.Addr().String()
}

// wsBackend answers an RFC 6455 opening handshake with a correct accept
// value (or a wrong one), the subprotocol asked for, and then the bytes of
// greeting; it echoes until EOF and half-closes.
func wsBackend(wrongAccept bool, greeting string) func(net.Conn, *bufio.Reader, *http.Request) {
	return func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		accept := webSocketAccept(req.Header.Get("Sec-WebSocket-Key"))
		if wrongAccept {
			accept = webSocketAccept("something else")
		}
		extra := []string{"Sec-WebSocket-Accept: " + accept}
		if p := req.Header.Get("Sec-WebSocket-Protocol"); p != "" {
			sub, _, _ := strings.Cut(p, ",")
			extra = append(extra, "Sec-WebSocket-Protocol: "+strings.TrimSpace(sub))
		}
		if backend101(nc, "websocket", extra, greeting) != nil || wrongAccept {
			return
		}
		_, _ = io.Copy(struct{ io.Writer }{nc}, struct{ io.Reader }{br})
		_ = nc.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, nc)
	}
}

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
