// Package h2stream is the server side of a stream switched by an HTTP/2
// extended CONNECT (RFC 8441) served by net/http: the 200 that switches it
// (Accept) and the stream as a net.Conn (Conn). The upgrade.Server and the
// reverse proxy share it.
package h2stream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/go-upgrade/upgrade/internal/deadline"
)

// Conn is the net.Conn of a protocol switched to on an HTTP/2 stream by
// an extended CONNECT (RFC 8441), served by net/http's HTTP/2 server:
// Read returns the stream's DATA (the request body), Write sends DATA (the
// response body) and flushes it.
//
// The ResponseWriter, its controller and the request body belong to the
// handler's ServeHTTP call: once it has returned, net/http reuses them.
// Every method that uses them does so between enter and leave, which fail
// once Close has begun, and Close waits until no call uses them: the
// Server closes the Conn before ServeHTTP returns, so nothing touches
// them after, whatever goroutines the protocol left behind.
//
// net/http cannot renew a stream's read deadline once it has passed, so a
// Read under a deadline reads in a goroutine of its own and waits for it
// under a deadline kept here; what that goroutine reads after the Read
// gave up is returned by the next Read. A Read without a deadline reads
// the body directly, and an idle stream holds no goroutine or buffer of
// its own; the channels only a Read under a deadline or a waiting Close
// need are made when first needed.
type Conn struct {
	w    http.ResponseWriter
	body io.ReadCloser
	r    *http.Request // the request: its context ends when the peer resets the stream

	mu      sync.Mutex
	busy    int32         // calls using w or body now
	writers int32         // Writes among them, which Close interrupts
	closed  bool          // Close has begun: w and body are no longer used
	direct  bool          // a Read without a deadline is blocked in body.Read
	rcRead  bool          // net/http's own read deadline is set (see SetReadDeadline)
	rdSet   bool          // a read deadline is set
	wclosed bool          // CloseWrite was called
	idle    chan struct{} // closed when busy drops to zero while closed; made by a Close that waits
	wdone   chan struct{} // closed when writers drops to zero while closed; made by writesDone
	done    chan struct{} // closed by Close; made with the first read-ahead, which waits on it

	rmu   sync.Mutex        // serializes Read; guards ahead
	ahead *readAhead        // a Read under a deadline in progress, or its unread result
	rd    deadline.Deadline // the read deadline Reads wait under
	wmu   sync.Mutex        // serializes Write: a ResponseWriter is not safe for concurrent use
}

// readAhead is a read of the body done in a goroutine for a Read under a
// deadline: its result, once done is closed.
type readAhead struct {
	done chan struct{}
	buf  []byte
	off  int // what the Reads took of buf so far
	err  error
}

// errWriteClosed is the error of a Write after CloseWrite.
var errWriteClosed = errors.New("write after CloseWrite")

// maxReadAhead bounds the buffer of a Read under a deadline.
const maxReadAhead = 16 << 10

// newConn returns the Conn of the stream of r, whose body it takes over.
func newConn(w http.ResponseWriter, r *http.Request) *Conn {
	return &Conn{
		w:    w,
		body: r.Body,
		r:    r,
	}
}

// rc returns the stream's ResponseController. Made where used, it costs
// no allocation; kept in the Conn, it would cost 16 bytes a stream.
func (c *Conn) rc() *http.ResponseController { return http.NewResponseController(c.w) }

// enter marks a call that uses w or body; false once Close has begun.
// The caller holds c.mu.
func (c *Conn) enterLocked() bool {
	if c.closed {
		return false
	}
	c.busy++
	return true
}

// leave ends a call enter allowed.
func (c *Conn) leave() {
	c.mu.Lock()
	c.leaveLocked()
	c.mu.Unlock()
}

