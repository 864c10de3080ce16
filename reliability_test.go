package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Reliability tests: faults on either side of the handshake, shutdown under
// load, server timeouts, connection caps under concurrency, and properties
// ("not one byte lost") over many random splits of the byte stream.
//
// Most of them stop their server before returning (rather than at
// cleanup) so that they can check that the goroutines and file
// descriptors they used are all given back.

// ---- faults on the client side ----

// TestFaultClientVanishes: a client that goes away at any point of the
// handshake (part of the header block, all of it, right after the 101, in
// the middle of a body; by FIN or by RST) costs the server nothing lasting:
// no active connection, and goroutines and fds back to their baseline,
// while it keeps serving.
func TestFaultClientVanishes(t *testing.T) {
	base := baseline(t)
	lg, _ := testLogger()
	s := &Server{ErrorLog: lg}
	s.HandleFunc("echo/1", echo)
	s.HandleRoute("body/1", Route{Handler: HandlerFunc(func(c *Conn) {
		_, _ = io.Copy(io.Discard, c.Request.Body)
		echo(c)
	}), Methods: []string{"POST"}, MaxBody: 4 << 20})
	srv := serve(t, s, s.Middleware(plainHandler))
	running := baseline(t)

	get := upgradeReq("GET", "echo/1")
	const bodyLen = 1 << 20
	post := upgradeReq("POST", "body/1", "Content-Length: "+strconv.Itoa(bodyLen))
	half := bytes.Repeat([]byte("b"), bodyLen/2)

	// vanish closes c, by RST when reset.
	vanish := func(c *wiretest.Conn, reset bool) {
		if reset {
			_ = c.NC.SetLinger(0)
		}
		c.Close()
	}
	cases := []struct {
		name string
		run  func(c *wiretest.Conn)
	}{
		{"after half the header block", func(c *wiretest.Conn) { c.Send(get[:len(get)/2]) }},
		{"after the header block, before reading the 101", func(c *wiretest.Conn) { c.Send(get + "unread") }},
		{"right after the 101", func(c *wiretest.Conn) {
			c.Send(get)
			head := c.Head()
			require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), head)
		}},
		{"in the middle of a large body", func(c *wiretest.Conn) {
			c.Send(post)
			_, err := c.Write(half)
			require.NoError(t, err)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 20 {
				c := wiretest.Dial(t, srv.addr)
				tc.run(c)
				vanish(c, i%2 == 1)
			}
		})
	}
	t.Run("at every byte of the request", func(t *testing.T) {
		for cut := 0; cut <= len(get); cut++ {
			c := wiretest.Dial(t, srv.addr)
			c.Send(get[:cut])
			vanish(c, cut%2 == 1)
		}
	})
	t.Run("at every byte of the 101", func(t *testing.T) {
		const resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n"
		for cut := 0; cut <= len(resp); cut++ {
			c := wiretest.Dial(t, srv.addr)
			c.Send(get)
			c.ReadN(cut)
			vanish(c, cut%2 == 0)
		}
	})

	// Nothing lasting, while the server keeps serving.
	waitNoActive(t, s)
	backTo(t, running, "server running, after the vanished clients")
	c := upgradeEcho(t, srv.addr, "echo/1")
	roundTrip(t, c, "still serving")
	require.NoError(t, c.NC.Close())

	srv.stop()
	after := backTo(t, base, "after the server stopped")
	t.Logf("baseline %v; with server %v; after %v", base, running, after)
	goleak.VerifyNone(t)
}

// ---- handler panics ----

