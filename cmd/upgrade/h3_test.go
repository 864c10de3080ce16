package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/http3"
	qhttp3 "github.com/quic-go/quic-go/http3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServeHTTP3: serve -tls -http3 serves HTTP/3 on UDP at the TCP
// listener's port: the TCP responses carry Alt-Svc, a plain HTTP/3 GET is
// served, a WebSocket switches over HTTP/3 (the demo subprotocol's first
// message and the -v line say HTTP/3.0), and SIGTERM ends it cleanly.
func TestServeHTTP3(t *testing.T) {
	s := startServer(t, "-tls", "-http3", "-v", "-grace", "300ms")
	port := s.addr[strings.LastIndexByte(s.addr, ':')+1:]
	insecure := &tls.Config{InsecureSkipVerify: true}

	tcp := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure}, Timeout: testTimeout}
	resp, err := tcp.Get("https://" + s.addr + "/protocols")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, `h3=":`+port+`"; ma=86400`, resp.Header.Get("Alt-Svc"))
	tcp.CloseIdleConnections()

	rt := &qhttp3.Transport{TLSClientConfig: insecure}
	defer rt.Close()
	resp, err = (&http.Client{Transport: rt, Timeout: testTimeout}).Get("https://" + s.addr + "/protocols")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "HTTP/3.0", resp.Proto)
	assert.Contains(t, string(body), "websocket")

	tr := &http3.Transport{TLSClientConfig: insecure}
	defer tr.Close()
	d := &upgrade.Dialer{HTTP3: tr, HandshakeTimeout: testTimeout,
		Header: http.Header{"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Protocol": {"demo"}}}
	c, err := d.Dial(context.Background(), "wss://"+s.addr+"/", upgrade.Protocol{Name: "websocket"})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "demo", c.Response.Header.Get("Sec-Websocket-Protocol"))
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	greeting := make([]byte, 2+len("via HTTP/3.0"))
	_, err = io.ReadFull(c, greeting)
	require.NoError(t, err)
	assert.Equal(t, "via HTTP/3.0", string(greeting[2:]))

	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, s.wait(t, 10*time.Second))
	assert.Regexp(t, `msg="connection closed" protocol=websocket .*proto=HTTP/3.0`, s.stderr.String())
	assert.Contains(t, s.stderr.String(), "http3=true")
}

// TestDialHTTP3: dial -http3 switches a WebSocket over HTTP/3 against
// serve -tls -http3 and says so; against a server without HTTP/3 it fails
// with exit 1, and a refusal names the HTTP/3 status.
func TestDialHTTP3(t *testing.T) {
	s := startServer(t, "-tls", "-http3")
	r := runDialCmd(t, strings.NewReader("hello\nworld\n"), "-http3", "-insecure", "wss://"+s.addr+"/", "websocket")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to websocket over HTTP/3\n", r.stderr)
	assert.Equal(t, "hello\nworld\n", r.stdout)

	r = runDialCmd(t, nil, "-http3", "-insecure", "https://"+s.addr+"/", "nosuch,other")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "upgrade dial: server answered \"501 Not Implemented\" to an HTTP/3 extended CONNECT\n", r.stderr)

	plain := startServer(t, "-tls") // TCP only: nothing on UDP
	r = runDialCmd(t, nil, "-http3", "-insecure", "-timeout", "2s", "https://"+plain.addr+"/", "websocket")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "upgrade dial: dial https://"+plain.addr+"/: ")
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
}

