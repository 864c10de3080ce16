package websocket

// The package's test helpers: the server side (a Handler behind an
// upgrade.Server, on a socket or in process) and the client side (a
// scripted server for Dial). Raw connections come from internal/wiretest.

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rfcKey and rfcAccept are the example of RFC 6455 §1.3.
const (
	rfcKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// ---- server side ----

// newServer returns an upgrade.Server with h registered for "websocket"
// (through h.Route() if route is true). Without a Serve, h writes
// "subprotocol=<the subprotocol selected>\n", then echoes.
func newServer(h *Handler, route bool) *upgrade.Server {
	if h.Serve == nil {
		h.Serve = func(c *upgrade.Conn, subprotocol string) {
			_, _ = io.WriteString(c, "subprotocol="+subprotocol+"\n")
			_, _ = io.Copy(c, c)
		}
	}
	s := &upgrade.Server{}
	if route {
		s.HandleRoute("websocket", h.Route())
	} else {
		s.Handle("websocket", h)
	}
	return s
}

// wsServer serves newServer(h, route) on 127.0.0.1 and returns its
// address.
func wsServer(t testing.TB, h *Handler, route bool) string {
	t.Helper()
	s := newServer(h, route)
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		_ = s.Close()
		ts.Close()
	})
	return ts.Listener.Addr().String()
}

// inProcess serves raw, a request as a client sends it, to s without a
// socket (wiretest.Serve). At cleanup s is closed and shut down, so that a
// Serve started by a switch does not outlive the test.
func inProcess(t *testing.T, s *upgrade.Server, raw string) *wiretest.Result {
	t.Helper()
	t.Cleanup(func() {
		_ = s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, s.Shutdown(ctx))
	})
	return wiretest.Serve(t, s, raw)
}

// handshake serves raw to newServer(h, false) in process.
func handshake(t *testing.T, h *Handler, raw string) *wiretest.Result {
	t.Helper()
	return inProcess(t, newServer(h, false), raw)
}

// request builds a raw handshake request: the standard fields, with
// lines replacing (by name) or adding to them; a line "-Name" removes a
// field.
func request(method string, lines ...string) string {
	std := [][2]string{
		{"Host", "example.com"},
		{"Upgrade", "websocket"},
		{"Connection", "Upgrade"},
		{"Sec-WebSocket-Key", rfcKey},
		{"Sec-WebSocket-Version", "13"},
	}
	var extra []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-") {
			for i := range std {
				if ascii.EqualFold(std[i][0], l[1:]) {
					std[i][0] = ""
				}
			}
			continue
		}
		name, _, _ := strings.Cut(l, ":")
		replaced := false
		for i := range std {
			if ascii.EqualFold(std[i][0], name) {
				std[i] = [2]string{name, strings.TrimSpace(l[len(name)+1:])}
				replaced = true
			}
		}
		if !replaced {
			extra = append(extra, l)
		}
	}
	var b strings.Builder
	b.WriteString(method + " /chat HTTP/1.1\r\n")
	for _, f := range std {
		if f[0] != "" {
			b.WriteString(f[0] + ": " + f[1] + "\r\n")
		}
	}
	for _, l := range extra {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// rejected checks an answer that must not switch: status, no
// Sec-WebSocket-Accept, msg in the body.
func rejected(t *testing.T, res *wiretest.Result, status int, msg string) {
	t.Helper()
	require.Equal(t, status, res.Status, "body: %s", res.Body)
	assert.False(t, res.Hijacked, "not switched")
	assert.NotContains(t, res.Header, "Sec-Websocket-Accept")
	assert.Contains(t, res.Body, msg)
}

// ---- client side ----

// fakeServer accepts one connection on 127.0.0.1, reads a request, and
// answers with the raw response script returns for it. It then waits for
// the client to close the connection; closed receives whether it did
// within 5 seconds, and the request is sent on reqs.
func fakeServer(t *testing.T, script func(r *http.Request) string) (url string, reqs <-chan *http.Request, closed <-chan bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	rc := make(chan *http.Request, 1)
	cc := make(chan bool, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		r, err := http.ReadRequest(bufio.NewReader(nc))
		if err != nil {
			return
		}
		rc <- r
		if _, err := io.WriteString(nc, script(r)); err != nil {
			return
		}
		_, err = io.Copy(io.Discard, nc)
		cc <- err == nil // EOF: the client closed
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return "ws://" + ln.Addr().String() + "/chat", rc, cc
}

// switching returns a 101 for r with the correct accept and extra lines.
func switching(r *http.Request, lines ...string) string {
	s := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + AcceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\n"
	for _, l := range lines {
		s += l + "\r\n"
	}
	return s + "\r\n"
}

// dialCtx returns a context that bounds a Dial.
func dialCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