// TestFaultHandlerPanics: panicking protocol handlers, many at once, are
// each logged with the protocol and the client's address, their
// connections closed and their slots released; the server keeps serving.
// A panic with http.ErrAbortHandler closes the connection silently.
func TestFaultHandlerPanics(t *testing.T) {
	base := baseline(t)
	lg, logs := testLogger()
	s := &Server{ErrorLog: lg}
	s.HandleFunc("boom/1", func(c *Conn) {
		// Panic once the client has spoken, so that every panic happens
		// while the connection is in use.
		_, _ = c.Read(make([]byte, 1))
		panic("kaboom")
	})
	s.HandleFunc("abort", func(c *Conn) { panic(http.ErrAbortHandler) })
	s.HandleFunc("echo/1", echo)
	srv := serve(t, s, s)

	const n = 20
	addrs := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		c := upgradeEcho(t, srv.addr, "boom/1")
		addrs[i] = c.NC.LocalAddr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if _, err := c.Write([]byte("x")); err != nil {
				errs <- err
				return
			}
			rest, err := io.ReadAll(c.BR)
			if err != nil || len(rest) != 0 {
				errs <- fmt.Errorf("after the panic: read %q, %v; want EOF", rest, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitNoActive(t, s)

	// Every client has read EOF, and a panic is logged before its
	// connection is closed.
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "panic serving protocol") {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, n, "one log record per panic")
	for _, a := range addrs {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, " remote="+a+" ") })
		if assert.GreaterOrEqual(t, i, 0, "no panic record names remote %s", a) {
			assert.Contains(t, lines[i], " protocol=boom/1 ")
			assert.Contains(t, lines[i], "panic=kaboom")
			assert.Contains(t, lines[i], "stack=")
		}
	}

	c := upgradeEcho(t, srv.addr, "abort")
	_, err := io.ReadAll(c.BR)
	assert.ErrorIs(t, err, syscall.ECONNRESET, "ErrAbortHandler resets the connection")
	require.NoError(t, c.NC.Close())
	waitNoActive(t, s)
	assert.NotContains(t, logs.String(), "abort Handler", "ErrAbortHandler is not logged")

	c = upgradeEcho(t, srv.addr, "echo/1")
	roundTrip(t, c, "alive")
	require.NoError(t, c.NC.Close())

	srv.stop()
	backTo(t, base, "after the server stopped")
	goleak.VerifyNone(t)
}

// ---- shutdown and close ----

// holdConns switches n connections to protocol and waits until running()
// reports n more protocol handlers running. (ActiveConns is not enough: it
// counts a connection from the moment its slot is reserved, before the 101.)
func holdConns(t *testing.T, srv *testServer, protocol string, n int, running func() int) []*wiretest.Conn {
	t.Helper()
	before := running()
	cs := make([]*wiretest.Conn, n)
	for i := range cs {
		cs[i] = wiretest.Dial(t, srv.addr)
		cs[i].Send(upgradeReq("GET", protocol))
	}
	for _, c := range cs {
		require.True(t, strings.HasPrefix(c.Head(), "HTTP/1.1 101 "))
	}
	require.Eventually(t, func() bool { return running()-before == n }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, n, srv.s.ActiveConns()[protocol])
	return cs
}

// TestShutdownHundredPromptHandlers: 100 handlers that finish when their
// Context is cancelled: Shutdown returns nil well before its deadline, and
// every client gets the handler's last words, then EOF.
func TestShutdownHundredPromptHandlers(t *testing.T) {
	base := baseline(t)
	s := &Server{}
	var started, finished atomic.Int32
	s.HandleFunc("wait", func(c *Conn) {
		started.Add(1)
		<-Draining(c.Context())
		_, _ = io.WriteString(c, "bye")
		finished.Add(1)
	})
	srv := serve(t, s, s)
	cs := holdConns(t, srv, "wait", 100, func() int { return int(started.Load()) })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	require.NoError(t, ctx.Err(), "Shutdown returned before its deadline")
	assert.EqualValues(t, 100, finished.Load(), "Shutdown waits for every handler")
	assert.Empty(t, s.ActiveConns())
	for _, c := range cs {
		require.Equal(t, "bye", c.Rest())
		c.Close()
	}
	srv.stop()
	backTo(t, base, "after the server stopped")
	goleak.VerifyNone(t)
}

