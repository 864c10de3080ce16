package upgrade

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 client connection of a Dialer: just what extended CONNECT
// streams (RFC 8441) need of RFC 9113, on golang.org/x/net/http2's Framer
// and hpack. net/http's Transport rejects the :protocol pseudo-header, and
// x/net's Transport, deprecated, hands requests to it from Go 1.27 on.

const (
	// h2StreamWindow is the SETTINGS_INITIAL_WINDOW_SIZE a client
	// connection announces: the most a stream buffers that its reader has
	// not taken. The window is credited again as the reader reads.
	h2StreamWindow = 256 << 10

	// h2ConnWindow is the connection's receive window. It is credited as
	// soon as DATA is buffered, so that a stream whose reader stalls does
	// not stall the others: each stream's own window bounds its buffer.
	h2ConnWindow = 1 << 20

	// h2MaxInterim bounds the interim 1xx responses before the final one.
	h2MaxInterim = 8

	// h2MaxStreamID is the largest stream identifier (RFC 9113 §5.1.1).
	h2MaxStreamID = 1<<31 - 1

	// h2MaxWindow is the largest flow-control window (RFC 9113 §6.9.1).
	h2MaxWindow = 1<<31 - 1

	// h2InitialWindow is the window of RFC 9113 §6.9.2 before SETTINGS
	// say otherwise.
	h2InitialWindow = 65535
)

// errStreamUnprocessed is wrapped by the error of a stream the server
// did not process (GOAWAY with a lower last stream, REFUSED_STREAM): the
// extended CONNECT can be sent again, on another connection.
var errStreamUnprocessed = errors.New("HTTP/2 stream not processed by the server")

// errH2ConnLost is wrapped by the errors of the streams of a connection
// that failed or was closed.
var errH2ConnLost = errors.New("HTTP/2 connection lost")

// h2Conn is an HTTP/2 client connection on which Dials open extended
// CONNECT streams. A goroutine reads its frames (readLoop); frames are
// written by the goroutine that has something to send, under wmu.
type h2Conn struct {
	t         *HTTP2Transport
	key       h2Key
	nc        net.Conn
	tls       *tls.ConnectionState // nil without TLS
	local     net.Addr
	remote    net.Addr
	maxHeader uint32 // our SETTINGS_MAX_HEADER_LIST_SIZE

	fr *http2.Framer // ReadFrame: readLoop only; Write*: under wmu

	wmu  sync.Mutex // serializes writes to fr, bw, henc and hbuf
	bw   *bufio.Writer
	henc *hpack.Encoder
	hbuf bytes.Buffer
	werr error // the first write error: the connection is broken

	settingsDone chan struct{} // closed on the server's first SETTINGS, or when reading ends before
	readDone     chan struct{} // closed when readLoop returns

	mu          sync.Mutex
	streams     map[uint32]*h2Stream
	nextID      uint32 // the next stream identifier
	reserved    int    // streams reserved by Dials and not opened yet
	sawSettings bool
	extConnect  bool   // SETTINGS_ENABLE_CONNECT_PROTOCOL = 1
	maxStreams  uint32 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	peerWindow  int64  // the server's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame    uint32 // the server's SETTINGS_MAX_FRAME_SIZE
	sendWindow  int64  // what we may send on the connection
	recvWindow  int64  // what the server may send on the connection
	recvUnacked int64  // DATA received and not credited yet
	goAway      bool   // the server sent GOAWAY: no new streams
	closing     bool   // no new streams: closed once the last ends
	err         error  // why the connection ended; set once
	idle        *time.Timer
}

