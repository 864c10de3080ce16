package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Bits of the first header byte.
const (
	fin  = 0x80
	rsv1 = 0x40
	rsv2 = 0x20
	rsv3 = 0x10
)

// testKey is the masking key of the RFC 6455 section 5.7 examples.
var testKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// rawFrame encodes a frame whose first header byte is b0, masking the
// payload with key when key is non-nil.
func rawFrame(b0 byte, payload []byte, key *[4]byte) []byte {
	var maskBit byte
	if key != nil {
		maskBit = 0x80
	}
	b := []byte{b0}
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
	if key == nil {
		return append(b, payload...)
	}
	b = append(b, key[:]...)
	for i, v := range payload {
		b = append(b, v^key[i%4])
	}
	return b
}

// cf returns a masked frame as a client sends it.
func cf(b0 byte, payload string) []byte { return rawFrame(b0, []byte(payload), &testKey) }

// sf returns an unmasked frame as a server sends it.
func sf(b0 byte, payload string) []byte { return rawFrame(b0, []byte(payload), nil) }

// closePayload returns a close frame payload with the given code and reason.
func wireClose(code int, reason string) string {
	return string(binary.BigEndian.AppendUint16(nil, uint16(code))) + reason
}

// wireFrame is a frame decoded by parseFrames.
type wireFrame struct {
	b0      byte
	masked  bool
	key     [4]byte
	payload []byte
}

// parseFrames decodes a sequence of frames, unmasking masked payloads.
func parseFrames(t *testing.T, b []byte) []wireFrame {
	t.Helper()
	var frames []wireFrame
	for len(b) > 0 {
		require.GreaterOrEqual(t, len(b), 2, "truncated header")
		f := wireFrame{b0: b[0], masked: b[1]&0x80 != 0}
		n := uint64(b[1] & 0x7f)
		b = b[2:]
		switch n {
		case 126:
			require.GreaterOrEqual(t, len(b), 2)
			n = uint64(binary.BigEndian.Uint16(b))
			b = b[2:]
		case 127:
			require.GreaterOrEqual(t, len(b), 8)
			n = binary.BigEndian.Uint64(b)
			b = b[8:]
		}
		if f.masked {
			require.GreaterOrEqual(t, len(b), 4)
			copy(f.key[:], b)
			b = b[4:]
		}
		require.GreaterOrEqual(t, uint64(len(b)), n, "truncated payload")
		f.payload = append([]byte(nil), b[:n]...)
		b = b[n:]
		if f.masked {
			for i := range f.payload {
				f.payload[i] ^= f.key[i%4]
			}
		}
		frames = append(frames, f)
	}
	return frames
}

// fakeRW reads from a fixed input and records everything written.
type fakeRW struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (f *fakeRW) Read(p []byte) (int, error)  { return f.in.Read(p) }
func (f *fakeRW) Write(p []byte) (int, error) { return f.out.Write(p) }

// newTestConn returns a Conn reading the concatenation of frames.
func newTestConn(client bool, frames ...[]byte) (*Conn, *fakeRW) {
	rw := &fakeRW{in: bytes.NewReader(bytes.Join(frames, nil))}
	return NewConn(rw, client), rw
}

// requireCloseFrame asserts that out holds exactly one close frame, masked
// iff masked, and returns its status code (0 if it has no payload).
func requireCloseFrame(t *testing.T, out []byte, masked bool) int {
	t.Helper()
	frames := parseFrames(t, out)
	require.Len(t, frames, 1, "want exactly one frame on the wire")
	require.Equal(t, byte(fin|byte(OpClose)), frames[0].b0)
	require.Equal(t, masked, frames[0].masked)
	if len(frames[0].payload) == 0 {
		return 0
	}
	require.GreaterOrEqual(t, len(frames[0].payload), 2)
	return int(binary.BigEndian.Uint16(frames[0].payload))
}

// tcpPair returns the two ends of a loopback TCP connection with deadlines.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	deadline := time.Now().Add(10 * time.Second)
	require.NoError(t, client.SetDeadline(deadline))
	require.NoError(t, server.SetDeadline(deadline))
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

