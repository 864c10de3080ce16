package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/go-upgrade/upgrade/websocket"
)

func TestDialEcho(t *testing.T) {
	s := startServer(t)
	input := "some bytes\x00\xff and more\n"
	r := runDialCmd(t, strings.NewReader(input), "-timeout", "5s", "http://"+s.addr+"/echo", "echo/1")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to echo/1\n", r.stderr)
	assert.Equal(t, input, r.stdout)
}

func TestDialWebSocket(t *testing.T) {
	s := startServer(t)
	for _, args := range [][]string{
		{"ws://" + s.addr + "/", "websocket"},
		{"-H", "Sec-WebSocket-Protocol: echo", "ws://" + s.addr + "/", "websocket"},
		{"http://" + s.addr + "/", "nosuch/1,websocket"},
	} {
		r := runDialCmd(t, strings.NewReader("first line\nsecond line\r\nthird"), args...)
		assert.Equal(t, 0, r.code, "%q: %s", args, r.stderr)
		assert.Equal(t, "switched to websocket\n", r.stderr, "%q", args)
		assert.Equal(t, "first line\nsecond line\nthird\n", r.stdout, "%q", args)
	}
}

func TestDialH2C(t *testing.T) {
	s := startServer(t)
	r := runDialCmd(t, strings.NewReader(""), "http://"+s.addr+"/", "h2c")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "switched to h2c\n", r.stderr)
	head, body, ok := strings.Cut(r.stdout, "\n\n")
	require.True(t, ok, "header block, empty line, body: %q", r.stdout)
	assert.True(t, strings.HasPrefix(head, ":status: 200\n"), head)
	assert.Contains(t, head, "content-type: text/html; charset=utf-8")
	assert.Contains(t, body, "new WebSocket(")

	r = runDialCmd(t, strings.NewReader(""), "-X", "POST", "-d", "the request body", "http://"+s.addr+"/", "h2c")
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, strings.HasPrefix(r.stdout, ":status: 200\n"), r.stdout)
	assert.True(t, strings.HasSuffix(r.stdout, "\n\nthe request body"), r.stdout)
}

// TestDialRefused: /required with an offer the server does not speak is
// a 426 naming what it speaks; dial exits 1 with one line.
func TestDialRefused(t *testing.T) {
	s := startServer(t)
	r := runDialCmd(t, strings.NewReader(""), "http://"+s.addr+"/required", "nosuch/1")
	assert.Equal(t, 1, r.code)
	assert.Empty(t, r.stdout)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	assert.Contains(t, r.stderr, "426 Upgrade Required")
	assert.Contains(t, r.stderr, "echo/1, websocket, h2c")

	// Upgrade-optional path: served normally, which is no switch either.
	r = runDialCmd(t, strings.NewReader(""), "http://"+s.addr+"/", "nosuch/1")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	assert.Contains(t, r.stderr, "200 OK")
}

// TestDialUsageErrors: exit 2, and nothing reaches the server. A URL with
// an empty host is one (RFC 9110 §4.2.1).
func TestDialUsageErrors(t *testing.T) {
	f := startFake(t, nil)
	url := "http://" + f.addr() + "/"
	// An empty host with the fake's port would reach it if dialed.
	_, port, err := net.SplitHostPort(f.addr())
	require.NoError(t, err)
	for _, args := range [][]string{
		{url, "bad proto"},
		{url, "echo/"},
		{url, "echo/1/2"},
		{url, ""},
		{url, "échо"},
		{"ftp://" + f.addr() + "/", "echo/1"},
		{"http:///nohost", "echo/1"},
		{"http://:" + port + "/", "echo/1"},
		{"ws://:" + port, "websocket"},
		{"http://user@:" + port + "/x", "echo/1"},
		{"http://[::1", "echo/1"},
		{"-H", "NoColon", url, "echo/1"},
		{"-H", "Bad Name: x", url, "echo/1"},
		{"-H", "X-Ctl: a\x01b", url, "echo/1"},
		{"-H", "Upgrade: other", url, "echo/1"},
		{"-H", "Content-Length: 3", url, "echo/1"},
		{"-H", "Sec-WebSocket-Key: x", url, "websocket"},
		{"-H", "Sec-WebSocket-Protocol: a b", url, "websocket"},
		{"-X", "BAD METHOD", url, "echo/1"},
		{"-X", "CONNECT", url, "echo/1"},
		{"-timeout", "-1s", url, "echo/1"},
		{"-nosuchflag", url, "echo/1"},
		{url},
		{url, "echo/1", "extra"},
	} {
		r := runDialCmd(t, strings.NewReader("data"), args...)
		assert.Equal(t, 2, r.code, "%q: %s", args, r.stderr)
		assert.Empty(t, r.stdout, "%q", args)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if assert.Len(t, lines, 2, "%q: an error line and the synopsis: %s", args, r.stderr) {
			assert.True(t, strings.HasPrefix(lines[0], "upgrade dial: "), "%q: %s", args, lines[0])
			assert.True(t, strings.HasPrefix(lines[1], "usage: upgrade dial "), "%q: %s", args, lines[1])
		}
	}
	f.assertNothingConnected(t)
}