// TestProxyHTTP3: proxy -tls -http3 accepts HTTP/3 on UDP at the TCP
// listener's port: its TCP responses carry its own Alt-Svc, never the
// backend's; a plain HTTP/3 GET is proxied; a WebSocket over HTTP/3
// reaches the HTTP/1.1 backend (whose greeting says HTTP/1.1) and the -v
// line says proto=HTTP/3.0; SIGTERM ends it cleanly.
func TestProxyHTTP3(t *testing.T) {
	back := startServer(t, "-tls", "-http3") // its own Alt-Svc, for another port
	p, scheme := startCommand(t, "proxy", "-addr", "127.0.0.1:0", "-to", "https://"+back.addr, "-insecure",
		"-tls", "-http3", "-v", "-grace", "300ms")
	require.Equal(t, "https", scheme)
	port := p.addr[strings.LastIndexByte(p.addr, ':')+1:]
	insecure := &tls.Config{InsecureSkipVerify: true}

	tcp := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure}, Timeout: testTimeout}
	resp, err := tcp.Get("https://" + p.addr + "/protocols")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, []string{`h3=":` + port + `"; ma=86400`}, resp.Header.Values("Alt-Svc"))
	tcp.CloseIdleConnections()

	rt := &qhttp3.Transport{TLSClientConfig: insecure}
	defer rt.Close()
	resp, err = (&http.Client{Transport: rt, Timeout: testTimeout}).Get("https://" + p.addr + "/protocols")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "HTTP/3.0", resp.Proto)
	assert.Contains(t, string(body), "websocket")

	tr := &http3.Transport{TLSClientConfig: insecure}
	defer tr.Close()
	d := &upgrade.Dialer{HTTP3: tr, HandshakeTimeout: testTimeout,
		Header: http.Header{"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Protocol": {"demo"}}}
	c, err := d.Dial(context.Background(), "wss://"+p.addr+"/", upgrade.Protocol{Name: "websocket"})
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "HTTP/3.0", c.Response.Proto)
	assert.Equal(t, "demo", c.Response.Header.Get("Sec-Websocket-Protocol"))
	assert.Empty(t, c.Response.Header.Values("Sec-Websocket-Accept"))
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
	greeting := make([]byte, 2+len("via HTTP/1.1"))
	_, err = io.ReadFull(c, greeting)
	require.NoError(t, err)
	assert.Equal(t, "via HTTP/1.1", string(greeting[2:]), "the backend is reached over HTTP/1.1")
	require.NoError(t, c.Close())

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(t, 10*time.Second))
	assert.Regexp(t, `level=INFO msg="upgrade: proxied connection closed" protocol=websocket remote=\S+ proto=HTTP/3\.0 backend=`+regexp.QuoteMeta(back.addr)+` `, p.stderr.String())
	assert.Contains(t, p.stderr.String(), "http3=true")
	assert.Contains(t, p.stderr.String(), "spki_sha256=")
}

// TestProxyHTTP3Grace: on SIGTERM an HTTP/3 stream the proxy relays gets
// the grace period the others get: it goes on relaying, is closed when
// -grace ends, and the proxy exits 0.
func TestProxyHTTP3Grace(t *testing.T) {
	back := startFake(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: chat\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(c, br)
	})
	const grace = time.Second
	p, _ := startProxyCmd(t, back.addr(), "-tls", "-http3", "-v", "-grace", grace.String())
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.Close()
	d := &upgrade.Dialer{HTTP3: tr, HandshakeTimeout: testTimeout}
	c, err := d.Dial(context.Background(), "https://"+p.addr+"/", upgrade.Protocol{Name: "chat"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))

	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	for _, msg := range []string{"during", "the grace period"} {
		_, err = io.WriteString(c, msg)
		require.NoError(t, err)
		got := make([]byte, len(msg))
		_, err = io.ReadFull(c, got)
		require.NoError(t, err, "relayed during the grace period")
		assert.Equal(t, msg, string(got))
		time.Sleep(grace / 4)
	}
	_, err = io.ReadAll(c)
	if err != nil {
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the stream was not closed: %v", err)
	}
	assert.GreaterOrEqual(t, time.Since(start), grace)
	assert.Equal(t, 0, p.wait(t, 5*time.Second))
	assert.Regexp(t, `protocol=chat remote=\S+ proto=HTTP/3\.0 .*how="closed by proxy shutdown"`, p.stderr.String())
}