func TestRFC6455Examples(t *testing.T) {
	hello := []byte("Hello")

	t.Run("single-frame unmasked text written by server", func(t *testing.T) {
		c, rw := newTestConn(false)
		require.NoError(t, c.WriteMessage(OpText, hello))
		assert.Equal(t, []byte{0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}, rw.out.Bytes())
	})

	t.Run("single-frame unmasked text read by client", func(t *testing.T) {
		c, rw := newTestConn(true, []byte{0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f})
		op, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, OpText, op)
		assert.Equal(t, hello, p)
		assert.Zero(t, rw.out.Len())
	})

	t.Run("single-frame masked text read by server", func(t *testing.T) {
		in := []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}
		require.Equal(t, in, cf(fin|byte(OpText), "Hello"), "test helper must agree with the RFC")
		c, rw := newTestConn(false, in)
		op, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, OpText, op)
		assert.Equal(t, hello, p)
		assert.Zero(t, rw.out.Len())
	})

	t.Run("fragmented unmasked text read by client", func(t *testing.T) {
		c, _ := newTestConn(true,
			[]byte{0x01, 0x03, 0x48, 0x65, 0x6c},
			[]byte{0x80, 0x02, 0x6c, 0x6f})
		op, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, OpText, op)
		assert.Equal(t, hello, p)
	})

	t.Run("fragmented masked text read by server", func(t *testing.T) {
		c, _ := newTestConn(false, cf(byte(OpText), "Hel"), cf(fin|byte(OpContinuation), "lo"))
		op, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, OpText, op)
		assert.Equal(t, hello, p)
	})

	t.Run("masked ping answered by server with unmasked pong", func(t *testing.T) {
		c, rw := newTestConn(false, cf(fin|byte(OpPing), "Hello"), cf(fin|byte(OpText), "after"))
		op, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, OpText, op)
		assert.Equal(t, "after", string(p))
		assert.Equal(t, []byte{0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}, rw.out.Bytes())
	})

	t.Run("unmasked ping answered by client with masked pong", func(t *testing.T) {
		c, rw := newTestConn(true, []byte{0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}, sf(fin|byte(OpBinary), "x"))
		op, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, OpBinary, op)
		assert.Equal(t, "x", string(p))
		out := rw.out.Bytes()
		require.Len(t, out, 11)
		assert.Equal(t, []byte{0x8a, 0x85}, out[:2])
		frames := parseFrames(t, out)
		require.Len(t, frames, 1)
		assert.Equal(t, hello, frames[0].payload)
	})

	lengthCases := []struct {
		name   string
		size   int
		header []byte
	}{
		{"256-byte binary with 16-bit length", 256, []byte{0x82, 0x7e, 0x01, 0x00}},
		{"64KiB binary with 64-bit length", 65536, []byte{0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00}},
	}
	for _, tc := range lengthCases {
		t.Run(tc.name, func(t *testing.T) {
			payload := make([]byte, tc.size)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			w, rw := newTestConn(false)
			require.NoError(t, w.WriteMessage(OpBinary, payload))
			wire := rw.out.Bytes()
			require.Equal(t, tc.header, wire[:len(tc.header)])
			require.Equal(t, payload, wire[len(tc.header):])

			r, _ := newTestConn(true, wire)
			op, p, err := r.ReadMessage()
			require.NoError(t, err)
			assert.Equal(t, OpBinary, op)
			assert.Equal(t, payload, p)

			// The same message masked, as a server reads it.
			s, _ := newTestConn(false, rawFrame(fin|byte(OpBinary), payload, &testKey))
			op, p, err = s.ReadMessage()
			require.NoError(t, err)
			assert.Equal(t, OpBinary, op)
			assert.Equal(t, payload, p)
		})
	}
}

