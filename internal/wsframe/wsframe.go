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
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
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

// ReadMessage reads the next complete text or binary message, reassembling
// fragmented messages. op is OpText or OpBinary; text payloads are
// guaranteed to be valid UTF-8.
//
// Control frames are handled while reading: pings are answered with a pong
// carrying the same payload, pongs are ignored, and a close frame is answered
// with a close frame echoing its status code, after which ReadMessage returns
// a *CloseError.
//
// If the peer violates the protocol, ReadMessage sends a close frame with the
// appropriate status code and returns a *ProtocolError. A reader that reaches
// the end of the stream before a close frame returns io.EOF (at a frame
// boundary) or io.ErrUnexpectedEOF (inside a frame). Every error is sticky:
// later calls return the same error.
//
// The returned payload aliases an internal buffer and is only valid until the
// next call to ReadMessage or Close.
func (c *Conn) ReadMessage() (op Opcode, payload []byte, err error) {
	c.rsem <- struct{}{}
	defer func() { <-c.rsem }()
	return c.readMessage()
}

// readMessage implements ReadMessage; c.rsem must be held.
func (c *Conn) readMessage() (Opcode, []byte, error) {
	if c.readErr != nil {
		return 0, nil, c.readErr
	}
	op, p, err := c.readFrames()
	if err != nil {
		c.readErr = err
		close(c.readDone)
		return 0, nil, err
	}
	return op, p, nil
}

// frameHeader is a decoded frame header (RFC 6455, section 5.2).
type frameHeader struct {
	fin    bool
	rsv    byte
	op     Opcode
	masked bool
	key    [4]byte
	length int64
}

// readFrames reads frames until a complete data message, a close frame or an
// error.
func (c *Conn) readFrames() (Opcode, []byte, error) {
	limit := c.MaxMessage
	if limit <= 0 {
		limit = DefaultMaxMessage
	}
	if cap(c.rbuf) > maxRetainedBuffer {
		c.rbuf = nil // do not hold on to the memory of one huge message
	}
	buf := c.rbuf[:0]
	var msgOp Opcode
	inMessage := false
	for {
		h, err := c.readHeader()
		if err != nil {
			return 0, nil, err
		}
		if h.op.isControl() {
			if err := c.handleControl(h); err != nil {
				return 0, nil, err
			}
			continue
		}
		if h.op == OpContinuation {
			if !inMessage {
				return 0, nil, c.fail(CloseProtocolError, "continuation frame without a message in progress")
			}
		} else {
			if inMessage {
				return 0, nil, c.fail(CloseProtocolError, "new data frame while a fragmented message is in progress")
			}
			msgOp, inMessage = h.op, true
		}
		if h.length > limit-int64(len(buf)) {
			return 0, nil, c.fail(CloseMessageTooBig, "message exceeds "+strconv.FormatInt(limit, 10)+" bytes")
		}
		start := len(buf)
		for remaining := h.length; remaining > 0; {
			n := int(min(remaining, readChunk))
			buf = slices.Grow(buf, n)
			if _, err := io.ReadFull(c.rw, buf[len(buf):len(buf)+n]); err != nil {
				c.rbuf = buf[:0]
				return 0, nil, unexpected(err)
			}
			buf = buf[:len(buf)+n]
			remaining -= int64(n)
		}
		c.rbuf = buf[:0]
		if h.masked {
			maskBytes(h.key, buf[start:])
		}
		if !h.fin {
			continue
		}
		if msgOp == OpText && !utf8.Valid(buf) {
			return 0, nil, c.fail(CloseInvalidPayload, "text message is not valid UTF-8")
		}
		if buf == nil {
			buf = []byte{} // an empty message has a non-nil payload
		}
		return msgOp, buf, nil
	}
}

// readHeader reads and validates one frame header.
func (c *Conn) readHeader() (frameHeader, error) {
	var h frameHeader
	b := c.hdr[:2]
	if _, err := io.ReadFull(c.rw, b); err != nil {
		return h, err // io.EOF here means a clean end of stream at a frame boundary
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = b[0] & 0x70
	h.op = Opcode(b[0] & 0x0f)
	h.masked = b[1]&0x80 != 0
	length := b[1] & 0x7f

	if h.rsv != 0 {
		return h, c.fail(CloseProtocolError, "reserved bits set without a negotiated extension")
	}
	switch h.op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return h, c.fail(CloseProtocolError, "unknown opcode "+strconv.Itoa(int(h.op)))
	}
	if h.op.isControl() {
		if !h.fin {
			return h, c.fail(CloseProtocolError, "fragmented control frame")
		}
		if length > maxControlPayload {
			return h, c.fail(CloseProtocolError, "control frame payload longer than 125 bytes")
		}
	}
	if c.client && h.masked {
		return h, c.fail(CloseProtocolError, "masked frame from server")
	}
	if !c.client && !h.masked {
		return h, c.fail(CloseProtocolError, "unmasked frame from client")
	}

	switch length {
	case 126:
		if _, err := io.ReadFull(c.rw, c.hdr[2:4]); err != nil {
			return h, unexpected(err)
		}
		h.length = int64(binary.BigEndian.Uint16(c.hdr[2:4]))
	case 127:
		if _, err := io.ReadFull(c.rw, c.hdr[2:10]); err != nil {
			return h, unexpected(err)
		}
		v := binary.BigEndian.Uint64(c.hdr[2:10])
		if v>>63 != 0 {
			return h, c.fail(CloseProtocolError, "64-bit payload length with the most significant bit set")
		}
		h.length = int64(v)
	default:
		h.length = int64(length)
	}
	if h.masked {
		if _, err := io.ReadFull(c.rw, h.key[:]); err != nil {
			return h, unexpected(err)
		}
	}
	return h, nil
}

