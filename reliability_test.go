package upgrade

import (
	"bufio"
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
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Reliability tests: faults on either side of the handshake, shutdown under
// load, server timeouts, connection caps under concurrency, and properties
// ("not one byte lost") over many random splits of the byte stream.
//
// These tests manage their server's life themselves (rather than through
// serve's cleanup) so that they can check, before returning, that the
// goroutines and file descriptors they used are all given back.

// ---- resource accounting ----

// resources is a snapshot of what a test can leak.
type resources struct {
	goroutines int
	fds        int
}

func (r resources) String() string {
	return fmt.Sprintf("%d goroutines, %d fds", r.goroutines, r.fds)
}

// openFDs counts the process's open file descriptors (the /proc/self/fd
// entries; the directory's own descriptor counts in every snapshot alike).
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open file descriptors: %v", err)
	}
	return len(ents)
}

// initNetpoll makes the runtime create its poller descriptors now, so that
// they are part of a baseline taken afterwards.
func initNetpoll(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, ln.Close())
}

func snapshot(t testing.TB) resources {
	return resources{goroutines: runtime.NumGoroutine(), fds: openFDs(t)}
}

// baseline returns a snapshot to come back to.
func baseline(t testing.TB) resources {
	t.Helper()
	initNetpoll(t)
	return snapshot(t)
}