func TestWriteLengthEncoding(t *testing.T) {
	tests := []struct {
		size   int
		header []byte
	}{
		{0, []byte{0x82, 0x00}},
		{125, []byte{0x82, 125}},
		{126, []byte{0x82, 126, 0x00, 126}},
		{65535, []byte{0x82, 126, 0xff, 0xff}},
		{65536, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	}
	for _, tc := range tests {
		c, rw := newTestConn(false)
		require.NoError(t, c.WriteMessage(OpBinary, make([]byte, tc.size)))
		out := rw.out.Bytes()
		assert.Equal(t, tc.header, out[:len(tc.header)], "size %d", tc.size)
		assert.Len(t, out, len(tc.header)+tc.size, "size %d", tc.size)
	}
}

func TestClientFramesAreMasked(t *testing.T) {
	c, rw := newTestConn(true)
	msgs := []struct {
		op      Opcode
		payload []byte
	}{
		{OpText, []byte("Hello")},
		{OpText, []byte("Hello")},
		{OpBinary, bytes.Repeat([]byte{0xaa}, 1000)},
		{OpPing, []byte("p")},
	}
	for _, m := range msgs {
		require.NoError(t, c.WriteMessage(m.op, m.payload))
	}
	frames := parseFrames(t, rw.out.Bytes())
	require.Len(t, frames, len(msgs))
	keys := map[[4]byte]bool{}
	for i, f := range frames {
		assert.True(t, f.masked, "frame %d must be masked", i)
		assert.Equal(t, fin|byte(msgs[i].op), f.b0)
		assert.Equal(t, msgs[i].payload, f.payload)
		keys[f.key] = true
	}
	assert.Greater(t, len(keys), 1, "every frame should use a fresh masking key")
	// The masked bytes on the wire differ from the plaintext.
	assert.NotContains(t, rw.out.String(), "Hello")
}

func TestServerFramesAreNotMasked(t *testing.T) {
	c, rw := newTestConn(false)
	require.NoError(t, c.WriteMessage(OpText, []byte("abc")))
	require.NoError(t, c.WritePing([]byte("p")))
	frames := parseFrames(t, rw.out.Bytes())
	require.Len(t, frames, 2)
	for _, f := range frames {
		assert.False(t, f.masked)
	}
	assert.Equal(t, "abc", string(frames[0].payload))
	assert.Equal(t, fin|byte(OpPing), frames[1].b0)
}

func TestProtocolErrors(t *testing.T) {
	tooLong64 := []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}
	tooLong64 = append(tooLong64, testKey[:]...)
	overDefault := []byte{0x82, 0xff}
	overDefault = binary.BigEndian.AppendUint64(overDefault, DefaultMaxMessage+1)
	overDefault = append(overDefault, testKey[:]...)

	tests := []struct {
		name   string
		client bool
		max    int64
		in     [][]byte
		code   int
	}{
		{"RSV1 set", false, 0, [][]byte{cf(fin|rsv1|byte(OpText), "x")}, CloseProtocolError},
		{"RSV2 set", false, 0, [][]byte{cf(fin|rsv2|byte(OpBinary), "x")}, CloseProtocolError},
		{"RSV3 set on ping", false, 0, [][]byte{cf(fin|rsv3|byte(OpPing), "x")}, CloseProtocolError},
		{"reserved data opcode 3", false, 0, [][]byte{cf(fin|0x3, "x")}, CloseProtocolError},
		{"reserved control opcode 0xB", false, 0, [][]byte{cf(fin|0xB, "x")}, CloseProtocolError},
		{"fragmented ping", false, 0, [][]byte{cf(byte(OpPing), "x")}, CloseProtocolError},
		{"fragmented close", false, 0, [][]byte{cf(byte(OpClose), wireClose(1000, ""))}, CloseProtocolError},
		{"ping payload of 126 bytes", false, 0, [][]byte{cf(fin|byte(OpPing), strings.Repeat("x", 126))}, CloseProtocolError},
		{"close payload of 126 bytes", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(1000, strings.Repeat("x", 124)))}, CloseProtocolError},
		{"continuation without message", false, 0, [][]byte{cf(fin|byte(OpContinuation), "x")}, CloseProtocolError},
		{"text during fragmented message", false, 0, [][]byte{cf(byte(OpText), "a"), cf(fin|byte(OpText), "b")}, CloseProtocolError},
		{"binary during fragmented message", false, 0, [][]byte{cf(byte(OpBinary), "a"), cf(fin|byte(OpBinary), "b")}, CloseProtocolError},
		{"unmasked frame from client", false, 0, [][]byte{sf(fin|byte(OpText), "Hello")}, CloseProtocolError},
		{"masked frame from server", true, 0, [][]byte{cf(fin|byte(OpText), "Hello")}, CloseProtocolError},
		{"close payload of 1 byte", false, 0, [][]byte{cf(fin|byte(OpClose), "\x03")}, CloseProtocolError},
		{"close code 0", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(0, ""))}, CloseProtocolError},
		{"close code 999", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(999, ""))}, CloseProtocolError},
		{"close code 1004", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(1004, ""))}, CloseProtocolError},
		{"close code 1005", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(1005, ""))}, CloseProtocolError},
		{"close code 1006", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(1006, ""))}, CloseProtocolError},
		{"close code 1015", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(1015, ""))}, CloseProtocolError},
		{"close code 1016", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(1016, ""))}, CloseProtocolError},
		{"close code 2999", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(2999, ""))}, CloseProtocolError},
		{"close code 5000", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(5000, ""))}, CloseProtocolError},
		{"close code 65535", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(65535, ""))}, CloseProtocolError},
		{"64-bit length with top bit set", false, 0, [][]byte{tooLong64}, CloseProtocolError},
		{"invalid UTF-8 text", false, 0, [][]byte{cf(fin|byte(OpText), "\xff")}, CloseInvalidPayload},
		{"surrogate half in text", false, 0, [][]byte{cf(fin|byte(OpText), "\xed\xa0\x80")}, CloseInvalidPayload},
		{"invalid UTF-8 across fragments", false, 0, [][]byte{cf(byte(OpText), "\xe2\x82"), cf(fin|byte(OpContinuation), "x")}, CloseInvalidPayload},
		{"truncated UTF-8 at end of message", false, 0, [][]byte{cf(byte(OpText), "ok"), cf(fin|byte(OpContinuation), "\xe2\x82")}, CloseInvalidPayload},
		{"invalid UTF-8 close reason", false, 0, [][]byte{cf(fin|byte(OpClose), wireClose(1000, "\xff"))}, CloseInvalidPayload},
		{"invalid UTF-8 text read by client", true, 0, [][]byte{sf(fin|byte(OpText), "a\xc0\xafb")}, CloseInvalidPayload},
		{"single frame over MaxMessage", false, 10, [][]byte{cf(fin|byte(OpBinary), "01234567890")}, CloseMessageTooBig},
		{"fragments over MaxMessage", false, 10, [][]byte{cf(byte(OpBinary), "012345"), cf(fin|byte(OpContinuation), "67890")}, CloseMessageTooBig},
		{"frame over default MaxMessage", false, 0, [][]byte{overDefault}, CloseMessageTooBig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, rw := newTestConn(tc.client, tc.in...)
			c.MaxMessage = tc.max
			op, p, err := c.ReadMessage()
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, tc.code, pe.Code)
			assert.Contains(t, err.Error(), "protocol error")
			assert.Zero(t, op)
			assert.Nil(t, p)
			assert.Equal(t, tc.code, requireCloseFrame(t, rw.out.Bytes(), tc.client), "close code on the wire")

			// The error is sticky and no second close frame is sent.
			n := rw.out.Len()
			_, _, err2 := c.ReadMessage()
			assert.Same(t, err, err2)
			assert.ErrorIs(t, c.WriteMessage(OpText, []byte("x")), ErrCloseSent)
			assert.ErrorAs(t, c.Close(CloseNormalClosure, ""), &pe)
			assert.Equal(t, n, rw.out.Len())
		})
	}
}

