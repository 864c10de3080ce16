package upgrade

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- delegated handlers standing in for the WebSocket libraries ----

// handlers counts the delegated handlers that are running, and waits at
// cleanup for them (and the goroutines they start) to return.
type handlers struct {
	wg    sync.WaitGroup
	calls atomic.Int32
}

func newHandlers(t *testing.T) *handlers {
	hs := &handlers{}
	// Registered before the server's cleanup, so it runs after it.
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { hs.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("delegated handlers still running")
		}
	})
	return hs
}

// wrap counts calls to f and tracks it until it returns.
func (hs *handlers) wrap(f http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.calls.Add(1)
		hs.wg.Add(1)
		defer hs.wg.Done()
		f(w, r)
	})
}

// head101 is the 101 the fake libraries write for protocol p.
func head101(p string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + p + "\r\nConnection: Upgrade\r\n\r\n"
}

// hijackDirect switches like gorilla/websocket: it finds Hijack with a
// plain type assertion, refuses (closing the connection, answering
// nothing) if the returned reader holds bytes, writes its own 101 on the
// connection in one write, then echoes on the net.Conn until EOF. serve,
// if non-nil, replaces the echo.
func hijackDirect(t *testing.T, serve func(r *http.Request, nc net.Conn)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hj, ok := w.(http.Hijacker)
		if !assert.True(t, ok, "the ResponseWriter must itself be an http.Hijacker") {
			http.Error(w, "no hijacker", http.StatusInternalServerError)
			return
		}
		nc, brw, err := hj.Hijack()
		if !assert.NoError(t, err) {
			return
		}
		defer nc.Close()
		if brw.Reader.Buffered() > 0 {
			return // "client sent data before handshake is complete"
		}
		if _, err := io.WriteString(nc, head101(r.Header.Get("Upgrade"))); err != nil {
			return
		}
		if serve != nil {
			serve(r, nc)
			return
		}
		_, _ = io.Copy(nc, nc)
	}
}

// ---- switching through the delegated handler ----

// TestDelegateSwitchKeepsPipelinedBytes: a handler that refuses buffered
// bytes (as gorilla/websocket does) switches, and the bytes the client
// sent in the same packet as the request reach it first through the
// returned connection. The connection is counted while it is open.
func TestDelegateSwitchKeepsPipelinedBytes(t *testing.T) {
	hs := newHandlers(t)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(hijackDirect(t, nil))})
	addr := serve(t, &s, &s).addr

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket") + "pipelined")
	assert.Equal(t, head101("websocket"), c.Head())
	assert.Equal(t, "pipelined", c.ReadN(len("pipelined")))
	assert.Equal(t, map[string]int{"websocket": 1}, s.ActiveConns())
	c.Send("more")
	assert.Equal(t, "more", c.ReadN(4))

	c.NC.Close()
	waitNoActive(t, &s)
}

// TestDelegateNarrowsRequest: the handler sees a request that offers only
// the chosen protocol, in the registered spelling with the client's
// version, with "Connection: Upgrade", and every other field as sent.
func TestDelegateNarrowsRequest(t *testing.T) {
	hs := newHandlers(t)
	type seen struct{ upgrade, connection, other []string }
	got := make(chan seen, 1)
	record := hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header["Upgrade"], r.Header["Connection"], r.Header["X-Other"]}
		http.Error(w, "seen", http.StatusTeapot)
	})
	var s Server
	s.HandleRoute("WebSocket", Route{Delegate: record})
	s.HandleRoute("chat/*", Route{Delegate: record})
	addr := serve(t, &s, &s).addr

	for _, tc := range []struct {
		req  string
		want seen
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nConnection: x-other\r\nUpgrade: foo/1, websocket\r\nUpgrade: h2c\r\nX-Other: 1\r\n\r\n",
			seen{[]string{"WebSocket"}, []string{"Upgrade"}, []string{"1"}}},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: CHAT/2\r\n\r\n",
			seen{[]string{"chat/2"}, []string{"Upgrade"}, nil}},
	} {
		c := wiretest.Dial(t, addr)
		c.Send(tc.req)
		assert.Equal(t, http.StatusTeapot, c.Response("GET").StatusCode)
		assert.Equal(t, tc.want, <-got)
	}
}