// backTo waits (bounded) until goroutines and fds are at most base again,
// and fails the test with a goroutine dump if they are not.
func backTo(t testing.TB, base resources, when string) resources {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := snapshot(t)
		if now.goroutines <= base.goroutines && now.fds <= base.fds {
			return now
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%s: resources not given back: baseline %v, now %v\n%s", when, base, now, buf)
			return now
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventually polls cond until it holds or d has passed, without failing
// the test: for conditions whose failure is reported otherwise.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// ---- a server whose life the test controls ----

type testServer struct {
	t    testing.TB
	s    *Server
	ts   *httptest.Server
	addr string
	once sync.Once
}

// startServer serves h on 127.0.0.1 with an http.Server configured by
// config (may be nil). stop, also run at cleanup, closes the listener and
// every switched connection and waits for the protocol handlers.
func startServer(t testing.TB, s *Server, h http.Handler, config func(*http.Server)) *testServer {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	if config != nil {
		config(ts.Config)
	}
	ts.Start()
	srv := &testServer{t: t, s: s, ts: ts, addr: ts.Listener.Addr().String()}
	t.Cleanup(srv.stop)
	return srv
}

func (srv *testServer) stop() {
	srv.once.Do(func() {
		srv.ts.Close()
		assert.NoError(srv.t, srv.s.Close())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(srv.t, srv.s.Shutdown(ctx), "protocol handlers must return once their connections close; still active: %v", srv.s.ActiveConns())
	})
}

// waitNoActive waits until s serves no switched connection.
func waitNoActive(t testing.TB, s *Server) {
	t.Helper()
	require.Eventually(t, func() bool { return len(s.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond,
		"connections still active: %v", s.ActiveConns())
}

// dialTCP dials addr with a deadline on every operation.
func dialTCP(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, nc.SetDeadline(time.Now().Add(20*time.Second)))
	return nc.(*net.TCPConn)
}

// readHead reads one response header block, raw.
func readHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// checkEcho sends msg on an upgraded echo connection and checks it comes
// back.
func checkEcho(t testing.TB, nc net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	_, err := io.WriteString(nc, msg)
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(br, got)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
}

// upgradeEcho opens a connection to addr switched to protocol (an echo).
func upgradeEcho(t testing.TB, addr, protocol string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	nc := dialTCP(t, addr)
	_, err := io.WriteString(nc, upgradeReq("GET", protocol))
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	head, err := readHead(br)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), head)
	return nc, br
}

// ---- faults on the client side ----

// TestFaultClientVanishes: a client that goes away at any point of the
// handshake (part of the header block, all of it, right after the 101, in
// the middle of a body; by FIN or by RST) costs the server nothing lasting:
// no active connection, and goroutines and fds back to their baseline,
// while it keeps serving.
func TestFaultClientVanishes(t *testing.T) {
	base := baseline(t)
	lg, _ := testLogger(t)
	s := &Server{ErrorLog: lg}
	s.HandleFunc("echo/1", echo)
	s.HandleRoute("body/1", Route{Handler: HandlerFunc(func(c *Conn) {
		_, _ = io.Copy(io.Discard, c.Request.Body)
		echo(c)
	}), Methods: []string{"POST"}, MaxBody: 4 << 20})
	srv := startServer(t, s, s.Middleware(plainHandler), nil)
	running := baseline(t)

	get := upgradeReq("GET", "echo/1")
	const bodyLen = 1 << 20
	post := upgradeReq("POST", "body/1", "Content-Length: "+strconv.Itoa(bodyLen))
	half := bytes.Repeat([]byte("b"), bodyLen/2)

	// vanish closes nc, by RST when reset.
	vanish := func(nc *net.TCPConn, reset bool) {
		if reset {
			_ = nc.SetLinger(0)
		}
		_ = nc.Close()
	}
	cases := []struct {
		name string
		run  func(t *testing.T, nc *net.TCPConn, br *bufio.Reader, reset bool)
	}{
		{"after half the header block", func(t *testing.T, nc *net.TCPConn, br *bufio.Reader, reset bool) {
			_, err := io.WriteString(nc, get[:len(get)/2])
			require.NoError(t, err)
			vanish(nc, reset)
		}},
		{"after the header block, before reading the 101", func(t *testing.T, nc *net.TCPConn, br *bufio.Reader, reset bool) {
			_, err := io.WriteString(nc, get+"unread")
			require.NoError(t, err)
			vanish(nc, reset)
		}},
		{"right after the 101", func(t *testing.T, nc *net.TCPConn, br *bufio.Reader, reset bool) {
			_, err := io.WriteString(nc, get)
			require.NoError(t, err)
			head, err := readHead(br)
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), head)
			vanish(nc, reset)
		}},
		{"in the middle of a large body", func(t *testing.T, nc *net.TCPConn, br *bufio.Reader, reset bool) {
			_, err := io.WriteString(nc, post)
			require.NoError(t, err)
			_, err = nc.Write(half)
			require.NoError(t, err)
			vanish(nc, reset)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 20 {
				nc := dialTCP(t, srv.addr)
				tc.run(t, nc, bufio.NewReader(nc), i%2 == 1)
				_ = nc.Close()
			}
		})
	}
	t.Run("at every byte of the request", func(t *testing.T) {
		for cut := 0; cut <= len(get); cut++ {
			nc := dialTCP(t, srv.addr)
			_, err := io.WriteString(nc, get[:cut])
			require.NoError(t, err)
			vanish(nc, cut%2 == 1)
		}
	})
	t.Run("at every byte of the 101", func(t *testing.T) {
		const resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n"
		for cut := 0; cut <= len(resp); cut++ {
			nc := dialTCP(t, srv.addr)
			_, err := io.WriteString(nc, get)
			require.NoError(t, err)
			_, err = io.ReadFull(nc, make([]byte, cut))
			require.NoError(t, err)
			vanish(nc, cut%2 == 0)
		}
	})

	// Nothing lasting, while the server keeps serving.
	waitNoActive(t, s)
	backTo(t, running, "server running, after the vanished clients")
	nc, br := upgradeEcho(t, srv.addr, "echo/1")
	checkEcho(t, nc, br, "still serving")
	require.NoError(t, nc.Close())

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
	lg, logs := testLogger(t)
	s := &Server{ErrorLog: lg}
	s.HandleFunc("boom/1", func(c *Conn) {
		// Panic once the client has spoken, so that every panic happens
		// while the connection is in use.
		_, _ = c.Read(make([]byte, 1))
		panic("kaboom")
	})
	s.HandleFunc("abort", func(c *Conn) { panic(http.ErrAbortHandler) })
	s.HandleFunc("echo/1", echo)
	srv := startServer(t, s, s, nil)

	const n = 20
	addrs := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		nc, br := upgradeEcho(t, srv.addr, "boom/1")
		addrs[i] = nc.LocalAddr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer nc.Close()
			if _, err := nc.Write([]byte("x")); err != nil {
				errs <- err
				return
			}
			rest, err := io.ReadAll(br)
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

	var lines []string
	require.Eventually(t, func() bool {
		lines = lines[:0]
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "panic serving protocol") {
				lines = append(lines, l)
			}
		}
		return len(lines) >= n
	}, 5*time.Second, 5*time.Millisecond)
	require.Len(t, lines, n, "one log record per panic")
	for _, a := range addrs {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, " remote="+a+" ") })
		if assert.GreaterOrEqual(t, i, 0, "no panic record names remote %s", a) {
			assert.Contains(t, lines[i], " protocol=boom/1 ")
			assert.Contains(t, lines[i], "panic=kaboom")
			assert.Contains(t, lines[i], "stack=")
		}
	}

	nc, br := upgradeEcho(t, srv.addr, "abort")
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Empty(t, rest)
	require.NoError(t, nc.Close())
	waitNoActive(t, s)
	assert.NotContains(t, logs.String(), "abort Handler", "ErrAbortHandler is not logged")

	nc, br = upgradeEcho(t, srv.addr, "echo/1")
	checkEcho(t, nc, br, "alive")
	require.NoError(t, nc.Close())

	srv.stop()
	backTo(t, base, "after the server stopped")
	goleak.VerifyNone(t)
}