func TestMessageSizeLimit(t *testing.T) {
	t.Run("exactly MaxMessage is accepted", func(t *testing.T) {
		c, rw := newTestConn(false, cf(byte(OpBinary), "01234"), cf(fin|byte(OpContinuation), "56789"))
		c.MaxMessage = 10
		op, p, err := c.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, OpBinary, op)
		assert.Equal(t, "0123456789", string(p))
		assert.Zero(t, rw.out.Len())
	})
	t.Run("limit applies per message, not per connection", func(t *testing.T) {
		c, _ := newTestConn(false, cf(fin|byte(OpText), "12345678"), cf(fin|byte(OpText), "abcdefgh"))
		c.MaxMessage = 10
		for _, want := range []string{"12345678", "abcdefgh"} {
			_, p, err := c.ReadMessage()
			require.NoError(t, err)
			assert.Equal(t, want, string(p))
		}
	})
}

func TestValidUTF8AcrossFragments(t *testing.T) {
	// "€" is E2 82 AC; split it across three frames.
	c, _ := newTestConn(false,
		cf(byte(OpText), "price: \xe2"),
		cf(byte(OpContinuation), "\x82"),
		cf(fin|byte(OpContinuation), "\xac 5 🌍"))
	op, p, err := c.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, OpText, op)
	assert.Equal(t, "price: € 5 🌍", string(p))
}

func TestControlFramesInterleavedWithFragments(t *testing.T) {
	c, rw := newTestConn(false,
		cf(byte(OpText), "He"),
		cf(fin|byte(OpPing), "p1"),
		cf(byte(OpContinuation), "l"),
		cf(fin|byte(OpPong), "ignored"),
		cf(fin|byte(OpPing), ""),
		cf(fin|byte(OpContinuation), "lo"),
		cf(fin|byte(OpBinary), "\x00\x01"),
	)
	op, p, err := c.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, OpText, op)
	assert.Equal(t, "Hello", string(p))

	op, p, err = c.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, OpBinary, op)
	assert.Equal(t, []byte{0, 1}, p)

	assert.Equal(t, []byte{0x8a, 0x02, 'p', '1', 0x8a, 0x00}, rw.out.Bytes(), "one pong per ping, none for the pong")

	_, _, err = c.ReadMessage()
	assert.ErrorIs(t, err, io.EOF)
}

func TestCloseInterleavedWithFragments(t *testing.T) {
	c, rw := newTestConn(false,
		cf(byte(OpText), "He"),
		cf(fin|byte(OpClose), wireClose(CloseGoingAway, "bye")))
	_, _, err := c.ReadMessage()
	var ce *CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, CloseError{Code: CloseGoingAway, Reason: "bye"}, *ce)
	assert.Equal(t, CloseGoingAway, requireCloseFrame(t, rw.out.Bytes(), false))
}