// newH2Conn starts HTTP/2 on nc as a client: it writes the connection
// preface, SETTINGS and the connection's window, and starts reading. The
// caller waits for settingsDone before it opens streams.
func (t *HTTP2Transport) newConn(key h2Key, nc net.Conn, tlsState *tls.ConnectionState) (*h2Conn, error) {
	c := &h2Conn{
		t:            t,
		key:          key,
		nc:           nc,
		tls:          tlsState,
		local:        nc.LocalAddr(),
		remote:       nc.RemoteAddr(),
		maxHeader:    key.maxHeader,
		bw:           bufio.NewWriterSize(nc, 4<<10),
		settingsDone: make(chan struct{}),
		readDone:     make(chan struct{}),
		streams:      make(map[uint32]*h2Stream),
		nextID:       1,
		maxStreams:   h2MaxStreamID, // no limit until SETTINGS say one
		peerWindow:   h2InitialWindow,
		maxFrame:     16 << 10,
		sendWindow:   h2InitialWindow,
		recvWindow:   h2ConnWindow,
	}
	c.fr = http2.NewFramer(c.bw, nc)
	c.fr.SetMaxReadFrameSize(16 << 10) // the default; we announce no other
	c.fr.SetReuseFrames()
	// The Framer decodes at most twice our limit, which a stream checks
	// exactly: a response a little over it fails its stream only, and
	// one far over it, or a CONTINUATION flood, fails the connection.
	c.fr.MaxHeaderListSize = uint32(min(2*uint64(c.maxHeader), math.MaxUint32))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)

	c.wmu.Lock()
	_, err := c.bw.WriteString(http2.ClientPreface)
	if err == nil {
		err = c.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.maxHeader},
		)
	}
	if err == nil {
		err = c.fr.WriteWindowUpdate(0, h2ConnWindow-h2InitialWindow)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("writing the HTTP/2 connection preface: %w", err)
	}
	go c.readLoop()
	return c, nil
}

// settings reports, once the server's first SETTINGS frame has arrived,
// whether it enables extended CONNECT; err is why it never came.
func (c *h2Conn) settings() (extConnect bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sawSettings {
		return false, c.err
	}
	return c.extConnect, nil
}

// reserve reserves a stream for a Dial, if the connection takes another.
func (c *h2Conn) reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.closing || c.goAway || !c.extConnect {
		return false
	}
	n := len(c.streams) + c.reserved
	if uint64(n) >= uint64(c.maxStreams) || uint64(c.nextID)+2*uint64(c.reserved) > h2MaxStreamID {
		return false
	}
	c.reserved++
	if c.idle != nil {
		c.idle.Stop()
	}
	return true
}

// idleLocked starts the idle timer if the connection has no stream left,
// and reports whether it must be closed now instead.
func (c *h2Conn) idleLocked() (closeNow bool) {
	if len(c.streams) > 0 || c.reserved > 0 || c.err != nil {
		return false
	}
	if c.closing || c.goAway {
		c.closing = true
		return true
	}
	if d := c.t.idleConnTimeout(); d > 0 {
		if c.idle == nil {
			c.idle = time.AfterFunc(d, c.idleTimeout)
		} else {
			c.idle.Reset(d)
		}
	}
	return false
}

// idleTimeout closes the connection if it is still idle.
func (c *h2Conn) idleTimeout() {
	if c.closeIfIdle() {
		c.t.remove(c)
	}
}

// closeIfIdle closes the connection if it has no stream, open or
// reserved, and reports whether it did.
func (c *h2Conn) closeIfIdle() bool {
	c.mu.Lock()
	idle := len(c.streams) == 0 && c.reserved == 0 && c.err == nil
	if idle {
		c.closing = true
	}
	c.mu.Unlock()
	if idle {
		c.close()
	}
	return idle
}

// usable reports whether the connection may still carry new streams.
func (c *h2Conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && !c.closing && !c.goAway
}

// close closes the TCP connection; readLoop then fails what is left.
func (c *h2Conn) close() {
	_ = c.nc.Close()
}

