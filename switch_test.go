package upgrade

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The 101 of an HTTP/1.1 switch is written by the handler's goroutine:
// with its first Write, or before its first Read, Close, CloseWrite,
// deadline or NetConn, or when it returns (switch.go); for a handler that
// does none of these, after lateSwitch (handoff.go).

const greet101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: greet/1\r\nConnection: Upgrade\r\n\r\n"

// holdLate makes the Server wait d before writing a 101 its handler has
// not written, for the rest of the test.
func holdLate(t *testing.T, d time.Duration) {
	set := func(d time.Duration) time.Duration {
		switches.mu.Lock()
		defer switches.mu.Unlock()
		old := lateSwitch
		lateSwitch = d
		if switches.ticking {
			switches.timer.Reset(d)
		}
		return old
	}
	old := set(d)
	t.Cleanup(func() { set(old) })
}

// nothingArrives checks that nothing can be read from c for a while.
func nothingArrives(t *testing.T, c *wiretest.Conn) {
	t.Helper()
	require.NoError(t, c.NC.SetReadDeadline(time.Now().Add(30*time.Millisecond)))
	n, err := c.NC.Read(make([]byte, 1))
	require.Zero(t, n, "nothing must be written yet")
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.NoError(t, c.NC.SetReadDeadline(time.Now().Add(wiretest.Timeout)))
}

// TestSwitchWritesFirstBytesWith101: the 101 waits for the handler's first
// Write and goes out with it, in one write: a single Read on the client
// returns both.
func TestSwitchWritesFirstBytesWith101(t *testing.T) {
	holdLate(t, time.Minute)
	started, release := make(chan struct{}), make(chan struct{})
	s := new(Server)
	s.HandleFunc("greet/1", func(c *Conn) {
		close(started)
		<-release
		if _, err := c.Write([]byte("hello")); err == nil {
			echo(c)
		}
	})
	srv := serve(t, s, s)
	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "greet/1"))
	<-started
	// Had it been written at the switch, the 101 would be in the
	// client's socket by now: loopback delivers during the write.
	nothingArrives(t, c)
	close(release)
	buf := make([]byte, 4096)
	n, err := c.NC.Read(buf)
	require.NoError(t, err)
	require.Equal(t, greet101+"hello", string(buf[:n]), "the 101 and the handler's first bytes in one read")
	roundTrip(t, c.NC, "ping")
}

// writeCounter records the writes on the connections it accepts.
type writeCounter struct {
	net.Listener
	mu     sync.Mutex
	writes []string
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, l: l}, nil
}

func (l *writeCounter) written() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.writes...)
}

type countedConn struct {
	net.Conn
	l *writeCounter
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.writes = append(c.l.writes, string(p))
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

// serveCounted serves s through a listener that records every write.
func serveCounted(t *testing.T, s *Server) (string, *writeCounter) {
	ts := httptest.NewUnstartedServer(s)
	wc := &writeCounter{Listener: ts.Listener}
	ts.Listener = wc
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		closeAndWait(t, s)
	})
	return ts.Listener.Addr().String(), wc
}

// TestSwitchOneWrite: on a connection that is not a *net.TCPConn (a
// listener's wrapper, or TLS), the 101 and the handler's first bytes are
// one Write too; a first Write too large to join the 101 follows it.
func TestSwitchOneWrite(t *testing.T) {
	holdLate(t, time.Minute)
	big := strings.Repeat("b", 2*maxSwitchBuf)
	s := new(Server)
	s.HandleFunc("greet/1", func(c *Conn) {
		if _, err := c.Write([]byte("hello")); err == nil {
			echo(c)
		}
	})
	s.HandleFunc("big/1", func(c *Conn) { _, _ = c.Write([]byte(big)) })
	addr, wc := serveCounted(t, s)

	c := wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "greet/1"))
	require.Equal(t, greet101, c.Head())
	require.Equal(t, "hello", c.ReadN(5))
	assert.Equal(t, []string{greet101 + "hello"}, wc.written(), "one write")

	c = wiretest.Dial(t, addr)
	c.Send(upgradeReq("GET", "big/1"))
	head := c.Head()
	require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), head)
	require.Equal(t, big, c.Rest())
	w := wc.written()
	require.Len(t, w, 3)
	assert.Equal(t, []string{head, big}, w[1:], "the 101, then the large write")
}

