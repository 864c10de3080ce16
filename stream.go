package upgrade

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A streamConn reads the stream's data into a small buffer of its own
// while little arrives, and into a larger one from streamBufPool while
// reads fill the small one: an idle stream holds only the small one.
const (
	streamReadSmall  = 512
	streamReadBuffer = 8 << 10
)

var streamBufPool = sync.Pool{New: func() any { b := make([]byte, streamReadBuffer); return &b }}

// streamConn is the net.Conn of a protocol switched to on an HTTP/2 stream
// by an extended CONNECT (RFC 8441), served by net/http's HTTP/2 server:
// Read returns the stream's DATA (the request body), Write sends DATA (the
// response body) and flushes it.
//
// net/http's stream deadlines cannot be renewed: once a read deadline set
// through http.ResponseController passes, the body is closed for good.
// So a goroutine reads the body, and Read waits for what it read under a
// deadline of its own, which SetReadDeadline can move as net.Conn requires.
type streamConn struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	body   io.ReadCloser
	ctx    context.Context // the request's: cancelled when the peer resets the stream
	local  net.Addr
	remote net.Addr

	// Read side: pump hands over what it read, one chunk at a time.
	chunks   chan chunk    // from pump to Read
	consumed chan struct{} // from Read to pump: the chunk's buffer is free
	rmu      sync.Mutex    // serializes Read; guards pending and rerr
	pending  []byte        // the unread part of the last chunk
	rerr     error         // the error that ended the body, once pending is empty
	rd       deadline

	// Write side.
	wmu         sync.Mutex   // serializes Write: a ResponseWriter is not safe for concurrent use
	writing     atomic.Int32 // Writes in progress, which Close must unblock
	writeClosed atomic.Bool

	closed    atomic.Bool
	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

// chunk is what one read of the body returned.
type chunk struct {
	b   []byte
	err error
}

// newStreamConn returns the Conn of the stream of r, whose body it takes
// over, and starts reading it.
func newStreamConn(w http.ResponseWriter, r *http.Request) *streamConn {
	c := &streamConn{
		w:        w,
		rc:       http.NewResponseController(w),
		body:     r.Body,
		ctx:      r.Context(),
		remote:   remoteAddr(r.RemoteAddr),
		chunks:   make(chan chunk),
		consumed: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	c.local, _ = r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if c.local == nil {
		c.local = remoteAddr("")
	}
	go c.pump()
	return c
}

// pump reads the body and hands each chunk to Read, waiting until Read has
// consumed it before reading into the buffer again. It ends at the body's
// end or error, or when c is closed.
func (c *streamConn) pump() {
	small := make([]byte, streamReadSmall)
	var big *[]byte // from streamBufPool while data keeps coming
	buf := small
	for {
		n, err := c.body.Read(buf)
		if n == 0 && err == nil {
			continue
		}
		select {
		case c.chunks <- chunk{buf[:n], err}:
		case <-c.done:
			return // Read may still hold buf: leave big to the collector
		}
		if err != nil {
			return
		}
		select {
		case <-c.consumed:
		case <-c.done:
			return
		}
		// buf is free again: pick the next one.
		switch {
		case big == nil && n == len(small):
			big = streamBufPool.Get().(*[]byte)
			buf = *big
		case big != nil && n < len(small):
			streamBufPool.Put(big)
			big, buf = nil, small
		}
	}
}

// Read reads the stream's data. io.EOF means the peer ended its side of the
// stream (END_STREAM).
func (c *streamConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.pending) == 0 && c.rerr == nil {
		if c.closed.Load() {
			return 0, c.opError("read", net.ErrClosed)
		}
		select {
		case ch := <-c.chunks:
			c.pending, c.rerr = ch.b, ch.err
			if c.rerr == nil && len(c.pending) == 0 {
				c.consumed <- struct{}{}
			}
		case <-c.rd.done():
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		case <-c.done:
			return 0, c.opError("read", net.ErrClosed)
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	if len(c.pending) == 0 && c.rerr == nil && n > 0 {
		c.consumed <- struct{}{}
	}
	if n > 0 || len(p) == 0 {
		return n, nil
	}
	if c.rerr == io.EOF {
		return 0, io.EOF
	}
	if c.closed.Load() {
		return 0, c.opError("read", net.ErrClosed)
	}
	if c.ctx.Err() != nil {
		// net/http cancels the request's context when the peer resets
		// the stream: report it as a TCP connection reports a reset.
		return 0, c.opError("read", fmt.Errorf("%w: %w", syscall.ECONNRESET, c.rerr))
	}
	return 0, c.opError("read", c.rerr)
}

// Write sends p as DATA on the stream and flushes it. A write deadline
// that passes resets the stream: net/http's HTTP/2 server cannot resume a
// stream after a write timeout.
func (c *streamConn) Write(p []byte) (int, error) {
	c.writing.Add(1)
	defer c.writing.Add(-1)
	if c.closed.Load() {
		return 0, c.opError("write", net.ErrClosed)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeClosed.Load() {
		return 0, c.opError("write", errWriteClosed)
	}
	n, err := c.w.Write(p)
	if err == nil {
		err = c.rc.Flush()
	}
	if err != nil {
		if c.closed.Load() {
			err = net.ErrClosed
		}
		return n, c.opError("write", err)
	}
	return n, nil
}

// CloseWrite ends the writing side: later Writes fail. net/http's HTTP/2
// server ends a stream (END_STREAM) only when its handler returns, so the
// peer learns of it when the protocol handler returns; if the peer has not
// ended its own side by then, a RST_STREAM with NO_ERROR follows, which
// RFC 9113 §8.1 allows.
func (c *streamConn) CloseWrite() error {
	c.writeClosed.Store(true)
	return nil
}

// Close stops reading and writing; the stream ends when the protocol
// handler returns. A Write blocked by flow control is interrupted, which
// resets the stream.
func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		close(c.done)
		_ = c.body.Close()
		if c.writing.Load() > 0 {
			// Only a write deadline interrupts a blocked Write.
			_ = c.rc.SetWriteDeadline(aLongTimeAgo)
		}
	})
	return nil
}

// reset ends the stream with RST_STREAM rather than END_STREAM, as a TCP
// reset ends a connection: a write deadline already passed makes net/http
// reset the stream (its only way to), and Close stops the Conn.
func (c *streamConn) reset() {
	_ = c.rc.SetWriteDeadline(aLongTimeAgo)
	c.Close()
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	return c.rc.SetWriteDeadline(t)
}

func (c *streamConn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline of the stream. Unlike a TCP
// connection's, it cannot be renewed once it has passed: the stream is
// reset.
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.rc.SetWriteDeadline(t) }

func (c *streamConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "http2", Source: c.local, Addr: c.remote, Err: err}
}

// remoteAddr turns an http.Request's RemoteAddr into a net.Addr.
func remoteAddr(s string) net.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return stringAddr(s)
}

// stringAddr is a net.Addr known only by its string form.
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }
