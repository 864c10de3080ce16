package reverseproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProxyTLSClientSeesBackendReset: a backend's reset reaches a client
// over TLS as a reset, never as TLS's close_notify, which would tell it
// the data ended cleanly.
func TestProxyTLSClientSeesBackendReset(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		_ = backend101(nc, "echo", nil, "partial")
		time.Sleep(100 * time.Millisecond)
		_ = nc.(*net.TCPConn).SetLinger(0)
		nc.Close()
	})
	p := proxyTo(b)
	p.ErrorLog = discardLogger()
	ts := httptest.NewTLSServer(p)
	defer ts.Close()
	defer p.Close()
	c, err := tls.Dial("tcp", ts.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, upgradeReq(http.MethodGet, "echo"))
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(c)
	require.Contains(t, string(all), "101 Switching Protocols")
	assert.True(t, strings.HasSuffix(string(all), "partial"), "%q", all)
	assert.Error(t, err, "a reset backend must not look like a clean TLS close")
	require.Eventually(t, func() bool { return len(p.ActiveConns()) == 0 }, 5*time.Second, 10*time.Millisecond)
}

// TestProxyShutdownWhileBodyArrives: an upgrade whose body is still
// arriving when Shutdown starts (and, with nothing relayed, returns) is
// refused with 503 once its body is in: its backend is never dialed.
func TestProxyShutdownWhileBodyArrives(t *testing.T) {
	b := startBackend(t, echoScript)
	p := proxyTo(b)
	p.ErrorLog = discardLogger()
	addr := startProxy(t, p, nil)
	c := wiretest.Dial(t, addr)
	c.Send("POST / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\nContent-Length: 5\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, p.Shutdown(ctx))
	c.Send("hello")
	assert.Equal(t, http.StatusServiceUnavailable, c.Response(http.MethodPost).StatusCode)
	select {
	case r := <-b.reqs:
		t.Errorf("the backend was dialed after Shutdown returned: %s %s", r.Method, r.URL)
	case <-time.After(300 * time.Millisecond):
	}
}
