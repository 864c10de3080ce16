package reverseproxy

import (
	"bufio"
	"io"
	"log"
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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// TestProxyFailuresGiveBackResources runs the ways an upgrade through a
// Proxy can fail or end early, each against servers of its own that are
// closed when it ends; goroutines and file descriptors then come back to
// where they were before.
func TestProxyFailuresGiveBackResources(t *testing.T) {
	base := baseline(t)
	failuresBeforeSwitch(t)
	failuresAfterAnswer(t)
	failuresOverHTTP2(t)
	backTo(t, base, "after the failure modes")
}

// upgradeOnce sends req to a server of its own serving p, and returns the
// answer, having closed the connection.
func upgradeOnce(t *testing.T, p *Proxy, req string) *http.Response {
	t.Helper()
	addr := startProxy(t, p, nil)
	c := wiretest.Dial(t, addr)
	c.Send(req)
	resp := c.Response(http.MethodGet)
	c.Close()
	return resp
}

// failuresBeforeSwitch: backends that cannot be reached, verified,
// waited for, or switch to what was not offered.
func failuresBeforeSwitch(t *testing.T) {
	quiet := log.New(io.Discard, "", 0)
	t.Run("unreachable", func(t *testing.T) {
		p := New(&url.URL{Scheme: "http", Host: closedAddr(t)})
		p.ErrorLog = discardLogger()
		assert.Equal(t, http.StatusBadGateway, upgradeOnce(t, p, upgradeReq("GET", "echo/1")).StatusCode)
	})
	t.Run("TLS verification", func(t *testing.T) {
		ts := httptest.NewUnstartedServer(http.NotFoundHandler())
		ts.Config.ErrorLog = quiet
		ts.StartTLS()
		t.Cleanup(ts.Close)
		u, err := url.Parse(ts.URL)
		require.NoError(t, err)
		p := New(u)
		p.ErrorLog = discardLogger()
		assert.Equal(t, http.StatusBadGateway, upgradeOnce(t, p, upgradeReq("GET", "echo/1")).StatusCode)
	})
	t.Run("timeout", func(t *testing.T) {
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) { _, _ = br.ReadByte() })
		p := proxyTo(b)
		p.ErrorLog = discardLogger()
		p.Dialer = &upgrade.Dialer{HandshakeTimeout: 100 * time.Millisecond}
		assert.Equal(t, http.StatusGatewayTimeout, upgradeOnce(t, p, upgradeReq("GET", "echo/1")).StatusCode)
	})
	t.Run("invalid 101", func(t *testing.T) {
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) { _ = backend101(nc, "other/1", nil, "") })
		p := proxyTo(b)
		p.ErrorLog = discardLogger()
		assert.Equal(t, http.StatusBadGateway, upgradeOnce(t, p, upgradeReq("GET", "echo/1")).StatusCode)
	})
}

// failuresAfterAnswer: answers other than a switch, a client gone early,
// and requests passed on.
func failuresAfterAnswer(t *testing.T) {
	t.Run("answer relayed", func(t *testing.T) {
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\n\r\n"+strings.Repeat("x", 100000))
		})
		resp := upgradeOnce(t, proxyTo(b), upgradeReq("GET", "echo/1"))
		assert.Equal(t, 100000, len(bodyString(t, resp)))
	})
	t.Run("answer stalled, client gone", func(t *testing.T) {
		gaveUp := make(chan struct{})
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			_, _ = io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nsome")
			_, _ = br.ReadByte() // until the proxy gives up
			close(gaveUp)
		})
		p := proxyTo(b)
		p.Dialer = &upgrade.Dialer{HandshakeTimeout: 200 * time.Millisecond}
		addr := startProxy(t, p, nil)
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "echo/1"))
		resp, err := wiretest.ReadResponse(c.BR, http.MethodGet)
		require.NoError(t, err)
		assert.Equal(t, "some", c.ReadN(4), "%v", resp.Status)
		c.Close()
		select {
		case <-gaveUp:
		case <-time.After(5 * time.Second):
			t.Error("the proxy still waits for the rest of a stalled answer")
		}
	})
	t.Run("client half-close", func(t *testing.T) {
		b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
			if backend101(nc, "echo/1", nil, "hi") == nil {
				_, _ = io.Copy(io.Discard, br)
			}
		})
		addr := startProxy(t, proxyTo(b), nil)
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "echo/1"))
		c.CloseWrite()
		assert.True(t, strings.HasPrefix(c.Head(), "HTTP/1.1 101 "))
		assert.Equal(t, "hi", c.Rest())
	})
	t.Run("passed on", func(t *testing.T) {
		b := startBackend(t, switchingBackend)
		p := proxyTo(b)
		p.Allow = []string{"echo/1"}
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		plain := &httputil.ReverseProxy{Transport: p.Transport(tr), Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(b.url()) }}
		addr := startProxy(t, p, p.Middleware(plain))
		c := wiretest.Dial(t, addr)
		c.Send("GET / HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
		assert.Equal(t, "plain", bodyString(t, c.Response(http.MethodGet)))
	})
}

// failuresOverHTTP2: HTTP/2 clients whose pairs end every way, and a
// Dialer that can switch HTTP/2 streams.
func failuresOverHTTP2(t *testing.T) {
	for _, how := range []string{"close", "reset", "client reset"} {
		t.Run("HTTP/2 "+how, func(t *testing.T) {
			b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
				if backend101(nc, "echo/1", nil, "bye") != nil {
					return
				}
				switch how {
				case "reset":
					time.Sleep(20 * time.Millisecond)
					_ = nc.(*net.TCPConn).SetLinger(0)
				case "client reset":
					_, _ = io.Copy(io.Discard, br)
				}
			})
			p := proxyTo(b)
			addr := startH2Proxy(t, p)
			c := wiretest.DialH2(t, addr, nil)
			st := c.Connect("http", "example.com", "/", "echo/1")
			require.Equal(t, "200", st.Status())
			if how == "client reset" {
				st.Reset(http2.ErrCodeCancel)
			} else {
				assert.NotEmpty(t, streamEnd(c, st.ID, 5*time.Second))
			}
			require.Eventually(t, func() bool { return len(p.ActiveConns()) == 0 }, 5*time.Second, 5*time.Millisecond)
		})
	}
	t.Run("HTTP/2 Dialer", func(t *testing.T) {
		up := echoServer("echo/1")
		ts := httptest.NewUnstartedServer(up)
		ts.Config.Protocols = new(http.Protocols)
		ts.Config.Protocols.SetHTTP1(true)
		ts.Config.Protocols.SetUnencryptedHTTP2(true)
		ts.Start()
		t.Cleanup(func() {
			ts.Close()
			closeAndWait(t, up)
		})
		u, err := url.Parse(ts.URL)
		require.NoError(t, err)
		p := New(u)
		p.Dialer = &upgrade.Dialer{Proxy: noProxy, HTTP2: newTransport(t)}
		addr := startProxy(t, p, nil)
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "echo/1"))
		assert.True(t, strings.HasPrefix(c.Head(), "HTTP/1.1 101 "))
		checkEcho(t, c.NC, c.BR, "ping")
		c.Close()
		require.Eventually(t, func() bool { return len(p.ActiveConns()) == 0 }, 5*time.Second, 5*time.Millisecond)
	})
}
