package upgrade

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-upgrade/upgrade/internal/wiretest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// The Conn of an HTTP/2 stream must never touch net/http's ResponseWriter
// once the handler's ServeHTTP has returned: net/http reuses it, and a late
// Write or deadline panics inside net/http (or races with its next user).
// These tests leave goroutines behind the handler that keep using the
// Conn, and check that every call fails with net.ErrClosed instead.

// waitErr waits up to 5 s for an error from ch.
func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no result within 5s", what)
		return nil
	}
}

// TestH2ConnKeepaliveAfterHandlerReturns: a handler starts a keepalive
// goroutine (SetWriteDeadline and Write every 10 ms) and returns when the
// client ends the stream. The goroutine's next call fails with
// net.ErrClosed, and the server goes on serving.
func TestH2ConnKeepaliveAfterHandlerReturns(t *testing.T) {
	s := &Server{}
	late := make(chan error, 1)
	s.HandleFunc("keep/1", func(c *Conn) {
		go func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for range tick.C {
				if err := c.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
					late <- err
					return
				}
				if _, err := c.Write([]byte("k")); err != nil {
					late <- err
					return
				}
			}
		}()
		_, _ = io.Copy(io.Discard, c)
	})
	s.HandleFunc("echo/1", echo)
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := c.Connect("http", "example.com", "/", "keep/1")
	require.Equal(t, "200", st.Status())
	assert.Equal(t, "kk", string(st.Read(2)))
	st.CloseWrite()
	_, ended, _ := st.End()
	assert.True(t, ended, "END_STREAM when the handler returns")

	err := waitErr(t, late, "the keepalive goroutine")
	assert.ErrorIs(t, err, net.ErrClosed)
	waitNoActive(t, s)

	st2 := c.Connect("http", "example.com", "/", "echo/1")
	require.Equal(t, "200", st2.Status())
	st2.Write([]byte("still here"))
	assert.Equal(t, "still here", string(st2.Read(10)))
}