// TestSwitchWrittenBeforeFirstRead: a handler that reads first has the
// 101 written before its Read returns, read-ahead bytes included.
func TestSwitchWrittenBeforeFirstRead(t *testing.T) {
	holdLate(t, time.Minute)
	s := echoServer("echo/1")
	srv := serve(t, s, s)

	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "echo/1"))
	require.Equal(t, switch101, c.Head(), "written before the handler's Read blocks")
	roundTrip(t, c, "ping")

	// Bytes sent with the request: the handler's first Read returns them
	// without waiting, and the 101 still comes first.
	c = wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "echo/1") + "early")
	require.Equal(t, switch101, c.Head())
	require.Equal(t, "early", c.ReadN(5))
}

// TestSwitchWrittenWhenHandlerReturns: a handler that returns without a
// Write or Read has its 101 written, then the connection closed.
func TestSwitchWrittenWhenHandlerReturns(t *testing.T) {
	holdLate(t, time.Minute)
	s := new(Server)
	s.HandleFunc("greet/1", func(c *Conn) {})
	s.HandleFunc("panic/1", func(c *Conn) { panic("boom") })
	s.ErrorLog, _ = testLogger()
	srv := serve(t, s, s)
	for _, p := range []string{"greet/1", "panic/1"} {
		c := wiretest.Dial(t, srv.addr)
		c.Send(upgradeReq("GET", p))
		head := c.Head()
		require.True(t, strings.HasPrefix(head, "HTTP/1.1 101 "), "%s: %q", p, head)
		assert.Empty(t, c.Rest(), p)
	}
}

// TestSwitchWrittenBeforeConnCalls: Close, CloseWrite, the deadlines and
// NetConn write the 101 first; the handler then waits, so that it is not
// its return that wrote it.
func TestSwitchWrittenBeforeConnCalls(t *testing.T) {
	holdLate(t, time.Minute)
	for name, call := range map[string]func(c *Conn) error{
		"Close":            func(c *Conn) error { return c.Close() },
		"CloseWrite":       func(c *Conn) error { return c.CloseWrite() },
		"SetDeadline":      func(c *Conn) error { return c.SetDeadline(time.Now().Add(time.Minute)) },
		"SetReadDeadline":  func(c *Conn) error { return c.SetReadDeadline(time.Now().Add(time.Minute)) },
		"SetWriteDeadline": func(c *Conn) error { return c.SetWriteDeadline(time.Now().Add(time.Minute)) },
		"NetConn": func(c *Conn) error {
			_, err := c.NetConn().Write([]byte("raw"))
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			done := make(chan struct{})
			errs := make(chan error, 1)
			s := new(Server)
			s.HandleFunc("greet/1", func(c *Conn) {
				errs <- call(c)
				<-done
			})
			srv := serve(t, s, s)
			c := wiretest.Dial(t, srv.addr)
			c.Send(upgradeReq("GET", "greet/1"))
			require.Equal(t, greet101, c.Head())
			require.NoError(t, <-errs)
			if name == "NetConn" {
				require.Equal(t, "raw", c.ReadN(3), "after the 101")
			}
			close(done)
		})
	}
}

// TestSwitchWrittenLate: a handler that waits for something else before
// any I/O still has its 101 written, after lateSwitch.
func TestSwitchWrittenLate(t *testing.T) {
	holdLate(t, 10*time.Millisecond)
	push := make(chan string)
	s := new(Server)
	s.HandleFunc("greet/1", func(c *Conn) {
		for m := range push {
			if _, err := io.WriteString(c, m); err != nil {
				return
			}
		}
	})
	srv := serve(t, s, s)
	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "greet/1"))
	start := time.Now()
	require.Equal(t, greet101, c.Head())
	t.Logf("101 after %v", time.Since(start))
	push <- "news"
	require.Equal(t, "news", c.ReadN(4))
	close(push)
}