// TestShutdownHundredStubbornHandlers: 100 handlers that ignore the
// cancellation (half blocked reading the connection, half blocked on
// something else entirely): Shutdown returns context.DeadlineExceeded at
// its deadline, having closed every connection, so every client sees EOF
// — even those whose handler is still running.
func TestShutdownHundredStubbornHandlers(t *testing.T) {
	base := baseline(t)
	s := &Server{}
	release := make(chan struct{})
	var started atomic.Int32
	running := func() int { return int(started.Load()) }
	s.HandleFunc("reader", func(c *Conn) { started.Add(1); _, _ = io.Copy(io.Discard, c) })
	s.HandleFunc("sleeper", func(c *Conn) { started.Add(1); <-release })
	srv := serve(t, s, s)
	cs := append(holdConns(t, srv, "reader", 50, running), holdConns(t, srv, "sleeper", 50, running)...)

	const grace = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	err := s.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, time.Since(start), grace, "Shutdown gave the handlers until the deadline")
	for i, c := range cs {
		rest, err := io.ReadAll(c.BR)
		require.NoError(t, err, "client %d: the connection is closed (EOF)", i)
		require.Empty(t, rest)
		c.Close()
	}
	require.Eventually(t, func() bool { return s.ActiveConns()["reader"] == 0 }, 10*time.Second, 5*time.Millisecond,
		"handlers blocked reading return once their connection is closed")
	assert.Equal(t, 50, s.ActiveConns()["sleeper"], "handlers ignoring everything are still running")
	close(release)
	waitNoActive(t, s)
	srv.stop()
	backTo(t, base, "after the server stopped")
	goleak.VerifyNone(t)
}

// TestCloseDuringHandshake: Server.Close while a handshake is between
// negotiation and the 101 (its Accepter blocks until the test has closed
// the server): the switch is refused before the 101 with 503 and
// Retry-After, and the connection is closed after the answer, so nothing
// the client sent behind the request is served. The protocol handler
// never runs and nothing stays active. Checked for a GET at the endpoint,
// and for a POST whose body is read (under HandshakeTimeout's deadlines)
// before the refusal, behind Middleware, with a plain request behind it.
func TestCloseDuringHandshake(t *testing.T) {
	for _, tc := range []struct {
		name       string
		middleware bool
		req        string
	}{
		{"GET, endpoint", false, upgradeReq("GET", "gate")},
		{"POST with a body, Middleware", true,
			upgradeReq("POST", "gate", "Content-Length: 4") + "body" + "GET /later HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := baseline(t)
			g := newGate()
			s := &Server{HandshakeTimeout: 200 * time.Millisecond}
			s.HandleRoute("gate", Route{Handler: g, Methods: []string{"GET", "POST"}})
			var h http.Handler = s
			if tc.middleware {
				h = s.Middleware(plainHandler)
			}
			srv := serve(t, s, h)

			c := wiretest.Dial(t, srv.addr)
			c.Send(tc.req)
			<-g.entered
			assert.Equal(t, map[string]int{"gate": 1}, s.ActiveConns(), "a switching connection holds its slot")
			require.NoError(t, s.Close())
			close(g.release)

			resp := c.Response("GET")
			require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "refused before the 101")
			assert.NotEmpty(t, resp.Header.Get("Retry-After"))
			assert.Empty(t, c.Rest(), "the refusal is never followed by a usable connection")
			waitNoActive(t, s)
			assert.Zero(t, g.served.Load(), "the protocol handler never runs")
			c.Close()
			srv.stop()
			backTo(t, base, "after the server stopped")
			goleak.VerifyNone(t)
		})
	}
}

// TestShutdownAfterClientRead101: once a client has read its 101, its
// connection is switched: a Shutdown that starts then waits for the
// protocol handler, which runs and sees Draining closed; the connection
// is never dropped unserved while Shutdown returns nil. The Server tracks
// a connection before it writes the 101; the exchange is repeated so that
// a window between the two, were one to open, would show.
func TestShutdownAfterClientRead101(t *testing.T) {
	const rounds = 300
	dropped := 0
	for range rounds {
		s := &Server{}
		var ran atomic.Int32
		s.HandleFunc("w", func(c *Conn) {
			ran.Add(1)
			<-Draining(c.Context())
			_, _ = io.WriteString(c, "bye")
		})
		srv := serve(t, s, s)
		c := wiretest.Dial(t, srv.addr)
		c.Send(upgradeReq("GET", "w"))
		require.True(t, strings.HasPrefix(c.Head(), "HTTP/1.1 101 "))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Shutdown(ctx)
		cancel()
		require.NoError(t, err)
		rest, _ := io.ReadAll(c.BR)
		if ran.Load() == 0 || string(rest) != "bye" {
			dropped++
		}
		c.Close()
		srv.stop()
	}
	goleak.VerifyNone(t)
	if dropped > 0 {
		t.Fatalf("%d of %d switched connections (101 read by the client) were closed unserved by a Shutdown that returned nil", dropped, rounds)
	}
}