func TestReceiveClose(t *testing.T) {
	tests := []struct {
		name      string
		payload   string
		want      CloseError
		replyCode int // 0: empty close payload
	}{
		{"no status code", "", CloseError{Code: CloseNoStatusReceived}, 0},
		{"1000 with reason", wireClose(1000, "bye"), CloseError{Code: 1000, Reason: "bye"}, 1000},
		{"1001", wireClose(1001, ""), CloseError{Code: 1001}, 1001},
		{"1002", wireClose(1002, ""), CloseError{Code: 1002}, 1002},
		{"1003", wireClose(1003, ""), CloseError{Code: 1003}, 1003},
		{"1007", wireClose(1007, ""), CloseError{Code: 1007}, 1007},
		{"1011", wireClose(1011, ""), CloseError{Code: 1011}, 1011},
		{"1014", wireClose(1014, ""), CloseError{Code: 1014}, 1014},
		{"3000", wireClose(3000, ""), CloseError{Code: 3000}, 3000},
		{"4999 with UTF-8 reason", wireClose(4999, "tschüß"), CloseError{Code: 4999, Reason: "tschüß"}, 4999},
		{"123-byte reason", wireClose(1000, strings.Repeat("r", 123)), CloseError{Code: 1000, Reason: strings.Repeat("r", 123)}, 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, rw := newTestConn(false, cf(fin|byte(OpClose), tc.payload), cf(fin|byte(OpText), "never read"))
			_, _, err := c.ReadMessage()
			var ce *CloseError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tc.want, *ce)
			assert.Contains(t, err.Error(), "status")

			frames := parseFrames(t, rw.out.Bytes())
			require.Len(t, frames, 1)
			assert.Equal(t, fin|byte(OpClose), frames[0].b0)
			if tc.replyCode == 0 {
				assert.Empty(t, frames[0].payload)
			} else {
				assert.Equal(t, wireClose(tc.replyCode, ""), string(frames[0].payload), "reply echoes the status code")
			}

			// Close after a received close completes without a second frame.
			n := rw.out.Len()
			require.NoError(t, c.Close(CloseNormalClosure, ""))
			assert.Equal(t, n, rw.out.Len())
			_, _, err = c.ReadMessage()
			assert.Same(t, ce, err)
			assert.ErrorIs(t, c.WriteMessage(OpText, []byte("x")), ErrCloseSent)
		})
	}
}

func TestClientAnswersCloseMasked(t *testing.T) {
	c, rw := newTestConn(true, sf(fin|byte(OpClose), wireClose(1000, "done")))
	_, _, err := c.ReadMessage()
	var ce *CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, 1000, ce.Code)
	assert.Equal(t, 1000, requireCloseFrame(t, rw.out.Bytes(), true))
}

func TestEndOfStream(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty stream", nil, io.EOF},
		{"after a message", cf(fin|byte(OpText), "x"), io.EOF},
		{"inside header", []byte{0x81}, io.ErrUnexpectedEOF},
		{"inside extended length", []byte{0x82, 0xfe, 0x01}, io.ErrUnexpectedEOF},
		{"inside masking key", []byte{0x82, 0x81, 1, 2}, io.ErrUnexpectedEOF},
		{"inside payload", cf(fin|byte(OpText), "Hello")[:8], io.ErrUnexpectedEOF},
		{"inside control payload", cf(fin|byte(OpPing), "Hello")[:8], io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, rw := newTestConn(false, tc.in)
			var err error
			for err == nil {
				_, _, err = c.ReadMessage()
			}
			assert.Equal(t, tc.want, err)
			assert.Zero(t, rw.out.Len(), "nothing is sent when the stream just ends")
		})
	}
}

func TestWriteMessageRejectsInvalidInput(t *testing.T) {
	tests := []struct {
		name    string
		op      Opcode
		payload []byte
	}{
		{"close opcode", OpClose, nil},
		{"continuation opcode", OpContinuation, []byte("x")},
		{"reserved opcode", Opcode(3), []byte("x")},
		{"invalid UTF-8 text", OpText, []byte{0xff}},
		{"ping over 125 bytes", OpPing, make([]byte, 126)},
		{"pong over 125 bytes", OpPong, make([]byte, 126)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, rw := newTestConn(false)
			assert.Error(t, c.WriteMessage(tc.op, tc.payload))
			assert.Zero(t, rw.out.Len())
		})
	}
}

func TestCloseRejectsInvalidArguments(t *testing.T) {
	tests := []struct {
		name   string
		code   int
		reason string
	}{
		{"code 999", 999, ""},
		{"code 1005", CloseNoStatusReceived, ""},
		{"code 1006", CloseAbnormalClosure, ""},
		{"code 5000", 5000, ""},
		{"reason too long", 1000, strings.Repeat("x", 124)},
		{"reason not UTF-8", 1000, "\xff"},
		{"reason without code", 0, "x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, rw := newTestConn(false)
			assert.Error(t, c.Close(tc.code, tc.reason))
			assert.Zero(t, rw.out.Len())
		})
	}
}

