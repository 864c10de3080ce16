package upgrade

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- a scripted backend ----

// backend is a raw TCP server on 127.0.0.1 whose every connection is
// handled by a script that reads the request and answers byte by byte.
type backend struct {
	t    *testing.T
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   []net.Conn
	reqs chan *http.Request // every request read, in order
}

// startBackend serves script on every connection: it gets the request
// already read (its header; the body is left in br) and owns nc until it
// returns. Cleanup closes the connections and waits for the scripts.
func startBackend(t *testing.T, script func(nc net.Conn, br *bufio.Reader, req *http.Request)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &backend{t: t, ln: ln, reqs: make(chan *http.Request, 512)}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.cs = append(b.cs, nc)
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(nc)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				b.reqs <- req
				script(nc, br, req)
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *backend) close() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.cs {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *backend) url() *url.URL { return &url.URL{Scheme: "http", Host: b.ln.Addr().String()} }

// request returns the next request the backend read.
func (b *backend) request() *http.Request {
	b.t.Helper()
	select {
	case r := <-b.reqs:
		return r
	case <-time.After(10 * time.Second):
		b.t.Fatal("the backend got no request")
		return nil
	}
}

// backend101 writes a 101 naming proto with extra header lines and then
// the bytes of after, all in one write.
func backend101(nc net.Conn, proto string, extra []string, after string) error {
	s := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + proto + "\r\nConnection: Upgrade\r\n"
	for _, e := range extra {
		s += e + "\r\n"
	}
	_, err := io.WriteString(nc, s+"\r\n"+after)
	return err
}

// echoScript switches to the first offer and echoes until EOF, then
// half-closes.
func echoScript(nc net.Conn, br *bufio.Reader, req *http.Request) {
	proto, _, _ := strings.Cut(req.Header.Get("Upgrade"), ",")
	if backend101(nc, strings.TrimSpace(proto), nil, "") != nil {
		return
	}
	// Through a buffer: io.Copy between the sockets would splice, and
	// park a pipe in this process, where the proxy's are counted.
	_, _ = io.Copy(struct{ io.Writer }{nc}, struct{ io.Reader }{br})
	_ = nc.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, nc)
}

// ---- the proxy under test ----

// startProxy serves h (p itself if nil) on 127.0.0.1; cleanup closes the
// relayed pairs and waits until every one has ended.
func startProxy(t *testing.T, p *Proxy, h http.Handler) string {
	t.Helper()
	if h == nil {
		h = p
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		assert.NoError(t, p.Close())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx), "relays must end once their connections close; still active: %v", p.ActiveConns())
	})
	return ts.Listener.Addr().String()
}

func proxyTo(b *backend) *Proxy { return NewProxy(b.url()) }

// switched sends req on a new connection to addr and expects a 101. It
// returns the connection, for half-closes and resets, the reader to read
// it with, and the 101's head.
func switched(t *testing.T, addr, req string) (*net.TCPConn, *bufio.Reader, string) {
	t.Helper()
	c := wiretest.Dial(t, addr)
	c.Send(req)
	head := c.Head()
	require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 Switching Protocols\r\n"), head)
	return c.NC, c.BR, head
}

// refused sends req on a new connection to addr, reads the whole
// response, and checks that the proxy closes the connection after it.
func refused(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	c := wiretest.Dial(t, addr)
	c.Send(req)
	resp := c.Response(http.MethodGet)
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the connection is closed after a refused upgrade")
	return resp
}

// checkEcho sends msg on a switched connection to an echo and checks that
// it comes back.
func checkEcho(t *testing.T, nc net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	roundTrip(t, struct {
		io.Reader
		io.Writer
	}{br, nc}, msg)
}

func readFull(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	require.NoError(t, err)
	return string(b)
}

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
	assert.Equal(t, "example.com:8443", req.Host, "NewProxy keeps the client's Host")
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

// ---- the backend's answer ----

// TestProxyUnofferedProtocol: a 101 naming a protocol the client did not
// offer is a 502, and both connections are closed.
func TestProxyUnofferedProtocol(t *testing.T) {
	closed := make(chan error, 1)
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if backend101(nc, "h2c", nil, "") != nil {
			return
		}
		_, err := br.ReadByte()
		closed <- err
	})
	addr := startProxy(t, proxyTo(b), nil)
	resp := refused(t, addr, upgradeReq("GET", "echo/1, websocket")+"smuggled")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	select {
	case err := <-closed:
		assert.ErrorIs(t, err, io.EOF, "the proxy closed the backend connection")
	case <-time.After(10 * time.Second):
		t.Fatal("the backend connection stayed open")
	}
}

