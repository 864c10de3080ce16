package reverseproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/go-upgrade/upgrade/internal/wskey"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- forwarding ----

// TestProxyKeepsPipelinedBytesBothWays: bytes the client sent behind its
// request reach the backend, and bytes the backend sent in the same
// write as its 101 reach the client, before anything else.
func TestProxyKeepsPipelinedBytesBothWays(t *testing.T) {
	got := make(chan string, 1)
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if backend101(nc, "echo/1", nil, "from-backend|") != nil {
			return
		}
		got <- readFull(t, br, len("from-client|"))
		_, _ = io.Copy(nc, br)
	})
	addr := startProxy(t, proxyTo(b), nil)
	nc, br, _ := switched(t, addr, upgradeReq("GET", "echo/1")+"from-client|")
	assert.Equal(t, "from-backend|", readFull(t, br, len("from-backend|")))
	assert.Equal(t, "from-client|", <-got)
	_, err := io.WriteString(nc, "later")
	require.NoError(t, err)
	assert.Equal(t, "later", readFull(t, br, 5))
}

// TestProxyLargeTransferIntact sends 8 MiB each way at once through the
// relay (spliced on Linux) and compares every byte.
func TestProxyLargeTransferIntact(t *testing.T) {
	b := startBackend(t, echoScript)
	addr := startProxy(t, proxyTo(b), nil)
	nc, br, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	requireEcho(t, nc, br, 8<<20)
}

// TestProxyRequestHeaders: end-to-end fields are forwarded, hop-by-hop
// ones (those named in Connection included) are not, the forwarding
// fields are added, the client's Host is kept, and only allowed offers
// are forwarded, in the client's order.
func TestProxyRequestHeaders(t *testing.T) {
	b := startBackend(t, echoScript)
	addr := startProxy(t, proxyTo(b), nil)
	switched(t, addr, "GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8443\r\n"+
		"Connection: keep-alive, Upgrade, X-Hop\r\nConnection: X-Other\r\nUpgrade: h2c, echo/1, websocket\r\n"+
		"HTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Hop: secret\r\nX-Other: secret\r\nKeep-Alive: timeout=5\r\n"+
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nX-Forwarded-For: 203.0.113.7\r\n"+
		"Sec-WebSocket-Protocol: chat\r\nCookie: a=b\r\n\r\n")
	req := b.request()
	assert.Equal(t, "/chat?room=1", req.RequestURI)
	assert.Equal(t, "example.com:8443", req.Host, "New keeps the client's Host")
	assert.Equal(t, []string{"echo/1, websocket"}, req.Header["Upgrade"], "h2c is not forwarded by default")
	assert.Equal(t, []string{"Upgrade"}, req.Header["Connection"])
	for _, k := range []string{"X-Hop", "X-Other", "Keep-Alive", "Proxy-Authorization", "Te", "Http2-Settings"} {
		assert.Empty(t, req.Header[k], k)
	}
	assert.Equal(t, "chat", req.Header.Get("Sec-WebSocket-Protocol"))
	assert.Equal(t, "a=b", req.Header.Get("Cookie"))
	assert.Equal(t, "203.0.113.7, 127.0.0.1", req.Header.Get("X-Forwarded-For"))
	assert.Equal(t, "example.com:8443", req.Header.Get("X-Forwarded-Host"))
	assert.Equal(t, "http", req.Header.Get("X-Forwarded-Proto"))
	assert.Equal(t, `for=127.0.0.1;host="example.com:8443";proto=http`, req.Header.Get("Forwarded"))
}

// TestProxy101Header: the 101 relayed names the backend's choice, keeps
// its end-to-end fields and drops its hop-by-hop ones.
func TestProxy101Header(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Secret\r\n"+
			"X-Secret: 1\r\nKeep-Alive: timeout=1\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"+
			"Sec-WebSocket-Protocol: chat\r\nContent-Length: 5\r\n\r\n")
		_, _ = io.Copy(nc, br)
	})
	addr := startProxy(t, proxyTo(b), nil)
	_, _, head := switched(t, addr, upgradeReq("GET", "websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"))
	assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-Websocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-Websocket-Protocol: chat\r\n\r\n", head)
	req := b.request()
	assert.Equal(t, "dGhlIHNhbXBsZSBub25jZQ==", req.Header.Get("Sec-WebSocket-Key"))
}

