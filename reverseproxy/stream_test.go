package reverseproxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeStream is the stream a fakeStreamWriter switches: one end of a TCP
// connection on 127.0.0.1 behind a type of its own, as a QUIC stream would
// be (the relay cannot splice it, and copies it through a buffer). Its
// CloseWrite ends the sending side at once.
type fakeStream struct{ *net.TCPConn }

// fakeStreamWriter is a ResponseWriter that is an upgrade.StreamAccepter,
// standing in for HTTP/3's: the test holds client, the other end of the
// stream.
type fakeStreamWriter struct {
	*httptest.ResponseRecorder
	server, client *net.TCPConn

	mu       sync.Mutex
	accepted http.Header // the fields AcceptStream was given; nil before
}

var _ upgrade.StreamAccepter = (*fakeStreamWriter)(nil)

func newFakeStreamWriter(t *testing.T) *fakeStreamWriter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	s, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() {
		c.Close()
		s.Close()
	})
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return &fakeStreamWriter{ResponseRecorder: httptest.NewRecorder(), server: s.(*net.TCPConn), client: c.(*net.TCPConn)}
}

func (w *fakeStreamWriter) AcceptStream(h http.Header) (net.Conn, error) {
	w.mu.Lock()
	w.accepted = h.Clone()
	w.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	return fakeStream{w.server}, nil
}

// acceptedHeader returns the fields the stream was switched with, or nil.
func (w *fakeStreamWriter) acceptedHeader() http.Header {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.accepted
}

// wrappedWriter hides a ResponseWriter behind Unwrap, as middleware does.
type wrappedWriter struct{ http.ResponseWriter }

func (w wrappedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// streamRequest is an HTTP/3 extended CONNECT for protocol to path.
func streamRequest(path, protocol string, fields ...[2]string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "https://example.com"+path, nil)
	r.Method = http.MethodConnect // NewRequest would read the target as an authority
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/3.0", 3, 0
	r.Header[":protocol"] = []string{protocol}
	for _, f := range fields {
		r.Header.Add(f[0], f[1])
	}
	return r
}

// serveStream runs p.ServeHTTP(w, r) in a goroutine; wait waits for it to
// return.
func serveStream(t *testing.T, p *Proxy, w http.ResponseWriter, r *http.Request) (wait func()) {
	served := make(chan struct{})
	go func() {
		defer close(served)
		p.ServeHTTP(w, r)
	}()
	return func() {
		t.Helper()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeHTTP did not return")
		}
	}
}

// streamBackend switches to the offer with a field of its own and a
// greeting, echoes until EOF and half-closes; a WebSocket is answered as
// wsBackend does, and a request for /refuse with a 426.
func streamBackend(nc net.Conn, br *bufio.Reader, req *http.Request) {
	switch {
	case req.URL.Path == "/refuse":
		_, _ = io.WriteString(nc, "HTTP/1.1 426 Upgrade Required\r\nUpgrade: echo/2\r\nConnection: Upgrade\r\nContent-Length: 4\r\n\r\nnope")
		return
	case req.Header.Get("Upgrade") == "websocket":
		wsBackend(false, "ws|")(nc, br, req)
		return
	}
	if backend101(nc, req.Header.Get("Upgrade"), []string{"X-Backend: yes"}, "hello|") != nil {
		return
	}
	_, _ = io.Copy(struct{ io.Writer }{nc}, struct{ io.Reader }{br})
	_ = nc.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, nc)
}

// TestProxyStreamAccepter: an extended CONNECT whose ResponseWriter is an
// upgrade.StreamAccepter (directly or through Unwrap), as HTTP/3's is, is
// forwarded as an HTTP/1.1 upgrade and switched through AcceptStream with
// the end-to-end fields of the backend's 101. Bytes flow both ways, the
// backend's read-ahead first, and half-closes pass on both ways: such a
// stream can end its sending side while the handler runs.
func TestProxyStreamAccepter(t *testing.T) {
	b := startBackend(t, streamBackend)
	p := proxyTo(b)
	t.Cleanup(func() {
		assert.NoError(t, p.Close())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx))
	})
	for _, wrap := range []bool{false, true} {
		w := newFakeStreamWriter(t)
		var rw http.ResponseWriter = w
		if wrap {
			rw = wrappedWriter{w}
		}
		wait := serveStream(t, p, rw, streamRequest("/chat", "echo/1"))
		c := w.client
		assert.Equal(t, "hello|", readFull(t, c, len("hello|")), "wrapped %v", wrap)
		roundTrip(t, c, "over a stream")
		assert.Equal(t, map[string]int{"echo/1": 1}, p.ActiveConns())
		require.NoError(t, c.CloseWrite())
		rest, err := io.ReadAll(c)
		require.NoError(t, err, "the backend's half-close ends the stream's sending side")
		assert.Empty(t, rest)
		wait()

		assert.Equal(t, http.StatusOK, w.Code)
		h := w.acceptedHeader()
		assert.Equal(t, "yes", h.Get("X-Backend"))
		assert.Empty(t, h["Upgrade"])
		assert.Empty(t, h["Connection"])
		req := b.request()
		assert.Equal(t, http.MethodGet, req.Method)
		assert.Equal(t, "/chat", req.URL.Path)
		assert.Equal(t, "echo/1", req.Header.Get("Upgrade"))
		assert.True(t, hasConnectionOption(req.Header, "upgrade"))
		assert.Empty(t, req.Header.Values(":protocol"))
		waitProxyIdle(t, p)
	}
}

