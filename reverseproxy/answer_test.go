package reverseproxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bigBody is the body of the answers of a backend that ignores Upgrade.
var bigBody = bytes.Repeat([]byte("0123456789abcdef"), 100000/16)

// TestProxyRelaysNonSwitchWhole: every final answer other than 101 to an
// upgrade request reaches the client whole, whatever its framing: status,
// end-to-end fields, a 100,000-byte body with Content-Length, chunked or
// delimited by the close (as its own framing, never cut), a HEAD's
// Content-Length with no body, and the client's connection closed after
// it.
func TestProxyRelaysNonSwitchWhole(t *testing.T) {
	for _, tc := range []struct {
		name, method, head string
		body               []byte
		wantLength         int64
	}{
		{"content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n", bigBody, 100000},
		{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", bigBody, -1},
		{"close-delimited", "GET", "HTTP/1.1 200 OK\r\n", bigBody, -1},
		{"404", "GET", "HTTP/1.1 404 Not Found\r\nContent-Length: 100000\r\n", bigBody, 100000},
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n", nil, 100000},
		{"no content", "GET", "HTTP/1.1 204 No Content\r\n", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
				w := bufio.NewWriter(nc)
				_, _ = w.WriteString(tc.head + "X-Backend: yes\r\nConnection: X-Hop\r\nX-Hop: no\r\n\r\n")
				if strings.Contains(tc.head, "chunked") {
					for p := tc.body; len(p) > 0; p = p[min(len(p), 7000):] {
						n := min(len(p), 7000)
						_, _ = w.WriteString(strconv.FormatInt(int64(n), 16) + "\r\n")
						_, _ = w.Write(p[:n])
						_, _ = w.WriteString("\r\n")
					}
					_, _ = w.WriteString("0\r\n\r\n")
				} else {
					_, _ = w.Write(tc.body)
				}
				_ = w.Flush()
			})
			p := proxyTo(b)
			addr := startProxy(t, p, nil)
			c := wiretest.Dial(t, addr)
			c.Send(upgradeReq(tc.method, "echo/1"))
			resp := c.Response(tc.method)
			got, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			want := tc.head[len("HTTP/1.1 "):strings.Index(tc.head, "\r\n")]
			assert.Equal(t, want, resp.Status)
			assert.Equal(t, "yes", resp.Header.Get("X-Backend"))
			assert.Empty(t, resp.Header.Get("X-Hop"), "hop-by-hop fields are dropped")
			assert.Equal(t, len(tc.body), len(got), "the whole body")
			assert.True(t, bytes.Equal(tc.body, got), "the body intact")
			assert.Equal(t, tc.wantLength, resp.ContentLength)
			if tc.wantLength > 0 {
				assert.Equal(t, strconv.FormatInt(tc.wantLength, 10), resp.Header.Get("Content-Length"))
			}
			assert.True(t, resp.Close, "the connection is closed after a refused upgrade")
			_, err = c.BR.ReadByte()
			assert.ErrorIs(t, err, io.EOF)
			waitProxyIdle(t, p)
		})
	}
}

// TestProxyStreamsNonSwitch: the backend's answer is streamed to the
// client as it comes, not held until its end.
func TestProxyStreamsNonSwitch(t *testing.T) {
	more := make(chan struct{})
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
		select {
		case <-more:
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(nc, "4\r\nnext\r\n0\r\n\r\n")
	})
	addr := startProxy(t, proxyTo(b), nil)
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "echo/1"))
	require.NoError(t, c.NC.SetReadDeadline(time.Now().Add(3*time.Second)))
	resp, err := wiretest.ReadResponse(c.BR, http.MethodGet)
	require.NoError(t, err, "the head arrives before the backend sends the rest")
	first := make([]byte, 5)
	_, err = io.ReadFull(resp.Body, first)
	require.NoError(t, err, "the first part arrives before the backend sends the rest")
	assert.Equal(t, "first", string(first))
	close(more)
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "next", string(rest))
}

