package upgrade

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- the 101 on the wire ----

func TestSwitchWritesExact101AndKeepsPipelinedBytes(t *testing.T) {
	var s Server
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "echo/1") + "first bytes")
	assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n", c.Head())
	assert.Equal(t, "first bytes", c.ReadN(len("first bytes")))
	c.Send("more")
	assert.Equal(t, "more", c.ReadN(4))
}

func TestSwitchLargePipelinedPayloadIntact(t *testing.T) {
	var s Server
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	payload := make([]byte, 64<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	// Request and payload in one write: most of the payload is read ahead
	// by net/http's bufio.Reader.
	msg := append([]byte(upgradeReq("GET", "echo/1")), payload...)
	done := make(chan error, 1)
	go func() { _, err := c.NC.Write(msg); done <- err }()
	head := c.Head()
	assert.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), head)
	got := c.ReadN(len(payload))
	require.NoError(t, <-done)
	assert.True(t, bytes.Equal(payload, []byte(got)), "echoed payload differs")
}

// TestSwitchExtraHeadersSorted: the fields an Accepter adds to the 101
// follow Upgrade and Connection, sorted by name. (Those it must not add
// are refused: see TestRefusals.)
func TestSwitchExtraHeadersSorted(t *testing.T) {
	s := Server{}
	s.Handle("good", accepterFunc{accept: func(r *http.Request, h http.Header) error {
		h.Set("X-Zeta", "z")
		h.Set("X-Alpha", "a")
		return nil
	}})
	addr := serve(t, &s, &s).addr

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "good"))
	assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: good\r\nConnection: Upgrade\r\nX-Alpha: a\r\nX-Zeta: z\r\n\r\n", c.Head())
}

// ---- declined and refused upgrades on the connection ----

// TestDeclineAllFallsThroughToNext: when every offer is declined,
// Middleware serves the request as a plain one, and the bytes behind it
// are HTTP again.
func TestDeclineAllFallsThroughToNext(t *testing.T) {
	s := Server{}
	s.Handle("a", accepterFunc{accept: func(*http.Request, http.Header) error {
		return fmt.Errorf("wrapped: %w", ErrDecline)
	}})
	addr := serve(t, &s, s.Middleware(plainHandler)).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "a") + "GET /second HTTP/1.1\r\nHost: example.com\r\n\r\n")
	r1 := c.Response("GET")
	assert.Equal(t, http.StatusOK, r1.StatusCode)
	assert.Equal(t, "plain GET /", bodyString(t, r1))
	r2 := c.Response("GET")
	assert.Equal(t, "plain GET /second", bodyString(t, r2))
}

func TestRequired426AndPipelinedRequest(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	s.HandleFunc("websocket", echo)
	s.HandleFunc("h2c", echo)
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + upgradeReq("GET", "nope") + upgradeReq("GET", "echo/1") + "after")
	// A plain request: 426, and the connection stays open.
	resp := c.Response("GET")
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, []string{"echo/1, websocket, h2c"}, resp.Header["Upgrade"])
	assert.Equal(t, []string{"Upgrade"}, resp.Header["Connection"])
	assert.Contains(t, bodyString(t, resp), "echo/1, websocket, h2c")
	// A refused upgrade request: 426, and the connection is closed after
	// it, so the next request (or raw bytes) behind it is never read.
	resp = c.Response("GET")
	assert.Equal(t, http.StatusUpgradeRequired, resp.StatusCode)
	assert.Equal(t, []string{"echo/1, websocket, h2c"}, resp.Header["Upgrade"])
	assert.Equal(t, []string{"close", "Upgrade"}, resp.Header["Connection"])
	assert.Empty(t, c.Rest(), "nothing after a refused upgrade is answered")

	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "echo/1") + "after")
	head := c.Head()
	assert.True(t, strings.HasPrefix(head, "HTTP/1.1 101"), head)
	assert.Equal(t, "after", c.ReadN(5))
}