func TestCloseWithoutPeerReply(t *testing.T) {
	// The peer's stream ends right after our close frame: Close reports it.
	c, rw := newTestConn(false)
	err := c.Close(CloseGoingAway, "bye")
	assert.ErrorIs(t, err, io.EOF)
	frames := parseFrames(t, rw.out.Bytes())
	require.Len(t, frames, 1)
	assert.Equal(t, wireClose(CloseGoingAway, "bye"), string(frames[0].payload))

	assert.ErrorIs(t, c.WriteMessage(OpText, []byte("late")), ErrCloseSent)
	assert.ErrorIs(t, c.WritePing(nil), ErrCloseSent)
	assert.ErrorIs(t, c.Close(CloseNormalClosure, ""), io.EOF)
	assert.Equal(t, len(rw.out.Bytes()), len(frames[0].payload)+2, "only one close frame is sent")
}

func TestCloseDiscardsMessagesUntilPeerClose(t *testing.T) {
	c, rw := newTestConn(false,
		cf(fin|byte(OpText), "in flight"),
		cf(fin|byte(OpPing), "no pong after close"),
		cf(fin|byte(OpClose), wireClose(CloseNormalClosure, "")),
		cf(fin|byte(OpText), "after close"))
	require.NoError(t, c.Close(0, ""))
	assert.Equal(t, []byte{0x88, 0x00}, rw.out.Bytes(), "a single empty close frame and no pong")
	_, _, err := c.ReadMessage()
	var ce *CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, CloseNormalClosure, ce.Code)
	assert.Equal(t, len(cf(fin|byte(OpText), "after close")), rw.in.Len(), "the frame after the close is not read")
}

func TestEchoRawMaskedFrames(t *testing.T) {
	client, server := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		sc := NewConn(server, false)
		err := Echo(sc)
		if err == nil {
			err = sc.Close(CloseNormalClosure, "")
		}
		done <- err
	}()

	steps := []struct {
		name string
		send []byte
		want []byte
	}{
		{"RFC masked Hello", []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}, []byte{0x81, 0x05, 'H', 'e', 'l', 'l', 'o'}},
		{"RFC masked ping", cf(fin|byte(OpPing), "Hello"), []byte{0x8a, 0x05, 'H', 'e', 'l', 'l', 'o'}},
		{"fragmented binary", append(cf(byte(OpBinary), "\x01\x02"), cf(fin|byte(OpContinuation), "\x03")...), []byte{0x82, 0x03, 1, 2, 3}},
		{"close", cf(fin|byte(OpClose), wireClose(CloseNormalClosure, "bye")), []byte{0x88, 0x02, 0x03, 0xe8}},
	}
	for _, s := range steps {
		_, err := client.Write(s.send)
		require.NoError(t, err, s.name)
		got := make([]byte, len(s.want))
		_, err = io.ReadFull(client, got)
		require.NoError(t, err, s.name)
		assert.Equal(t, s.want, got, s.name)
	}
	require.NoError(t, <-done)
	// The server closed the TCP connection after the handshake.
	n, err := client.Read(make([]byte, 1))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF)
}

func TestEchoErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       [][]byte
		check    func(t *testing.T, err error)
		wireCode int // expected close code sent by Echo's Conn, -1 for none
	}{
		{"clean close", [][]byte{cf(fin|byte(OpText), "a"), cf(fin|byte(OpClose), wireClose(1000, ""))},
			func(t *testing.T, err error) { assert.NoError(t, err) }, 1000},
		{"stream ends without close", [][]byte{cf(fin|byte(OpText), "a")},
			func(t *testing.T, err error) { assert.ErrorIs(t, err, io.EOF) }, -1},
		{"protocol error", [][]byte{cf(fin|byte(OpText), "a"), sf(fin|byte(OpText), "unmasked")},
			func(t *testing.T, err error) {
				var pe *ProtocolError
				require.ErrorAs(t, err, &pe)
				assert.Equal(t, CloseProtocolError, pe.Code)
			}, CloseProtocolError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, rw := newTestConn(false, tc.in...)
			tc.check(t, Echo(c))
			frames := parseFrames(t, rw.out.Bytes())
			require.NotEmpty(t, frames)
			assert.Equal(t, "a", string(frames[0].payload), "the text message is echoed first")
			if tc.wireCode < 0 {
				assert.Len(t, frames, 1)
				return
			}
			require.Len(t, frames, 2)
			assert.Equal(t, wireClose(tc.wireCode, ""), string(frames[1].payload))
		})
	}
}