// TestDialInvalidSwitch: responses that do not complete a switch exit 1
// with one line on stderr, and print nothing on stdout.
func TestDialInvalidSwitch(t *testing.T) {
	for _, tc := range []struct {
		name, response, want string
	}{
		{"no Connection upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\n\r\n", "Connection"},
		{"protocol not offered", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: other/2\r\nConnection: Upgrade\r\n\r\n", "other/2"},
		{"malformed", "HTTP/1.1 abc\r\n\r\n", "malformed"},
		{"426 with Upgrade", "HTTP/1.1 426 Upgrade Required\r\nUpgrade: a/1, b\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n", "a/1, b"},
		{"timeout", "", "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, func(c net.Conn, br *bufio.Reader) {
				if tc.response != "" {
					_, _ = io.WriteString(c, tc.response)
				}
				_, _ = io.Copy(io.Discard, br) // until the client goes
			})
			start := time.Now()
			r := runDialCmd(t, strings.NewReader(""), "-timeout", "500ms", "http://"+f.addr()+"/", "echo/1")
			assert.Equal(t, 1, r.code, r.stderr)
			assert.Empty(t, r.stdout)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
			assert.Contains(t, r.stderr, tc.want)
			assert.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// TestDialBytesWith101: bytes the server sends with the 101 reach stdout;
// the request carries the offers and the extra fields.
func TestDialBytesWith101(t *testing.T) {
	f := startFake(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\nEARLY")
		time.Sleep(50 * time.Millisecond)
		_, _ = io.WriteString(c, " LATE")
	})
	r := runDialCmd(t, strings.NewReader(""), "-H", "X-Test: yes", "-X", "PUT", "http://"+f.addr()+"/path?q=1", "echo/1, other")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "EARLY LATE", r.stdout)
	req := f.lastRequest()
	assert.True(t, strings.HasPrefix(req, "PUT /path?q=1 HTTP/1.1\r\n"), req)
	assert.Contains(t, req, "Upgrade: echo/1, other\r\n")
	assert.Contains(t, req, "X-Test: yes\r\n")
}

// TestDialWebSocketHeaders: when websocket is one of several offers, the
// handshake fields are sent; h2c adds HTTP2-Settings to Connection.
func TestDialWebSocketHeaders(t *testing.T) {
	f := startFake(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
	})
	r := runDialCmd(t, strings.NewReader(""), "http://"+f.addr()+"/", "echo/1,websocket,h2c")
	assert.Equal(t, 1, r.code)
	req := f.lastRequest()
	assert.Regexp(t, `(?m)^Sec-Websocket-Key: [A-Za-z0-9+/]{22}==\r$`, req)
	assert.Contains(t, req, "Sec-Websocket-Version: 13\r\n")
	assert.Regexp(t, `(?m)^Connection: Upgrade, HTTP2-Settings\r$`, req)
	assert.Contains(t, req, "Http2-Settings: ")
}

// TestDialWebSocketBadAccept: a 101 with a wrong Sec-WebSocket-Accept is
// refused.
func TestDialWebSocketBadAccept(t *testing.T) {
	f := startFake(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n")
	})
	r := runDialCmd(t, strings.NewReader("x\n"), "ws://"+f.addr()+"/", "websocket")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	assert.Contains(t, r.stderr, "Sec-WebSocket-Accept")
	assert.NotContains(t, r.stderr, "switched to")
}

// evil is text a hostile server sends to take over the user's terminal:
// clear the screen, set the window title, colour, an 8-bit CSI as UTF-8
// (U+009B) and a right-to-left override that reorders what follows.
const evil = "\x1b[2J\x1b]0;pwned\x07\x1b[31m\u009b1m\u202e"

// assertTerminalSafe fails if s holds anything a terminal would act on
// rather than print: control bytes other than TAB and the line ends, DEL,
// C1 controls, invalid UTF-8 or invisible formatting characters.
func assertTerminalSafe(t *testing.T, name, s string) {
	t.Helper()
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			assert.Failf(t, "invalid UTF-8", "%s: byte %d of %q", name, i, s)
		case r < 0x20 && r != '\t' && r != '\n', r == 0x7f, 0x80 <= r && r <= 0x9f, unicode.Is(unicode.Cf, r):
			assert.Failf(t, "control character", "%s: %U at byte %d of %q", name, r, i, s)
		}
	}
}