// TestProxyAllow: the allow-list decides what is forwarded; h2c only
// when listed, with its HTTP2-Settings field named in Connection.
func TestProxyAllow(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	p.Allow = []string{"echo/*", "h2c"}
	addr := startProxy(t, p, nil)

	switched(t, addr, upgradeReq("GET", "websocket, echo/2, h2c"))
	req := b.request()
	assert.Equal(t, "echo/2, h2c", req.Header.Get("Upgrade"))

	switched(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	req = b.request()
	assert.Equal(t, "h2c", req.Header.Get("Upgrade"))
	assert.Equal(t, "AAMAAABkAAQAAP__", req.Header.Get("HTTP2-Settings"))
	assert.Equal(t, "Upgrade, HTTP2-Settings", req.Header.Get("Connection"))

	resp := refused(t, addr, upgradeReq("GET", "websocket"))
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
}

// TestProxyH2CRefusedByDefault: with no Allow, h2c never reaches the
// backend: the endpoint answers 403; the middleware hands next a plain
// request without the upgrade, so a ReverseProxy there cannot forward it.
func TestProxyH2CRefusedByDefault(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	plain := make(chan http.Header, 1)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plain <- r.Header
		_, _ = io.WriteString(w, "plain")
	})
	mux := http.NewServeMux()
	mux.Handle("/only", p)
	mux.Handle("/", p.Middleware(next))
	addr := startProxy(t, p, mux)
	h2cReq := "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, X-Keep\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"

	resp := refused(t, addr, strings.Replace(h2cReq, "%s", "/only", 1))
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	rc := wiretest.Dial(t, addr)
	rc.Send(strings.Replace(h2cReq, "%s", "/", 1))
	resp = rc.Response(http.MethodGet)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "plain", bodyString(t, resp))
	h := <-plain
	assert.Empty(t, h["Upgrade"])
	assert.Empty(t, h["Http2-Settings"])
	assert.Equal(t, []string{"X-Keep"}, h["Connection"])
	select {
	case r := <-b.reqs:
		t.Fatalf("the backend got an h2c request: %v", r.Header)
	default:
	}
}

// TestProxyNotAnUpgrade: the endpoint answers 400 to a plain request,
// the middleware passes it on untouched.
func TestProxyNotAnUpgrade(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	mux := http.NewServeMux()
	mux.Handle("/only", p)
	mux.Handle("/", p.Middleware(plainHandler))
	addr := startProxy(t, p, mux)
	rc := wiretest.Dial(t, addr)
	rc.Send("GET /only HTTP/1.1\r\nHost: x\r\n\r\n")
	assert.Equal(t, http.StatusBadRequest, rc.Response(http.MethodGet).StatusCode)
	rc = wiretest.Dial(t, addr)
	rc.Send("GET /page HTTP/1.1\r\nHost: x\r\nUpgrade: echo/1\r\n\r\n") // no Connection: Upgrade
	resp := rc.Response(http.MethodGet)
	assert.Equal(t, "plain GET /page", bodyString(t, resp))
	rc.Send("GET /page HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	assert.Equal(t, "plain GET /page", bodyString(t, rc.Response(http.MethodGet)))
}

// TestProxyMalformedRequests: malformed and oversized offers, and a
// Transfer-Encoding body, are refused before the backend is dialed.
func TestProxyMalformedRequests(t *testing.T) {
	b := startBackend(t, echoScript)
	addr := startProxy(t, proxyTo(b), nil)
	for _, tc := range []struct {
		req  string
		code int
	}{
		{upgradeReq("GET", "echo/1/2"), http.StatusBadRequest},
		{upgradeReq("GET", "echo 1"), http.StatusBadRequest},
		{upgradeReq("GET", strings.Repeat("p, ", 20)+"q"), http.StatusRequestHeaderFieldsTooLarge},
		{"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", http.StatusBadRequest},
	} {
		resp := refused(t, addr, tc.req)
		assert.Equal(t, tc.code, resp.StatusCode, "%q", tc.req)
	}
	select {
	case r := <-b.reqs:
		t.Fatalf("the backend was dialed: %v", r.Header)
	default:
	}
}

// TestProxyRequestBody: a Content-Length body goes to the backend with
// the request (after the 100 Continue the client expects), and bytes
// behind it are the new protocol's.
func TestProxyRequestBody(t *testing.T) {
	bodies := make(chan string, 1)
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		bodies <- string(body)
		if backend101(nc, "echo/1", nil, "") == nil {
			_, _ = io.Copy(nc, br)
		}
	})
	p := proxyTo(b)
	p.MaxRequestBody = 16
	addr := startProxy(t, p, nil)
	c := wiretest.Dial(t, addr)
	c.Send("POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	assert.Equal(t, "HTTP/1.1 100 Continue\r\n\r\n", c.Head())
	c.Send("hellostream")
	head := c.Head()
	require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), head)
	assert.Equal(t, "hello", <-bodies)
	assert.Equal(t, "stream", c.ReadN(6))

	resp := refused(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\nContent-Length: 17\r\n\r\n"+strings.Repeat("x", 17))
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
}

// ---- rewriting ----

func TestProxySetURL(t *testing.T) {
	for _, tc := range []struct{ target, in, want string }{
		{"http://b:81", "/chat?x=1", "http://b:81/chat?x=1"},
		{"http://b:81/base/", "/chat", "http://b:81/base/chat"},
		{"http://b:81/base", "/chat", "http://b:81/base/chat"},
		{"ws://b/base?k=v", "/a%2Fb?x=1", "ws://b/base/a%2Fb?k=v&x=1"},
	} {
		target, err := url.Parse(tc.target)
		require.NoError(t, err)
		in := httptest.NewRequest(http.MethodGet, tc.in, nil)
		pr := &Request{In: in, Out: &http.Request{Host: in.Host}}
		pr.SetURL(target)
		assert.Equal(t, tc.want, pr.Out.URL.String())
		assert.Empty(t, pr.Out.Host)
	}
}

// TestProxyRewrite: Rewrite picks the backend per request and edits the
// outgoing header; without a URL or a Rewrite the answer is 500.
func TestProxyRewrite(t *testing.T) {
	b := startBackend(t, echoScript)
	p := &Proxy{Rewrite: func(pr *Request) {
		if pr.In.URL.Path == "/lost" {
			return
		}
		pr.SetURL(b.url())
		pr.Out.Header.Set("X-Route", pr.In.URL.Path)
		pr.Out.Header.Del("X-Forwarded-For")
	}}
	addr := startProxy(t, p, nil)
	switched(t, addr, "GET /chat HTTP/1.1\r\nHost: front\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	req := b.request()
	assert.Equal(t, "/chat", req.Header.Get("X-Route"))
	assert.Equal(t, b.ln.Addr().String(), req.Host, "SetURL sends the backend's host")
	assert.Empty(t, req.Header["X-Forwarded-For"])

	resp := refused(t, addr, "GET /lost HTTP/1.1\r\nHost: front\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
}

// ---- WebSocket bridging (for RFC 8441 clients) ----

// TestBridgeWebSocket: the bridge supplies a valid key, accepts the
// backend's matching answer and refuses a wrong one; the accept value is
// kept from the client.
func TestBridgeWebSocket(t *testing.T) {
	for _, right := range []bool{true, false} {
		keys := make(chan string, 1)
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			key := req.Header.Get("Sec-WebSocket-Key")
			keys <- key
			accept := wskey.AcceptString(key)
			if !right {
				accept = wskey.AcceptString("dGhlIHNhbXBsZSBub25jZQ==")
			}
			_ = backend101(nc, "websocket", []string{"Sec-WebSocket-Accept: " + accept}, "")
			_, _ = br.ReadByte()
		})
		d := &upgrade.Dialer{Header: http.Header{}}
		bridgeWebSocket(d)
		c, err := d.Dial(context.Background(), b.url().String(), upgrade.Protocol{Name: "websocket"})
		key := <-keys
		raw, decErr := base64.StdEncoding.DecodeString(key)
		require.NoError(t, decErr)
		assert.Len(t, raw, 16)
		if !right {
			assert.ErrorIs(t, err, errBadAccept)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, "13", c.Request.Header.Get("Sec-WebSocket-Version"))
		h := switchHeader(c.Response.Header, true)
		assert.Empty(t, h["Sec-Websocket-Accept"])
		assert.NotEmpty(t, switchHeader(c.Response.Header, false)["Sec-Websocket-Accept"])
		c.Close()
	}
	assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", wskey.AcceptString("dGhlIHNhbXBsZSBub25jZQ=="))
}

// ---- requests passed on, not forwarded ----

// TestProxyHTTP10UpgradeNotForwarded: requests the Proxy does not
// forward as upgrades — HTTP/1.0 ones, and ones whose Connection lacks
// the "upgrade" option — reach Middleware's next handler without Upgrade,
// the Connection options naming it, or HTTP2-Settings, so that an
// httputil.ReverseProxy there cannot forward the upgrade past Allow.
func TestProxyHTTP10UpgradeNotForwarded(t *testing.T) {
	b := startBackend(t, switchingBackend)
	p := proxyTo(b)
	p.Allow = []string{"echo/1"}
	seen := make(chan http.Header, 8)
	plain := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(b.url()) }}
	mux := http.NewServeMux()
	mux.Handle("/rp/", p.Middleware(plain))
	mux.Handle("/seen/", p.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header
		_, _ = io.WriteString(w, "next")
	})))
	addr := startProxy(t, p, mux)

	for _, tc := range []struct{ name, req string }{
		{"HTTP/1.0", "GET %s HTTP/1.0\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, X-Keep\r\nUpgrade: websocket\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"},
		{"HTTP/1.0, allowed offer", "GET %s HTTP/1.0\r\nHost: x\r\nConnection: Upgrade, X-Keep\r\nUpgrade: echo/1\r\n\r\n"},
		{"no upgrade option", "GET %s HTTP/1.1\r\nHost: x\r\nConnection: X-Keep\r\nUpgrade: echo/1\r\n\r\n"},
		{"no Connection", "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"},
	} {
		c := wiretest.Dial(t, addr)
		c.Send(strings.Replace(tc.req, "%s", "/rp/", 1))
		resp := c.Response(http.MethodGet)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: the backend was asked to switch", tc.name)
		assert.Equal(t, "plain", bodyString(t, resp), tc.name)
		req := b.request()
		assert.Empty(t, req.Header["Upgrade"], tc.name)
		assert.False(t, hasConnectionOption(req.Header, "upgrade"), tc.name)

		c = wiretest.Dial(t, addr)
		c.Send(strings.Replace(tc.req, "%s", "/seen/", 1))
		assert.Equal(t, "next", bodyString(t, c.Response(http.MethodGet)), tc.name)
		h := <-seen
		assert.Empty(t, h["Upgrade"], "%s: next gets no Upgrade", tc.name)
		assert.Empty(t, h["Http2-Settings"], tc.name)
		assert.False(t, hasConnectionOption(h, "upgrade"), tc.name)
		assert.False(t, hasConnectionOption(h, "http2-settings"), tc.name)
		assert.True(t, hasConnectionOption(h, "x-keep") || tc.name == "no Connection", "%s: other options stay", tc.name)
	}
	assert.Empty(t, p.ActiveConns())
}

// TestProxyClientHalfCloseServerSpeaksFirst: a client that half-closes
// right after its request still gets the backend's 101 and what the
// backend says first; the backend sees the client's EOF. The dial is
// bounded by the Proxy's timeouts, not by net/http noticing the EOF.
func TestProxyClientHalfCloseServerSpeaksFirst(t *testing.T) {
	gotEOF := make(chan error, 1)
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		time.Sleep(200 * time.Millisecond) // long after net/http has seen the client's EOF
		if backend101(nc, "echo/1", nil, "hello from the backend") != nil {
			return
		}
		_, err := br.ReadByte()
		gotEOF <- err
		_ = nc.(*net.TCPConn).CloseWrite()
	})
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "echo/1"))
	c.CloseWrite()
	head := c.Head()
	require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 Switching Protocols\r\n"), head)
	assert.Equal(t, "hello from the backend", c.Rest())
	select {
	case err := <-gotEOF:
		assert.ErrorIs(t, err, io.EOF, "the client's half-close reaches the backend")
	case <-time.After(10 * time.Second):
		t.Fatal("the backend saw no EOF")
	}
	waitProxyIdle(t, p)
}