// TestHTTP2NeverSwitches: over a real HTTP/2 connection, the endpoint
// answers 505 and Middleware serves the request, never with Upgrade or
// Connection on the response. (An HTTP/2 request that carries Upgrade
// anyway: see TestRefusals.)
func TestHTTP2NeverSwitches(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	mux := http.NewServeMux()
	mux.Handle("/required", &s)
	mux.Handle("/", s.Middleware(plainHandler))
	ts := httptest.NewUnstartedServer(mux)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	client := ts.Client()

	resp, err := client.Get(ts.URL + "/required")
	require.NoError(t, err)
	assert.Equal(t, 2, resp.ProtoMajor)
	assert.Equal(t, http.StatusHTTPVersionNotSupported, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("Upgrade"))
	assert.Empty(t, resp.Header.Get("Connection"))
	resp.Body.Close()

	resp, err = client.Get(ts.URL + "/x")
	require.NoError(t, err)
	assert.Equal(t, 2, resp.ProtoMajor)
	assert.Equal(t, "plain GET /x", bodyString(t, resp))
	resp.Body.Close()
	client.CloseIdleConnections()
}

// ---- methods, bodies, 100-continue ----

func TestRequestBodyBeforeSwitch(t *testing.T) {
	got := make(chan string, 1)
	s := Server{}
	s.HandleRoute("up", Route{Handler: bodyRecorder(got), Methods: []string{"POST"}, MaxBody: 16})
	addr := serve(t, &s, &s).addr

	t.Run("content-length", func(t *testing.T) {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("POST", "up", "Content-Length: 5") + "hello" + "stream")
		assert.True(t, strings.HasPrefix(c.Head(), "HTTP/1.1 101 "))
		assert.Equal(t, "hello", <-got)
		assert.Equal(t, "stream", c.ReadN(6), "the new protocol starts right after the body")
	})
	t.Run("chunked is never switched", func(t *testing.T) {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("POST", "up", "Transfer-Encoding: chunked") + "3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nTrailer: x\r\n\r\n" + "stream")
		resp := c.Response("POST")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		assert.Equal(t, []string{"close"}, resp.Header["Connection"])
		assert.Contains(t, bodyString(t, resp), "Content-Length")
		assert.Empty(t, c.Rest(), "the connection is closed after the answer")
		assert.Empty(t, got, "the handler never ran")
	})
	t.Run("client vanishes mid-body", func(t *testing.T) {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("POST", "up", "Content-Length: 10") + "abc")
		c.CloseWrite()
		resp := c.Response("POST")
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	})
}

// TestContentLengthWithTransferEncoding: a request carrying both
// Content-Length and Transfer-Encoding (RFC 9112 §6.1: possibly request
// smuggling; the connection must be closed after the answer) is never
// switched. net/http drops the Content-Length, so every upgrade request
// framed by Transfer-Encoding is treated so: the endpoint answers 400,
// Middleware serves it as a plain request; both close the connection, and
// the bytes behind the request are never read as a next request.
func TestContentLengthWithTransferEncoding(t *testing.T) {
	ran := make(chan string, 1)
	s := Server{}
	s.HandleRoute("up", Route{Handler: bodyRecorder(ran), Methods: []string{"POST"}})
	ep := serve(t, &s, &s).addr
	mw := serve(t, &s, s.Middleware(plainHandler)).addr
	smuggled := upgradeReq("POST", "up", "Content-Length: 4", "Transfer-Encoding: chunked") +
		"3\r\nabc\r\n0\r\n\r\n" + "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name string
		addr string
		code int
	}{{"endpoint", ep, http.StatusBadRequest}, {"middleware", mw, http.StatusOK}} {
		t.Run(tc.name, func(t *testing.T) {
			c := wiretest.Dial(t, tc.addr)
			c.Send(smuggled)
			resp := c.Response("POST")
			assert.Equal(t, tc.code, resp.StatusCode)
			assert.Equal(t, []string{"close"}, resp.Header["Connection"])
			assert.Empty(t, resp.Header["Upgrade"])
			assert.Empty(t, c.Rest(), "the request behind it is never answered")
		})
	}
	assert.Empty(t, ran, "never switched")
}

