package reverseproxy

// The package's generic test helpers: logs, protocols and servers of the
// upgrade package to stand behind a Proxy, clients, and accounting of
// goroutines and file descriptors. The scripted backend and the Proxy
// under test are in backend_test.go.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- logs ----

// logBuffer collects what a logger writes.
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

// testLogger returns a logger for Proxy.ErrorLog and what it logged.
func testLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

// debugLogger returns a logger at slog.LevelDebug for Proxy.ErrorLog and
// what it logged.
func debugLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// discardLogger returns a logger that drops everything, for tests that
// make a Proxy log errors on purpose.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ---- upgrade servers behind the Proxy ----

// echo is a protocol that echoes what it reads until EOF.
func echo(c *upgrade.Conn) { _, _ = io.Copy(c, c) }

// echoServer returns an upgrade.Server with an echo registered for each
// pattern.
func echoServer(patterns ...string) *upgrade.Server {
	s := new(upgrade.Server)
	for _, p := range patterns {
		s.HandleFunc(p, echo)
	}
	return s
}

// closeAndWait closes s's switched connections and waits until their
// handlers have returned.
func closeAndWait(t testing.TB, s *upgrade.Server) {
	assert.NoError(t, s.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	assert.NoError(t, s.Shutdown(ctx), "protocol handlers must return once their connections close; still active: %v", s.ActiveConns())
}

// plainHandler answers any request with its method and path.
var plainHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Plain", "1")
	_, _ = io.WriteString(w, "plain "+r.Method+" "+r.URL.Path)
})

// ---- clients ----

// upgradeReq builds a raw upgrade request for "/" with the extra header
// lines.
func upgradeReq(method, upgrade string, extra ...string) string {
	s := method + " / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: " + upgrade + "\r\n"
	for _, e := range extra {
		s += e + "\r\n"
	}
	return s + "\r\n"
}

// bodyString reads the rest of a response body.
func bodyString(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	return string(b)
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

// noProxy disables forward proxies in tests, whatever the environment
// says.
func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

// newTransport returns an HTTP2Transport whose connections are closed
// when the test ends (before the servers it made are).
func newTransport(t testing.TB) *upgrade.HTTP2Transport {
	tr := &upgrade.HTTP2Transport{UnencryptedHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
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

// baseline returns a snapshot to come back to, taken once the runtime's
// poller descriptors exist.
func baseline(t testing.TB) resources {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, ln.Close())
	return resources{goroutines: runtime.NumGoroutine(), fds: openFDs(t)}
}

// backTo waits (bounded) until goroutines and fds are at most base again,
// and fails the test with a goroutine dump if they are not. It polls in
// the test's goroutine: require.Eventually's own goroutine would be
// counted.
func backTo(t testing.TB, base resources, when string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Descriptors can wait for a finalizer: the runtime's pool of
		// splice pipes, for one, is emptied by the garbage collector.
		runtime.GC()
		now := resources{goroutines: runtime.NumGoroutine(), fds: openFDs(t)}
		if now.goroutines <= base.goroutines && now.fds <= base.fds {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%s: resources not given back: baseline %v, now %v\n%s", when, base, now, buf)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