// panicAccepter is a protocol whose pre-101 step panics when asked to.
type panicAccepter struct{}

func (panicAccepter) AcceptUpgrade(r *http.Request, h http.Header) error {
	if r.Header.Get("X-Panic") != "" {
		panic("accepter kaboom")
	}
	return nil
}

func (panicAccepter) ServeUpgrade(c *Conn) { echo(c) }

// TestFaultAccepterPanics: a panic in AcceptUpgrade is recovered by
// net/http (which closes the connection); it must not cost the server the
// connection slot reserved for the switch. It does: negotiate
// (negotiate.go) calls s.reserve(rt) and then AcceptUpgrade with no
// deferred release, so the panic unwinds past the slot: ActiveConns keeps
// counting a phantom connection, and with a cap (here Route.MaxConns 1)
// the protocol is refused with 503 forever after.
func TestFaultAccepterPanics(t *testing.T) {
	s := &Server{}
	s.HandleRoute("p", Route{Handler: panicAccepter{}, MaxConns: 1})
	srv := startServer(t, s, s, func(hs *http.Server) { hs.ErrorLog = log.New(io.Discard, "", 0) })

	c := dialRaw(t, srv.addr)
	c.write(upgradeReq("GET", "p", "X-Panic: yes"))
	rest, err := io.ReadAll(c.br)
	if err != nil {
		assert.ErrorIs(t, err, syscall.ECONNRESET)
	}
	assert.NotContains(t, string(rest), " 101 ", "no switch after a panicking Accepter")

	// The slot must be released, and the protocol keep serving.
	released := eventually(2*time.Second, func() bool { return len(s.ActiveConns()) == 0 })
	leaked := s.ActiveConns()
	c = dialRaw(t, srv.addr)
	c.write(upgradeReq("GET", "p"))
	head := c.head()
	t.Logf("after the panic: ActiveConns %v; next upgrade answered %q", leaked, head)
	if !released || !strings.HasPrefix(head, "HTTP/1.1 101 ") {
		t.Fatalf("a panic in AcceptUpgrade leaked the reserved connection slot (ActiveConns %v; next upgrade: %q)",
			leaked, strings.SplitN(head, "\r\n", 2)[0])
	}
	assert.Equal(t, map[string]int{"p": 1}, s.ActiveConns(), "just the new connection")
}

// ---- shutdown and close ----