// TestProxy426ListsForwardable: a 426 reaching the client through the
// Proxy — the backend's answer to an upgrade, or next's answer to a
// request passed on (the backend's through an httputil.ReverseProxy with
// Transport, or next's own) — carries "Connection: Upgrade" and an
// Upgrade list holding only what the proxy would forward; with nothing
// left, the proxy answers 403.
func TestProxy426ListsForwardable(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		_, _ = io.WriteString(nc, "HTTP/1.1 426 Upgrade Required\r\nUpgrade: h2c, echo/2, websocket\r\nConnection: Upgrade\r\n"+
			"Content-Length: 4\r\n\r\nneed")
	})
	for _, tc := range []struct {
		allow []string
		want  string // "" for a 403
	}{
		{nil, "echo/2, websocket"},
		{[]string{"echo/*", "h2c"}, "h2c, echo/2"},
		{[]string{"other/1"}, ""},
	} {
		p := proxyTo(b)
		p.Allow = tc.allow
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		plain := &httputil.ReverseProxy{Transport: p.Transport(tr), Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(b.url()) }}
		own := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Upgrade", "h2c, echo/2, websocket")
			w.WriteHeader(http.StatusUpgradeRequired)
			_, _ = io.WriteString(w, "need")
		})
		mux := http.NewServeMux()
		mux.Handle("/", p.Middleware(plain))
		mux.Handle("/own", p.Middleware(own))
		addr := startProxy(t, p, mux)
		for _, req := range []string{
			upgradeReq("GET", "echo/2"),
			upgradeReq("GET", "other/2"),
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
			"GET /own HTTP/1.1\r\nHost: x\r\n\r\n",
			"GET /own HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: other/2\r\n\r\n",
		} {
			c := wiretest.Dial(t, addr)
			c.Send(req)
			resp := c.Response(http.MethodGet)
			if tc.want == "" {
				assert.Equal(t, http.StatusForbidden, resp.StatusCode, "%v: %q", tc.allow, req)
				assert.Empty(t, resp.Header["Upgrade"])
				assert.NotEqual(t, "need", bodyString(t, resp))
				continue
			}
			assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode, "%v: %q", tc.allow, req)
			assert.Equal(t, []string{tc.want}, resp.Header["Upgrade"], "%v: %q", tc.allow, req)
			assert.True(t, hasConnectionOption(resp.Header, "upgrade"), "%v: %q: %q", tc.allow, req, resp.Header["Connection"])
			assert.Equal(t, "need", bodyString(t, resp))
		}
	}
}

// TestProxyHTTP2Non101: for an HTTP/2 client, the backend's 2xx without a
// switch is a 502 (a 2xx would tell the client its stream is switched),
// and other answers are relayed whole.
func TestProxyHTTP2Non101(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if req.URL.Path == "/ok" {
			_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
			return
		}
		_, _ = io.WriteString(nc, "HTTP/1.1 404 Not Found\r\nX-Backend: yes\r\nContent-Length: 100000\r\n\r\n")
		_, _ = nc.Write(bigBody)
	})
	addr := startH2Proxy(t, proxyTo(b))
	c := wiretest.DialH2(t, addr, nil)
	st := c.Connect("http", "example.com", "/ok", "echo/1")
	assert.Equal(t, "502", st.Status())
	st = c.Connect("http", "example.com", "/missing", "echo/1")
	h := st.Header()
	assert.Equal(t, []string{"404"}, h[":status"])
	assert.Equal(t, []string{"yes"}, h["x-backend"])
	rest, ended, _ := st.End()
	assert.True(t, ended)
	assert.Equal(t, len(bigBody), len(rest))
	assert.Nil(t, c.GoAway())
}

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
	p := New(dead)
	p.ErrorLog = log
	addr := startProxy(t, p, nil)
	resp := refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Contains(t, logs.String(), "connection refused")

	p2 := New(dead)
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
	p.Dialer = &upgrade.Dialer{HandshakeTimeout: 200 * time.Millisecond}
	addr := startProxy(t, p, nil)
	resp := refused(t, addr, upgradeReq("GET", "echo/1"))
	assert.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
}