// ---- net/http's timeouts around the switch ----

// TestSlowHeadersBoundedByReadHeaderTimeout: a client dribbling its header
// block a byte at a time is cut off by http.Server.ReadHeaderTimeout, and
// never switched.
func TestSlowHeadersBoundedByReadHeaderTimeout(t *testing.T) {
	base := baseline(t)
	s := &Server{}
	s.HandleFunc("echo/1", echo)
	srv := serve(t, s, s, func(hs *http.Server) { hs.ReadHeaderTimeout = 200 * time.Millisecond })

	c := wiretest.Dial(t, srv.addr)
	// 300 bytes at 10ms each: 3s, fifteen times the timeout.
	req := upgradeReq("GET", "echo/1", "X-Pad: "+strings.Repeat("p", 300))
	stop := make(chan struct{})
	dribbled := make(chan int, 1)
	go func() {
		n := 0
		defer func() { dribbled <- n }()
		for ; n < len(req); n++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := c.Write([]byte{req[n]}); err != nil {
				return
			}
		}
	}()
	got, err := io.ReadAll(c.BR)
	close(stop)
	n := <-dribbled
	if err != nil {
		assert.ErrorIs(t, err, syscall.ECONNRESET, "the server closes the connection (not our deadline)")
	}
	assert.Less(t, n, len(req), "the server gave up before the header block was complete")
	assert.NotContains(t, string(got), " 101 ")
	// Observed with Go 1.26: net/http answers "400 Bad Request" with
	// "Connection: close" and closes. A 408, or a plain close, would do
	// as well.
	if len(got) > 0 {
		resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
		if assert.NoError(t, rerr, "%q", got) {
			assert.Contains(t, []int{http.StatusBadRequest, http.StatusRequestTimeout}, resp.StatusCode)
			assert.True(t, resp.Close, "the server closes the connection")
		}
	}
	t.Logf("observed: %d of %d header bytes sent, then %q, %v", n, len(req), got, err)
	assert.Empty(t, s.ActiveConns())
	c.Close()
	srv.stop()
	backTo(t, base, "after the server stopped")
}

// TestIdleUpgradedConnSurvivesHTTPTimeouts: an upgraded connection left
// idle for far longer than every timeout of the http.Server is not cut off
// by them: they govern HTTP, not the protocol switched to. Checked for a
// GET, a POST whose body was read before the switch (the body read sets a
// deadline), and a Server without HandshakeTimeout. The test sleeps: what
// it checks is that time passing, well past every deadline, changes
// nothing.
func TestIdleUpgradedConnSurvivesHTTPTimeouts(t *testing.T) {
	base := baseline(t)
	const d = 200 * time.Millisecond
	timeouts := func(hs *http.Server) {
		hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout, hs.ReadHeaderTimeout = d, d, d, d
	}
	s := &Server{HandshakeTimeout: d}
	s.HandleRoute("echo/1", Route{Handler: HandlerFunc(echo), Methods: []string{"GET", "POST"}})
	srv := serve(t, s, s, timeouts)
	s2 := &Server{HandshakeTimeout: -1}
	s2.HandleFunc("echo/1", echo)
	srv2 := serve(t, s2, s2, timeouts)

	type conn struct {
		name string
		*wiretest.Conn
	}
	open := func(name, addr, req string) conn {
		c := wiretest.Dial(t, addr)
		c.Send(req)
		head := c.Head()
		require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), "%s: %s", name, head)
		return conn{name, c}
	}
	conns := []conn{
		open("GET", srv.addr, upgradeReq("GET", "echo/1")),
		open("POST with body", srv.addr, upgradeReq("POST", "echo/1", "Content-Length: 4")+"body"),
		open("no HandshakeTimeout", srv2.addr, upgradeReq("GET", "echo/1")),
	}
	for _, c := range conns {
		roundTrip(t, c, "before "+c.name)
	}
	time.Sleep(5 * d) // idle: well past every timeout
	for _, c := range conns {
		roundTrip(t, c, "after "+c.name)
		// Reading and writing, spread over more than the timeouts.
		for range 3 {
			time.Sleep(d)
			roundTrip(t, c, "again "+c.name)
		}
		c.Close()
	}
	srv.stop()
	srv2.stop()
	backTo(t, base, "after the servers stopped")
}