// handleControl reads the payload of control frame h and reacts to it. It
// returns a *CloseError for a valid close frame.
func (c *Conn) handleControl(h frameHeader) error {
	p := c.ctrl[:h.length]
	if _, err := io.ReadFull(c.rw, p); err != nil {
		return unexpected(err)
	}
	if h.masked {
		maskBytes(h.key, p)
	}
	switch h.op {
	case OpPing:
		err := c.writeFrame(OpPong, p)
		if err != nil && !errors.Is(err, ErrCloseSent) {
			return err
		}
		return nil
	case OpPong:
		return nil
	}

	// OpClose (RFC 6455, sections 5.5.1 and 7.1.5).
	ce := &CloseError{Code: CloseNoStatusReceived}
	var reply []byte
	switch {
	case len(p) == 1:
		return c.fail(CloseProtocolError, "close frame with a 1-byte payload")
	case len(p) >= 2:
		ce.Code = int(binary.BigEndian.Uint16(p))
		if !validCloseCode(ce.Code) {
			return c.fail(CloseProtocolError, "invalid close status code "+strconv.Itoa(ce.Code))
		}
		if !utf8.Valid(p[2:]) {
			return c.fail(CloseInvalidPayload, "close reason is not valid UTF-8")
		}
		ce.Reason = string(p[2:])
		reply = p[:2] // echo the status code
	}
	// The peer's close frame was received, so the handshake is complete
	// even if the reply cannot be written; a reply is not sent if this Conn
	// already sent its own close frame.
	_ = c.writeFrame(OpClose, reply)
	return ce
}

// fail sends a close frame with the given status code (unless a close frame
// was already sent) and returns the corresponding *ProtocolError.
func (c *Conn) fail(code int, msg string) error {
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], uint16(code))
	_ = c.writeFrame(OpClose, p[:])
	return &ProtocolError{Code: code, Msg: msg}
}

// unexpected converts io.EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// validCloseCode reports whether code may appear in a close frame on the
// wire (RFC 6455, section 7.4).
func validCloseCode(code int) bool {
	switch {
	case code < 1000:
		return false
	case code == 1004, code == CloseNoStatusReceived, code == CloseAbnormalClosure, code == 1015:
		return false
	case code >= 1016 && code <= 2999:
		return false
	case code >= 5000:
		return false
	}
	return true
}

// WriteMessage sends payload as a single, unfragmented frame with opcode op.
// op must be OpText, OpBinary, OpPing or OpPong; text payloads must be valid
// UTF-8 and ping and pong payloads at most 125 bytes long. Use Close to send a
// close frame. After a close frame has been sent, WriteMessage returns
// ErrCloseSent.
//
// WriteMessage may be called concurrently with ReadMessage and with other
// write methods.
func (c *Conn) WriteMessage(op Opcode, payload []byte) error {
	switch op {
	case OpText:
		if !utf8.Valid(payload) {
			return errors.New("wsframe: text message is not valid UTF-8")
		}
	case OpBinary:
	case OpPing, OpPong:
		if len(payload) > maxControlPayload {
			return fmt.Errorf("wsframe: %v payload longer than %d bytes", op, maxControlPayload)
		}
	default:
		return fmt.Errorf("wsframe: WriteMessage cannot send %v frames", op)
	}
	return c.writeFrame(op, payload)
}

// WritePing sends a ping frame carrying payload, which must be at most 125
// bytes long. The peer's pong is consumed (and ignored) by ReadMessage.
func (c *Conn) WritePing(payload []byte) error {
	return c.WriteMessage(OpPing, payload)
}