func TestExpectContinue(t *testing.T) {
	got := make(chan string, 1)
	s := Server{}
	s.HandleRoute("up", Route{Handler: bodyRecorder(got), Methods: []string{"POST", "GET"}})
	addr := serve(t, &s, &s).addr

	t.Run("with body", func(t *testing.T) {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("POST", "up", "Content-Length: 5", "Expect: 100-continue"))
		// The client waits for the 100 before sending the body.
		assert.Equal(t, "HTTP/1.1 100 Continue\r\n\r\n", c.Head())
		c.Send("hello" + "stream")
		assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: up\r\nConnection: Upgrade\r\n\r\n", c.Head())
		assert.Equal(t, "hello", <-got)
		// Exactly once: the next bytes are the echo, not another 100.
		assert.Equal(t, "stream", c.ReadN(6))
	})
	t.Run("without body", func(t *testing.T) {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "up", "Expect: 100-continue") + "stream")
		assert.Equal(t, "HTTP/1.1 100 Continue\r\n\r\n", c.Head())
		assert.Equal(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: up\r\nConnection: Upgrade\r\n\r\n", c.Head())
		assert.Equal(t, "", <-got)
		assert.Equal(t, "stream", c.ReadN(6))
	})
	t.Run("rejected: no 100", func(t *testing.T) {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("PUT", "up", "Content-Length: 5", "Expect: 100-continue"))
		resp := c.Response("PUT")
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	})
}

// ---- wrapped ResponseWriters ----

// TestWrappedResponseWriter: a wrapper that reaches the Hijacker through
// Unwrap does not stop the switch. (One that hides it: see TestRefusals.)
func TestWrappedResponseWriter(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.ServeHTTP(unwrapWriter{unwrapWriter{w}}, r) })
	c := wiretest.Dial(t, serve(t, &s, h).addr)
	c.Send(upgradeReq("GET", "echo/1") + "x")
	assert.True(t, strings.HasPrefix(c.Head(), "HTTP/1.1 101 "))
	assert.Equal(t, "x", c.ReadN(1))
}

// ---- the Conn ----

func TestConnCarriesRequestProtocolAndContext(t *testing.T) {
	type ctxKey struct{}
	type seen struct {
		proto  Protocol
		path   string
		value  any
		ctxErr error
	}
	got := make(chan seen, 1)
	s := Server{}
	s.HandleFunc("Echo/*", func(c *Conn) {
		got <- seen{c.Protocol, c.Request.URL.Path, c.Context().Value(ctxKey{}), c.Context().Err()}
		<-Draining(c.Context())
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, "v")))
	})
	addr := serve(t, &s, h).addr
	c := wiretest.Dial(t, addr)
	c.Send("GET /path HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: ECHO/v2\r\n\r\n")
	assert.Contains(t, c.Head(), "Upgrade: Echo/v2\r\n")
	g := <-got
	assert.Equal(t, Protocol{"Echo", "v2"}, g.proto)
	assert.Equal(t, "/path", g.path)
	assert.Equal(t, "v", g.value, "Context carries the request's values")
	assert.NoError(t, g.ctxErr)
	assert.Equal(t, map[string]int{"Echo/*": 1}, s.ActiveConns())
	// Shutdown (at cleanup) closes Draining, and the handler returns.
}

// TestConnRequestMayBeDropped: a handler may set Conn.Request to nil once
// it has what it needs; the request is then collected while the
// connection lives, and Context still carries its context's values.
func TestConnRequestMayBeDropped(t *testing.T) {
	type ctxKey struct{}
	collected := make(chan struct{})
	values := make(chan any, 1)
	s := Server{}
	s.HandleFunc("echo/1", func(c *Conn) {
		c.Request = nil
		runtime.GC()
		values <- c.Context().Value(ctxKey{})
		echo(c)
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, "v"))
		runtime.SetFinalizer(r, func(*http.Request) { close(collected) })
		s.ServeHTTP(w, r)
	})
	addr := serve(t, &s, h).addr
	c := upgradeEcho(t, addr, "echo/1")
	assert.Equal(t, "v", <-values, "Context carries the request's values")
	require.Eventually(t, func() bool {
		runtime.GC()
		select {
		case <-collected:
			return true
		default:
			return false
		}
	}, 5*time.Second, 10*time.Millisecond, "the request is collected while the connection is open")
	roundTrip(t, c, "still open")
}

func TestConnReadAheadAndCloseWrite(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &Conn{nc: a, rbuf: []byte("abc")}
	assert.Equal(t, a, c.NetConn())
	assert.Equal(t, 3, c.Buffered())
	buf := make([]byte, 2)
	n, err := c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "ab", string(buf[:n]))
	n, err = c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "c", string(buf[:n]))
	assert.Zero(t, c.Buffered())
	go b.Write([]byte("d"))
	n, err = c.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "d", string(buf[:n]))
	assert.ErrorIs(t, c.CloseWrite(), errors.ErrUnsupported, "net.Pipe has no half-close")
}