// TestHandshakeTimeoutBoundsSlowBody: an Expect-less POST whose body
// trickles in is bounded by Server.HandshakeTimeout: no switch, the handler
// never runs, the connection is closed well before the body could be
// complete, and its slot is released.
func TestHandshakeTimeoutBoundsSlowBody(t *testing.T) {
	base := baseline(t)
	lg, logs := testLogger()
	const bound = 300 * time.Millisecond
	var served atomic.Int32
	s := &Server{HandshakeTimeout: bound, ErrorLog: lg}
	s.HandleRoute("up", Route{Handler: HandlerFunc(func(c *Conn) { served.Add(1); echo(c) }), Methods: []string{"POST"}})
	srv := serve(t, s, s)

	c := wiretest.Dial(t, srv.addr)
	const bodyLen = 300 // at 10ms a byte: 3s, ten times the bound
	c.Send(upgradeReq("POST", "up", "Content-Length: "+strconv.Itoa(bodyLen)))
	stop := make(chan struct{})
	dribbled := make(chan int, 1)
	go func() {
		n := 0
		defer func() { dribbled <- n }()
		for ; n < bodyLen; n++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := c.Write([]byte("b")); err != nil {
				return
			}
		}
	}()
	got, err := io.ReadAll(c.BR)
	close(stop)
	n := <-dribbled
	t.Logf("observed: %d of %d body bytes sent, then %q, %v", n, bodyLen, got, err)
	if err != nil {
		assert.ErrorIs(t, err, syscall.ECONNRESET, "the server closes the connection (not our deadline)")
	}
	assert.Less(t, n, bodyLen, "the server gave up before the body was complete")
	assert.NotContains(t, string(got), " 101 ")
	assert.Zero(t, served.Load())
	assert.Contains(t, logs.String(), "reading request body before switching to up")
	waitNoActive(t, s)
	c.Close()
	srv.stop()
	backTo(t, base, "after the server stopped")
}

// TestHandshakeTimeoutAnswersSlowBody: when HandshakeTimeout expires
// while the request body is being read, the refusal still reaches the
// client: 408 Request Timeout (or 400, for a read that failed otherwise),
// written under a deadline of its own rather than the expired one.
func TestHandshakeTimeoutAnswersSlowBody(t *testing.T) {
	const bound = 300 * time.Millisecond
	lg, _ := testLogger()
	s := &Server{HandshakeTimeout: bound, ErrorLog: lg}
	s.HandleRoute("up", Route{Handler: HandlerFunc(echo), Methods: []string{"POST"}})
	srv := serve(t, s, s)

	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("POST", "up", "Content-Length: 10") + "abc") // and nothing more
	got, err := io.ReadAll(c.BR)
	require.Regexp(t, `^HTTP/1\.1 (400|408) `, string(got),
		"after HandshakeTimeout expired while reading the body, a 400 or 408 reaches the client (read error %v)", err)
	srv.stop()
}

// ---- connection caps under concurrency ----