// writeFrame writes one frame with FIN set, masking it on client conns. It
// sends nothing once a close frame has been sent.
func (c *Conn) writeFrame(op Opcode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeErr != nil {
		return c.writeErr
	}
	if c.closeSent {
		return ErrCloseSent
	}
	if op == OpClose {
		c.closeSent = true
	}

	b := c.wbuf[:0]
	b = append(b, 0x80|byte(op))
	var maskBit byte
	if c.client {
		maskBit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, maskBit|byte(n))
	case n <= 0xffff:
		b = append(b, maskBit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, maskBit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if c.client {
		var key [4]byte
		binary.LittleEndian.PutUint32(key[:], uint32(c.rng.Uint64()))
		b = append(b, key[:]...)
		start := len(b)
		b = append(b, payload...)
		maskBytes(key, b[start:])
	} else {
		b = append(b, payload...)
	}
	_, err := c.rw.Write(b)
	if cap(b) <= maxRetainedBuffer {
		c.wbuf = b[:0]
	} else {
		c.wbuf = nil
	}
	if err != nil {
		c.writeErr = err
	}
	return err
}

// Close performs the closing handshake (RFC 6455, section 7) and then closes
// the underlying connection if it is an io.Closer.
//
// Close sends a close frame with the given status code and reason, unless a
// close frame was already sent (for example in reply to a close frame
// received by ReadMessage, or after a protocol error). A code of 0 sends a
// close frame without a status code. Otherwise code must be a status code
// valid on the wire (RFC 6455, section 7.4) and reason at most 123 bytes of
// valid UTF-8; if they are not, Close returns an error without doing
// anything.
//
// Close then waits for the peer's close frame. If no ReadMessage call is in
// progress, Close reads and discards incoming messages until the peer's close
// frame arrives or the stream ends. If another goroutine is blocked in
// ReadMessage, Close does not read itself: that goroutine keeps receiving the
// remaining messages and finally the peer's *CloseError, and must keep
// calling ReadMessage until it returns an error. If the connection has a
// SetDeadline method (as net.Conn does), Close sets a deadline a few seconds
// ahead to bound the handshake; without one, Close waits as long as reading
// from the connection blocks.
//
// Close returns nil if the peer's close frame was received. Otherwise it
// returns the error that ended the handshake, such as io.EOF, a timeout or a
// *ProtocolError. Calling Close more than once is safe.
func (c *Conn) Close(code int, reason string) error {
	payload, err := closePayload(code, reason)
	if err != nil {
		return err
	}

	if d, ok := c.rw.(interface{ SetDeadline(time.Time) error }); ok {
		_ = d.SetDeadline(time.Now().Add(closeTimeout))
	}
	werr := c.writeFrame(OpClose, payload)
	if errors.Is(werr, ErrCloseSent) {
		werr = nil
	}

	var rerr error
	select {
	case c.rsem <- struct{}{}:
		// No read in progress: read until the peer's close frame ourselves.
		if c.readErr == nil && werr == nil {
			for {
				if _, _, err := c.readMessage(); err != nil {
					break
				}
			}
		}
		rerr = c.readErr
		<-c.rsem
	default:
		// Another goroutine is reading; let it observe the peer's close.
		if werr != nil {
			break // the peer will not see our close frame; do not wait
		}
		t := time.NewTimer(closeTimeout + time.Second)
		select {
		case <-c.readDone:
			rerr = c.readErr
		case <-t.C:
			rerr = errCloseTimeout
		}
		t.Stop()
	}

	c.closeOnce.Do(func() {
		if c.closer != nil {
			c.closeErr = c.closer.Close()
		}
	})

	var ce *CloseError
	switch {
	case errors.As(rerr, &ce):
		return c.closeErr
	case werr != nil:
		return werr
	case rerr != nil:
		return rerr
	}
	return c.closeErr
}

// WriteClose sends a close frame with the given status code and reason,
// with the same rules as Close, unless a close frame was already sent. It
// returns at once: the caller keeps calling ReadMessage, which delivers the
// messages still in flight and finally the peer's *CloseError when the
// closing handshake completes. WriteClose neither waits nor closes the
// underlying connection.
func (c *Conn) WriteClose(code int, reason string) error {
	payload, err := closePayload(code, reason)
	if err != nil {
		return err
	}
	if err := c.writeFrame(OpClose, payload); err != nil && !errors.Is(err, ErrCloseSent) {
		return err
	}
	return nil
}

// closePayload builds a close frame's payload, checking code and reason.
func closePayload(code int, reason string) ([]byte, error) {
	if code == 0 {
		if reason != "" {
			return nil, errors.New("wsframe: close reason without a status code")
		}
		return nil, nil
	}
	if !validCloseCode(code) {
		return nil, fmt.Errorf("wsframe: invalid close status code %d", code)
	}
	if len(reason) > maxCloseReason {
		return nil, fmt.Errorf("wsframe: close reason longer than %d bytes", maxCloseReason)
	}
	if !utf8.ValidString(reason) {
		return nil, errors.New("wsframe: close reason is not valid UTF-8")
	}
	payload := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return append(payload, reason...), nil
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

// maskBytes XORs b in place with the masking key (RFC 6455, section 5.3),
// the first byte of b being the first byte of the frame payload.
func maskBytes(key [4]byte, b []byte) {
	k32 := uint64(binary.LittleEndian.Uint32(key[:]))
	k64 := k32 | k32<<32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k64)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}