func TestEchoHalfClose(t *testing.T) {
	s := Server{}
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "echo/1") + "bye")
	c.Head()
	c.CloseWrite()
	rest, err := io.ReadAll(c.BR)
	require.NoError(t, err, "the server closes after the handler returns")
	assert.Equal(t, "bye", string(rest))
}

// ---- life cycle ----

// TestHandlerPanicIsContained: a protocol handler's panic is logged with
// its protocol and closes its connection; the server keeps serving.
func TestHandlerPanicIsContained(t *testing.T) {
	lg, logs := testLogger()
	s := Server{ErrorLog: lg}
	s.HandleFunc("boom", func(c *Conn) { panic("kaboom") })
	s.HandleFunc("echo/1", echo)
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "boom"))
	c.Head()
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the connection is closed")
	// The panic is logged before the connection is closed.
	assert.Contains(t, logs.String(), "kaboom")
	assert.Contains(t, logs.String(), "protocol=boom")

	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "echo/1") + "ok")
	c.Head()
	assert.Equal(t, "ok", c.ReadN(2), "the server keeps serving")
}

// TestShutdownRefusesNewUpgradesAndWaits: Shutdown waits for a handler
// that finishes when told to drain, and refuses new upgrades: Middleware
// serves them as plain requests, the endpoint answers 503.
func TestShutdownRefusesNewUpgradesAndWaits(t *testing.T) {
	s := Server{}
	var finished atomic.Bool
	s.HandleFunc("wait", func(c *Conn) {
		<-Draining(c.Context())
		_, _ = io.WriteString(c, "goodbye")
		finished.Store(true)
	})
	addr := serve(t, &s, s.Middleware(plainHandler)).addr
	ep := serve(t, &s, &s).addr

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "wait"))
	c.Head()
	// A client that has read its 101 holds a slot until its handler returns.
	require.Equal(t, 1, s.ActiveConns()["wait"])

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	assert.True(t, finished.Load(), "Shutdown returns after the handler")
	assert.Equal(t, "goodbye", c.Rest())
	assert.Empty(t, s.ActiveConns())

	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "wait"))
	assert.Equal(t, http.StatusOK, c.Response("GET").StatusCode, "middleware serves it as a plain request")
	c = wiretest.Dial(t, ep)
	c.Send(upgradeReq("GET", "wait"))
	resp := c.Response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
}

// TestShutdownForcesStubbornHandlers: a handler that ignores Draining is
// closed when Shutdown's context ends, which Shutdown reports.
func TestShutdownForcesStubbornHandlers(t *testing.T) {
	s := Server{}
	s.HandleFunc("stubborn", func(c *Conn) {
		_, _ = io.Copy(io.Discard, c) // ignores the context; returns when closed
	})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "stubborn"))
	c.Head()
	require.Equal(t, 1, s.ActiveConns()["stubborn"])
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, s.Shutdown(ctx), context.DeadlineExceeded)
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the connection was closed")
}

// TestShutdownDrainsThenCloses: Shutdown closes Draining at once, but the
// connection keeps working and its Context stays alive through the grace
// period; when the grace ends the connection is closed and the Context
// cancelled.
func TestShutdownDrainsThenCloses(t *testing.T) {
	s := Server{}
	conns := make(chan *Conn, 1)
	ctxErr := make(chan error, 1)
	s.HandleFunc("echo/1", func(c *Conn) {
		ctx := c.Context()
		conns <- c
		echo(c) // ignores Draining: returns when the connection is closed
		ctxErr <- ctx.Err()
	})
	addr := serve(t, &s, &s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "echo/1"))
	c.Head()
	sc := <-conns

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	select {
	case <-Draining(sc.Context()):
	case <-time.After(5 * time.Second):
		t.Fatal("Draining not closed by Shutdown")
	}
	c.Send("still here")
	assert.Equal(t, "still here", c.ReadN(len("still here")), "the connection works during the grace period")
	assert.NoError(t, sc.Context().Err(), "Context is not cancelled by the start of Shutdown")

	assert.ErrorIs(t, <-shut, context.DeadlineExceeded)
	assert.ErrorIs(t, <-ctxErr, context.Canceled, "Context is cancelled when the grace ends")
	_, err := c.BR.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the connection was closed at the end of the grace period")
}