// TestDialTerminalSafety: nothing the server sends reaches the terminal as
// an escape sequence. Status lines, header fields, Upgrade lists, close
// reasons and the h2c response head are printed with their control
// characters made visible.
func TestDialTerminalSafety(t *testing.T) {
	for _, tc := range []struct {
		name, response string
		offers         string
		want           string // in stderr
	}{
		{"status line of a refusal", "HTTP/1.1 426 Upgrade " + evil + "Required\r\nUpgrade: echo/2\r\nContent-Length: 0\r\n\r\n", "echo/1", `\x1b[2J`},
		{"raw 8-bit CSI in a status line", "HTTP/1.1 403 a\x9b1mb\r\nContent-Length: 0\r\n\r\n", "echo/1", `\x9b1m`},
		{"header field of a refusal", "HTTP/1.1 400 Bad Request\r\nX-Evil: " + evil + "\r\nContent-Length: 0\r\n\r\n", "echo/1", `\x1b[2J`},
		{"header field of a 101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\nX-Evil: " + evil + "\r\n\r\n", "echo/1", `\x1b[2J`},
		{"Upgrade list of a 101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1, " + evil + "\r\nConnection: Upgrade\r\n\r\n", "echo/1", `\x1b[2J`},
		{"reason of a 101", "HTTP/1.1 101 " + evil + "\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n", "echo/1", "reason phrase"},
		{"Sec-WebSocket-Accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \u009b1m\u202e\r\n\r\n", "websocket", `\xc2\x9b1m\xe2\x80\xae`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, func(c net.Conn, br *bufio.Reader) {
				_, _ = io.WriteString(c, tc.response)
				_, _ = io.Copy(io.Discard, br)
			})
			r := runDialCmd(t, strings.NewReader(""), "-timeout", "5s", "http://"+f.addr()+"/", tc.offers)
			assert.Equal(t, 1, r.code, r.stderr)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
			assert.Contains(t, r.stderr, tc.want)
			assertTerminalSafe(t, "stderr", r.stderr)
		})
	}

	t.Run("WebSocket close reason", func(t *testing.T) {
		fake := make(chan *fakeServer, 1) // f, handed to the handler's goroutine
		f := startFake(t, func(c net.Conn, br *bufio.Reader) {
			f := <-fake
			fake <- f
			m := regexp.MustCompile(`(?m)^Sec-Websocket-Key: (\S+)\r$`).FindStringSubmatch(f.lastRequest())
			if m == nil {
				return
			}
			reason := []byte(evil)
			frame := append([]byte{0x88, byte(2 + len(reason)), 0x03, 0xe9}, reason...) // close, 1001
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Accept: "+websocket.AcceptKey(m[1])+"\r\n\r\n"+string(frame))
			_, _ = io.Copy(io.Discard, br)
		})
		fake <- f
		r := runDialCmd(t, strings.NewReader(""), "-timeout", "5s", "ws://"+f.addr()+"/", "websocket")
		assert.Equal(t, 0, r.code, r.stderr)
		assert.Contains(t, r.stderr, "server closed the WebSocket with 1001 ")
		assert.Contains(t, r.stderr, `\x1b[2J\x1b]0;pwned\a\x1b[31m\u009b1m\u202e`)
		assertTerminalSafe(t, "stderr", r.stderr)
	})

	t.Run("h2c response head", func(t *testing.T) {
		f := startFake(t, func(c net.Conn, br *bufio.Reader) {
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
			fr := http2.NewFramer(c, br)
			var block bytes.Buffer
			enc := hpack.NewEncoder(&block)
			_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			_ = enc.WriteField(hpack.HeaderField{Name: "x-evil", Value: "a\u009b1m\u202eb"})
			if fr.WriteSettings() != nil {
				return
			}
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: false, EndHeaders: true}) != nil {
				return
			}
			if fr.WriteData(1, true, []byte("body \x1b[2J stays raw")) != nil {
				return
			}
			_, _ = io.Copy(io.Discard, br)
		})
		r := runDialCmd(t, strings.NewReader(""), "-timeout", "5s", "http://"+f.addr()+"/", "h2c")
		require.Equal(t, 0, r.code, r.stderr)
		head, body, ok := strings.Cut(r.stdout, "\n\n")
		require.True(t, ok, r.stdout)
		assert.Equal(t, ":status: 200\nx-evil: a\\u009b1m\\u202eb", head)
		assertTerminalSafe(t, "the response head", head)
		assert.Equal(t, "body \x1b[2J stays raw", body, "the body is data: copied as it is")
	})
}