// TestEchoAfterWriteClose: once a close frame has been sent (a server
// going away), Echo drops the messages still arriving, sends nothing more,
// and returns nil when the peer's close frame completes the handshake.
func TestEchoAfterWriteClose(t *testing.T) {
	c, rw := newTestConn(false,
		cf(fin|byte(OpText), "sent before the client saw our close"),
		cf(fin|byte(OpBinary), "\x00\x01"),
		cf(fin|byte(OpClose), wireClose(CloseGoingAway, "")))
	require.NoError(t, c.WriteClose(CloseGoingAway, "shutting down"))
	require.NoError(t, Echo(c))
	frames := parseFrames(t, rw.out.Bytes())
	require.Len(t, frames, 1, "nothing follows the close frame")
	assert.Equal(t, fin|byte(OpClose), frames[0].b0)
	assert.Equal(t, wireClose(CloseGoingAway, "shutting down"), string(frames[0].payload))
}

func TestEchoWithClientConn(t *testing.T) {
	client, server := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		sc := NewConn(server, false)
		err := Echo(sc)
		_ = sc.Close(0, "")
		done <- err
	}()

	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = byte(i)
	}
	msgs := []struct {
		op      Opcode
		payload []byte
	}{
		{OpText, []byte("Hello")},
		{OpText, []byte{}},
		{OpText, []byte("héllo wörld 🌍")},
		{OpBinary, bytes.Repeat([]byte{0x5a}, 256)},
		{OpBinary, big},
		{OpBinary, make([]byte, 100_000)},
	}
	cc := NewConn(client, true)
	for _, m := range msgs {
		require.NoError(t, cc.WritePing([]byte("are you there")))
		require.NoError(t, cc.WriteMessage(m.op, m.payload))
		op, p, err := cc.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, m.op, op)
		assert.Equal(t, m.payload, p)
	}
	require.NoError(t, cc.Close(CloseNormalClosure, "done"))
	require.NoError(t, <-done, "Echo returns nil after a clean close")
}

func TestServerInitiatedClose(t *testing.T) {
	client, server := tcpPair(t)
	cc := NewConn(client, true)
	sc := NewConn(server, false)

	type result struct {
		msgs []string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		for {
			_, p, err := cc.ReadMessage()
			if err != nil {
				r.err = err
				break
			}
			r.msgs = append(r.msgs, string(p))
		}
		res <- r
	}()

	require.NoError(t, sc.WriteMessage(OpText, []byte("last words")))
	require.NoError(t, sc.Close(CloseGoingAway, "going away"), "Close returns after the client's reply")
	r := <-res
	assert.Equal(t, []string{"last words"}, r.msgs)
	var ce *CloseError
	require.ErrorAs(t, r.err, &ce)
	assert.Equal(t, CloseError{Code: CloseGoingAway, Reason: "going away"}, *ce)
	require.NoError(t, cc.Close(CloseNormalClosure, ""))
}

func TestClientCloseWithConcurrentReader(t *testing.T) {
	// The chat pattern: one goroutine prints received messages while the
	// main goroutine sends lines and closes at end of input.
	client, server := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		sc := NewConn(server, false)
		err := Echo(sc)
		_ = sc.Close(0, "")
		done <- err
	}()

	cc := NewConn(client, true)
	lines := []string{"first", "second", "third"}
	received := make(chan string, len(lines))
	readErr := make(chan error, 1)
	go func() {
		for {
			_, p, err := cc.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			received <- string(p)
		}
	}()
	for _, l := range lines {
		require.NoError(t, cc.WriteMessage(OpText, []byte(l)))
	}
	for _, l := range lines {
		assert.Equal(t, l, <-received)
	}
	require.NoError(t, cc.Close(CloseNormalClosure, ""))
	var ce *CloseError
	require.ErrorAs(t, <-readErr, &ce)
	assert.Equal(t, CloseNormalClosure, ce.Code)
	require.NoError(t, <-done)
}

