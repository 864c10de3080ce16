package main

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// startProxyCmd starts `upgrade proxy -addr 127.0.0.1:0 -to http://BACKEND
// args...`, waits for its address line (whose scheme it returns too), and
// kills it at the end of the test.
func startProxyCmd(t *testing.T, backend string, args ...string) (*server, string) {
	t.Helper()
	return startCommand(t, "proxy", append([]string{"-addr", "127.0.0.1:0", "-to", "http://" + backend}, args...)...)
}

func TestProxyAddressLine(t *testing.T) {
	back := startServer(t)
	p, scheme := startProxyCmd(t, back.addr)
	assert.Equal(t, "http", scheme)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(t, 10*time.Second))
	assert.Equal(t, "listening on http://"+p.addr+"\n", p.stdout.String(), "stdout holds exactly one line")
}

func TestProxyUsageError(t *testing.T) {
	for _, args := range [][]string{
		{"proxy"},
		{"proxy", "-to", "ftp://127.0.0.1:1"},
		{"proxy", "-to", "http://"},
		{"proxy", "-to", "http://127.0.0.1:1", "-allow", "web socket"},
		{"proxy", "-to", "http://127.0.0.1:1", "-grace", "-1s"},
		{"proxy", "-to", "http://127.0.0.1:1", "extra"},
		{"proxy", "-to", "http://127.0.0.1:1", "-http3"},
	} {
		r := runCmd(t, args...)
		assert.Equal(t, 2, r.code, "%q: %s", args, r.stderr)
		assert.Empty(t, r.stdout, "%q", args)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		require.Len(t, lines, 2, "%q: one error line and the synopsis: %q", args, r.stderr)
		assert.True(t, strings.HasPrefix(lines[0], "upgrade proxy: "), "%q: %q", args, lines[0])
		assert.Equal(t, "usage: "+proxyCommand.synopsis+" (see upgrade proxy -h)", lines[1])
	}
	out, err := command(t, "proxy", "-h").CombinedOutput()
	require.NoError(t, err)
	assert.Contains(t, string(out), "upgrade proxy [-addr HOST:PORT] -to URL [-allow PROTO,...] [-tls [-http3]] [-insecure] [-grace D] [-v]")
}

// TestProxyEchoAndPlain: through `upgrade proxy` in front of `upgrade
// serve`, echo/1 keeps the bytes pipelined behind the request, a
// WebSocket handshake completes, and plain requests are proxied as
// ordinary HTTP.
func TestProxyEchoAndPlain(t *testing.T) {
	back := startServer(t)
	p, _ := startProxyCmd(t, back.addr, "-v")
	c, br := switchEcho(t, p.addr) // "ping" sent behind the request, echoed
	_, err := io.WriteString(c, "more")
	require.NoError(t, err)
	got := make([]byte, 4)
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	assert.Equal(t, "more", string(got))
	require.NoError(t, c.CloseWrite())
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Empty(t, rest)

	openWebSocket(t, p.addr)

	resp, err := httpClient(t).Get("http://" + p.addr + "/protocols")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), "echo/1")

	require.Eventually(t, func() bool {
		return strings.Contains(p.stderr.String(), `msg="upgrade: proxied connection closed" protocol=echo/1`)
	}, testTimeout, 10*time.Millisecond, "-v logs the pair when it ends")
}

// TestProxyH2CNotForwarded: by default an h2c offer reaches the backend
// as a plain request, so it is answered normally, never with a 101; with
// -allow h2c it is switched.
func TestProxyH2CNotForwarded(t *testing.T) {
	back := startServer(t)
	p, _ := startProxyCmd(t, back.addr)
	req := "GET /protocols HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
	_, _, status, _ := sendHead(t, p.addr, req)
	assert.Equal(t, "HTTP/1.1 200 OK", status)

	p2, _ := startProxyCmd(t, back.addr, "-allow", "h2c,echo/*")
	_, _, status, h := sendHead(t, p2.addr, req)
	assert.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
	assert.Equal(t, "h2c", h.Get("Upgrade"))
}

