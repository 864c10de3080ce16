package upgrade

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countingListener counts the bytes read from the connections it accepts.
type countingListener struct {
	net.Listener
	read atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, read: &l.read}, nil
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// TestBodyMemoryFollowsBytesReceived: requests that declare a body of
// 1 MiB and send one byte of it hold, while the server waits for the rest,
// memory in proportion to what they sent, not to what they declared.
func TestBodyMemoryFollowsBytesReceived(t *testing.T) {
	const (
		clients  = 300
		declared = 1 << 20
		// Generous for net/http's own per-connection state and the
		// first read buffer; a buffer of the declared size is 1 MiB.
		maxPerRequest = 64 << 10
	)
	ran := make(chan struct{}, clients)
	s := &Server{HandshakeTimeout: time.Minute, ErrorLog: slog.New(slog.DiscardHandler)}
	s.HandleRoute("body/1", Route{Handler: HandlerFunc(func(*Conn) { ran <- struct{}{} }), Methods: []string{"POST"}, MaxBody: declared})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := &countingListener{Listener: inner}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		// Shutdown returns once every connection's goroutine is done.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, hs.Shutdown(ctx))
		require.ErrorIs(t, <-served, http.ErrServerClosed)
	}()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	req := upgradeReq("POST", "body/1", "Content-Length: "+strconv.Itoa(declared)) + "x"
	for range clients {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		require.NoError(t, err)
		conns = append(conns, c)
		_, err = io.WriteString(c, req)
		require.NoError(t, err)
	}
	// Every request, and its one body byte, has been read by the server:
	// each is now waiting in the body read before the switch.
	want := int64(clients * len(req))
	require.Eventually(t, func() bool { return ln.read.Load() == want }, 20*time.Second, 5*time.Millisecond,
		"the server read %d of the %d bytes sent", ln.read.Load(), want)
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap growth with %d requests waiting for their body: %d KiB (%d B per request)", clients, growth>>10, growth/clients)
	assert.Less(t, growth/clients, int64(maxPerRequest), "memory per waiting request")
	assert.Empty(t, ran, "nothing switched")
}

// readBodyDeclared is the strategy readBody does not use: a buffer of the
// declared length up front. BenchmarkReadBody compares the two.
func readBodyDeclared(r *http.Request, max int64) (int, error) {
	if r.ContentLength > max {
		return 0, errBodyTooLarge
	}
	b := make([]byte, 0, r.ContentLength+1)
	for {
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return len(b), nil
		}
		if err != nil {
			return 0, err
		}
		if len(b) == cap(b) {
			return 0, errBodyTooLarge
		}
	}
}

// BenchmarkReadBody compares, for bodies that arrive whole, the cost of
// reading a request body before the switch with readBody (chunks allocated
// as bytes arrive) against one buffer of the declared length up front.
// Memory per byte received is what readBody bounds; this shows what that
// costs an honest client.
func BenchmarkReadBody(b *testing.B) {
	chunked := func(r *http.Request, max int64) (int, error) {
		body, err := readBody(r, max)
		if err != nil {
			return 0, err
		}
		return body.Len(), nil
	}
	for _, size := range []int{100, 4 << 10, 64 << 10, 1 << 20} {
		body := bytes.Repeat([]byte("b"), size)
		for _, impl := range []struct {
			name string
			read func(*http.Request, int64) (int, error)
		}{{"received", chunked}, {"declared", readBodyDeclared}} {
			b.Run(impl.name+"/"+strconv.Itoa(size), func(b *testing.B) {
				r := &http.Request{ContentLength: int64(size)}
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					r.Body = io.NopCloser(bytes.NewReader(body))
					n, err := impl.read(r, defaultMaxRequestBody)
					if err != nil || n != size {
						b.Fatalf("read %d bytes, err %v", n, err)
					}
				}
			})
		}
	}
}