// TestProxyRelaysRefusals: a backend's 426 (with its Upgrade list), 403
// and 503 reach the client with their end-to-end fields and body, and
// the client's connection is closed after them.
func TestProxyRelaysRefusals(t *testing.T) {
	for _, tc := range []struct {
		status string
		extra  string
		body   string
	}{
		{"426 Upgrade Required", "Upgrade: echo/2, websocket\r\nConnection: Upgrade\r\n", "need echo/2"},
		{"403 Forbidden", "X-Reason: origin\r\nConnection: X-Secret\r\nX-Secret: 1\r\n", "no"},
		{"503 Service Unavailable", "Retry-After: 7\r\n", ""},
	} {
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			_, _ = io.WriteString(nc, "HTTP/1.1 "+tc.status+"\r\n"+tc.extra+"Content-Length: "+
				strconv.Itoa(len(tc.body))+"\r\n\r\n"+tc.body)
		})
		addr := startProxy(t, proxyTo(b), nil)
		resp := refused(t, addr, upgradeReq("GET", "echo/1"))
		assert.Equal(t, tc.status, resp.Status)
		assert.Equal(t, tc.body, bodyString(t, resp))
		switch resp.StatusCode {
		case http.StatusUpgradeRequired:
			assert.Equal(t, "echo/2, websocket", resp.Header.Get("Upgrade"))
			assert.Equal(t, []string{"close", "Upgrade"}, resp.Header["Connection"])
		case http.StatusForbidden:
			assert.Equal(t, "origin", resp.Header.Get("X-Reason"))
			assert.Empty(t, resp.Header.Get("X-Secret"))
		case http.StatusServiceUnavailable:
			assert.Equal(t, "7", resp.Header.Get("Retry-After"))
		}
	}
}

// TestProxyUnreachableBackend: a backend that cannot be reached is a
// 502 from the default error handler, and ErrorHandler replaces it.
func TestProxyUnreachableBackend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	require.NoError(t, ln.Close())

	log, logs := testLogger()
	p := NewProxy(dead)
	p.ErrorLog = log
	addr := startProxy(t, p, nil)
	resp := refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Contains(t, logs.String(), "connection refused")

	p2 := NewProxy(dead)
	var got error
	p2.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		got = err
		w.WriteHeader(http.StatusTeapot)
	}
	addr = startProxy(t, p2, nil)
	resp = refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusTeapot, resp.StatusCode)
	var op *net.OpError
	assert.ErrorAs(t, got, &op)
}

// TestProxyBackendTimeout: a backend that never answers is a 504 once
// the Dialer's handshake timeout passes.
func TestProxyBackendTimeout(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		_, _ = br.ReadByte() // until the proxy gives up
	})
	p := proxyTo(b)
	p.Dialer = &Dialer{HandshakeTimeout: 200 * time.Millisecond}
	addr := startProxy(t, p, nil)
	resp := refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
}

// ---- the relay ----

// TestProxyHalfCloseClient: the client's half-close reaches the backend
// as EOF, and the backend can still answer; its close then ends the
// pair.
func TestProxyHalfCloseClient(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if backend101(nc, "echo/1", nil, "") != nil {
			return
		}
		got, err := io.ReadAll(br) // until the client's half-close
		if err != nil {
			return
		}
		_, _ = io.WriteString(nc, "after EOF: "+string(got))
	})
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	nc, br, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	_, err := io.WriteString(nc, "question")
	require.NoError(t, err)
	require.NoError(t, nc.CloseWrite())
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "after EOF: question", string(rest))
	waitProxyIdle(t, p)
}

// TestProxyHalfCloseBackend: the backend's half-close reaches the client
// as EOF, and the client can still send.
func TestProxyHalfCloseBackend(t *testing.T) {
	got := make(chan string, 1)
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if backend101(nc, "echo/1", nil, "bye") != nil {
			return
		}
		_ = nc.(*net.TCPConn).CloseWrite()
		rest, _ := io.ReadAll(br)
		got <- string(rest)
	})
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	nc, br, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "bye", string(rest))
	_, err = io.WriteString(nc, "still here")
	require.NoError(t, err)
	require.NoError(t, nc.CloseWrite())
	assert.Equal(t, "still here", <-got)
	waitProxyIdle(t, p)
}