// TestProxyTLS: with -tls the proxy serves HTTPS and switches over it.
func TestProxyTLS(t *testing.T) {
	back := startServer(t)
	p, scheme := startProxyCmd(t, back.addr, "-tls")
	require.Equal(t, "https", scheme)
	raw := rawConn(t, p.addr)
	c := tls.Client(raw, &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	require.NoError(t, c.Handshake())
	assert.Equal(t, "127.0.0.1", c.ConnectionState().PeerCertificates[0].IPAddresses[0].String())
	_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nover tls")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	status, _ := readResponseHead(t, br)
	require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
	got := make([]byte, len("over tls"))
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	assert.Equal(t, "over tls", string(got))
}

// TestProxySIGTERM: proxied pairs keep relaying after SIGTERM, are closed
// when the grace period ends, and the proxy exits 0.
func TestProxySIGTERM(t *testing.T) {
	back := startServer(t, "-grace", "30s")
	const grace = time.Second
	p, _ := startProxyCmd(t, back.addr, "-grace", grace.String())
	c, br := switchEcho(t, p.addr)
	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	_, err := io.WriteString(c, "after")
	require.NoError(t, err)
	got := make([]byte, 5)
	_, err = io.ReadFull(br, got)
	require.NoError(t, err, "relayed during the grace period")
	assert.Equal(t, "after", string(got))
	_, err = io.ReadAll(br)
	if err != nil {
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		require.False(t, ne.Timeout(), "the pair was not closed")
	}
	assert.GreaterOrEqual(t, time.Since(start), grace)
	assert.Equal(t, 0, p.wait(t, 5*time.Second))
}

// TestProxyHTTP10UpgradeNotForwarded: an HTTP/1.0 request offering a
// protocol -allow does not allow is proxied as a plain request: upgrade
// serve answers it normally, never with a 101.
func TestProxyHTTP10UpgradeNotForwarded(t *testing.T) {
	back := startServer(t)
	p, _ := startProxyCmd(t, back.addr, "-allow", "echo/1")
	for _, req := range []string{
		"GET / HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n",
	} {
		resp, _ := rawRequest(t, p.addr, req)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%q", req)
		assert.Empty(t, resp.Header.Get("Upgrade"))
	}
}

// headerLine returns the value of the field name in a raw request head.
func headerLine(head, name string) string {
	for _, l := range strings.Split(head, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestProxyForwardedOnePolicy: plain requests and upgrades reach the
// backend with the same X-Forwarded-For and Forwarded fields: the
// client's, then the proxy's own element, last.
func TestProxyForwardedOnePolicy(t *testing.T) {
	back := startFake(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n")
	})
	plainBack := startFake(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	spoof := "Forwarded: for=198.51.100.7;proto=https\r\nX-Forwarded-For: 198.51.100.7\r\n"
	p, _ := startProxyCmd(t, back.addr())
	_, _, status, _ := sendHead(t, p.addr, "GET / HTTP/1.1\r\nHost: front.example\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n"+spoof+"\r\n")
	require.Equal(t, "HTTP/1.1 101 Switching Protocols", status)
	p2, _ := startProxyCmd(t, plainBack.addr())
	resp, body := rawRequest(t, p2.addr, "GET / HTTP/1.1\r\nHost: front.example\r\n"+spoof+"\r\n")
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))

	up, plain := back.lastRequest(), plainBack.lastRequest()
	const want = "for=198.51.100.7;proto=https, for=127.0.0.1;host=front.example;proto=http"
	assert.Equal(t, want, headerLine(up, "Forwarded"), "upgrade:\n%s", up)
	assert.Equal(t, want, headerLine(plain, "Forwarded"), "plain:\n%s", plain)
	assert.Equal(t, "198.51.100.7, 127.0.0.1", headerLine(up, "X-Forwarded-For"))
	assert.Equal(t, "198.51.100.7, 127.0.0.1", headerLine(plain, "X-Forwarded-For"))
}

// TestProxy426ListsForwardable: a backend's 426 reaches the client with
// "Connection: Upgrade" and an Upgrade list holding only what the proxy
// would forward (no h2c by default), whether the request was forwarded
// as an upgrade, passed on as a plain request because it offered nothing
// allowed, or was plain; when nothing would be forwarded, the proxy
// answers 403.
func TestProxy426ListsForwardable(t *testing.T) {
	back := startServer(t)
	p, _ := startProxyCmd(t, back.addr)
	for _, req := range []string{
		"GET /required HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/2\r\n\r\n",
		"GET /required HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
		"GET /required HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		_, _, status, h := sendHead(t, p.addr, req)
		assert.Equal(t, "HTTP/1.1 426 Upgrade Required", status, "%q", req)
		assert.Equal(t, "echo/1, websocket", h.Get("Upgrade"), "%q", req)
		assert.True(t, httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade"), "%q: %q", req, h["Connection"])
	}
	p2, _ := startProxyCmd(t, back.addr, "-allow", "other/1")
	resp, _ := rawRequest(t, p2.addr, "GET /required HTTP/1.1\r\nHost: x\r\n\r\n")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("Upgrade"))
}

// TestProxyDefaultAddr: the proxy's default address is not the demo
// server's, so the two run side by side with their defaults.
func TestProxyDefaultAddr(t *testing.T) {
	pc, err := parseProxy([]string{"-to", "http://127.0.0.1:8080"})
	require.NoError(t, err)
	sc, err := parseServe(nil)
	require.NoError(t, err)
	assert.NotEqual(t, sc.addr, pc.addr)
	assert.Equal(t, "127.0.0.1:9090", pc.addr)
	assert.Equal(t, "http://"+sc.addr, pc.to.String(), "the demo's own line points at serve's default")
}

// TestProxyVerboseLog: with -v the proxy logs one INFO line per proxied
// connection or stream when it ends, naming the protocol, the client's
// HTTP version and what happened; backend failures are also logged as
// errors, with or without -v.
func TestProxyVerboseLog(t *testing.T) {
	back := startServer(t)
	line := func(p *server, how string) string {
		t.Helper()
		re := regexp.MustCompile(`(?m)^time=\S+ level=INFO msg="upgrade: proxied connection closed" .*how="` + regexp.QuoteMeta(how) + `".*$`)
		var l string
		require.Eventually(t, func() bool {
			l = re.FindString(p.stderr.String())
			return l != ""
		}, testTimeout, 10*time.Millisecond, "no line with how=%q in:\n%s", how, p.stderr)
		return l
	}
	p, _ := startProxyCmd(t, back.addr, "-v")

	c, br := switchEcho(t, p.addr)
	require.NoError(t, c.CloseWrite())
	_, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Regexp(t, `protocol=echo/1 remote=`+regexp.QuoteMeta(c.LocalAddr().String())+` proto=HTTP/1\.1 backend=\S+ duration=\S+ how="closed by client" sent=4 received=4$`,
		line(p, "closed by client"))

	rawRequest(t, p.addr, "GET /required HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/2\r\n\r\n")
	assert.Contains(t, line(p, "refused by backend with 426"), "protocol=echo/2 ")

	h2 := wiretest.DialH2(t, p.addr, nil)
	st := h2.Connect("http", p.addr, "/", "echo/1")
	require.Equal(t, "200", st.Status())
	st.Write([]byte("x"))
	assert.Equal(t, "x", string(st.Read(1)))
	st.Reset(http2.ErrCodeCancel)
	assert.Regexp(t, `protocol=echo/1 remote=\S+ proto=HTTP/2\.0 `, line(p, "closed by client (stream cancelled)"))

	dead, _ := startProxyCmd(t, closedAddr(t), "-v")
	resp, _ := rawRequest(t, dead.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Contains(t, line(dead, "backend unreachable"), "protocol=echo/1 ")
	assert.Contains(t, dead.stderr.String(), "level=WARN")

	quiet, _ := startProxyCmd(t, closedAddr(t))
	rawRequest(t, quiet.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	require.Eventually(t, func() bool { return strings.Contains(quiet.stderr.String(), "level=WARN") }, testTimeout, 10*time.Millisecond)
	assert.NotContains(t, quiet.stderr.String(), "proxied connection closed", "no line per connection without -v")
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestProxyInsecure: -insecure reaches a backend with a self-signed
// certificate (upgrade serve -tls) for upgrades and plain requests alike;
// without it the backend's certificate is refused and the log says so.
func TestProxyInsecure(t *testing.T) {
	back := startServer(t, "-tls")
	p, _ := startCommand(t, "proxy", "-addr", "127.0.0.1:0", "-to", "https://"+back.addr, "-insecure", "-v")
	c, br := switchEcho(t, p.addr)
	require.NoError(t, c.CloseWrite())
	_, err := io.ReadAll(br)
	require.NoError(t, err)
	resp, body := rawRequest(t, p.addr, "GET /protocols HTTP/1.1\r\nHost: x\r\n\r\n")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), "echo/1")

	strict, _ := startCommand(t, "proxy", "-addr", "127.0.0.1:0", "-to", "https://"+back.addr, "-v")
	resp, _ = rawRequest(t, strict.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	require.Eventually(t, func() bool {
		return strings.Contains(strict.stderr.String(), `how="backend TLS verification failed"`)
	}, testTimeout, 10*time.Millisecond, strict.stderr.String())
}

// TestHelpExamples: the example lines of every help text work as written,
// in the order given: each upgrade command line parses, no two servers
// started by them listen on the same address, and every dial and proxy
// target is one of them (or the demo server a text says is running).
func TestHelpExamples(t *testing.T) {
	for name, text := range map[string]string{
		"overview": overview, "serve": serveCommand.help, "dial": dialCommand.help, "proxy": proxyCommand.help,
	} {
		_, examples, ok := strings.Cut(text, "\nExamples")
		require.True(t, ok, "%s help has examples", name)
		listening := map[string]string{} // address -> the line that listens on it
		if strings.Contains(examples, `"upgrade serve" running`) {
			listening["127.0.0.1:8080"] = "upgrade serve (another terminal)"
		}
		for _, line := range strings.Split(examples, "\n")[1:] {
			line, _, _ = strings.Cut(strings.TrimSpace(line), " #")
			if i := strings.LastIndex(line, "| "); i >= 0 {
				line = line[i+2:]
			}
			words := shellWords(line)
			if len(words) < 2 || words[0] != "upgrade" {
				continue
			}
			var listen, target string
			switch words[1] {
			case "serve":
				cfg, err := parseServe(words[2:])
				require.NoError(t, err, "%s: %q", name, line)
				listen = cfg.addr
			case "proxy":
				cfg, err := parseProxy(words[2:])
				require.NoError(t, err, "%s: %q", name, line)
				listen, target = cfg.addr, cfg.to.Host
			case "dial":
				cfg, err := parseDial(words[2:])
				require.NoError(t, err, "%s: %q", name, line)
				u, err := url.Parse(cfg.url)
				require.NoError(t, err)
				target = u.Host
			}
			if target != "" {
				assert.Contains(t, listening, target, "%s: %q: nothing listens on %s", name, line, target)
			}
			if listen != "" && !strings.HasSuffix(listen, ":0") {
				prev, clash := listening[listen]
				assert.False(t, clash, "%s: %q listens on %s, as %q does", name, line, listen, prev)
				listening[listen] = line
			}
		}
	}
}

// shellWords splits a command line as a shell would, for the simple lines
// of the help texts: words separated by spaces, single quotes kept
// together, redirections and a trailing & dropped.
func shellWords(line string) []string {
	var words []string
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		var w string
		if strings.HasPrefix(line, "'") {
			end := strings.Index(line[1:], "'")
			if end < 0 {
				end = len(line) - 1
			}
			w, line = line[1:1+end], line[min(len(line), end+2):]
		} else {
			w, line, _ = strings.Cut(line, " ")
		}
		if w == "" || w == "&" || strings.HasPrefix(w, "<") || strings.HasPrefix(w, ">") {
			continue
		}
		words = append(words, w)
	}
	return words
}