// open opens a stream reserved with reserve, sending a HEADERS frame (and
// CONTINUATION frames) with fields, pseudo-header fields first.
func (c *h2Conn) open(fields []hpack.HeaderField) (*h2Stream, error) {
	s := &h2Stream{
		c:          c,
		respDone:   make(chan struct{}),
		closed:     make(chan struct{}),
		rwake:      make(chan struct{}, 1),
		wwake:      make(chan struct{}, 1),
		wsem:       make(chan struct{}, 1),
		recvWindow: h2StreamWindow,
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	c.reserved--
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return nil, err
	case c.goAway:
		closeNow := c.idleLocked()
		c.mu.Unlock()
		if closeNow {
			c.close()
		}
		return nil, errStreamUnprocessed
	}
	s.id = c.nextID
	c.nextID += 2
	s.sendWindow = c.peerWindow
	c.streams[s.id] = s
	maxFrame := int(c.maxFrame)
	c.mu.Unlock()

	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return nil, c.brokenLocked(err)
		}
	}
	block := c.hbuf.Bytes()
	first := block[:min(len(block), maxFrame)]
	block = block[len(first):]
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: first, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 {
		frag := block[:min(len(block), maxFrame)]
		block = block[len(frag):]
		err = c.fr.WriteContinuation(s.id, len(block) == 0, frag)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return nil, c.brokenLocked(err)
	}
	return s, nil
}

// brokenLocked records a write error, which breaks the connection, and
// closes it; it returns the error to report. c.wmu is held.
func (c *h2Conn) brokenLocked(err error) error {
	if c.werr == nil {
		c.werr = fmt.Errorf("%w: writing: %w", errH2ConnLost, err)
		c.close()
	}
	return c.werr
}

// write writes one or more frames with f, under wmu, and flushes them.
func (c *h2Conn) write(f func(fr *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(f)
}

func (c *h2Conn) writeLocked(f func(fr *http2.Framer) error) error {
	if c.werr != nil {
		return c.werr
	}
	err := f(c.fr)
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return c.brokenLocked(err)
	}
	return nil
}

// writeData sends p as one DATA frame of s, ending the stream if end is
// set, unless s can no longer send; the flow-control windows were taken
// by the caller.
func (c *h2Conn) writeData(s *h2Stream, p []byte, end bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Checked under wmu: once Close has reset the stream, no DATA of it
	// follows the RST_STREAM.
	c.mu.Lock()
	err := s.writableLocked()
	if err == nil && end {
		s.sentEnd = true
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	err = c.writeLocked(func(fr *http2.Framer) error { return fr.WriteData(s.id, end, p) })
	if err == nil && end {
		c.mu.Lock()
		closeNow := false
		if s.recvEnd {
			closeNow = c.forgetLocked(s)
		}
		c.mu.Unlock()
		if closeNow {
			c.close()
		}
	}
	return err
}

// forgetLocked removes s from the connection's streams, which frees its
// slot, and reports whether the connection must now be closed.
func (c *h2Conn) forgetLocked(s *h2Stream) (closeNow bool) {
	if c.streams[s.id] != s {
		return false
	}
	delete(c.streams, s.id)
	return c.idleLocked()
}

// readLoop reads and handles the server's frames until the connection
// fails or is closed, then fails the streams left.
func (c *h2Conn) readLoop() {
	defer close(c.readDone)
	err := c.readFrames()
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		// The server opened no stream of ours to process: last is 0.
		_ = c.write(func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCode(ce), nil) })
		err = fmt.Errorf("HTTP/2 protocol error from the server: %w", err)
	}
	c.fail(err)
}

// fail ends the connection with err: the streams left fail, and the
// transport forgets the connection.
func (c *h2Conn) fail(err error) {
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: %w", errH2ConnLost, err)
	}
	if c.idle != nil {
		c.idle.Stop()
	}
	streams := c.streams
	c.streams = make(map[uint32]*h2Stream)
	for _, s := range streams {
		s.failLocked(c.err)
	}
	if !c.sawSettings {
		close(c.settingsDone)
	}
	c.mu.Unlock()
	c.close()
	c.t.remove(c)
}

