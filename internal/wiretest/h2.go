package wiretest

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// H2Conn is a minimal HTTP/2 client for tests that must see frames: it
// sends the preface and SETTINGS, answers SETTINGS and PING, keeps the
// flow-control windows of both directions (crediting the server for DATA
// as soon as it arrives), and records every frame it reads. Streams are
// opened with Open.
type H2Conn struct {
	t  testing.TB
	nc net.Conn
	fr *http2.Framer

	wmu    sync.Mutex // guards writes to fr, enc and buf
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	nextID uint32

	mu         sync.Mutex
	cond       *sync.Cond
	settings   map[http2.SettingID]uint32 // the server's first SETTINGS
	streams    map[uint32]*H2Stream
	sendWindow int64 // the connection's window for our DATA
	initWindow int64 // the server's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   int
	goAway     *http2.ErrCode // the code of the server's GOAWAY, if one came
	hold       bool           // DATA is not credited while set (see HoldCredit)
	owed       map[uint32]int // credit held back, by stream (0: the connection)
	log        []string       // one line per frame read
	readErr    error
	done       chan struct{}
}

// H2Stream is one stream of an H2Conn.
type H2Stream struct {
	c          *H2Conn
	ID         uint32
	header     map[string][]string // response header fields, pseudo-headers included
	gotHeader  bool
	data       bytes.Buffer // DATA received and not yet read
	ended      bool         // END_STREAM received
	reset      *http2.ErrCode
	sendWindow int64
}

// DialH2 connects to addr and speaks HTTP/2 with prior knowledge, or over
// TLS with ALPN "h2" when tlsConf is non-nil. It waits for the server's
// first SETTINGS frame. The connection is closed when the test ends.
func DialH2(t testing.TB, addr string, tlsConf *tls.Config) *H2Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	if tlsConf != nil {
		cfg := tlsConf.Clone()
		cfg.NextProtos = []string{"h2"}
		tc := tls.Client(nc, cfg)
		if err := tc.Handshake(); err != nil {
			nc.Close()
			t.Fatalf("TLS handshake: %v", err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			nc.Close()
			t.Fatalf("ALPN negotiated %q, want h2", p)
		}
		nc = tc
	}
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &H2Conn{
		t: t, nc: nc, fr: http2.NewFramer(nc, nc), nextID: 1,
		streams: make(map[uint32]*H2Stream), owed: make(map[uint32]int), sendWindow: 65535, initWindow: 65535, maxFrame: 16384,
		done: make(chan struct{}),
	}
	c.cond = sync.NewCond(&c.mu)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatalf("writing the preface: %v", err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatalf("writing SETTINGS: %v", err)
	}
	go c.readLoop()
	t.Cleanup(c.Close)
	c.mu.Lock()
	for c.settings == nil && c.readErr == nil {
		c.cond.Wait()
	}
	err = c.readErr
	c.mu.Unlock()
	if err != nil {
		t.Fatalf("reading the server's SETTINGS: %v", err)
	}
	return c
}

// Close closes the connection and waits for the frame reader to stop.
func (c *H2Conn) Close() {
	c.nc.Close()
	<-c.done
}

// Setting returns the value of id in the server's first SETTINGS frame.
func (c *H2Conn) Setting(id http2.SettingID) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.settings[id]
	return v, ok
}

// Log returns one line per frame read so far, such as
// "DATA stream=1 len=5 END_STREAM" or "RST_STREAM stream=1 NO_ERROR".
func (c *H2Conn) Log() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

// GoAway returns the error code of the GOAWAY the server sent, or nil.
func (c *H2Conn) GoAway() *http2.ErrCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.goAway
}

// HoldCredit stops crediting the server for the DATA it sends, so that
// its flow-control windows fall to zero, or, with hold false, credits
// all it held back and goes back to crediting DATA as it arrives.
func (c *H2Conn) HoldCredit(hold bool) {
	c.mu.Lock()
	c.hold = hold
	owed := c.owed
	c.owed = make(map[uint32]int)
	c.mu.Unlock()
	if hold {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for id, n := range owed {
		if n > 0 {
			_ = c.fr.WriteWindowUpdate(id, uint32(n))
		}
	}
}

// Open sends a HEADERS frame opening a stream with the given header fields
// (pseudo-headers first, as given), ending the stream at once if
// endStream is set.
func (c *H2Conn) Open(fields [][2]string, endStream bool) *H2Stream {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	s := &H2Stream{c: c, ID: c.nextID, sendWindow: c.initWindow}
	c.nextID += 2
	c.streams[s.ID] = s
	c.mu.Unlock()
	c.hbuf.Reset()
	for _, f := range fields {
		_ = c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.ID, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: endStream})
	if err != nil {
		c.t.Errorf("writing HEADERS: %v", err)
	}
	return s
}

// Connect opens an extended CONNECT stream (RFC 8441) for protocol to path
// on authority, with extra header fields.
func (c *H2Conn) Connect(scheme, authority, path, protocol string, extra ...[2]string) *H2Stream {
	fields := [][2]string{{":method", "CONNECT"}, {":protocol", protocol}, {":scheme", scheme}, {":path", path}, {":authority", authority}}
	return c.Open(append(fields, extra...), false)
}

func (c *H2Conn) readLoop() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		c.handle(f)
	}
}

func (c *H2Conn) handle(f http2.Frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.cond.Broadcast()
	c.log = append(c.log, describe(f))
	switch f := f.(type) {
	case *http2.SettingsFrame:
		c.handleSettings(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			go c.write(func() error { return c.fr.WritePing(true, data) })
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.sendWindow += int64(f.Increment)
		} else if s := c.streams[f.StreamID]; s != nil {
			s.sendWindow += int64(f.Increment)
		}
	case *http2.MetaHeadersFrame:
		if s := c.streams[f.StreamID]; s != nil {
			if !s.gotHeader {
				s.header = make(map[string][]string)
				for _, hf := range f.Fields {
					s.header[hf.Name] = append(s.header[hf.Name], hf.Value)
				}
				s.gotHeader = true
			}
			s.ended = s.ended || f.StreamEnded()
		}
	case *http2.DataFrame:
		n := len(f.Data())
		if s := c.streams[f.StreamID]; s != nil {
			s.data.Write(f.Data())
			s.ended = s.ended || f.StreamEnded()
		}
		if n > 0 && c.hold {
			c.owed[0] += n
			c.owed[f.StreamID] += n
		} else if n > 0 {
			id := f.StreamID
			go c.write(func() error {
				if err := c.fr.WriteWindowUpdate(0, uint32(n)); err != nil {
					return err
				}
				return c.fr.WriteWindowUpdate(id, uint32(n))
			})
		}
	case *http2.RSTStreamFrame:
		if s := c.streams[f.StreamID]; s != nil {
			code := f.ErrCode
			s.reset = &code
		}
	case *http2.GoAwayFrame:
		code := f.ErrCode
		c.goAway = &code
	}
}

// handleSettings applies the server's SETTINGS, with c.mu held, and
// acknowledges them.
func (c *H2Conn) handleSettings(f *http2.SettingsFrame) {
	if f.IsAck() {
		return
	}
	first := c.settings == nil
	if first {
		c.settings = make(map[http2.SettingID]uint32)
	}
	_ = f.ForeachSetting(func(s http2.Setting) error {
		if first {
			c.settings[s.ID] = s.Val
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.initWindow
			c.initWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = int(s.Val)
		}
		return nil
	})
	go c.write(func() error { return c.fr.WriteSettingsAck() })
}

// write runs a frame write under the write lock; errors after the
// connection is closed are expected and ignored.
func (c *H2Conn) write(f func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = f()
}

func describe(f http2.Frame) string {
	h := f.Header()
	s := fmt.Sprintf("%s stream=%d", h.Type, h.StreamID)
	switch f := f.(type) {
	case *http2.DataFrame:
		s += fmt.Sprintf(" len=%d", len(f.Data()))
	case *http2.MetaHeadersFrame:
		s += " :status=" + f.PseudoValue("status")
	case *http2.RSTStreamFrame:
		s += " " + f.ErrCode.String()
	case *http2.GoAwayFrame:
		s += " " + f.ErrCode.String()
	}
	if h.Flags.Has(http2.FlagDataEndStream) && (h.Type == http2.FrameData || h.Type == http2.FrameHeaders) {
		s += " END_STREAM"
	}
	return s
}

