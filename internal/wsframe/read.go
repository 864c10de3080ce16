package wsframe

import (
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"
)

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