// TestContextEndsWithHandler: a Conn's Context is cancelled when its
// handler returns, whether or not it was asked for before.
func TestContextEndsWithHandler(t *testing.T) {
	s := Server{}
	conns := make(chan *Conn, 2)
	s.HandleFunc("early/1", func(c *Conn) { _ = c.Context(); conns <- c })
	s.HandleFunc("late/1", func(c *Conn) { conns <- c })
	addr := serve(t, &s, &s).addr
	for _, p := range []string{"early/1", "late/1"} {
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", p))
		c.Head()
		sc := <-conns
		_, err := c.BR.ReadByte()
		require.ErrorIs(t, err, io.EOF, "%s: closed when the handler returned", p)
		select {
		case <-sc.Context().Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Context not cancelled after the handler returned", p)
		}
	}
}

// TestShutdownWithHTTPServer: an http.Server whose Shutdown starts the
// Server's, through RegisterOnShutdown; the caller then waits for it.
func TestShutdownWithHTTPServer(t *testing.T) {
	s := Server{}
	s.HandleFunc("wait", func(c *Conn) { <-Draining(c.Context()) })
	srv := serve(t, &s, &s, func(hs *http.Server) {
		hs.RegisterOnShutdown(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = s.Shutdown(ctx)
		})
	})
	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "wait"))
	c.Head()
	require.Equal(t, 1, s.ActiveConns()["wait"])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, srv.ts.Config.Shutdown(ctx))
	require.NoError(t, s.Shutdown(ctx), "waits for what http.Server.Shutdown started")
	assert.Empty(t, s.ActiveConns())
}

func TestHandleRoutePanics(t *testing.T) {
	var s Server
	s.HandleFunc("echo/1", echo)
	assert.PanicsWithValue(t, "upgrade: multiple registrations for ECHO/1", func() { s.HandleFunc("ECHO/1", echo) })
	assert.Panics(t, func() { s.HandleFunc("bad name", echo) })
	assert.Panics(t, func() { s.Handle("x", nil) })
	assert.NotPanics(t, func() { s.HandleFunc("echo/*", echo) })
	assert.Equal(t, []Protocol{{"echo", "1"}, {"echo", "*"}}, s.Protocols())
}

func TestMaxConns(t *testing.T) {
	s := Server{MaxConns: 2}
	hold := func(c *Conn) { _, _ = io.Copy(io.Discard, c) }
	s.HandleRoute("a", Route{Handler: HandlerFunc(hold), MaxConns: 1})
	s.HandleFunc("b", hold)
	addr := serve(t, &s, s.Middleware(plainHandler)).addr

	c1 := wiretest.Dial(t, addr)
	c1.Send(upgradeReq("GET", "a"))
	assert.Contains(t, c1.Head(), "Upgrade: a\r\n")

	// "a" is at its cap: refused with 503 and Retry-After, not dropped.
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "a"))
	resp := c.Response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))

	// The client's next acceptable offer is used instead.
	c2 := wiretest.Dial(t, addr)
	c2.Send(upgradeReq("GET", "a, b"))
	assert.Contains(t, c2.Head(), "Upgrade: b\r\n")
	assert.Equal(t, map[string]int{"a": 1, "b": 1}, s.ActiveConns())

	// The server-wide cap.
	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "b"))
	assert.Equal(t, http.StatusServiceUnavailable, c.Response("GET").StatusCode)

	// A slot frees when its handler returns.
	c1.NC.Close()
	require.Eventually(t, func() bool { return s.ActiveConns()["a"] == 0 }, 5*time.Second, 5*time.Millisecond)
	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "a"))
	assert.Contains(t, c.Head(), "Upgrade: a\r\n")
}