// holdConns switches n connections to protocol and waits until running()
// reports n more protocol handlers running. (ActiveConns is not enough: it
// counts a connection from the moment its slot is reserved, before the 101.)
func holdConns(t *testing.T, srv *testServer, protocol string, n int, running func() int) []*rawConn {
	t.Helper()
	before := running()
	cs := make([]*rawConn, n)
	for i := range cs {
		cs[i] = dialRaw(t, srv.addr)
		cs[i].write(upgradeReq("GET", protocol))
	}
	for _, c := range cs {
		require.True(t, strings.HasPrefix(c.head(), "HTTP/1.1 101 "))
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
		<-c.Draining()
		_, _ = io.WriteString(c, "bye")
		finished.Add(1)
	})
	srv := startServer(t, s, s, nil)
	cs := holdConns(t, srv, "wait", 100, func() int { return int(started.Load()) })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	require.NoError(t, ctx.Err(), "Shutdown returned before its deadline")
	assert.EqualValues(t, 100, finished.Load(), "Shutdown waits for every handler")
	assert.Empty(t, s.ActiveConns())
	for _, c := range cs {
		rest, err := io.ReadAll(c.br)
		require.NoError(t, err)
		require.Equal(t, "bye", string(rest))
		c.nc.Close()
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
	srv := startServer(t, s, s, nil)
	cs := append(holdConns(t, srv, "reader", 50, running), holdConns(t, srv, "sleeper", 50, running)...)

	const grace = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	err := s.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, time.Since(start), grace, "Shutdown gave the handlers until the deadline")
	for i, c := range cs {
		rest, err := io.ReadAll(c.br)
		require.NoError(t, err, "client %d: the connection is closed (EOF)", i)
		require.Empty(t, rest)
		c.nc.Close()
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

// gateAccepter is a protocol whose pre-101 step blocks until released.
type gateAccepter struct {
	entered chan struct{}
	release chan struct{}
	served  *atomic.Int32
}

func (g gateAccepter) AcceptUpgrade(r *http.Request, h http.Header) error {
	g.entered <- struct{}{}
	<-g.release
	return nil
}

func (g gateAccepter) ServeUpgrade(c *Conn) { g.served.Add(1); echo(c) }

// TestCloseDuringHandshake: Server.Close while a handshake is between
// negotiation and the 101 (its Accepter blocks until the test has closed
// the server). The 101 must never be followed by a usable connection.
// Two outcomes are acceptable, and the test logs which one it sees:
//   - the switch is refused before the 101: 503 with Retry-After (what a
//     server that re-checks for Close right before the hijack does);
//   - observed with the original code: the switch completes on the wire
//     (the client reads a complete, valid 101) and the server closes the
//     connection right after it, so the client's next read is EOF (or a
//     reset), what it wrote is never served.
//
// Either way the protocol handler never runs and nothing stays active.
func TestCloseDuringHandshake(t *testing.T) {
	base := baseline(t)
	var served atomic.Int32
	g := gateAccepter{entered: make(chan struct{}, 1), release: make(chan struct{}), served: &served}
	s := &Server{}
	s.Handle("gate", g)
	srv := startServer(t, s, s, nil)

	c := dialRaw(t, srv.addr)
	c.write(upgradeReq("GET", "gate"))
	<-g.entered
	assert.Equal(t, map[string]int{"gate": 1}, s.ActiveConns(), "a switching connection holds its slot")
	require.NoError(t, s.Close())
	close(g.release)

	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	require.NoError(t, err)
	switch resp.StatusCode {
	case http.StatusServiceUnavailable:
		assert.NotEmpty(t, resp.Header.Get("Retry-After"))
		t.Logf("observed: refused before the 101 with %s", resp.Status)
	case http.StatusSwitchingProtocols:
		assert.Equal(t, "gate", resp.Header.Get("Upgrade"))
		_, _ = c.nc.Write([]byte("anyone there?")) // may fail with a reset
		rest, err := io.ReadAll(c.br)
		if err != nil {
			assert.ErrorIs(t, err, syscall.ECONNRESET)
		}
		assert.Empty(t, rest, "the 101 is never followed by a usable connection")
		t.Logf("observed: a 101, then the connection closed (%q, %v)", rest, err)
	default:
		t.Errorf("unexpected %s", resp.Status)
	}
	waitNoActive(t, s)
	assert.Zero(t, served.Load(), "the protocol handler never runs")
	c.nc.Close()
	srv.stop()
	backTo(t, base, "after the server stopped")
	goleak.VerifyNone(t)
}

// TestShutdownWaitsForSwitchInFlight: Shutdown called while a connection
// is being switched (slot reserved, ActiveConns counting it, Accepter
// running, 101 not yet tracked) must not report "all done" while that
// switch is still going on. It does: Server.Shutdown looks only at s.conns,
// which a connection joins in track(), after its 101 has been written; a
// switch in flight is in s.inuse/s.byProto only. The consequence in
// practice: a client that has just read its 101 can have its connection
// closed by a Shutdown that returned nil without its handler ever running
// — which is also why TestShutdownRefusesNewUpgradesAndWaits
// (upgrade_test.go) hangs now and then at `<-finished`: its Eventually on
// ActiveConns passes at reserve time, before track.
func TestShutdownWaitsForSwitchInFlight(t *testing.T) {
	var served atomic.Int32
	g := gateAccepter{entered: make(chan struct{}, 1), release: make(chan struct{}), served: &served}
	s := &Server{}
	s.Handle("gate", g)
	srv := startServer(t, s, s, nil)

	c := dialRaw(t, srv.addr)
	c.write(upgradeReq("GET", "gate"))
	<-g.entered
	type outcome struct {
		err    error
		active map[string]int
	}
	done := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := s.Shutdown(ctx)
		done <- outcome{err, s.ActiveConns()}
	}()
	// Give a wrong Shutdown time to return early; a right one waits for
	// the release whatever the delay.
	time.Sleep(100 * time.Millisecond)
	close(g.release)
	o := <-done
	status, rest := "no response", ""
	if resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"}); err == nil {
		status = resp.Status
		var b []byte
		if resp.StatusCode == http.StatusSwitchingProtocols {
			b, _ = io.ReadAll(c.br) // the server closes the connection
		} else {
			b, _ = io.ReadAll(resp.Body)
		}
		rest = string(b)
	}
	t.Logf("Shutdown returned %v with ActiveConns %v; the client read %s, then %q; handler ran %d times", o.err, o.active, status, rest, served.Load())
	assert.Zero(t, served.Load(), "no protocol handler runs after Shutdown began")
	waitNoActive(t, s)
	srv.stop()
	if o.err == nil && len(o.active) != 0 {
		t.Fatalf("Shutdown returned nil while a switch was in flight (ActiveConns %v)", o.active)
	}
	assert.NoError(t, o.err)
	assert.Empty(t, o.active)
}