// TestH2ConnWritersBlockedByZeroWindow: two goroutines write while the
// client holds the flow-control window at zero; the handler returns when
// the client ends its side. Both writers fail, none after the handler
// returned reaches net/http.
func TestH2ConnWritersBlockedByZeroWindow(t *testing.T) {
	s := &Server{}
	results := make(chan error, 2)
	s.HandleFunc("flood/1", func(c *Conn) {
		for range 2 {
			go func() {
				chunk := make([]byte, 16<<10)
				for {
					if _, err := c.Write(chunk); err != nil {
						results <- err
						return
					}
				}
			}()
		}
		_, _ = io.Copy(io.Discard, c)
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	c.HoldCredit(true)
	st := c.Connect("http", "example.com", "/", "flood/1")
	require.Equal(t, "200", st.Status())
	st.Read(65535) // the whole initial window: the writers block now
	time.Sleep(50 * time.Millisecond)
	st.CloseWrite()

	for i := range 2 {
		err := waitErr(t, results, "writer")
		assert.Error(t, err, "writer %d", i)
	}
	waitNoActive(t, s)
	c.HoldCredit(false)
}

// TestH2ConnCloseWaitsForWrites: Close interrupts a Write blocked by flow
// control and returns only once that Write has returned; later calls fail
// with net.ErrClosed.
func TestH2ConnCloseWaitsForWrites(t *testing.T) {
	s := &Server{}
	type outcome struct {
		writeDone bool // the blocked Write had returned when Close did
		writeErr  error
		after     []error // Write, Read, deadlines, CloseWrite after Close
	}
	got := make(chan outcome, 1)
	s.HandleFunc("flood/1", func(c *Conn) {
		var o outcome
		var mu sync.Mutex
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			chunk := make([]byte, 16<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					mu.Lock()
					o.writeErr = err
					mu.Unlock()
					return
				}
			}
		}()
		buf := make([]byte, 1)
		_, _ = c.Read(buf) // the client's go-ahead: the window is empty
		require.NoError(t, c.Close())
		select {
		case <-wrote:
			o.writeDone = true
		default:
		}
		<-wrote
		_, err := c.Write([]byte("x"))
		o.after = append(o.after, err)
		_, err = c.Read(buf)
		o.after = append(o.after, err)
		o.after = append(o.after, c.SetDeadline(time.Now().Add(time.Second)))
		o.after = append(o.after, c.SetReadDeadline(time.Now().Add(time.Second)))
		o.after = append(o.after, c.SetWriteDeadline(time.Now().Add(time.Second)))
		o.after = append(o.after, c.CloseWrite())
		mu.Lock()
		got <- o
		mu.Unlock()
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	c.HoldCredit(true)
	st := c.Connect("http", "example.com", "/", "flood/1")
	require.Equal(t, "200", st.Status())
	st.Read(65535)
	time.Sleep(20 * time.Millisecond)
	st.Write([]byte("g"))

	var o outcome
	select {
	case o = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not finish")
	}
	assert.True(t, o.writeDone, "Close returned before the blocked Write did")
	assert.Error(t, o.writeErr)
	require.Len(t, o.after, 6)
	for i, err := range o.after {
		assert.ErrorIs(t, err, net.ErrClosed, "call %d after Close", i)
	}
	waitNoActive(t, s)
	c.HoldCredit(false)
}

// TestH2ConnDeadlinesFromAnotherGoroutine: a goroutine keeps moving the
// deadlines while the handler returns; its next call fails with
// net.ErrClosed.
func TestH2ConnDeadlinesFromAnotherGoroutine(t *testing.T) {
	s := &Server{}
	late := make(chan error, 1)
	started := make(chan struct{})
	s.HandleFunc("echo/1", func(c *Conn) {
		go func() {
			close(started)
			for i := 0; ; i++ {
				d := time.Now().Add(time.Hour)
				var err error
				switch i % 3 {
				case 0:
					err = c.SetDeadline(d)
				case 1:
					err = c.SetReadDeadline(d)
				case 2:
					err = c.SetWriteDeadline(d)
				}
				if err != nil {
					late <- err
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		echo(c)
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := c.Connect("http", "example.com", "/", "echo/1")
	require.Equal(t, "200", st.Status())
	<-started
	st.Write([]byte("ping"))
	assert.Equal(t, "ping", string(st.Read(4)))
	st.CloseWrite()
	_, ended, _ := st.End()
	assert.True(t, ended)
	assert.ErrorIs(t, waitErr(t, late, "the deadline goroutine"), net.ErrClosed)
	waitNoActive(t, s)
}

// TestH2ConnClientResetMidWrite: a Write blocked by flow control fails
// when the client resets the stream, and the handler's connection slot is
// released.
func TestH2ConnClientResetMidWrite(t *testing.T) {
	s := &Server{}
	result := make(chan error, 1)
	s.HandleFunc("flood/1", func(c *Conn) {
		chunk := make([]byte, 16<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				result <- err
				return
			}
		}
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	c.HoldCredit(true)
	st := c.Connect("http", "example.com", "/", "flood/1")
	require.Equal(t, "200", st.Status())
	st.Read(65535)
	time.Sleep(20 * time.Millisecond)
	st.Reset(http2.ErrCodeCancel)
	err := waitErr(t, result, "the blocked Write")
	require.Error(t, err)
	var ne *net.OpError
	assert.True(t, errors.As(err, &ne), "a *net.OpError: %v", err)
	waitNoActive(t, s)
	c.HoldCredit(false)
}

// TestH2ConnReadDeadlineDuringRead: a read deadline set from another
// goroutine while a Read without one is blocked interrupts it.
func TestH2ConnReadDeadlineDuringRead(t *testing.T) {
	s := &Server{}
	result := make(chan error, 1)
	s.HandleFunc("wait/1", func(c *Conn) {
		go func() {
			time.Sleep(30 * time.Millisecond)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		}()
		_, err := c.Read(make([]byte, 1))
		result <- err
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	st := c.Connect("http", "example.com", "/", "wait/1")
	require.Equal(t, "200", st.Status())
	err := waitErr(t, result, "the blocked Read")
	var ne net.Error
	require.True(t, errors.As(err, &ne), "a net.Error: %v", err)
	assert.True(t, ne.Timeout())
	_, _, _ = st.End()
	waitNoActive(t, s)
}

// TestH2ShutdownExpiryWithBlockedStreams: when Shutdown's grace ends,
// streams whose Writes a client holds up with a zero window are closed
// together: Shutdown returns soon after, however many there are.
func TestH2ShutdownExpiryWithBlockedStreams(t *testing.T) {
	s := &Server{}
	s.HandleFunc("flood/1", func(c *Conn) {
		chunk := make([]byte, 16<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	c.HoldCredit(true)
	const n = 30
	for range n {
		require.Equal(t, "200", c.Connect("http", "example.com", "/", "flood/1").Status())
	}
	require.Eventually(t, func() bool { return s.ActiveConns()["flood/1"] == n }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // the windows are empty: the Writes are blocked
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	assert.ErrorIs(t, s.Shutdown(ctx), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second, "the streams' closes add up")
	waitNoActive(t, s)
	c.HoldCredit(false)
}

// TestH2ConnCloseWriteDoesNotWaitForWrite: CloseWrite returns at once
// while another goroutine's Write is held up by flow control, as a TCP
// half-close does.
func TestH2ConnCloseWriteDoesNotWaitForWrite(t *testing.T) {
	s := &Server{}
	took := make(chan time.Duration, 1)
	s.HandleFunc("flood/1", func(c *Conn) {
		go func() {
			chunk := make([]byte, 16<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
		_, _ = c.Read(make([]byte, 1)) // the client's go-ahead: the window is empty
		start := time.Now()
		_ = c.CloseWrite()
		took <- time.Since(start)
	})
	addr := serveH2(t, s, s, false)
	c := dialH2(t, addr, false)
	c.HoldCredit(true)
	st := c.Connect("http", "example.com", "/", "flood/1")
	require.Equal(t, "200", st.Status())
	st.Read(65535)
	time.Sleep(20 * time.Millisecond)
	st.Write([]byte("g"))
	select {
	case d := <-took:
		assert.Less(t, d, time.Second)
	case <-time.After(5 * time.Second):
		t.Fatal("CloseWrite waited for the blocked Write")
	}
	waitNoActive(t, s)
	c.HoldCredit(false)
}

// TestAbortHandlerResets: a handler that panics with http.ErrAbortHandler
// has its connection reset, not closed gracefully, as net/http aborts a
// response: RST_STREAM on an HTTP/2 stream, RST on a TCP connection.
func TestAbortHandlerResets(t *testing.T) {
	lg, logs := testLogger()
	s := &Server{ErrorLog: lg}
	s.HandleFunc("abort/1", func(c *Conn) {
		_, _ = c.Read(make([]byte, 1))
		panic(http.ErrAbortHandler)
	})
	addr := serveH2(t, s, s, false)

	c := dialH2(t, addr, false)
	st := c.Connect("http", "example.com", "/", "abort/1")
	require.Equal(t, "200", st.Status())
	st.Write([]byte("x"))
	_, _, reset := st.End()
	require.NotNil(t, reset, "the stream is reset")

	wc := wiretest.Dial(t, addr)
	wc.Send(upgradeReq("GET", "abort/1") + "x")
	wc.Head()
	_, err := io.ReadAll(wc.BR)
	assert.ErrorIs(t, err, syscall.ECONNRESET)
	waitNoActive(t, s)
	assert.NotContains(t, logs.String(), "panic serving protocol")
}