func (c *Conn) leaveLocked() {
	c.busy--
	if c.busy == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// Read reads the stream's data. io.EOF means the peer ended its side of the
// stream (END_STREAM).
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if a := c.ahead; a != nil {
			select {
			case <-a.done:
			case <-c.rd.Done():
				return 0, c.opError("read", os.ErrDeadlineExceeded)
			case <-c.done:
				return 0, c.opError("read", net.ErrClosed)
			}
			n := copy(p, a.buf[a.off:])
			a.off += n
			if a.off < len(a.buf) {
				return n, nil
			}
			c.ahead = nil
			if n > 0 || len(p) == 0 {
				return n, nil // an error comes again with the next Read
			}
			if a.err != nil {
				return 0, c.readError(a.err)
			}
			continue // an empty read
		}
		if c.rd.Passed() {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		c.mu.Lock()
		if !c.enterLocked() {
			c.mu.Unlock()
			return 0, c.opError("read", net.ErrClosed)
		}
		if c.rdSet {
			if c.done == nil {
				c.done = make(chan struct{})
			}
			c.mu.Unlock()
			c.startReadAhead(len(p))
			continue
		}
		c.direct = true
		c.mu.Unlock()
		n, err := c.body.Read(p)
		c.mu.Lock()
		c.direct = false
		if c.rcRead && !c.closed {
			// A deadline was set during the Read: it no longer applies
			// to net/http's body, only to later Reads, here.
			c.rcRead = false
			_ = c.rc().SetReadDeadline(time.Time{})
		}
		c.leaveLocked()
		c.mu.Unlock()
		if err != nil && n == 0 {
			return 0, c.readError(err)
		}
		return n, nil
	}
}

// startReadAhead reads up to n bytes of the body in a goroutine that holds
// the call enter allowed until the body returns.
func (c *Conn) startReadAhead(n int) {
	a := &readAhead{done: make(chan struct{}), buf: make([]byte, min(max(n, 1), maxReadAhead))}
	c.ahead = a
	go func() {
		defer c.leave()
		m, err := c.body.Read(a.buf)
		a.buf, a.err = a.buf[:m], err
		close(a.done)
	}()
}

// readError turns an error of the body into the Read's.
func (c *Conn) readError(err error) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	switch {
	case err == io.EOF:
		return io.EOF
	case closed:
		return c.opError("read", net.ErrClosed)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return c.opError("read", os.ErrDeadlineExceeded)
	case c.r.Context().Err() != nil:
		// net/http cancels the request's context when the peer resets
		// the stream: report it as a TCP connection reports a reset.
		return c.opError("read", fmt.Errorf("%w: %w", syscall.ECONNRESET, err))
	}
	return c.opError("read", err)
}

// Write sends p as DATA on the stream and flushes it. A write deadline
// that passes resets the stream: net/http's HTTP/2 server cannot resume a
// stream after a write timeout.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if !c.enterLocked() {
		c.mu.Unlock()
		return 0, c.opError("write", net.ErrClosed)
	}
	c.writers++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.writers--
		if c.writers == 0 && c.wdone != nil {
			close(c.wdone)
			c.wdone = nil
		}
		c.leaveLocked()
		c.mu.Unlock()
	}()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	wclosed := c.wclosed
	c.mu.Unlock()
	if wclosed {
		return 0, c.opError("write", errWriteClosed)
	}
	n, err := c.w.Write(p)
	if err == nil {
		err = c.rc().Flush()
	}
	if err != nil {
		c.mu.Lock()
		if c.closed {
			err = net.ErrClosed
		}
		c.mu.Unlock()
		return n, c.opError("write", err)
	}
	return n, nil
}

// CloseWrite ends the writing side: later Writes fail. net/http's HTTP/2
// server ends a stream (END_STREAM) only when its handler returns, so the
// peer learns of it when the protocol handler returns; if the peer has not
// ended its own side by then, a RST_STREAM with NO_ERROR follows, which
// RFC 9113 §8.1 allows.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("close", net.ErrClosed)
	}
	// Not behind a Write in progress, which flow control may hold up: it
	// finishes, and later Writes fail.
	c.wclosed = true
	return nil
}