func TestConcurrentWritesAndPongs(t *testing.T) {
	const n = 50
	client, server := tcpPair(t)
	cc := NewConn(client, true)
	sc := NewConn(server, false)

	// Server: one goroutine pings, another sends text, a third reads.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			assert.NoError(t, sc.WritePing([]byte{byte(i)}))
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			assert.NoError(t, sc.WriteMessage(OpText, []byte(strings.Repeat("t", i))))
		}
	}()
	serverGot := make(chan [][]byte, 1)
	go func() {
		var got [][]byte
		for range n {
			_, p, err := sc.ReadMessage()
			if !assert.NoError(t, err) {
				break
			}
			got = append(got, bytes.Clone(p))
		}
		serverGot <- got
	}()

	// Client: the reader answers pings while another goroutine writes.
	clientGot := make(chan []string, 1)
	clientErr := make(chan error, 1)
	go func() {
		var got []string
		for {
			_, p, err := cc.ReadMessage()
			if err != nil {
				clientGot <- got
				clientErr <- err
				return
			}
			got = append(got, string(p))
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			assert.NoError(t, cc.WriteMessage(OpBinary, bytes.Repeat([]byte{byte(i)}, i*100)))
		}
	}()

	wg.Wait()
	got := <-serverGot
	require.Len(t, got, n)
	for i, p := range got {
		assert.Equal(t, bytes.Repeat([]byte{byte(i)}, i*100), p)
	}
	require.NoError(t, sc.Close(CloseNormalClosure, ""))

	texts := <-clientGot
	require.Len(t, texts, n)
	for i, s := range texts {
		assert.Equal(t, strings.Repeat("t", i), s)
	}
	var ce *CloseError
	require.ErrorAs(t, <-clientErr, &ce)
	require.NoError(t, cc.Close(0, ""))
}

func TestOpcodeString(t *testing.T) {
	assert.Equal(t, "text", OpText.String())
	assert.Equal(t, "binary", OpBinary.String())
	assert.Equal(t, "close", OpClose.String())
	assert.Equal(t, "ping", OpPing.String())
	assert.Equal(t, "pong", OpPong.String())
	assert.Equal(t, "continuation", OpContinuation.String())
	assert.Equal(t, "opcode(3)", Opcode(3).String())
}

func TestMaskBytes(t *testing.T) {
	for n := range 40 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*31 + 7)
		}
		want := bytes.Clone(b)
		for i := range want {
			want[i] ^= testKey[i%4]
		}
		maskBytes(testKey, b)
		assert.Equal(t, want, b, "length %d", n)
	}
}

func FuzzReadMessage(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58})
	f.Add(append(cf(byte(OpText), "Hel"), cf(fin|byte(OpContinuation), "lo")...))
	f.Add(append(cf(fin|byte(OpPing), "Hello"), cf(fin|byte(OpBinary), "\x00\xff")...))
	f.Add(append(cf(byte(OpText), "\xe2\x82"), cf(fin|byte(OpContinuation), "\xac")...))
	f.Add(cf(fin|byte(OpClose), wireClose(1000, "bye")))
	f.Add(rawFrame(fin|byte(OpBinary), make([]byte, 300), &testKey))
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, rw := newTestConn(false, data)
		c.MaxMessage = 1 << 20
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				var ce *CloseError
				var pe *ProtocolError
				if !errors.As(err, &ce) && !errors.As(err, &pe) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				break
			}
			if op != OpText && op != OpBinary {
				t.Fatalf("ReadMessage returned opcode %v", op)
			}
			if op == OpText && !utf8.Valid(p) {
				t.Fatalf("ReadMessage returned invalid UTF-8 text %q", p)
			}
		}
		// Everything the server wrote is a well-formed, unmasked control frame.
		for _, fr := range parseFrames(t, rw.out.Bytes()) {
			if fr.masked || fr.b0&0x80 == 0 || (Opcode(fr.b0&0x0f) != OpPong && Opcode(fr.b0&0x0f) != OpClose) {
				t.Fatalf("unexpected frame written: %+v", fr)
			}
		}
	})
}

// WriteClose sends the close frame at once and leaves reading to the
// caller, who still receives the messages in flight before the peer's
// close.
func TestWriteCloseKeepsReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer sc.Close()
		sc.SetDeadline(time.Now().Add(5 * time.Second))
		srv := NewConn(sc, false)
		// Two messages are in flight when the client's close arrives.
		if err := srv.WriteMessage(OpText, []byte("one")); err != nil {
			done <- err
			return
		}
		if err := srv.WriteMessage(OpText, []byte("two")); err != nil {
			done <- err
			return
		}
		done <- Echo(srv)
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer cc.Close()
	cc.SetDeadline(time.Now().Add(5 * time.Second))
	c := NewConn(cc, true)
	require.NoError(t, c.WriteClose(CloseNormalClosure, "bye"))
	require.NoError(t, c.WriteClose(CloseNormalClosure, "again"), "a second close frame is not sent")
	var got []string
	for {
		_, p, err := c.ReadMessage()
		if err != nil {
			var ce *CloseError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, CloseNormalClosure, ce.Code)
			break
		}
		got = append(got, string(p))
	}
	assert.Equal(t, []string{"one", "two"}, got)
	require.NoError(t, <-done)
	assert.Error(t, c.WriteClose(999, ""), "invalid codes are refused")
}
