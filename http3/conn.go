package http3

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	qhttp3 "github.com/quic-go/quic-go/http3"
)

// quicStream is what a streamConn uses of quic-go's streams: the server's
// *http3.Stream and the client's *http3.RequestStream. Read and Write
// carry DATA frames, Close sends FIN.
type quicStream interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
	CancelRead(code quic.StreamErrorCode)
	CancelWrite(code quic.StreamErrorCode)
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// HTTP/3 error codes (RFC 9114 §8.1) a streamConn ends streams with.
const (
	codeNoError      = quic.StreamErrorCode(qhttp3.ErrCodeNoError)
	codeCancelled    = quic.StreamErrorCode(qhttp3.ErrCodeRequestCanceled)
	codeConnectError = quic.StreamErrorCode(qhttp3.ErrCodeConnectError)
)

// errWriteClosed is the error of a Write after CloseWrite.
var errWriteClosed = errors.New("write after CloseWrite")

// streamConn is the net.Conn of a request stream switched by an extended
// CONNECT (RFC 9220), on the server or the client: Read returns the
// peer's DATA and io.EOF at its FIN, Write sends DATA, CloseWrite sends
// FIN, and deadlines, which can be renewed, apply to the stream alone.
//
// Close ends the stream as closing a TCP connection does: what was
// written is delivered, then FIN, and a receiving side the peer has not
// ended is stopped (STOP_SENDING with H3_NO_ERROR, so that the peer's
// writes fail). Only a Write still blocked 100 ms after Close begins is
// interrupted, by resetting the sending side (RESET_STREAM with H3_REQUEST_CANCELLED): a
// QUIC reset discards what was not yet acknowledged, so it is never the
// way a stream ends with data in flight, unless Reset asks for it.
//
// Every method but Close uses the stream between enter and leave, which
// fail once Close has begun; Close waits until no call uses it, and from
// then on every method fails with net.ErrClosed, whatever goroutines a
// protocol handler left behind.
type streamConn struct {
	s       quicStream
	local   net.Addr
	remote  net.Addr
	release func() // called once by Close; nil for none

	mu      sync.Mutex
	idle    sync.Cond // signalled when busy drops while closed
	closed  bool      // Close has begun
	busy    int       // calls using s now
	writers int       // Writes among them
	readEOF bool      // Read returned io.EOF: the peer ended its side
	sentFIN bool      // CloseWrite sent FIN

	rmu sync.Mutex // serializes Read
	wmu sync.Mutex // serializes Write and CloseWrite
}

func newStreamConn(s quicStream, local, remote net.Addr, release func()) *streamConn {
	c := &streamConn{s: s, local: local, remote: remote, release: release}
	c.idle.L = &c.mu
	return c
}

// enter marks a call that uses the stream; false once Close has begun.
func (c *streamConn) enter(write bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.busy++
	if write {
		c.writers++
	}
	return true
}

// leave ends a call enter allowed.
func (c *streamConn) leave(write bool) {
	c.mu.Lock()
	c.busy--
	if write {
		c.writers--
	}
	if c.closed {
		c.idle.Broadcast()
	}
	c.mu.Unlock()
}

// Read reads the peer's data; io.EOF means the peer ended its side (FIN).
func (c *streamConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if !c.enter(false) {
		return 0, c.opError("read", net.ErrClosed)
	}
	n, err := c.s.Read(p)
	if err == io.EOF {
		c.mu.Lock()
		c.readEOF = true
		c.mu.Unlock()
	}
	c.leave(false)
	if err != nil && err != io.EOF {
		err = c.opError("read", c.streamError(err))
	}
	return n, err
}

// Write sends p as DATA.
func (c *streamConn) Write(p []byte) (int, error) {
	if !c.enter(true) {
		return 0, c.opError("write", net.ErrClosed)
	}
	defer c.leave(true)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	sent := c.sentFIN
	c.mu.Unlock()
	if sent {
		return 0, c.opError("write", errWriteClosed)
	}
	n, err := c.s.Write(p)
	if err != nil {
		return n, c.opError("write", c.streamError(err))
	}
	return n, nil
}

// CloseWrite ends the sending side: FIN follows what was written, and
// later Writes fail.
func (c *streamConn) CloseWrite() error {
	if !c.enter(false) {
		return c.opError("close", net.ErrClosed)
	}
	defer c.leave(false)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	sent := c.sentFIN
	c.sentFIN = true
	c.mu.Unlock()
	if sent {
		return nil
	}
	if err := c.s.Close(); err != nil {
		return c.opError("close", c.streamError(err))
	}
	return nil
}

