package wsframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

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