// Close stops reading and writing; the stream ends when the protocol
// handler returns. Writes in progress get closeWriteGrace to finish; one
// still blocked then (by flow control) is interrupted, which resets the
// stream. Close returns once no call uses the stream any more: from then
// on, every method fails with net.ErrClosed.
func (c *Conn) Close() error {
	return c.close(false)
}

// Reset ends the stream with RST_STREAM rather than END_STREAM, as a TCP
// reset ends a connection: a write deadline already passed makes net/http
// reset the stream (its only way to), and the Conn is closed.
func (c *Conn) Reset() {
	_ = c.close(true)
}

func (c *Conn) close(reset bool) error {
	c.mu.Lock()
	first := !c.closed
	if first {
		c.busy++ // this call uses body and w below
		c.closed = true
	}
	done := c.done // no read-ahead starts from now on
	c.mu.Unlock()
	if first {
		if done != nil {
			close(done)
		}
		_ = c.body.Close() // a Read blocked in the body returns
		if reset || !c.writesDone(closeWriteGrace) {
			// Only a write deadline interrupts a blocked Write; it
			// resets the stream.
			_ = c.rc().SetWriteDeadline(aLongTimeAgo)
		}
	}
	c.mu.Lock()
	if first {
		c.leaveLocked() // wakes a Close waiting in another goroutine
	}
	var idle chan struct{}
	if c.busy > 0 {
		if c.idle == nil {
			c.idle = make(chan struct{})
		}
		idle = c.idle
	}
	c.mu.Unlock()
	if idle != nil {
		<-idle
	}
	if !first {
		return c.opError("close", net.ErrClosed)
	}
	return nil
}

// closeWriteGrace is how long Close lets Writes in progress finish before
// it interrupts them: long enough for one that is not blocked by flow
// control.
const closeWriteGrace = 100 * time.Millisecond

// writesDone waits, up to d, until no Write is in progress, and reports
// whether none is. It is called once the Conn is closed: no Write starts.
func (c *Conn) writesDone(d time.Duration) bool {
	c.mu.Lock()
	if c.writers == 0 {
		c.mu.Unlock()
		return true
	}
	if c.wdone == nil {
		c.wdone = make(chan struct{})
	}
	wdone := c.wdone
	c.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wdone:
		return true
	case <-t.C:
		return false
	}
}

// LocalAddr returns the address of the connection the stream is on.
func (c *Conn) LocalAddr() net.Addr { return LocalAddr(c.r) }

// LocalAddr returns the local address of the connection r came on, as
// net/http's server records it, or an empty Addr.
func LocalAddr(r *http.Request) net.Addr {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a
	}
	return Addr("")
}

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return Addr(c.r.RemoteAddr) }

// SetDeadline sets the read and write deadlines, as SetReadDeadline and
// SetWriteDeadline do.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline of the stream, which can be
// renewed after it has passed, as a TCP connection's can. There is one
// exception: a deadline that passes while a Read that started without one
// is blocked ends the reading side for good, since only net/http's own
// read deadline can interrupt that Read.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set", net.ErrClosed)
	}
	c.rd.Set(t)
	c.rdSet = !t.IsZero()
	if c.direct || c.rcRead {
		// w is in use by the blocked Read: the handler has not returned.
		c.rcRead = c.rdSet
		return c.rc().SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline sets the write deadline of the stream. Unlike a TCP
// connection's, it cannot be renewed once it has passed: the stream is
// reset.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	if !c.enterLocked() {
		c.mu.Unlock()
		return c.opError("set", net.ErrClosed)
	}
	c.mu.Unlock()
	defer c.leave()
	return c.rc().SetWriteDeadline(t)
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "http2", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Addr returns an address in the form of an http.Request's RemoteAddr as
// a net.Addr: a *net.TCPAddr for an IP address and port, otherwise one
// known only by its string form (whose network is "tcp").
func Addr(s string) net.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return stringAddr(s)
}

// stringAddr is a net.Addr known only by its string form.
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }
