package upgrade

// The package's test helpers, one set for every test file: servers and the
// protocols they register, clients (raw ones come from internal/wiretest),
// exchanges served in process, scripted servers for Dial, and accounting
// of goroutines and file descriptors.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- logs ----

// logBuffer collects what a Server logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testLogger returns a logger for Server.ErrorLog and what it logged.
func testLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

// ---- servers ----

// testServer is an http.Server on 127.0.0.1 in front of an upgrade.Server.
type testServer struct {
	t    testing.TB
	s    *Server
	ts   *httptest.Server
	addr string
	once sync.Once
}

// serve serves h, a handler that uses s, on 127.0.0.1 with an http.Server
// changed by each config. stop, which cleanup runs too, closes the
// listener and every switched connection and waits for the protocol
// handlers: none outlives the test.
func serve(t testing.TB, s *Server, h http.Handler, config ...func(*http.Server)) *testServer {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	for _, c := range config {
		c(ts.Config)
	}
	ts.Start()
	srv := &testServer{t: t, s: s, ts: ts, addr: ts.Listener.Addr().String()}
	t.Cleanup(srv.stop)
	return srv
}

func (srv *testServer) stop() {
	srv.once.Do(func() {
		srv.ts.Close()
		closeAndWait(srv.t, srv.s)
	})
}

// closeAndWait closes s's switched connections and waits until their
// handlers have returned.
func closeAndWait(t testing.TB, s *Server) {
	assert.NoError(t, s.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	assert.NoError(t, s.Shutdown(ctx), "protocol handlers must return once their connections close; still active: %v", s.ActiveConns())
}

// waitNoActive waits until s serves no switched connection.
func waitNoActive(t testing.TB, s *Server) {
	t.Helper()
	require.Eventually(t, func() bool { return len(s.ActiveConns()) == 0 }, 10*time.Second, 5*time.Millisecond,
		"connections still active: %v", s.ActiveConns())
}

// inProcess serves raw, one request as a client sends it, to h (a
// handler that uses s) in process, without a socket: see wiretest.Serve.
// At cleanup s is closed and shut down, so that a protocol handler started
// by a switch does not outlive the test.
func inProcess(t *testing.T, s *Server, h http.Handler, raw string, edit ...func(*http.Request)) *wiretest.Result {
	t.Helper()
	t.Cleanup(func() { closeAndWait(t, s) })
	return wiretest.Serve(t, h, raw, edit...)
}

// upgradeReq builds a raw upgrade request for "/" with the extra header
// lines.
func upgradeReq(method, upgrade string, extra ...string) string {
	s := method + " / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: " + upgrade + "\r\n"
	for _, e := range extra {
		s += e + "\r\n"
	}
	return s + "\r\n"
}

// ---- protocols and plain handlers ----

// echo is a protocol that echoes what it reads until EOF.
func echo(c *Conn) { _, _ = io.Copy(c, c) }

// plainHandler answers any request with its method and path.
var plainHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Plain", "1")
	_, _ = io.WriteString(w, "plain "+r.Method+" "+r.URL.Path)
})

// accepterFunc is a Handler with a pre-101 step; without serve it echoes.
type accepterFunc struct {
	accept func(r *http.Request, h http.Header) error
	serve  func(c *Conn)
}

func (a accepterFunc) AcceptUpgrade(r *http.Request, h http.Header) error { return a.accept(r, h) }
func (a accepterFunc) ServeUpgrade(c *Conn) {
	if a.serve != nil {
		a.serve(c)
		return
	}
	echo(c)
}

// gateAccepter is a protocol whose pre-101 step reports on entered, then
// blocks until release is closed; served counts its switched connections,
// which it echoes.
type gateAccepter struct {
	entered chan struct{}
	release chan struct{}
	served  *atomic.Int32
}

func newGate() gateAccepter {
	return gateAccepter{entered: make(chan struct{}, 1), release: make(chan struct{}), served: new(atomic.Int32)}
}

func (g gateAccepter) AcceptUpgrade(r *http.Request, h http.Header) error {
	g.entered <- struct{}{}
	<-g.release
	return nil
}

func (g gateAccepter) ServeUpgrade(c *Conn) { g.served.Add(1); echo(c) }

// bodyRecorder is a protocol that reports the request body it received
// (or the error reading it) on got, then echoes.
func bodyRecorder(got chan<- string) HandlerFunc {
	return func(c *Conn) {
		b, err := io.ReadAll(c.Request.Body)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(b)
		echo(c)
	}
}

// unwrapWriter wraps a ResponseWriter and gives it back with Unwrap, as
// http.ResponseController expects.
type unwrapWriter struct{ http.ResponseWriter }

func (w unwrapWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// opaqueWriter wraps a ResponseWriter and hides its Hijacker.
type opaqueWriter struct{ http.ResponseWriter }

// bodyString reads the rest of a response body.
func bodyString(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	return string(b)
}

// ---- clients ----

// upgradeEcho opens a raw connection to addr switched to protocol, after
// checking its 101.
func upgradeEcho(t testing.TB, addr, protocol string) *wiretest.Conn {
	t.Helper()
	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", protocol))
	head := c.Head()
	require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), head)
	return c
}

// roundTrip sends msg on a connection switched to an echo and checks that
// it comes back.
func roundTrip(t testing.TB, c io.ReadWriter, msg string) {
	t.Helper()
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
}

// echoServer returns a Server with an echo registered for each pattern.
func echoServer(patterns ...string) *Server {
	s := new(Server)
	for _, p := range patterns {
		s.HandleFunc(p, echo)
	}
	return s
}

// ---- Dial's side: offers and scripted servers ----

// closedAddr returns the address of a port on 127.0.0.1 that was listened
// on and closed: a connection to it is refused.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// noProxy disables proxies in tests, whatever the environment says.
func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

var (
	echo1     = Protocol{Name: "echo", Version: "1"}
	websocket = Protocol{Name: "websocket"}
)

const switch101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo/1\r\nConnection: Upgrade\r\n\r\n"

type ctxKey struct{}

// acceptFor derives a key's answer, the way Sec-WebSocket-Accept is.
func acceptFor(key string) string {
	sum := sha256.Sum256([]byte(key + "-guid"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// fakeServer is a scripted raw-byte HTTP server on 127.0.0.1: it records
// each request's exact bytes (header block and Content-Length body) and
// hands the connection to a script.
type fakeServer struct {
	rawServer
	t      *testing.T
	script func(c net.Conn, req []byte)
	reqs   chan []byte
	closed chan struct{} // one value per connection the client closed
}

// rawServer accepts connections on a listener until it is closed, counts
// and keeps them, and serves each in a goroutine of its own. close closes
// the listener and the connections and waits for the goroutines.
type rawServer struct {
	ln      net.Listener
	accepts atomic.Int32 // connections accepted
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

// start accepts connections on ln and serves each with handle.
func (rs *rawServer) start(ln net.Listener, handle func(net.Conn)) {
	rs.ln = ln
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rs.accepts.Add(1)
			rs.mu.Lock()
			rs.conns = append(rs.conns, c)
			rs.mu.Unlock()
			rs.wg.Add(1)
			go func() {
				defer rs.wg.Done()
				handle(c)
			}()
		}
	}()
}

func (rs *rawServer) close() {
	rs.ln.Close()
	rs.mu.Lock()
	for _, c := range rs.conns {
		c.Close()
	}
	rs.mu.Unlock()
	rs.wg.Wait()
}

func newFakeServer(t *testing.T, script func(c net.Conn, req []byte)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	fs := &fakeServer{t: t, script: script, reqs: make(chan []byte, 16), closed: make(chan struct{}, 16)}
	fs.start(ln, fs.handle)
	t.Cleanup(fs.close)
	return fs
}

func (fs *fakeServer) url(scheme string) string {
	return scheme + "://" + fs.ln.Addr().String()
}

// handle records the request read from c and runs the script on it.
func (fs *fakeServer) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := readRawRequest(c)
	if err != nil {
		return
	}
	fs.reqs <- req
	fs.script(c, req)
}

// request returns the next recorded request.
func (fs *fakeServer) request() []byte {
	fs.t.Helper()
	select {
	case r := <-fs.reqs:
		return r
	case <-time.After(5 * time.Second):
		fs.t.Fatal("fake server received no request")
		return nil
	}
}

// waitClosed waits until the client has closed a connection.
func (fs *fakeServer) waitClosed() {
	fs.t.Helper()
	select {
	case <-fs.closed:
	case <-time.After(5 * time.Second):
		fs.t.Fatal("the client did not close the connection")
	}
}

// drain reads c until the client closes it, then reports the close.
func (fs *fakeServer) drain(c net.Conn) {
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return
	}
	select {
	case fs.closed <- struct{}{}:
	default:
	}
}

// readRawRequest reads one request's header block and Content-Length body,
// byte for byte.
func readRawRequest(c net.Conn) ([]byte, error) {
	var buf []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(buf, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			return buf, err
		}
		buf = append(buf, b[0])
		if len(buf) > 1<<16 {
			return buf, errors.New("request too large")
		}
	}
	if i := bytes.Index(buf, []byte("\r\nContent-Length: ")); i >= 0 {
		rest := buf[i+len("\r\nContent-Length: "):]
		n, err := strconv.Atoi(string(rest[:bytes.IndexByte(rest, '\r')]))
		if err != nil {
			return buf, err
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c, body); err != nil {
			return buf, err
		}
		buf = append(buf, body...)
	}
	return buf, nil
}

// respond returns a script that writes resp in one write, then waits for
// the client to close.
func respond(resp string) func(fs **fakeServer) func(net.Conn, []byte) {
	return func(fs **fakeServer) func(net.Conn, []byte) {
		return func(c net.Conn, _ []byte) {
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
			(*fs).drain(c)
		}
	}
}

// startFake starts a fake server running script(fs).
func startFake(t *testing.T, mk func(fs **fakeServer) func(net.Conn, []byte)) *fakeServer {
	var fs *fakeServer
	fs = newFakeServer(t, func(c net.Conn, req []byte) { mk(&fs)(c, req) })
	return fs
}

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
// and fails the test with a goroutine dump if they are not. It polls in
// the test's goroutine: require.Eventually's own goroutine would be
// counted.
func backTo(t testing.TB, base resources, when string) resources {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Descriptors can wait for a finalizer: the runtime's pool of
		// splice pipes, for one, is emptied by the garbage collector.
		runtime.GC()
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

// ---- byte streams ----

// randomBytes returns n pseudo-random bytes.
func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// firstDiff returns the index of the first byte where a and b differ.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// requireEcho writes n random bytes to w while reading r to EOF, half-
// closes w once they are written, and requires exactly those bytes back.
func requireEcho(t testing.TB, w interface {
	io.Writer
	CloseWrite() error
}, r io.Reader, n int) {
	t.Helper()
	want := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(want)
	written := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, bytes.NewReader(want))
		if err == nil {
			err = w.CloseWrite()
		}
		written <- err
	}()
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, <-written)
	require.True(t, bytes.Equal(want, got), "echoed %d bytes of %d", len(got), len(want))
}
