// Package wsframe implements the data framing of the WebSocket protocol as
// described in RFC 6455, section 5, together with the closing handshake of
// section 7.
//
// The package does not perform the opening handshake. It operates on a
// connection that has already been upgraded: the caller hands over an
// io.ReadWriter positioned at the first frame (for example a net.Conn, or a
// bufio.ReadWriter that still holds bytes read ahead during the handshake).
//
// Extensions are not supported, so frames with any RSV bit set are rejected.
package wsframe

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// An Opcode identifies the type of a WebSocket frame (RFC 6455, section 5.2).
type Opcode byte

// Frame opcodes defined by RFC 6455, section 5.2.
const (
	OpContinuation Opcode = 0x0 // continuation of a fragmented message
	OpText         Opcode = 0x1 // UTF-8 text data
	OpBinary       Opcode = 0x2 // binary data
	OpClose        Opcode = 0x8 // connection close
	OpPing         Opcode = 0x9 // ping
	OpPong         Opcode = 0xA // pong
)

// String returns a lower-case name for the opcode, such as "text".
func (op Opcode) String() string {
	switch op {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return "opcode(" + strconv.Itoa(int(op)) + ")"
}

// isControl reports whether op is a control opcode (RFC 6455, section 5.5).
func (op Opcode) isControl() bool { return op&0x8 != 0 }

// Close status codes (RFC 6455, section 7.4.1) used by this package.
const (
	CloseNormalClosure    = 1000 // normal closure
	CloseGoingAway        = 1001 // endpoint is going away
	CloseProtocolError    = 1002 // protocol error
	CloseUnsupportedData  = 1003 // data type cannot be accepted
	CloseNoStatusReceived = 1005 // close frame carried no status code; never sent
	CloseAbnormalClosure  = 1006 // connection dropped without a close frame; never sent
	CloseInvalidPayload   = 1007 // message data inconsistent with its type (bad UTF-8)
	ClosePolicyViolation  = 1008 // policy violation
	CloseMessageTooBig    = 1009 // message too big to process
	CloseInternalError    = 1011 // unexpected condition on the server
)

// DefaultMaxMessage is the message size limit used when Conn.MaxMessage is zero.
const DefaultMaxMessage = 16 << 20

const (
	maxControlPayload = 125 // RFC 6455, section 5.5
	maxCloseReason    = maxControlPayload - 2
	maxRetainedBuffer = 64 << 10        // larger read/write buffers are not kept for reuse
	readChunk         = 32 << 10        // payloads are read in chunks of at most this size
	closeTimeout      = 5 * time.Second // bound on the closing handshake, see Conn.Close
)

// ErrCloseSent is returned by the write methods of Conn after a close frame
// has been sent on the connection.
var ErrCloseSent = errors.New("wsframe: close frame already sent")

// errCloseTimeout is returned by Close when a concurrent reader did not
// observe the end of the connection in time.
var errCloseTimeout = errors.New("wsframe: timeout waiting for the closing handshake")

// A CloseError is returned by Conn.ReadMessage when the peer sent a close
// frame. Code is the status code from the frame, or CloseNoStatusReceived if
// the frame had no payload; Reason is the (valid UTF-8) close reason.
//
// By the time a CloseError is returned, the Conn has already answered the
// peer's close frame, so the closing handshake is complete.
type CloseError struct {
	Code   int
	Reason string
}

// Error implements the error interface.
func (e *CloseError) Error() string {
	if e.Reason == "" {
		return "wsframe: peer closed connection with status " + strconv.Itoa(e.Code)
	}
	return fmt.Sprintf("wsframe: peer closed connection with status %d: %s", e.Code, e.Reason)
}

// A ProtocolError is returned by Conn.ReadMessage when the peer violated the
// protocol or sent data this Conn refuses to accept. Code is the close status
// code (for example CloseProtocolError, CloseInvalidPayload or
// CloseMessageTooBig) that the Conn sent to the peer in a close frame before
// returning the error. After a ProtocolError the connection should be closed.
type ProtocolError struct {
	Code int
	Msg  string
}

// Error implements the error interface.
func (e *ProtocolError) Error() string {
	return fmt.Sprintf("wsframe: protocol error (status %d): %s", e.Code, e.Msg)
}

// A Conn is one endpoint of a WebSocket connection whose opening handshake
// has already completed.
//
// A Conn is safe for concurrent use by one reading goroutine (calling
// ReadMessage) and any number of writing goroutines (calling WriteMessage,
// WritePing and Close); concurrent ReadMessage calls are serialized.
type Conn struct {
	// MaxMessage is the maximum size in bytes of a (reassembled) data
	// message accepted by ReadMessage. Larger messages make ReadMessage
	// fail with CloseMessageTooBig. Zero or a negative value means
	// DefaultMaxMessage. It must not be changed while ReadMessage runs.
	MaxMessage int64

	rw     io.ReadWriter
	closer io.Closer // nil if rw is not an io.Closer
	client bool

	closeOnce sync.Once
	closeErr  error

	// rsem is a one-slot semaphore serializing reads; the fields below it
	// are guarded by it. readErr is set at most once, before readDone is
	// closed, so it may also be read by anyone who has seen readDone closed.
	rsem     chan struct{}
	rbuf     []byte   // reused message buffer
	hdr      [14]byte // header scratch space
	ctrl     [maxControlPayload]byte
	readErr  error         // sticky read error
	readDone chan struct{} // closed when readErr is set

	wmu       sync.Mutex     // serializes writing
	wbuf      []byte         // reused frame buffer; guarded by wmu
	rng       *mrand.ChaCha8 // masking keys (client only); guarded by wmu
	closeSent bool           // guarded by wmu
	writeErr  error          // sticky write error; guarded by wmu
}

// NewConn returns a Conn that exchanges frames over rw. If client is true,
// the Conn acts as the client endpoint: it masks every frame it sends with a
// fresh random key and rejects masked frames. Otherwise it acts as the server
// endpoint: it never masks and requires every received frame to be masked.
//
// If rw also implements io.Closer, Close closes it once the closing
// handshake is over. If rw has a SetDeadline method (as net.Conn does),
// Close uses it to bound the closing handshake.
func NewConn(rw io.ReadWriter, client bool) *Conn {
	c := &Conn{
		rw:       rw,
		client:   client,
		rsem:     make(chan struct{}, 1),
		readDone: make(chan struct{}),
	}
	if cl, ok := rw.(io.Closer); ok {
		c.closer = cl
	}
	if client {
		var seed [32]byte
		_, _ = rand.Read(seed[:]) // crypto/rand.Read never fails
		c.rng = mrand.NewChaCha8(seed)
	}
	return c
}

// Echo sends every text or binary message read from c back to the peer with
// the same opcode, until the connection ends. It returns nil when the peer
// completes the closing handshake (ReadMessage returns a *CloseError) and the
// error that ended the loop otherwise. Echo does not close the underlying
// connection; callers typically call c.Close afterwards.
//
// Another goroutine may start the closing handshake with WriteClose while
// Echo runs (a server shutting down, say). No data frame may follow a close
// frame (RFC 6455, section 5.5.1), so the messages the peer sent before it
// saw ours are read and dropped, not echoed, and Echo returns nil once the
// peer's close frame completes the handshake.
func Echo(c *Conn) error {
	for {
		op, p, err := c.ReadMessage()
		if err != nil {
			var ce *CloseError
			if errors.As(err, &ce) {
				return nil
			}
			return err
		}
		if err := c.WriteMessage(op, p); err != nil && !errors.Is(err, ErrCloseSent) {
			return err
		}
	}
}