// TestShutdownAfterClientRead101: once a client has read its 101, the
// connection is switched: a Shutdown that starts then must let the
// protocol handler run (and see its Context cancelled), not drop the
// connection unserved. Repeated, because the window is small: serve writes
// the 101 in switchProtocols and only then calls track(); a Shutdown that
// lands in between makes track refuse and close a connection whose 101
// the client already has, while Shutdown returns nil. This is also why
// TestShutdownRefusesNewUpgradesAndWaits (upgrade_test.go) can block
// forever at `<-finished` (it did here once, for 10 minutes, before the
// in-flight part was fixed in 3f6bf06; this remaining window is ~1 in 100).
func TestShutdownAfterClientRead101(t *testing.T) {
	const rounds = 300
	dropped := 0
	for range rounds {
		s := &Server{}
		var ran atomic.Int32
		s.HandleFunc("w", func(c *Conn) {
			ran.Add(1)
			<-c.Draining()
			_, _ = io.WriteString(c, "bye")
		})
		ts := httptest.NewServer(s)
		c := dialRaw(t, ts.Listener.Addr().String())
		c.write(upgradeReq("GET", "w"))
		require.True(t, strings.HasPrefix(c.head(), "HTTP/1.1 101 "))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Shutdown(ctx)
		cancel()
		require.NoError(t, err)
		rest, _ := io.ReadAll(c.br)
		if ran.Load() == 0 || string(rest) != "bye" {
			dropped++
		}
		c.nc.Close()
		ts.Close()
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
	srv := startServer(t, s, s, func(hs *http.Server) { hs.ReadHeaderTimeout = 200 * time.Millisecond })

	nc := dialTCP(t, srv.addr)
	defer nc.Close()
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
			if _, err := nc.Write([]byte{req[n]}); err != nil {
				return
			}
		}
	}()
	got, err := io.ReadAll(nc)
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
	nc.Close()
	srv.stop()
	backTo(t, base, "after the server stopped")
}

// TestIdleUpgradedConnSurvivesHTTPTimeouts: an upgraded connection left
// idle for far longer than every timeout of the http.Server is not cut off
// by them: they govern HTTP, not the protocol switched to. Checked for a
// GET, a POST whose body was read before the switch (the body read sets a
// deadline), and a Server without HandshakeTimeout.
func TestIdleUpgradedConnSurvivesHTTPTimeouts(t *testing.T) {
	base := baseline(t)
	const d = 200 * time.Millisecond
	timeouts := func(hs *http.Server) {
		hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout, hs.ReadHeaderTimeout = d, d, d, d
	}
	s := &Server{HandshakeTimeout: d}
	s.HandleRoute("echo/1", Route{Handler: HandlerFunc(echo), Methods: []string{"GET", "POST"}})
	srv := startServer(t, s, s, timeouts)
	s2 := &Server{HandshakeTimeout: -1}
	s2.HandleFunc("echo/1", echo)
	srv2 := startServer(t, s2, s2, timeouts)

	type conn struct {
		name string
		nc   *net.TCPConn
		br   *bufio.Reader
	}
	open := func(name, addr, req string) conn {
		nc := dialTCP(t, addr)
		_, err := io.WriteString(nc, req)
		require.NoError(t, err)
		br := bufio.NewReader(nc)
		head, err := readHead(br)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), "%s: %s", name, head)
		return conn{name, nc, br}
	}
	conns := []conn{
		open("GET", srv.addr, upgradeReq("GET", "echo/1")),
		open("POST with body", srv.addr, upgradeReq("POST", "echo/1", "Content-Length: 4")+"body"),
		open("no HandshakeTimeout", srv2.addr, upgradeReq("GET", "echo/1")),
	}
	for _, c := range conns {
		checkEcho(t, c.nc, c.br, "before "+c.name)
	}
	time.Sleep(5 * d) // idle: well past every timeout
	for _, c := range conns {
		checkEcho(t, c.nc, c.br, "after "+c.name)
		// Reading and writing, spread over more than the timeouts.
		for range 3 {
			time.Sleep(d)
			checkEcho(t, c.nc, c.br, "again "+c.name)
		}
		c.nc.Close()
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
	lg, logs := testLogger(t)
	const bound = 300 * time.Millisecond
	var served atomic.Int32
	s := &Server{HandshakeTimeout: bound, ErrorLog: lg}
	s.HandleRoute("up", Route{Handler: HandlerFunc(func(c *Conn) { served.Add(1); echo(c) }), Methods: []string{"POST"}})
	srv := startServer(t, s, s, nil)

	nc := dialTCP(t, srv.addr)
	defer nc.Close()
	const bodyLen = 300 // at 10ms a byte: 3s, ten times the bound
	_, err := io.WriteString(nc, upgradeReq("POST", "up", "Content-Length: "+strconv.Itoa(bodyLen)))
	require.NoError(t, err)
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
			if _, err := nc.Write([]byte("b")); err != nil {
				return
			}
		}
	}()
	got, err := io.ReadAll(nc)
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
	nc.Close()
	srv.stop()
	backTo(t, base, "after the server stopped")
}

// TestHandshakeTimeoutSlowBodyAnswered400: the library means to answer a
// body that cannot be read with "400 could not read request body"; when the
// read failed because HandshakeTimeout expired, that answer (or a 408
// Request Timeout) must still reach the client. It does not: the same
// expired deadline was set for writing, so net/http's flush of the answer
// fails and the client sees the connection closed (or reset) with no
// status at all.
func TestHandshakeTimeoutSlowBodyAnswered400(t *testing.T) {
	const bound = 300 * time.Millisecond
	lg, _ := testLogger(t)
	s := &Server{HandshakeTimeout: bound, ErrorLog: lg}
	s.HandleRoute("up", Route{Handler: HandlerFunc(echo), Methods: []string{"POST"}})
	srv := startServer(t, s, s, nil)

	c := dialRaw(t, srv.addr)
	c.write(upgradeReq("POST", "up", "Content-Length: 10") + "abc") // and nothing more
	got, err := io.ReadAll(c.br)
	t.Logf("observed: %q, %v", got, err)
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) && !bytes.HasPrefix(got, []byte("HTTP/1.1 408 ")) {
		t.Fatalf("after HandshakeTimeout expired while reading the body, no 400 or 408 reached the client; it saw %q, %v", got, err)
	}
	srv.stop()
}

