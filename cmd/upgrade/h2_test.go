package main

import (
	"crypto/tls"
	"io"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// TestServeHTTP2: with no environment set, upgrade serve advertises RFC
// 8441 extended CONNECT on HTTP/2 (prior knowledge over cleartext; ALPN
// h2 with -tls) and serves echo/1 and websocket on streams; the demo
// subprotocol's first message and the -v line name HTTP/2.0.
func TestServeHTTP2(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "prior knowledge", true: "TLS"}[secure], func(t *testing.T) {
			args := []string{"-v", "-grace", "300ms"}
			var tlsConf *tls.Config
			scheme := "http"
			if secure {
				args = append(args, "-tls")
				tlsConf = &tls.Config{InsecureSkipVerify: true}
				scheme = "https"
			}
			s := startServer(t, args...)
			assert.True(t, strings.HasPrefix(s.stdout.String(), "listening on "+scheme+"://"), s.stdout.String())
			c := wiretest.DialH2(t, s.addr, tlsConf)
			v, ok := c.Setting(http2.SettingEnableConnectProtocol)
			require.True(t, ok && v == 1, "SETTINGS_ENABLE_CONNECT_PROTOCOL")

			echo := c.Connect(scheme, s.addr, "/", "echo/1")
			require.Equal(t, "200", echo.Status())
			echo.Write([]byte("over h2"))
			assert.Equal(t, "over h2", string(echo.Read(7)))
			echo.CloseWrite()
			rest, ended, _ := echo.End()
			assert.Empty(t, rest)
			assert.True(t, ended)

			ws := c.Connect(scheme, s.addr, "/", "websocket",
				[2]string{"sec-websocket-version", "13"}, [2]string{"sec-websocket-protocol", "demo"})
			h := ws.Header()
			require.Equal(t, []string{"200"}, h[":status"])
			assert.Equal(t, []string{"demo"}, h["sec-websocket-protocol"])
			// An unmasked text frame from the server: "via HTTP/2.0".
			greeting := ws.Read(2 + len("via HTTP/2.0"))
			assert.Equal(t, "via HTTP/2.0", string(greeting[2:]))

			require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
			require.Equal(t, 0, s.wait(t, 10*time.Second))
			assert.Regexp(t, `msg="connection closed" protocol=echo/1 .*proto=HTTP/2.0`, s.stderr.String())
			assert.Contains(t, s.stderr.String(), "extended_connect=true")
		})
	}
}

// TestProxyHTTP2: an HTTP/2 client's extended CONNECT through upgrade
// proxy reaches upgrade serve as an HTTP/1.1 upgrade: the WebSocket is
// bridged (serve sees HTTP/1.1 and the client gets a 200).
func TestProxyHTTP2(t *testing.T) {
	back := startServer(t)
	p, _ := startProxyCmd(t, back.addr)
	c := wiretest.DialH2(t, p.addr, nil)
	ws := c.Connect("http", p.addr, "/", "websocket",
		[2]string{"sec-websocket-version", "13"}, [2]string{"sec-websocket-protocol", "demo"})
	h := ws.Header()
	require.Equal(t, []string{"200"}, h[":status"])
	assert.NotContains(t, h, "sec-websocket-accept")
	greeting := ws.Read(2 + len("via HTTP/1.1"))
	assert.Equal(t, "via HTTP/1.1", string(greeting[2:]), "the backend leg is HTTP/1.1")
}

// TestDialHTTP2: dial -http2 switches an HTTP/2 stream where the server
// has extended CONNECT (upgrade serve, with prior knowledge and over TLS
// with -insecure) and says so, and falls back to an HTTP/1.1 Upgrade
// where it has no HTTP/2 at all.
func TestDialHTTP2(t *testing.T) {
	s := startServer(t)
	r := runDialCmd(t, strings.NewReader("hello\n"), "-http2", "http://"+s.addr+"/", "echo/1")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to echo/1 over HTTP/2\n", r.stderr)
	assert.Equal(t, "hello\n", r.stdout)

	r = runDialCmd(t, strings.NewReader("hi there\n"), "-http2", "ws://"+s.addr+"/", "websocket")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to websocket over HTTP/2\n", r.stderr)
	assert.Equal(t, "hi there\n", r.stdout)

	ts := startServer(t, "-tls")
	r = runDialCmd(t, strings.NewReader("secure\n"), "-http2", "-insecure", "https://"+ts.addr+"/", "echo/1")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to echo/1 over HTTP/2\n", r.stderr)
	assert.Equal(t, "secure\n", r.stdout)

	r = runDialCmd(t, strings.NewReader("x\n"), "https://"+ts.addr+"/", "echo/1")
	assert.Equal(t, 1, r.code, "the self-signed certificate is refused without -insecure")
	assert.Contains(t, r.stderr, "certificate")

	h1 := upgrade.Server{}
	h1.HandleFunc("echo/1", func(c *upgrade.Conn) { _, _ = io.Copy(c, c) })
	old := httptest.NewServer(&h1)
	t.Cleanup(func() { _ = h1.Close(); old.Close() })
	r = runDialCmd(t, strings.NewReader("old\n"), "-http2", "http://"+old.Listener.Addr().String()+"/", "echo/1")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to echo/1 over HTTP/1.1\n", r.stderr)
	assert.Equal(t, "old\n", r.stdout)
}

// TestDialHTTP2Fallback: dial -http2 upgrades over HTTP/1.1 when the
// server speaks HTTP/2 without extended CONNECT (upgrade serve with
// GODEBUG=http2xconnect=0), with prior knowledge and over TLS.
func TestDialHTTP2Fallback(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "prior knowledge", true: "TLS"}[secure], func(t *testing.T) {
			args := []string{"-addr", "127.0.0.1:0", "-v"}
			scheme := "http"
			if secure {
				args, scheme = append(args, "-tls"), "https"
			}
			s, _ := startCommandEnv(t, []string{"GODEBUG=http2xconnect=0"}, "serve", args...)
			c := wiretest.DialH2(t, s.addr, map[bool]*tls.Config{true: {InsecureSkipVerify: true}}[secure])
			_, ok := c.Setting(http2.SettingEnableConnectProtocol)
			require.False(t, ok, "the server speaks HTTP/2 without extended CONNECT")
			c.Close()

			r := runDialCmd(t, strings.NewReader("fallback\n"), "-http2", "-insecure", scheme+"://"+s.addr+"/", "echo/1")
			assert.Equal(t, 0, r.code, r.stderr)
			assert.Equal(t, "switched to echo/1 over HTTP/1.1\n", r.stderr)
			assert.Equal(t, "fallback\n", r.stdout)
		})
	}
}

// TestDialHTTP2OffersInOrder: dial -http2 asks for the offers one at a
// time, in order: upgrade serve refuses nosuch/1 (501) and switches the
// next offer's stream, and the first of two it serves wins.
func TestDialHTTP2OffersInOrder(t *testing.T) {
	s := startServer(t, "-v")
	r := runDialCmd(t, strings.NewReader("second\n"), "-http2", "http://"+s.addr+"/", "nosuch/1,echo/1,websocket")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to echo/1 over HTTP/2\n", r.stderr)
	assert.Equal(t, "second\n", r.stdout)

	r = runDialCmd(t, strings.NewReader("first\n"), "-http2", "http://"+s.addr+"/", "websocket,echo/1")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to websocket over HTTP/2\n", r.stderr)
	assert.Equal(t, "first\n", r.stdout)

	r = runDialCmd(t, strings.NewReader(""), "-http2", "http://"+s.addr+"/", "nosuch/1,nosuch/2")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "501")
}