// TestMaxConnsUnderConcurrency: 50 simultaneous handshakes against a cap of
// 10: exactly 10 switch and the 40 others are answered 503 with
// Retry-After; none is dropped.
func TestMaxConnsUnderConcurrency(t *testing.T) {
	hold := HandlerFunc(func(c *Conn) { _, _ = io.Copy(io.Discard, c) })
	cases := []struct {
		name   string
		server func() *Server
		offer  string
		want   map[string]int // status or protocol → count
	}{
		{"Server.MaxConns", func() *Server {
			s := &Server{MaxConns: 10}
			s.Handle("p", hold)
			return s
		}, "p", map[string]int{"p": 10, "503": 40}},
		{"Route.MaxConns", func() *Server {
			s := &Server{}
			s.HandleRoute("p", Route{Handler: hold, MaxConns: 10})
			s.Handle("q", hold)
			return s
		}, "p", map[string]int{"p": 10, "503": 40}},
		{"Route.MaxConns, other offer", func() *Server {
			s := &Server{}
			s.HandleRoute("p", Route{Handler: hold, MaxConns: 10})
			s.Handle("q", hold)
			return s
		}, "p, q", map[string]int{"p": 10, "q": 40}},
		{"both caps", func() *Server {
			s := &Server{MaxConns: 25}
			s.HandleRoute("p", Route{Handler: hold, MaxConns: 10})
			s.Handle("q", hold)
			return s
		}, "p, q", map[string]int{"p": 10, "q": 15, "503": 25}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := baseline(t)
			s := tc.server()
			srv := serve(t, s, s)
			const n = 50
			conns := make([]*wiretest.Conn, n)
			for i := range conns {
				conns[i] = wiretest.Dial(t, srv.addr)
			}
			start := make(chan struct{})
			type result struct {
				key string
				err error
			}
			results := make(chan result, n)
			for _, c := range conns {
				go func() {
					<-start
					if _, err := io.WriteString(c, upgradeReq("GET", tc.offer)); err != nil {
						results <- result{err: err}
						return
					}
					resp, err := http.ReadResponse(c.BR, &http.Request{Method: "GET"})
					if err != nil {
						results <- result{err: err}
						return
					}
					defer resp.Body.Close()
					switch resp.StatusCode {
					case http.StatusSwitchingProtocols:
						results <- result{key: resp.Header.Get("Upgrade")}
					case http.StatusServiceUnavailable:
						if resp.Header.Get("Retry-After") == "" {
							results <- result{err: errors.New("503 without Retry-After")}
							return
						}
						results <- result{key: "503"}
					default:
						results <- result{err: fmt.Errorf("unexpected %s", resp.Status)}
					}
				}()
			}
			close(start)
			got := map[string]int{}
			for range n {
				r := <-results
				if assert.NoError(t, r.err) {
					got[r.key]++
				}
			}
			assert.Equal(t, tc.want, got)
			active := s.ActiveConns()
			for k, v := range tc.want {
				if k != "503" {
					assert.Equal(t, v, active[k], "ActiveConns[%s]", k)
				}
			}
			for _, c := range conns {
				c.Close()
			}
			waitNoActive(t, s)
			srv.stop()
			backTo(t, base, "after the server stopped")
		})
	}
}

// ---- nothing lost: random splits of the byte stream ----

// splitAt cuts msg at up to 8 random places and, half the time, at one
// inside the "\r\n\r\n" that ends at headEnd (exclusive). Pieces are never
// empty.
func splitAt(rng *rand.Rand, msg []byte, headEnd int) [][]byte {
	cuts := []int{}
	if len(msg) > 1 {
		for range rng.IntN(9) {
			cuts = append(cuts, 1+rng.IntN(len(msg)-1))
		}
	}
	if headEnd >= 4 && rng.IntN(2) == 0 {
		cuts = append(cuts, headEnd-1-rng.IntN(3)) // after "\r", "\r\n" or "\r\n\r"
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var pieces [][]byte
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(msg) {
			pieces = append(pieces, msg[prev:c])
			prev = c
		}
	}
	return append(pieces, msg[prev:])
}