// TestDelegateWriteHeader101 switches like coder/websocket: header fields,
// WriteHeader(101), then Hijack through an Unwrap loop, then framing
// through the returned bufio.ReadWriter. The 101 reaches the wire exactly
// as net/http would write it (fields sorted, canonical names), without
// Date and without the fields a 101 cannot carry, in one piece before
// anything else.
func TestDelegateWriteHeader101(t *testing.T) {
	hs := newHandlers(t)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Upgrade", "websocket")
		h.Set("Connection", "Upgrade")
		h.Set("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusSwitchingProtocols)
		rw := w
		for {
			if _, ok := rw.(http.Hijacker); ok {
				break
			}
			rw = rw.(interface{ Unwrap() http.ResponseWriter }).Unwrap()
		}
		nc, brw, err := rw.(http.Hijacker).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		defer nc.Close()
		assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", w.Header().Get("Sec-WebSocket-Accept"), "Header works after Hijack")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = brw.WriteString("echo: " + line)
			if brw.Flush() != nil {
				return
			}
		}
	})})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket") + "one\n")
	assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-Websocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nUpgrade: websocket\r\n\r\n", c.Head())
	line, err := c.BR.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo: one\n", line)
	assert.Equal(t, map[string]int{"websocket": 1}, s.ActiveConns())
}

// TestDelegateAsyncHandlerStaysCounted switches like gobwas/ws (Hijack
// through http.ResponseController, the 101 written into the returned
// bufio.Writer) and returns at once, leaving the connection to a
// goroutine: the connection stays counted, and the request's context
// alive, until the goroutine closes it; then both end.
func TestDelegateAsyncHandlerStaysCounted(t *testing.T) {
	hs := newHandlers(t)
	returned := make(chan struct{})
	ctxErr := make(chan error, 2)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := http.NewResponseController(w).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		_, _ = brw.WriteString(head101("websocket"))
		if !assert.NoError(t, brw.Flush()) {
			nc.Close()
			return
		}
		ctx := r.Context()
		hs.wg.Add(1)
		go func() {
			defer hs.wg.Done()
			<-returned
			ctxErr <- ctx.Err()
			b := make([]byte, 4)
			for {
				n, err := nc.Read(b) // "quit" ends it
				if err != nil || string(b[:n]) == "quit" {
					break
				}
				_, _ = nc.Write(b[:n])
			}
			nc.Close()
			ctxErr <- ctx.Err()
		}()
	})})
	addr := serve(t, &s, &s).addr

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket"))
	assert.Equal(t, head101("websocket"), c.Head())
	require.Eventually(t, func() bool { return hs.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	close(returned)
	assert.NoError(t, <-ctxErr, "the request's context outlives ServeHTTP")
	c.Send("ping")
	assert.Equal(t, "ping", c.ReadN(4), "the connection works after ServeHTTP returned")
	assert.Equal(t, map[string]int{"websocket": 1}, s.ActiveConns(), "counted after ServeHTTP returned")

	c.Send("quit")
	assert.ErrorIs(t, <-ctxErr, context.Canceled, "the context ends when the connection is closed")
	waitNoActive(t, &s)
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
}

// TestDelegateNetConn: the *Conn handed out gives the socket through
// NetConn, and its Protocol and Request are the negotiated ones.
func TestDelegateNetConn(t *testing.T) {
	hs := newHandlers(t)
	var s Server
	s.HandleRoute("chat/*", Route{Delegate: hs.wrap(hijackDirect(t, func(r *http.Request, nc net.Conn) {
		c, ok := nc.(*Conn)
		if assert.True(t, ok, "Hijack returns a *Conn") {
			assert.IsType(t, &net.TCPConn{}, c.NetConn())
			assert.Equal(t, Protocol{"chat", "3"}, c.Protocol)
			assert.Equal(t, r, c.Request)
			assert.Equal(t, r.Context(), c.Context())
		}
		_, _ = io.WriteString(nc, "done")
	}))})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "chat/3"))
	assert.Equal(t, head101("chat/3"), c.Head())
	rest, err := io.ReadAll(c.BR)
	require.NoError(t, err)
	assert.Equal(t, "done", string(rest))
	waitNoActive(t, &s)
}