// TestProxyForwardedAppended: the client's X-Forwarded-For and Forwarded
// are kept, the proxy's own element appended last.
func TestProxyForwardedAppended(t *testing.T) {
	b := startBackend(t, echoScript)
	addr := startProxy(t, proxyTo(b), nil)
	switched(t, addr, upgradeReq("GET", "echo/1", "Forwarded: for=198.51.100.1;proto=https", "X-Forwarded-For: 198.51.100.1"))
	req := b.request()
	assert.Equal(t, "for=198.51.100.1;proto=https, for=127.0.0.1;host=example.com;proto=http", req.Header.Get("Forwarded"))
	assert.Equal(t, "198.51.100.1, 127.0.0.1", req.Header.Get("X-Forwarded-For"))
}

// TestSetForwarded: the forwarding fields of the request forwarded are
// the received request's, with its hop appended last.
func TestSetForwarded(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		remote, host         string
		tls                  bool
		in                   http.Header
		xff, fwd, xfh, proto string
	}{
		{name: "first hop", remote: "192.0.2.1:5000", host: "example.com",
			xff: "192.0.2.1", fwd: "for=192.0.2.1;host=example.com;proto=http", xfh: "example.com", proto: "http"},
		{name: "appended", remote: "192.0.2.1:5000", host: "example.com:8443", tls: true,
			in:  http.Header{"X-Forwarded-For": {"198.51.100.7", "203.0.113.9"}, "Forwarded": {"for=198.51.100.7"}},
			xff: "198.51.100.7, 203.0.113.9, 192.0.2.1", fwd: `for=198.51.100.7, for=192.0.2.1;host="example.com:8443";proto=https`,
			xfh: "example.com:8443", proto: "https"},
		{name: "IPv6", remote: "[2001:db8::1]:5000", host: "[2001:db8::2]",
			xff: "2001:db8::1", fwd: `for="[2001:db8::1]";host="[2001:db8::2]";proto=http`, xfh: "[2001:db8::2]", proto: "http"},
		{name: "no address, odd host", remote: "pipe", host: `bad"host`,
			fwd: "proto=http", xfh: `bad"host`, proto: "http"},
		{name: "quoted values kept", remote: "192.0.2.1:5000", host: "example.com",
			in:  http.Header{"Forwarded": {`for="[2001:db8::7]";by=x, for=198.51.100.7;host="a,b"`}},
			xff: "192.0.2.1", fwd: `for="[2001:db8::7]";by=x, for=198.51.100.7;host="a,b", for=192.0.2.1;host=example.com;proto=http`,
			xfh: "example.com", proto: "http"},
		// An unbalanced quote would swallow the proxy's element; a
		// malformed field is dropped.
		{name: "unbalanced quote dropped", remote: "192.0.2.1:5000", host: "example.com",
			in:  http.Header{"Forwarded": {`for=6.6.6.6;by="x`}},
			xff: "192.0.2.1", fwd: "for=192.0.2.1;host=example.com;proto=http", xfh: "example.com", proto: "http"},
		{name: "not pairs dropped", remote: "192.0.2.1:5000", host: "example.com",
			in:  http.Header{"Forwarded": {"for 6.6.6.6"}},
			xff: "192.0.2.1", fwd: "for=192.0.2.1;host=example.com;proto=http", xfh: "example.com", proto: "http"},
	} {
		in := &http.Request{RemoteAddr: tc.remote, Host: tc.host, Header: tc.in}
		if tc.tls {
			in.TLS = &tls.ConnectionState{}
		}
		// What httputil.ReverseProxy leaves for Rewrite: no forwarding
		// fields, or, in a Proxy, the client's own.
		out := http.Header{"X-Forwarded-For": {"stale"}, "Forwarded": {"stale"}}
		SetForwarded(out, in)
		assert.Equal(t, tc.xff, out.Get("X-Forwarded-For"), tc.name)
		assert.Equal(t, tc.fwd, out.Get("Forwarded"), tc.name)
		assert.Equal(t, tc.xfh, out.Get("X-Forwarded-Host"), tc.name)
		assert.Equal(t, tc.proto, out.Get("X-Forwarded-Proto"), tc.name)
	}
}
