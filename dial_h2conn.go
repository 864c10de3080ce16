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
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 client connection of a Dialer: what extended CONNECT streams
// (RFC 8441) need of RFC 9113, on x/net's Framer and hpack. net/http's
// Transport rejects the :protocol pseudo-header, and x/net's, deprecated,
// hands requests to it from Go 1.27 on.

const (
	// h2StreamWindow is our SETTINGS_INITIAL_WINDOW_SIZE: the most a
	// stream buffers that its reader has not taken.
	h2StreamWindow = 256 << 10

	// h2ConnWindow is the connection's receive window, credited as soon
	// as DATA is buffered: a stalled reader does not stall other streams.
	h2ConnWindow = 1 << 20

	h2MaxStreamID   = 1<<31 - 1 // RFC 9113 §5.1.1
	h2MaxWindow     = 1<<31 - 1 // RFC 9113 §6.9.1
	h2InitialWindow = 65535     // RFC 9113 §6.9.2, until SETTINGS say otherwise
)

// errStreamUnprocessed is wrapped by the error of a stream the server did
// not process (GOAWAY, REFUSED_STREAM): it can be sent again.
var errStreamUnprocessed = errors.New("HTTP/2 stream not processed by the server")

// errH2ConnLost is wrapped by the errors of a lost connection's streams.
var errH2ConnLost = errors.New("HTTP/2 connection lost")

// h2Conn is an HTTP/2 client connection on which Dials open extended
// CONNECT streams. readLoop reads its frames; any goroutine writes them,
// under wmu.
type h2Conn struct {
	t      *HTTP2Transport
	key    h2Key
	nc     net.Conn
	tls    *tls.ConnectionState // nil without TLS
	local  net.Addr
	remote net.Addr

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

// newConn starts HTTP/2 on nc as a client: it writes the connection
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
	// A stream checks our limit exactly; a header block over twice it,
	// or a CONTINUATION flood, fails the connection.
	c.fr.MaxHeaderListSize = uint32(min(2*uint64(c.key.maxHeader), math.MaxUint32))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)

	c.wmu.Lock()
	_, err := c.bw.WriteString(http2.ClientPreface)
	if err == nil {
		err = c.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.key.maxHeader},
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

// settings reports whether the server's first SETTINGS enabled extended
// CONNECT, or why they never came.
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

// idleLocked starts the idle timer if no stream is left, or reports that
// the connection must be closed now.
func (c *h2Conn) idleLocked() (closeNow bool) {
	if len(c.streams) > 0 || c.reserved > 0 || c.err != nil {
		return false
	}
	if c.closing || c.goAway {
		c.closing = true
		return true
	}
	if d := timeoutOr(c.t.IdleConnTimeout, defaultHTTP2IdleConnTimeout); d > 0 {
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

// close closes the TCP connection; readLoop then fails what is left.
func (c *h2Conn) close() {
	_ = c.nc.Close()
}

// open opens a stream reserved with reserve, sending fields (pseudo-header
// fields first) in HEADERS and CONTINUATION frames.
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

	err := c.writeLocked(func(fr *http2.Framer) error {
		c.hbuf.Reset()
		for _, f := range fields {
			if err := c.henc.WriteField(f); err != nil {
				return err
			}
		}
		block := c.hbuf.Bytes()
		first := block[:min(len(block), maxFrame)]
		block = block[len(first):]
		err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: first, EndHeaders: len(block) == 0})
		for err == nil && len(block) > 0 {
			frag := block[:min(len(block), maxFrame)]
			block = block[len(frag):]
			err = fr.WriteContinuation(s.id, len(block) == 0, frag)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// brokenLocked records a write error, which breaks the connection, closes
// the connection and returns the error to report. c.wmu is held.
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
// set; the caller took the flow-control windows.
func (c *h2Conn) writeData(s *h2Stream, p []byte, end bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// Checked under wmu: no DATA follows a RST_STREAM sent by Close.
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
		closeNow := s.recvEnd && c.forgetLocked(s)
		c.mu.Unlock()
		if closeNow {
			c.close()
		}
	}
	return err
}

// forgetLocked removes s from the connection's streams and reports
// whether the connection must now be closed.
func (c *h2Conn) forgetLocked(s *h2Stream) (closeNow bool) {
	if c.streams[s.id] != s {
		return false
	}
	delete(c.streams, s.id)
	return c.idleLocked()
}

// readLoop handles the server's frames until the connection fails or is
// closed, then fails the streams left.
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

// fail ends the connection with err: its streams fail, and the transport
// forgets it.
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