// ---- refusals ----

// TestDelegateRefusalPassesThrough: a handler that answers itself (a bad
// Origin: 403) gets its answer to the client unchanged but for
// "Connection: close", in endpoint and middleware mode alike; nothing is
// counted and the connection is closed after the answer.
func TestDelegateRefusalPassesThrough(t *testing.T) {
	hs := newHandlers(t)
	var s Server
	var counted atomic.Bool
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		counted.Store(len(s.ActiveConns()) > 0)
		w.Header().Set("X-Reason", "origin")
		http.Error(w, "Forbidden origin", http.StatusForbidden)
	})})
	var nextCalled atomic.Bool
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nextCalled.Store(true)
		plainHandler.ServeHTTP(w, r)
	})
	for _, addr := range []string{serve(t, &s, &s).addr, serve(t, &s, s.Middleware(next)).addr} {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "websocket", "Origin: http://evil.example") + "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp := c.Response("GET")
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		assert.Equal(t, "Forbidden origin\n", bodyString(t, resp))
		assert.Equal(t, "origin", resp.Header.Get("X-Reason"))
		assert.Equal(t, []string{"close"}, resp.Header["Connection"])
		_, err := c.BR.ReadByte()
		assert.ErrorIs(t, err, io.EOF, "the bytes behind a refused upgrade are not read as a request")
		assert.Empty(t, s.ActiveConns())
	}
	assert.Equal(t, int32(2), hs.calls.Load())
	assert.False(t, nextCalled.Load(), "the handler's answer stands in middleware mode too")
	assert.True(t, counted.Load(), "the slot is reserved while the handler runs")
}

// TestDelegateRefusalOnTheWire: a handler that hijacks and writes its
// refusal on the connection, then returns without closing it (as
// gobwas/ws's examples do), has its connection closed and uncounted.
func TestDelegateRefusalOnTheWire(t *testing.T) {
	hs := newHandlers(t)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		_, brw, err := http.NewResponseController(w).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		_ = brw.Flush()
	})})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket"))
	assert.Equal(t, http.StatusBadRequest, c.Response("GET").StatusCode)
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "closed when the handler returned")
	waitNoActive(t, &s)
}

// TestDelegateInterimThenRefusal: a handler that hijacks, writes interim
// responses (100 Continue, 103 Early Hints, in separate writes and split
// mid-line) and then a final refusal on the connection has it classified
// as a refusal: the connection is closed when the handler returns and its
// slot released.
func TestDelegateInterimThenRefusal(t *testing.T) {
	hs := newHandlers(t)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := http.NewResponseController(w).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		for _, part := range []string{"HTTP/1.1 100 Contin", "ue\r\n\r", "\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 40", "3 Forbidden\r\nContent-Length: 0\r\n\r\n"} {
			_, _ = nc.Write([]byte(part))
		}
	})})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket"))
	var codes []int
	for range 3 {
		codes = append(codes, c.Response("GET").StatusCode)
	}
	assert.Equal(t, []int{100, 103, http.StatusForbidden}, codes)
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "closed when the handler returned")
	waitNoActive(t, &s)
}

// TestDelegateAccepter: a delegated handler that is also an Accepter is
// asked before it is called, and can reject or decline.
func TestDelegateAccepter(t *testing.T) {
	hs := newHandlers(t)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: accepterHandler{
		Handler: hs.wrap(hijackDirect(t, nil)),
		accept: func(r *http.Request, h http.Header) error {
			h.Set("X-Not-Sent", "1")
			switch r.Header.Get("X-Auth") {
			case "ok":
				return nil
			case "":
				return &RejectError{Status: http.StatusUnauthorized}
			}
			return ErrDecline
		},
	}})
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s).addr

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket, echo/1"))
	assert.Equal(t, http.StatusUnauthorized, c.Response("GET").StatusCode)
	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket, echo/1", "X-Auth: no"))
	assert.Contains(t, c.Head(), "Upgrade: echo/1\r\n", "declined: the next offer is taken")
	assert.Equal(t, int32(0), hs.calls.Load())
	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket, echo/1", "X-Auth: ok"))
	assert.Equal(t, head101("websocket"), c.Head(), "the handler writes the 101; the Accepter's fields are not sent")
}

type accepterHandler struct {
	http.Handler
	accept func(r *http.Request, h http.Header) error
}

func (a accepterHandler) AcceptUpgrade(r *http.Request, h http.Header) error { return a.accept(r, h) }

// ---- limits and shutdown ----

// TestDelegateMaxConns: at a cap, a delegated upgrade is refused with 503
// and Retry-After before its handler runs; the slot frees when the
// connection closes.
func TestDelegateMaxConns(t *testing.T) {
	hs := newHandlers(t)
	s := Server{MaxConns: 2}
	s.HandleRoute("a", Route{Delegate: hs.wrap(hijackDirect(t, nil)), MaxConns: 1})
	s.HandleFunc("b", echo)
	addr := serve(t, &s, &s).addr

	c1 := wiretest.Dial(t, addr)
	c1.Send(upgradeReq("GET", "a"))
	assert.Equal(t, head101("a"), c1.Head())

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "a"))
	resp := c.Response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Equal(t, int32(1), hs.calls.Load(), "refused before the handler runs")

	c2 := wiretest.Dial(t, addr)
	c2.Send(upgradeReq("GET", "b"))
	c2.Head()
	assert.Equal(t, map[string]int{"a": 1, "b": 1}, s.ActiveConns())
	c1.NC.Close()
	require.Eventually(t, func() bool { return s.ActiveConns()["a"] == 0 }, 5*time.Second, time.Millisecond)
	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "a"))
	assert.Equal(t, head101("a"), c.Head(), "the slot was freed when the connection closed")
	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "a, b"))
	assert.Equal(t, http.StatusServiceUnavailable, c.Response("GET").StatusCode, "the server-wide cap")
	assert.Equal(t, int32(2), hs.calls.Load())
}

// TestDelegateShutdownSignalsThenCloses: Shutdown closes the channel
// Draining returns for the request's context at once; the connection
// keeps working, its context alive, through the grace period; when it
// ends the Server closes the connection and the context is cancelled.
func TestDelegateShutdownSignalsThenCloses(t *testing.T) {
	hs := newHandlers(t)
	ctxs := make(chan context.Context, 1)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(hijackDirect(t, func(r *http.Request, nc net.Conn) {
		ctxs <- r.Context()
		done := make(chan struct{})
		defer close(done)
		hs.wg.Add(1)
		go func() {
			defer hs.wg.Done()
			select {
			case <-Draining(r.Context()):
				_, _ = io.WriteString(nc, "going away")
			case <-done:
			}
		}()
		_, _ = io.Copy(io.Discard, nc) // ignores everything else
	}))})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket"))
	c.Head()
	ctx := <-ctxs
	assert.Nil(t, Draining(context.Background()))

	const grace = 300 * time.Millisecond
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(sctx) }()
	assert.Equal(t, "going away", c.ReadN(len("going away")), "the handler is told")
	assert.Less(t, time.Since(start), grace, "told at the start of Shutdown")
	assert.NoError(t, ctx.Err(), "the context lives through the grace period")
	c.Send("still here")

	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "closed by the Server")
	assert.GreaterOrEqual(t, time.Since(start), grace, "at the end of the grace period")
	assert.ErrorIs(t, <-shut, context.DeadlineExceeded)
	assert.ErrorIs(t, ctx.Err(), context.Canceled)
	assert.Empty(t, s.ActiveConns())
}

// TestDelegateClose: Server.Close closes a delegated connection at once,
// even one whose holder never closes it, and the slot is released.
func TestDelegateClose(t *testing.T) {
	hs := newHandlers(t)
	held := make(chan net.Conn, 1)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := w.(http.Hijacker).Hijack()
		if assert.NoError(t, err) {
			_, _ = io.WriteString(nc, head101("websocket"))
			held <- nc // kept, never closed by the handler
		}
	})})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket"))
	c.Head()
	<-held
	assert.Equal(t, map[string]int{"websocket": 1}, s.ActiveConns())
	require.NoError(t, s.Close())
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
	assert.Empty(t, s.ActiveConns(), "released when the Server closed it")
}

// TestDelegateRefusedWhileShuttingDown: once Shutdown has started, a
// delegated upgrade is refused with 503 before its handler runs (the
// middleware serves it as a plain request); a handler already running
// when Shutdown starts gets an error from Hijack, and the client a 503 on
// the wire, never a 101.
func TestDelegateRefusedWhileShuttingDown(t *testing.T) {
	hs := newHandlers(t)
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	hijackErr := make(chan error, 1)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-gate
		nc, _, err := w.(http.Hijacker).Hijack()
		hijackErr <- err
		if err == nil {
			nc.Close()
			return
		}
		http.Error(w, err.Error(), http.StatusInternalServerError) // as gorilla/websocket does
	})})
	ep := serve(t, &s, &s).addr
	mw := serve(t, &s, s.Middleware(plainHandler)).addr

	c := wiretest.Dial(t, ep)
	c.Send(upgradeReq("GET", "websocket"))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	require.Eventually(t, func() bool {
		r := httptest.NewRequest("GET", "/", nil)
		w := httptest.NewRecorder()
		r.Header.Set("Upgrade", "x")
		r.Header.Set("Connection", "Upgrade")
		s.ServeHTTP(w, r)
		return w.Code == http.StatusServiceUnavailable
	}, 5*time.Second, time.Millisecond)
	close(gate)
	assert.ErrorIs(t, <-hijackErr, errShuttingDown)
	resp := c.Response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.NoError(t, <-shut, "the slot was released")

	c = wiretest.Dial(t, ep)
	c.Send(upgradeReq("GET", "websocket"))
	resp = c.Response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	c = wiretest.Dial(t, mw)
	c.Send(upgradeReq("GET", "websocket"))
	assert.Equal(t, "plain GET /", bodyString(t, c.Response("GET")))
	assert.Equal(t, int32(1), hs.calls.Load(), "not called once shutting down")
	assert.Empty(t, s.ActiveConns())
}

// ---- panics and misuse ----

// TestDelegatePanicIsContained: a panic before the hijack is answered
// with 500, one after it closes the connection; both are logged with the
// protocol, nothing stays counted, and the server keeps serving.
func TestDelegatePanicIsContained(t *testing.T) {
	hs := newHandlers(t)
	lg, logs := testLogger()
	s := Server{ErrorLog: lg}
	s.HandleRoute("before", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) { panic("kaboom before") })})
	s.HandleRoute("after", Route{Delegate: hs.wrap(hijackDirect(t, func(r *http.Request, nc net.Conn) { panic("kaboom after") }))})
	s.HandleRoute("abort", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })})
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s).addr

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "before"))
	assert.Equal(t, http.StatusInternalServerError, c.Response("GET").StatusCode)
	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "after"))
	assert.Equal(t, head101("after"), c.Head())
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the hijacked connection is closed")
	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "abort"))
	_, err = c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "ErrAbortHandler aborts the response")

	assert.Eventually(t, func() bool { return strings.Contains(logs.String(), "kaboom after") }, 5*time.Second, time.Millisecond)
	assert.Contains(t, logs.String(), "protocol=before")
	assert.Contains(t, logs.String(), "protocol=after")
	assert.NotContains(t, logs.String(), "protocol=abort")
	waitNoActive(t, &s)

	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "echo/1") + "ok")
	c.Head()
	assert.Equal(t, "ok", c.ReadN(2), "the server keeps serving")
}

// TestDelegateWriterMisuse: the ResponseWriter behaves like net/http's
// where a handler misuses it, without panicking.
func TestDelegateWriterMisuse(t *testing.T) {
	hs := newHandlers(t)
	lg, logs := testLogger()
	s := Server{ErrorLog: lg}
	kept := make(chan http.ResponseWriter, 1)
	s.HandleRoute("twice", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := w.(http.Hijacker).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		defer nc.Close()
		_, _, err = w.(http.Hijacker).Hijack()
		assert.ErrorIs(t, err, http.ErrHijacked)
		_, err = w.Write([]byte("x"))
		assert.ErrorIs(t, err, http.ErrHijacked)
		assert.ErrorIs(t, http.NewResponseController(w).Flush(), http.ErrHijacked)
		_, _ = io.WriteString(nc, head101("twice"))
		kept <- w
	})})
	s.HandleRoute("late", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _, err := w.(http.Hijacker).Hijack()
		assert.ErrorContains(t, err, "after starting a 200 response")
	})})
	s.HandleRoute("no-hijack", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusSwitchingProtocols)
		_, err := w.Write([]byte("x"))
		assert.ErrorIs(t, err, http.ErrBodyNotAllowed)
	})})
	addr := serve(t, &s, &s).addr

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "twice"))
	assert.Equal(t, head101("twice"), c.Head())
	w := <-kept
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
	// ServeHTTP returns right after the handler; from then on Hijack
	// fails with errWriterDone (net/http would panic).
	hs.wg.Wait()
	require.Eventually(t, func() bool {
		_, _, err := w.(http.Hijacker).Hijack()
		return errors.Is(err, errWriterDone)
	}, 5*time.Second, time.Millisecond, "Hijack after ServeHTTP returned")
	waitNoActive(t, &s)

	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "late"))
	assert.Equal(t, http.StatusOK, c.Response("GET").StatusCode)

	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "no-hijack"))
	assert.Equal(t, http.StatusInternalServerError, c.Response("GET").StatusCode, "a 101 without a switch is never sent")
	assert.Contains(t, logs.String(), "did not hijack")
	assert.Empty(t, s.ActiveConns())
}

// ---- next to native protocols ----

// TestDelegateBesideNative: one endpoint and one middleware serve a
// delegated protocol next to a native one, in either policy, with a
// request body where the route takes one; the 426 lists both.
func TestDelegateBesideNative(t *testing.T) {
	hs := newHandlers(t)
	bodies := make(chan string, 1)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(hijackDirect(t, nil)), Methods: []string{http.MethodGet}, MaxBody: -1})
	s.HandleRoute("post/1", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
		http.Error(w, "read", http.StatusAccepted)
	}), Methods: []string{http.MethodPost}})
	s.HandleFunc("echo/1", echo)
	for i, addr := range []string{serve(t, &s, &s).addr, serve(t, &s, s.Middleware(plainHandler)).addr} {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "echo/1, websocket") + "n")
		assert.Contains(t, c.Head(), "Upgrade: echo/1\r\n")
		assert.Equal(t, "n", c.ReadN(1))
		c = wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "websocket, echo/1") + "d")
		assert.Equal(t, head101("websocket"), c.Head())
		assert.Equal(t, "d", c.ReadN(1))
		c = wiretest.Dial(t, addr)
		c.Send(upgradeReq("POST", "post/1", "Content-Length: 4") + "body")
		assert.Equal(t, http.StatusAccepted, c.Response("POST").StatusCode)
		assert.Equal(t, "body", <-bodies)
		c = wiretest.Dial(t, addr)
		c.Send(upgradeReq("POST", "websocket", "Content-Length: 4") + "body")
		want := []int{http.StatusMethodNotAllowed, http.StatusOK}[i] // the middleware passes it on
		assert.Equal(t, want, c.Response("POST").StatusCode)
	}
	c := wiretest.Dial(t, serve(t, &s, &s).addr)
	c.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp := c.Response("GET")
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, "websocket, post/1, echo/1", resp.Header.Get("Upgrade"))
}

// TestDelegateAvailableOverHTTP2: a delegated route is offered over
// HTTP/2 too, and a Route's own Available is asked as well.
func TestDelegateAvailableOverHTTP2(t *testing.T) {
	var s Server
	s.HandleRoute("websocket", Route{Delegate: http.NotFoundHandler()})
	s.HandleRoute("never", Route{Delegate: http.NotFoundHandler(), Available: func(*http.Request) bool { return false }})
	s.HandleFunc("echo/1", echo)
	r := httptest.NewRequest("GET", "/", nil)
	assert.Equal(t, "websocket, echo/1", s.advertised(r))
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	assert.True(t, s.routes[0].available(r))
	assert.False(t, s.routes[1].available(r))
}

// TestRouteNeedsHandlerOrDelegate: a Route with neither a Handler nor a
// Delegate, or with both, is refused at registration.
func TestRouteNeedsHandlerOrDelegate(t *testing.T) {
	var s Server
	assert.PanicsWithValue(t, "upgrade: a Route for chat needs either a Handler or a Delegate", func() { s.HandleRoute("chat", Route{}) })
	assert.Panics(t, func() { s.HandleRoute("chat", Route{Handler: HandlerFunc(echo), Delegate: http.NotFoundHandler()}) })
	assert.Empty(t, s.Protocols())
}

// TestDelegateHijackFailure: a Hijack that cannot be done fails with an
// error wrapping net/http's, and the handler's answer goes out.
func TestDelegateHijackFailure(t *testing.T) {
	var s Server
	var hijackErr error
	s.HandleRoute("websocket", Route{Delegate: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _, hijackErr = w.(http.Hijacker).Hijack()
		http.Error(w, "no", http.StatusInternalServerError)
	})})
	// A ResponseWriter that can be hijacked only through a path that
	// fails: canHijack passes, the hijack itself does not.
	w := &failingHijacker{ResponseRecorder: httptest.NewRecorder()}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Connection", "Upgrade")
	s.ServeHTTP(w, r)
	assert.ErrorIs(t, hijackErr, errFailing)
	assert.Equal(t, http.StatusInternalServerError, w.Code)
	assert.Equal(t, []string{"close"}, w.Header()["Connection"])
	assert.Empty(t, s.ActiveConns())
}

var errFailing = errors.New("cannot hijack")

type failingHijacker struct{ *httptest.ResponseRecorder }

func (failingHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) { return nil, nil, errFailing }

// TestDelegateContextFollowsClientBeforeSwitch: before the hijack, the
// delegated request's context ends when the client goes away, as a
// request's does.
func TestDelegateContextFollowsClientBeforeSwitch(t *testing.T) {
	hs := newHandlers(t)
	entered := make(chan struct{})
	ended := make(chan error, 1)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(10 * time.Second):
			ended <- errors.New("not cancelled")
		}
	})})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket"))
	<-entered
	c.NC.Close()
	assert.ErrorIs(t, <-ended, context.Canceled)
	waitNoActive(t, &s) // the slot is released once the handler returned
}

// TestDelegateDetachedAtHijack: from the hijack on, the end of the
// request's own context (net/http ends it when ServeHTTP returns; a
// middleware's deadline may end it sooner) no longer ends the delegated
// one.
func TestDelegateDetachedAtHijack(t *testing.T) {
	hs := newHandlers(t)
	var s Server
	s.HandleRoute("websocket", Route{Delegate: hs.wrap(hijackDirect(t, func(r *http.Request, nc net.Conn) {
		dc := nc.(*Conn).nc.(*delegatedConn)
		dc.requestEnded() // as context.AfterFunc would call it
		assert.NoError(t, r.Context().Err())
	}))})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "websocket"))
	c.Head()
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
}