// writePieces writes each piece separately (TCP_NODELAY is Go's default),
// pausing at random between them so that they often arrive separately.
func writePieces(rng *rand.Rand, w io.Writer, pieces [][]byte) error {
	for i, p := range pieces {
		if i > 0 && rng.IntN(2) == 0 {
			time.Sleep(time.Duration(50+rng.IntN(1000)) * time.Microsecond)
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// propertySeeds is the number of seeds a property runs for.
func propertySeeds() int {
	if testing.Short() {
		return 40
	}
	return 200
}

// TestNothingLostServerSide: request + N random bytes, split at random
// boundaries (also inside the final CRLFCRLF, and inside the body), arrive
// in many writes; the protocol receives exactly the N bytes, and the
// request body, if any, exactly its bytes — over many seeds, N up to 100
// KiB.
func TestNothingLostServerSide(t *testing.T) {
	base := baseline(t)
	bodies := make(chan string, 1)
	s := &Server{}
	s.HandleFunc("echo/1", echo)
	s.HandleRoute("body/1", Route{Handler: bodyRecorder(bodies), Methods: []string{"POST"}})
	srv := serve(t, s, s.Middleware(plainHandler))

	for _, kind := range []string{"no body", "content-length"} {
		t.Run(kind, func(t *testing.T) {
			for seed := range propertySeeds() {
				rng := rand.New(rand.NewPCG(uint64(seed), 0xfeed))
				payload := randomBytes(rng, rng.IntN(100<<10+1))
				var head string
				var body, wireBody []byte
				switch kind {
				case "no body":
					head = upgradeReq("GET", "echo/1")
				case "content-length":
					body = randomBytes(rng, 1+rng.IntN(8<<10))
					wireBody = body
					head = upgradeReq("POST", "body/1", "Content-Length: "+strconv.Itoa(len(body)))
				}
				msg := slices.Concat([]byte(head), wireBody, payload)
				pieces := splitAt(rng, msg, len(head))

				c := wiretest.Dial(t, srv.addr)
				require.NoError(t, c.NC.SetNoDelay(true)) // Go's default; each write its own segment
				wrote := make(chan error, 1)
				go func() {
					err := writePieces(rng, c, pieces)
					if err == nil {
						err = c.NC.CloseWrite()
					}
					wrote <- err
				}()
				resp, err := c.ReadHead()
				require.NoError(t, err, "seed %d", seed)
				require.True(t, strings.HasPrefix(resp, "HTTP/1.1 101 "), "seed %d: %s", seed, resp)
				got, err := io.ReadAll(c.BR)
				require.NoError(t, err, "seed %d", seed)
				require.NoError(t, <-wrote, "seed %d", seed)
				c.Close()
				if !bytes.Equal(payload, got) {
					t.Fatalf("seed %d (%d pieces): the protocol got %d bytes, want the %d sent (first difference at %d)",
						seed, len(pieces), len(got), len(payload), firstDiff(payload, got))
				}
				if body != nil {
					select {
					case b := <-bodies:
						require.True(t, string(body) == b, "seed %d: request body differs (%d bytes, want %d)", seed, len(b), len(body))
					case <-time.After(10 * time.Second):
						t.Fatalf("seed %d: handler reported no body", seed)
					}
				}
			}
		})
	}
	waitNoActive(t, s)
	srv.stop()
	backTo(t, base, "after the server stopped")
}

// TestNothingLostClientSide: a scripted server answers "101 + N random
// bytes" split at random boundaries (inside the header block and its final
// CRLFCRLF too), sometimes after an interim 100 and with padding fields;
// the Conn that Dial returns yields exactly the N bytes.
func TestNothingLostClientSide(t *testing.T) {
	base := baseline(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	d := Dialer{Proxy: noProxy}
	url := "http://" + ln.Addr().String() + "/"

	for seed := range propertySeeds() {
		rng := rand.New(rand.NewPCG(uint64(seed), 0xc11e))
		payload := randomBytes(rng, rng.IntN(100<<10+1))
		head := ""
		if rng.IntN(4) == 0 {
			head += "HTTP/1.1 100 Continue\r\n\r\n"
		}
		head += "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\n"
		for i := range rng.IntN(6) {
			head += fmt.Sprintf("X-Pad-%d: %s\r\n", i, strings.Repeat("p", rng.IntN(3000)))
		}
		head += "Connection: Upgrade\r\n\r\n"
		msg := slices.Concat([]byte(head), payload)
		pieces := splitAt(rng, msg, len(head))

		served := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				served <- err
				return
			}
			defer c.Close()
			_ = c.(*net.TCPConn).SetNoDelay(true)
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := readRawRequest(c); err != nil {
				served <- err
				return
			}
			served <- writePieces(rng, c, pieces)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := d.Dial(ctx, url, echo1)
		cancel()
		require.NoError(t, err, "seed %d", seed)
		require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
		got, err := io.ReadAll(c)
		require.NoError(t, err, "seed %d", seed)
		require.NoError(t, <-served, "seed %d", seed)
		c.Close()
		if !bytes.Equal(payload, got) {
			t.Fatalf("seed %d (%d pieces): Conn yields %d bytes, want the %d sent (first difference at %d)",
				seed, len(pieces), len(got), len(payload), firstDiff(payload, got))
		}
	}
	ln.Close()
	backTo(t, base, "after the listener closed")
}