// TestHandshakeTimeoutBoundsHeld101: a 101 the client does not take (too
// large for the socket buffers, and the client does not read) fails the
// handler's first Write after HandshakeTimeout, closes the connection and
// is logged; the handler returns, and Shutdown does not wait for it.
func TestHandshakeTimeoutBoundsHeld101(t *testing.T) {
	holdLate(t, time.Minute)
	const bound = 200 * time.Millisecond
	lg, logs := testLogger()
	huge := strings.Repeat("h", 8<<20)
	s := &Server{HandshakeTimeout: bound, ErrorLog: lg}
	errs := make(chan error, 1)
	s.HandleRoute("greet/1", Route{Handler: accepterFunc{
		accept: func(r *http.Request, h http.Header) error { h.Set("X-Huge", huge); return nil },
		serve: func(c *Conn) {
			c.Request = nil // the failure is logged without it
			start := time.Now()
			_, err := c.Write([]byte("hello"))
			if time.Since(start) < bound {
				err = errors.New("returned before HandshakeTimeout")
			}
			errs <- err
		},
	}})
	srv := serve(t, s, s)
	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "greet/1"))
	select {
	case err := <-errs:
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Fatal("the 101 write was not bounded")
	}
	waitNoActive(t, s)
	assert.Contains(t, logs.String(), "writing the 101 response for greet/1")
	// The connection is closed: the client reads what the socket took,
	// then EOF (or a reset).
	_, err := io.Copy(io.Discard, c.NC)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET)
	}
}

// TestSwitchConcurrentFirstCalls: a handler that writes from several
// goroutines at once, and reads, has the 101 written once, before any of
// its bytes.
func TestSwitchConcurrentFirstCalls(t *testing.T) {
	holdLate(t, time.Minute)
	s := new(Server)
	s.HandleFunc("greet/1", func(c *Conn) {
		var wg sync.WaitGroup
		for _, m := range []string{"a", "b", "c"} {
			wg.Go(func() { _, _ = io.WriteString(c, m) })
		}
		wg.Go(func() { _, _ = c.Read(make([]byte, 1)) })
		wg.Wait()
	})
	srv := serve(t, s, s)
	for range 20 {
		c := wiretest.Dial(t, srv.addr)
		c.Send(upgradeReq("GET", "greet/1"))
		require.Equal(t, greet101, c.Head())
		got := []byte(c.ReadN(3))
		assert.ElementsMatch(t, []byte("abc"), got)
		c.Send("x")
		assert.Empty(t, c.Rest())
	}
}

// TestShutdownWithHeld101: Shutdown while a handler has not written its
// 101: the handler, returning on Draining, still has it written, and
// Shutdown returns once it has returned.
func TestShutdownWithHeld101(t *testing.T) {
	holdLate(t, time.Minute)
	started := make(chan struct{})
	s := new(Server)
	s.HandleFunc("greet/1", func(c *Conn) {
		close(started)
		<-c.Draining()
	})
	srv := serve(t, s, s)
	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "greet/1"))
	<-started
	nothingArrives(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	assert.Empty(t, s.ActiveConns())
	require.Equal(t, greet101, c.Head())
	assert.Empty(t, c.Rest())
}

// TestCloseInterruptsHeld101: Close from another goroutine does not wait
// for a 101 write that the client holds up: it interrupts it, as closing
// interrupts any write.
func TestCloseInterruptsHeld101(t *testing.T) {
	holdLate(t, time.Minute)
	huge := strings.Repeat("h", 8<<20)
	s := &Server{HandshakeTimeout: time.Minute}
	s.ErrorLog, _ = testLogger()
	conns := make(chan *Conn, 1)
	errs := make(chan error, 1)
	s.HandleRoute("greet/1", Route{Handler: accepterFunc{
		accept: func(r *http.Request, h http.Header) error { h.Set("X-Huge", huge); return nil },
		serve: func(c *Conn) {
			conns <- c
			_, err := c.Write([]byte("hello"))
			errs <- err
		},
	}})
	srv := serve(t, s, s)
	c := wiretest.Dial(t, srv.addr)
	c.Send(upgradeReq("GET", "greet/1"))
	conn := <-conns
	// The 101 has started going out, and is far too large to fit in the
	// socket buffers: its write is blocked.
	require.Equal(t, "HTTP/1.1 101 ", c.ReadN(len("HTTP/1.1 101 ")))
	closed := make(chan error, 1)
	go func() { closed <- conn.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the 101 write")
	}
	select {
	case err := <-errs:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("the interrupted write did not return")
	}
}