// Close ends the stream (see streamConn) and returns once no call uses it.
func (c *streamConn) Close() error {
	return c.close(false)
}

// closeWriteGrace is how long Close lets a Write in progress finish before
// it interrupts it.
const closeWriteGrace = 100 * time.Millisecond

// writesDone waits, up to d, until no Write is in progress, and reports
// whether none is. It is called once the conn is closed: no Write starts.
func (c *streamConn) writesDone(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writers == 0 {
		return true
	}
	expired := false
	t := time.AfterFunc(d, func() {
		c.mu.Lock()
		expired = true
		c.idle.Broadcast()
		c.mu.Unlock()
	})
	defer t.Stop()
	for c.writers > 0 && !expired {
		c.idle.Wait()
	}
	return c.writers == 0
}

// Reset ends the stream as a TCP reset ends a connection: both of its
// sides the peer has not ended are reset (RESET_STREAM, STOP_SENDING)
// with H3_CONNECT_ERROR, the code of RFC 9114 §8.1 for a proxied
// connection that was reset, what was not yet delivered is discarded, and
// the conn is closed. A reverse proxy passes on a backend's reset so.
func (c *streamConn) Reset() {
	_ = c.close(true)
}

func (c *streamConn) close(reset bool) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("close", net.ErrClosed)
	}
	c.closed = true
	c.mu.Unlock()
	// A Write in progress gets closeWriteGrace to finish, as one not
	// held up by flow control does at once; one still going then is
	// blocked, and interrupted.
	blocked := !reset && !c.writesDone(closeWriteGrace)
	c.mu.Lock()
	readEOF, sentFIN := c.readEOF, c.sentFIN
	c.mu.Unlock()

	// The calls in flight return once their side is cancelled; a Write
	// never runs concurrently with the FIN.
	switch {
	case reset:
		c.s.CancelWrite(codeConnectError)
	case blocked:
		c.s.CancelWrite(codeCancelled)
	case !sentFIN:
		c.wmu.Lock()
		_ = c.s.Close()
		c.wmu.Unlock()
	}
	switch {
	case reset && !readEOF:
		c.s.CancelRead(codeConnectError)
	case !readEOF:
		c.s.CancelRead(codeNoError)
	}
	c.mu.Lock()
	for c.busy > 0 {
		c.idle.Wait()
	}
	c.mu.Unlock()
	if c.release != nil {
		c.release()
	}
	return nil
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *streamConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline of the stream; it can be renewed
// after it has passed.
func (c *streamConn) SetReadDeadline(t time.Time) error {
	if !c.enter(false) {
		return c.opError("set", net.ErrClosed)
	}
	defer c.leave(false)
	return c.s.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline of the stream; it can be
// renewed after it has passed.
func (c *streamConn) SetWriteDeadline(t time.Time) error {
	if !c.enter(false) {
		return c.opError("set", net.ErrClosed)
	}
	defer c.leave(false)
	return c.s.SetWriteDeadline(t)
}

// streamError names an error of the stream as a net.Conn's would be: a
// call interrupted by Close fails with net.ErrClosed, a deadline with
// os.ErrDeadlineExceeded, and a stream the peer reset with an error
// wrapping syscall.ECONNRESET, as a TCP reset. So does a connection the
// peer closed, or reset statelessly, and one that timed out for want of
// packets wraps syscall.ETIMEDOUT; quic-go's errors for these say
// net.ErrClosed, which a net.Conn means for a conn closed on its own
// side, so they are kept as text only.
func (c *streamConn) streamError(err error) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	var (
		se   *quic.StreamError
		ae   *quic.ApplicationError
		te   *quic.TransportError
		sr   *quic.StatelessResetError
		idle *quic.IdleTimeoutError
	)
	switch {
	case closed:
		return net.ErrClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return os.ErrDeadlineExceeded
	case errors.As(err, &se) && se.Remote:
		return fmt.Errorf("%w: %w", syscall.ECONNRESET, err)
	case errors.As(err, &ae) && ae.Remote, errors.As(err, &te) && te.Remote, errors.As(err, &sr):
		return fmt.Errorf("%w: QUIC connection closed by the peer: %v", syscall.ECONNRESET, err)
	case errors.As(err, &idle):
		return fmt.Errorf("%w: %v", syscall.ETIMEDOUT, err)
	}
	return err
}

func (c *streamConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "http3", Source: c.local, Addr: c.remote, Err: err}
}