// TestAccepterPanicReleasesSlot: a panic in AcceptUpgrade is recovered by
// net/http, which closes the connection without a switch, and gives back
// the connection slot reserved for the switch: with a cap of one, the
// protocol keeps switching. Checked with the server's cap and
// http.ErrAbortHandler, and with the protocol's cap and another value.
func TestAccepterPanicReleasesSlot(t *testing.T) {
	t.Run("Server.MaxConns, ErrAbortHandler", func(t *testing.T) {
		var calls atomic.Int32
		s := Server{MaxConns: 1}
		s.Handle("x", accepterFunc{accept: func(*http.Request, http.Header) error {
			if calls.Add(1) <= 2 {
				panic(http.ErrAbortHandler)
			}
			return nil
		}})
		addr := serve(t, &s, &s).addr
		for range 2 {
			c := wiretest.Dial(t, addr)
			c.Send(upgradeReq("GET", "x"))
			_, err := c.BR.ReadByte()
			assert.Error(t, err, "net/http aborts the connection")
		}
		assert.Empty(t, s.ActiveConns(), "no slot is leaked")
		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "x"))
		assert.Contains(t, c.Head(), "101 Switching Protocols")
	})
	t.Run("Route.MaxConns, a panic value", func(t *testing.T) {
		s := &Server{}
		s.HandleRoute("p", Route{Handler: accepterFunc{accept: func(r *http.Request, h http.Header) error {
			if r.Header.Get("X-Panic") != "" {
				panic("accepter kaboom")
			}
			return nil
		}}, MaxConns: 1})
		addr := serve(t, s, s, func(hs *http.Server) { hs.ErrorLog = log.New(io.Discard, "", 0) }).addr

		c := wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "p", "X-Panic: yes"))
		rest, err := io.ReadAll(c.BR)
		if err != nil {
			assert.ErrorIs(t, err, syscall.ECONNRESET)
		}
		assert.NotContains(t, string(rest), " 101 ", "no switch after a panicking Accepter")
		// The slot is released before the panic reaches net/http, which
		// then closes the connection.
		assert.Empty(t, s.ActiveConns(), "no slot is leaked")

		c = wiretest.Dial(t, addr)
		c.Send(upgradeReq("GET", "p"))
		head := c.Head()
		require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), "the protocol keeps switching; the next upgrade got %q", head)
		assert.Equal(t, map[string]int{"p": 1}, s.ActiveConns(), "just the new connection")
	})
}

// waitingCtx is a Context that closes waiting the first time its Done
// channel is asked for: Shutdown asks for it once it has started to wait
// for the connections switched or being switched.
type waitingCtx struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func (c *waitingCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}

// TestShutdownDuringHandshake: a Shutdown called while a switch is in
// flight (its slot reserved, its Accepter running, no 101 yet) waits for
// it; the switch is refused before the 101 with 503 and Retry-After, never
// switched and dropped, and no protocol handler runs. Shutdown then
// returns nil, with nothing active.
func TestShutdownDuringHandshake(t *testing.T) {
	g := newGate()
	s := &Server{}
	s.Handle("gate", g)
	addr := serve(t, s, s).addr
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "gate"))
	<-g.entered

	type outcome struct {
		err    error
		active map[string]int
	}
	base, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx := &waitingCtx{Context: base, waiting: make(chan struct{})}
	done := make(chan outcome, 1)
	go func() {
		err := s.Shutdown(ctx)
		done <- outcome{err, s.ActiveConns()}
	}()
	select {
	case o := <-done:
		t.Fatalf("Shutdown returned %v while a switch was in flight (ActiveConns %v)", o.err, o.active)
	case <-ctx.waiting:
	}
	close(g.release)
	resp := c.Response("GET")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "refused before the 101, not switched and dropped")
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	o := <-done
	require.NoError(t, o.err)
	assert.Empty(t, o.active)
	assert.Zero(t, g.served.Load(), "no protocol handler runs after Shutdown began")
}

// TestMiddlewarePassesPlainRequests: a request the Server does not switch
// — HTTP/1.0, Connection without "upgrade", an offer nothing takes, a
// body framed by Transfer-Encoding — reaches Middleware's handler without
// Upgrade, HTTP2-Settings and the Connection options naming them, so that
// a handler that forwards upgrades (httputil.ReverseProxy) cannot.
func TestMiddlewarePassesPlainRequests(t *testing.T) {
	s := &Server{}
	s.HandleFunc("echo/1", echo)
	type seen struct{ upgrade, connection, settings []string }
	got := make(chan seen, 1)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header["Upgrade"], r.Header["Connection"], r.Header["Http2-Settings"]}
	})
	addr := serve(t, s, s.Middleware(next)).addr
	for _, req := range []string{
		"GET / HTTP/1.0\r\nHost: x\r\nConnection: Upgrade, keep-alive\r\nUpgrade: echo/1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nUpgrade: echo/1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, keep-alive\r\nUpgrade: echo/1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	} {
		c := wiretest.Dial(t, addr)
		c.Send(req)
		s := <-got
		assert.Empty(t, s.upgrade, "%q", req)
		assert.Empty(t, s.settings, "%q", req)
		assert.Equal(t, []string{"keep-alive"}, s.connection, "%q", req)
		c.Close()
	}
}