// wait waits, up to d, until cond (called with c.mu held) is true or the
// connection failed; it reports whether cond became true.
func (c *H2Conn) wait(d time.Duration, cond func() bool) bool {
	timer := time.AfterFunc(d, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	for !cond() {
		if c.readErr != nil || !time.Now().Before(deadline) {
			return false
		}
		c.cond.Wait()
	}
	return true
}

// Header waits for the response header fields of s.
func (s *H2Stream) Header() map[string][]string {
	s.c.t.Helper()
	if !s.c.wait(10*time.Second, func() bool { return s.gotHeader || s.reset != nil }) {
		s.c.t.Fatalf("stream %d: no response header (frames: %s)", s.ID, strings.Join(s.c.Log(), "; "))
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.header
}

// Status waits for the response header and returns its :status, or "" if
// the stream was reset first.
func (s *H2Stream) Status() string {
	h := s.Header()
	if v := h[":status"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Write sends p as DATA frames within the flow-control windows.
func (s *H2Stream) Write(p []byte) {
	s.c.t.Helper()
	for len(p) > 0 {
		var n int
		ok := s.c.wait(10*time.Second, func() bool {
			n = int(min(int64(len(p)), s.sendWindow, s.c.sendWindow, int64(s.c.maxFrame)))
			return n > 0 || s.reset != nil
		})
		if !ok {
			s.c.t.Fatalf("stream %d: no flow-control window to send %d bytes", s.ID, len(p))
		}
		s.c.mu.Lock()
		if s.reset != nil {
			s.c.mu.Unlock()
			s.c.t.Fatalf("stream %d: reset with %v while writing", s.ID, *s.reset)
		}
		s.sendWindow -= int64(n)
		s.c.sendWindow -= int64(n)
		s.c.mu.Unlock()
		s.c.wmu.Lock()
		err := s.c.fr.WriteData(s.ID, false, p[:n])
		s.c.wmu.Unlock()
		if err != nil {
			s.c.t.Fatalf("stream %d: writing DATA: %v", s.ID, err)
		}
		p = p[n:]
	}
}

// CloseWrite sends an empty DATA frame with END_STREAM.
func (s *H2Stream) CloseWrite() {
	s.c.wmu.Lock()
	defer s.c.wmu.Unlock()
	if err := s.c.fr.WriteData(s.ID, true, nil); err != nil {
		s.c.t.Errorf("stream %d: writing END_STREAM: %v", s.ID, err)
	}
}

// Reset sends RST_STREAM with code.
func (s *H2Stream) Reset(code http2.ErrCode) {
	s.c.wmu.Lock()
	defer s.c.wmu.Unlock()
	_ = s.c.fr.WriteRSTStream(s.ID, code)
}

// Read waits until n bytes of DATA have arrived and returns them.
func (s *H2Stream) Read(n int) []byte {
	s.c.t.Helper()
	if !s.c.wait(20*time.Second, func() bool { return s.data.Len() >= n || s.ended || s.reset != nil }) {
		s.c.t.Fatalf("stream %d: waited for %d bytes, have %d", s.ID, n, s.Buffered())
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.data.Len() < n {
		s.c.t.Fatalf("stream %d: ended after %d bytes, want %d (reset %v)", s.ID, s.data.Len(), n, s.reset)
	}
	return bytes.Clone(s.data.Next(n))
}

// Buffered returns the number of bytes received and not read yet.
func (s *H2Stream) Buffered() int {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.data.Len()
}

// End waits until the server ends the stream, with END_STREAM or
// RST_STREAM, and returns the data not read yet, whether END_STREAM came,
// and the reset code if one came.
func (s *H2Stream) End() (rest []byte, ended bool, reset *http2.ErrCode) {
	s.c.t.Helper()
	if !s.c.wait(20*time.Second, func() bool { return s.ended || s.reset != nil }) {
		s.c.t.Fatalf("stream %d: not ended (frames: %s)", s.ID, strings.Join(s.c.Log(), "; "))
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return bytes.Clone(s.data.Next(s.data.Len())), s.ended, s.reset
}

// WaitReset waits up to d for a RST_STREAM on s and returns its code, or
// nil if none came.
func (s *H2Stream) WaitReset(d time.Duration) *http2.ErrCode {
	s.c.wait(d, func() bool { return s.reset != nil })
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.reset
}