// TestRefusedSwitchLeavesNoStaleDeadline: when a switch is refused after
// its body was read — Close began during the handshake, and the server
// answers 503 before the 101 — the connection stays an HTTP/1.1
// keep-alive connection, served by Middleware's next handler while the
// server shuts down. The HandshakeTimeout deadlines set for the body read
// must not outlive the handshake: a plain request sent on that connection
// later still gets its answer. (Observed: net/http re-arms the read
// deadline for each request and clears the write deadline after each
// response, so this holds.)
func TestRefusedSwitchLeavesNoStaleDeadline(t *testing.T) {
	const bound = 200 * time.Millisecond
	var served atomic.Int32
	g := gateAccepter{entered: make(chan struct{}, 1), release: make(chan struct{}), served: &served}
	s := &Server{HandshakeTimeout: bound}
	s.HandleRoute("up", Route{Handler: g, Methods: []string{"POST"}})
	srv := startServer(t, s, s.Middleware(plainHandler), nil)

	c := dialRaw(t, srv.addr)
	c.write(upgradeReq("POST", "up", "Content-Length: 4") + "body")
	<-g.entered
	require.NoError(t, s.Close())
	close(g.release)
	resp := c.response("POST")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Close {
		t.Skipf("the refused switch was answered %s (Connection: close %v): not the case under test", resp.Status, resp.Close)
	}

	time.Sleep(3 * bound) // past the handshake's deadline
	c.write("GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
	later, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	require.NoError(t, err, "the connection kept a handshake deadline")
	assert.Equal(t, http.StatusOK, later.StatusCode)
	assert.Equal(t, "plain GET /later", bodyString(t, later))
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
			srv := startServer(t, s, s, nil)
			const n = 50
			conns := make([]*net.TCPConn, n)
			for i := range conns {
				conns[i] = dialTCP(t, srv.addr)
			}
			start := make(chan struct{})
			type result struct {
				key string
				err error
			}
			results := make(chan result, n)
			for _, nc := range conns {
				go func() {
					<-start
					if _, err := io.WriteString(nc, upgradeReq("GET", tc.offer)); err != nil {
						results <- result{err: err}
						return
					}
					resp, err := http.ReadResponse(bufio.NewReader(nc), &http.Request{Method: "GET"})
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
			for _, nc := range conns {
				nc.Close()
			}
			waitNoActive(t, s)
			srv.stop()
			backTo(t, base, "after the server stopped")
		})
	}
}

// ---- nothing lost: random splits of the byte stream ----

// randomBytes returns n pseudo-random bytes.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

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

// chunk encodes body with chunks of random sizes.
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
	bodies := make(chan []byte, 1)
	s := &Server{}
	s.HandleFunc("echo/1", echo)
	s.HandleRoute("body/1", Route{Handler: HandlerFunc(func(c *Conn) {
		b, err := io.ReadAll(c.Request.Body)
		if err != nil {
			b = []byte("error: " + err.Error())
		}
		bodies <- b
		echo(c)
	}), Methods: []string{"POST"}})
	srv := startServer(t, s, s.Middleware(plainHandler), nil)

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

				nc := dialTCP(t, srv.addr)
				require.NoError(t, nc.SetNoDelay(true)) // Go's default; each write its own segment
				wrote := make(chan error, 1)
				go func() {
					err := writePieces(rng, nc, pieces)
					if err == nil {
						err = nc.CloseWrite()
					}
					wrote <- err
				}()
				br := bufio.NewReader(nc)
				resp, err := readHead(br)
				require.NoError(t, err, "seed %d", seed)
				require.True(t, strings.HasPrefix(resp, "HTTP/1.1 101 "), "seed %d: %s", seed, resp)
				got, err := io.ReadAll(br)
				require.NoError(t, err, "seed %d", seed)
				require.NoError(t, <-wrote, "seed %d", seed)
				nc.Close()
				if !bytes.Equal(payload, got) {
					t.Fatalf("seed %d (%d pieces): the protocol got %d bytes, want the %d sent (first difference at %d)",
						seed, len(pieces), len(got), len(payload), firstDiff(payload, got))
				}
				if body != nil {
					select {
					case b := <-bodies:
						require.True(t, bytes.Equal(body, b), "seed %d: request body differs (%d bytes, want %d)", seed, len(b), len(body))
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

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
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