// TestProxyResets: a reset on either side closes the other side with a
// reset too, and the pair is gone.
func TestProxyResets(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		seen := make(chan error, 1)
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			if backend101(nc, "echo/1", nil, "") != nil {
				return
			}
			_, err := io.Copy(io.Discard, br)
			seen <- err
		})
		p := proxyTo(b)
		addr := startProxy(t, p, nil)
		nc, _, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
		waitProxyActive(t, p, 1)
		require.NoError(t, nc.SetLinger(0))
		require.NoError(t, nc.Close())
		select {
		case err := <-seen:
			assert.True(t, isReset(err), "the backend sees a reset, got %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the backend connection stayed open")
		}
		waitProxyIdle(t, p)
	})
	t.Run("backend", func(t *testing.T) {
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			if backend101(nc, "echo/1", nil, "x") != nil {
				return
			}
			_ = nc.(*net.TCPConn).SetLinger(0)
		})
		p := proxyTo(b)
		addr := startProxy(t, p, nil)
		_, br, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
		_, err := io.ReadAll(br)
		assert.True(t, isReset(err), "the client sees a reset, got %v", err)
		waitProxyIdle(t, p)
	})
}

// TestProxyIdleTimeout: a pair that moves no byte for IdleTimeout is
// closed; one that keeps moving bytes is not.
func TestProxyIdleTimeout(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	p.IdleTimeout = 300 * time.Millisecond
	addr := startProxy(t, p, nil)

	busy, busyBr, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	idle, idleBr, _ := switched(t, addr, upgradeReq("GET", "echo/1"))
	start := time.Now()
	for time.Since(start) < time.Second {
		checkEcho(t, busy, busyBr, "ping")
		time.Sleep(50 * time.Millisecond)
	}
	_, err := idleBr.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the idle pair is closed")
	checkEcho(t, busy, busyBr, "still alive")
	_ = idle
}

// TestProxyShutdown: Shutdown refuses new upgrades with 503, lets open
// pairs relay, waits for those that end, and closes the rest when its
// context ends.
func TestProxyShutdown(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	const n = 5
	conns := make([]*net.TCPConn, n)
	brs := make([]*bufio.Reader, n)
	for i := range conns {
		conns[i], brs[i], _ = switched(t, addr, upgradeReq("GET", "echo/1"))
	}
	waitProxyActive(t, p, n)
	assert.Equal(t, map[string]int{"echo/1": n}, p.ActiveConns())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(ctx) }()
	require.Eventually(t, func() bool { return p.conns.Closing() }, 5*time.Second, time.Millisecond)

	resp := refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	for i := range conns {
		checkEcho(t, conns[i], brs[i], "during shutdown")
	}
	// One pair ends by itself; Shutdown keeps waiting for the others.
	require.NoError(t, conns[0].CloseWrite())
	_, err := io.ReadAll(brs[0])
	require.NoError(t, err)
	waitProxyActive(t, p, n-1)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with pairs open", err)
	default:
	}
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	for i := 1; i < n; i++ {
		_, err := io.ReadAll(brs[i])
		assert.NoError(t, err, "pair %d closed", i)
	}
	waitProxyIdle(t, p)
	assert.NoError(t, p.Shutdown(context.Background()))
}

// TestProxyMaxConns: a request beyond MaxConns is answered 503 before
// the backend is dialed.
func TestProxyMaxConns(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	p.MaxConns = 2
	addr := startProxy(t, p, nil)
	switched(t, addr, upgradeReq("GET", "echo/1"))
	switched(t, addr, upgradeReq("GET", "echo/1"))
	b.request()
	b.request()
	resp := refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	select {
	case r := <-b.reqs:
		t.Fatalf("the backend was dialed: %v", r.Header)
	default:
	}
}