// TestProxyStreamAccepterWebSocket: a WebSocket over a StreamAccepter's
// stream is bridged as over HTTP/2: the backend gets a fresh key, the
// client's 200 no accept value. A backend's 426 is relayed as a 400
// without Upgrade, and the stream is never switched.
func TestProxyStreamAccepterWebSocket(t *testing.T) {
	b := startBackend(t, streamBackend)
	p := proxyTo(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, p.Shutdown(ctx))
	})

	w := newFakeStreamWriter(t)
	wait := serveStream(t, p, w, streamRequest("/ws", "websocket", [2]string{"Sec-WebSocket-Version", "13"}))
	c := w.client
	assert.Equal(t, "ws|", readFull(t, c, len("ws|")))
	roundTrip(t, c, "frames")
	require.NoError(t, c.CloseWrite())
	_, err := io.ReadAll(c)
	require.NoError(t, err)
	wait()
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Empty(t, w.acceptedHeader()["Sec-Websocket-Accept"], "the accept value answers the proxy's key")
	req := b.request()
	key, err := base64.StdEncoding.DecodeString(req.Header.Get("Sec-WebSocket-Key"))
	require.NoError(t, err)
	assert.Len(t, key, 16)
	assert.Equal(t, "13", req.Header.Get("Sec-WebSocket-Version"))

	w = newFakeStreamWriter(t)
	serveStream(t, p, w, streamRequest("/refuse", "echo/1"))()
	assert.Equal(t, http.StatusBadRequest, w.Code)
	assert.Empty(t, w.Header()["Upgrade"])
	assert.Equal(t, "nope", w.Body.String())
	assert.Nil(t, w.acceptedHeader(), "a refused stream is not switched")
	waitProxyIdle(t, p)
}

// resetStream is a fakeStream that records a Reset, as an HTTP/3 stream
// of http3.Handler can be reset.
type resetStream struct {
	fakeStream
	reset chan struct{}
}

func (s resetStream) Reset() {
	close(s.reset)
	_ = s.SetLinger(0)
	_ = s.Close()
}

// resetStreamWriter switches to a resetStream.
type resetStreamWriter struct {
	*fakeStreamWriter
	reset chan struct{}
}

func (w resetStreamWriter) AcceptStream(h http.Header) (net.Conn, error) {
	nc, err := w.fakeStreamWriter.AcceptStream(h)
	return resetStream{nc.(fakeStream), w.reset}, err
}

// TestProxyStreamAccepterResetPassedOn: a backend's reset reaches a
// StreamAccepter's stream as a reset: a stream with a Reset method is
// reset, not ended with FIN.
func TestProxyStreamAccepterResetPassedOn(t *testing.T) {
	b := startBackend(t, func(nc net.Conn, br *bufio.Reader, req *http.Request) {
		if backend101(nc, "echo/1", nil, "bye") != nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // "bye" first
		_ = nc.(*net.TCPConn).SetLinger(0)
	})
	p, log := proxyTo(b), &logBuffer{}
	p.ErrorLog = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := resetStreamWriter{newFakeStreamWriter(t), make(chan struct{})}
	wait := serveStream(t, p, w, streamRequest("/", "echo/1"))
	assert.Equal(t, "bye", readFull(t, w.client, 3))
	select {
	case <-w.reset:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream was not reset")
	}
	_, err := io.ReadAll(w.client)
	assert.ErrorIs(t, err, syscall.ECONNRESET)
	wait()
	assert.Contains(t, log.String(), `how="reset by backend"`)
	waitProxyIdle(t, p)
}