func (c *h2Conn) readFrames() error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// A malformed header block on one stream (the decoder's
				// state is intact): that stream fails.
				c.resetStream(se.StreamID, se.Code, fmt.Errorf("HTTP/2 stream error from the server: %w", se))
				continue
			}
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			err = c.handleSettings(f)
		case *http2.MetaHeadersFrame:
			err = c.handleHeaders(f)
		case *http2.DataFrame:
			err = c.handleData(f)
		case *http2.WindowUpdateFrame:
			err = c.handleWindowUpdate(f)
		case *http2.RSTStreamFrame:
			err = c.handleReset(f)
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				err = c.write(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
			}
		case *http2.GoAwayFrame:
			c.handleGoAway(f)
		case *http2.PushPromiseFrame:
			// We said SETTINGS_ENABLE_PUSH 0 (RFC 9113 §8.4).
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// PRIORITY, PRIORITY_UPDATE and unknown frames are ignored.
		if err != nil {
			return err
		}
	}
}

func (c *h2Conn) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	tableSize := int64(-1)
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = s.Val
		case http2.SettingInitialWindowSize:
			// Changes the window of every open stream (RFC 9113
			// §6.9.2), which may become negative.
			delta := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > h2MaxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.wakeWriter()
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = s.Val
		case http2.SettingHeaderTableSize:
			tableSize = int64(s.Val)
		case http2.SettingEnableConnectProtocol:
			if !c.sawSettings {
				c.extConnect = s.Val == 1
			} else if c.extConnect && s.Val == 0 {
				// RFC 8441 §3: it cannot be withdrawn.
				return http2.ConnectionError(http2.ErrCodeProtocol)
			}
		}
		return nil
	})
	if !c.sawSettings {
		c.sawSettings = true
		close(c.settingsDone)
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.write(func(fr *http2.Framer) error {
		if tableSize >= 0 {
			c.henc.SetMaxDynamicTableSizeLimit(uint32(min(tableSize, 4096)))
		}
		return fr.WriteSettingsAck()
	})
}

// streamLocked returns the open stream id, or nil for a stream that is
// closed. A frame for a stream that was never opened is a connection
// error (RFC 9113 §5.1): ok is false.
func (c *h2Conn) streamLocked(id uint32) (s *h2Stream, ok bool) {
	if s := c.streams[id]; s != nil {
		return s, true
	}
	return nil, id%2 == 1 && id < c.nextID
}