// TestProxyConcurrentPairs relays 200 pairs at once, each echoing, then
// closes them: goroutines and file descriptors return to their baseline.
func TestProxyConcurrentPairs(t *testing.T) {
	const n = 200
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	ts := httptest.NewServer(p)
	base := baseline(t)

	conns := make([]*net.TCPConn, n)
	brs := make([]*bufio.Reader, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			nc, err := net.DialTimeout("tcp", ts.Listener.Addr().String(), 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
			conns[i] = nc.(*net.TCPConn)
			brs[i] = bufio.NewReader(nc)
			msg := "early " + strconv.Itoa(i)
			if _, err := io.WriteString(nc, upgradeReq("GET", "echo/1")+msg); err != nil {
				errs <- err
				return
			}
			head, err := wiretest.ReadHead(brs[i])
			if err != nil || !strings.HasPrefix(head, "HTTP/1.1 101 ") {
				errs <- errors.New("no 101: " + head)
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(brs[i], got); err != nil || string(got) != msg {
				errs <- errors.New("echo: " + string(got))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	waitProxyActive(t, p, n)
	for i := range conns {
		require.NoError(t, conns[i].CloseWrite())
	}
	for i := range conns {
		_, err := io.ReadAll(brs[i])
		require.NoError(t, err)
		conns[i].Close()
	}
	waitProxyIdle(t, p)
	ts.Close()
	b.close()
	// Splice pipes the runtime keeps in its pool are closed by the GC.
	backTo(t, base, "after 200 pairs")
}

// TestProxyIdlePairsHoldNoPipes: pairs that have relayed bytes (spliced,
// on Linux) and are now idle hold their two sockets and nothing else: no
// splice pipe stays parked with them.
func TestProxyIdlePairsHoldNoPipes(t *testing.T) {
	const n = 50
	base := pipeFDs(t)
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	addr := startProxy(t, p, nil)
	conns := make([]*net.TCPConn, n)
	brs := make([]*bufio.Reader, n)
	for i := range n {
		conns[i], brs[i], _ = switched(t, addr, upgradeReq("GET", "echo/1"))
		checkEcho(t, conns[i], brs[i], strings.Repeat("x", 64<<10))
	}
	waitProxyActive(t, p, n)
	assert.Eventually(t, func() bool {
		runtime.GC() // the runtime's pool of splice pipes is emptied by the GC
		return pipeFDs(t) <= base
	}, 10*time.Second, 5*time.Millisecond, "pipe descriptors still open with %d idle pairs, %d before", n, base)
	for i := range n {
		checkEcho(t, conns[i], brs[i], "after idling")
	}
}

// pipeFDs counts the process's open pipe descriptors.
func pipeFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list file descriptors: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

func waitProxyActive(t *testing.T, p *Proxy, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		total := 0
		for _, v := range p.ActiveConns() {
			total += v
		}
		return total == n
	}, 10*time.Second, 2*time.Millisecond, "active: %v, want %d", p.ActiveConns(), n)
}

func waitProxyIdle(t *testing.T, p *Proxy) {
	t.Helper()
	require.Eventually(t, func() bool { return len(p.ActiveConns()) == 0 }, 10*time.Second, 2*time.Millisecond,
		"pairs still active: %v", p.ActiveConns())
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
		pr := &ProxyRequest{In: in, Out: &http.Request{Host: in.Host}}
		pr.SetURL(target)
		assert.Equal(t, tc.want, pr.Out.URL.String())
		assert.Empty(t, pr.Out.Host)
	}
}

// TestProxyRewrite: Rewrite picks the backend per request and edits the
// outgoing header; without a URL or a Rewrite the answer is 500.
func TestProxyRewrite(t *testing.T) {
	b := startBackend(t, echoScript)
	p := &Proxy{Rewrite: func(pr *ProxyRequest) {
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
			accept := webSocketAccept(key)
			if !right {
				accept = webSocketAccept("dGhlIHNhbXBsZSBub25jZQ==")
			}
			_ = backend101(nc, "websocket", []string{"Sec-WebSocket-Accept: " + accept}, "")
			_, _ = br.ReadByte()
		})
		d := &Dialer{Header: http.Header{}}
		bridgeWebSocket(d)
		c, err := d.Dial(context.Background(), b.url().String(), Protocol{Name: "websocket"})
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
	assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", webSocketAccept("dGhlIHNhbXBsZSBub25jZQ=="))
}

// ---- requests passed on, not forwarded ----

// switchingBackend answers a request carrying Upgrade with a 101 to its
// first offer and echoes, and any other request with 200 "plain": a
// backend that switches whenever it is asked to.
func switchingBackend(nc net.Conn, br *bufio.Reader, req *http.Request) {
	if req.Header.Get("Upgrade") != "" {
		echoScript(nc, br, req)
		return
	}
	_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nplain")
}

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
