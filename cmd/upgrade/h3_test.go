package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
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