func (c *h2Conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	s, ok := c.streamLocked(f.StreamID)
	if s == nil {
		c.mu.Unlock()
		if !ok {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	code, err := s.headersLocked(f, c.maxHeader)
	closeNow := false
	if err != nil {
		s.failLocked(err)
		closeNow = c.forgetLocked(s)
	} else if s.recvEnd && s.sentEnd {
		closeNow = c.forgetLocked(s)
	}
	c.mu.Unlock()
	if err != nil {
		c.writeReset(s.id, code)
	}
	if closeNow {
		c.close()
	}
	return nil
}

func (c *h2Conn) handleData(f *http2.DataFrame) error {
	n := int64(f.Header().Length) // padding included (RFC 9113 §6.9.1)
	c.mu.Lock()
	if n > c.recvWindow {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	// The connection is credited at once: a stream's window, credited
	// as its reader reads, bounds what it buffers.
	c.recvWindow -= n
	c.recvUnacked += n
	var connCredit int64
	if c.recvUnacked >= h2ConnWindow/4 {
		connCredit, c.recvUnacked = c.recvUnacked, 0
		c.recvWindow += connCredit
	}
	s, ok := c.streamLocked(f.StreamID)
	var (
		code        http2.ErrCode
		err         error
		closeNow    bool
		streamCheck int64
	)
	switch {
	case s == nil && !ok:
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	case s == nil:
		// A stream we closed: its DATA only counts for the connection.
	case !s.gotResp:
		code, err = http2.ErrCodeProtocol, errors.New("DATA before the response header")
	case s.recvEnd:
		code, err = http2.ErrCodeStreamClosed, errors.New("DATA after END_STREAM")
	case n > s.recvWindow:
		code, err = http2.ErrCodeFlowControl, errors.New("DATA beyond the stream's flow-control window")
	default:
		s.recvWindow -= n
		data := f.Data()
		s.bufferLocked(data)
		// Padding is credited back as if read at once.
		streamCheck = s.creditLocked(n - int64(len(data)))
		if f.StreamEnded() {
			s.recvEnd = true
			if s.sentEnd {
				closeNow = c.forgetLocked(s)
			}
		}
		s.wakeReader()
	}
	if err != nil {
		s.failLocked(fmt.Errorf("HTTP/2 stream error: %w", err))
		closeNow = c.forgetLocked(s)
	}
	c.mu.Unlock()
	if err != nil {
		c.writeReset(s.id, code)
	}
	if connCredit > 0 || streamCheck > 0 {
		werr := c.write(func(fr *http2.Framer) error {
			if connCredit > 0 {
				if err := fr.WriteWindowUpdate(0, uint32(connCredit)); err != nil {
					return err
				}
			}
			if streamCheck > 0 {
				return fr.WriteWindowUpdate(s.id, uint32(streamCheck))
			}
			return nil
		})
		if werr != nil {
			return werr
		}
	}
	if closeNow {
		c.close()
	}
	return nil
}

func (c *h2Conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > h2MaxWindow {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		for _, s := range c.streams {
			s.wakeWriter()
		}
		c.mu.Unlock()
		return nil
	}
	s, ok := c.streamLocked(f.StreamID)
	if s == nil {
		c.mu.Unlock()
		if !ok {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	s.sendWindow += inc
	overflow := s.sendWindow > h2MaxWindow
	closeNow := false
	if overflow {
		s.failLocked(errors.New("HTTP/2 stream error: flow-control window overflow"))
		closeNow = c.forgetLocked(s)
	}
	s.wakeWriter()
	c.mu.Unlock()
	if overflow {
		c.writeReset(s.id, http2.ErrCodeFlowControl)
	}
	if closeNow {
		c.close()
	}
	return nil
}

func (c *h2Conn) handleReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	s, ok := c.streamLocked(f.StreamID)
	if s == nil {
		c.mu.Unlock()
		if !ok {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	err := fmt.Errorf("%w: HTTP/2 stream reset by the server (%v)", syscall.ECONNRESET, f.ErrCode)
	if f.ErrCode == http2.ErrCodeRefusedStream && !s.gotResp {
		// Not processed (RFC 9113 §8.7): it may be sent again.
		err = fmt.Errorf("%w: %w", errStreamUnprocessed, err)
	}
	s.failLocked(err)
	closeNow := c.forgetLocked(s)
	c.mu.Unlock()
	if closeNow {
		c.close()
	}
	return nil
}

// handleGoAway stops new streams on the connection and fails those the
// server did not process; the others go on until they end.
func (c *h2Conn) handleGoAway(f *http2.GoAwayFrame) {
	err := fmt.Errorf("%w: GOAWAY (%v) with last stream %d", errStreamUnprocessed, f.ErrCode, f.LastStreamID)
	c.mu.Lock()
	c.goAway = true
	var closeNow bool
	for id, s := range c.streams {
		if id > f.LastStreamID {
			s.failLocked(err)
			if c.forgetLocked(s) {
				closeNow = true
			}
		}
	}
	if c.idleLocked() {
		closeNow = true
	}
	c.mu.Unlock()
	c.t.remove(c)
	if closeNow {
		c.close()
	}
}

// resetStream fails stream id with err, and sends RST_STREAM with code.
func (c *h2Conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	s := c.streams[id]
	closeNow := false
	if s != nil {
		s.failLocked(err)
		closeNow = c.forgetLocked(s)
	}
	c.mu.Unlock()
	c.writeReset(id, code)
	if closeNow {
		c.close()
	}
}

// writeReset sends RST_STREAM; a write error breaks the connection, which
// readLoop then reports.
func (c *h2Conn) writeReset(id uint32, code http2.ErrCode) {
	_ = c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

// h2HeaderSize is the size of a header field as
// SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 §6.5.2).
func h2HeaderSize(f hpack.HeaderField) int64 {
	return int64(len(f.Name) + len(f.Value) + 32)
}

// lowerHeaderName returns a field name as HTTP/2 sends it.
func lowerHeaderName(k string) string {
	for i := 0; i < len(k); i++ {
		if 'A' <= k[i] && k[i] <= 'Z' {
			return strings.ToLower(k)
		}
	}
	return k
}
