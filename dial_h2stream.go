package upgrade

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-upgrade/upgrade/internal/deadline"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Stream is the net.Conn of a protocol switched on a stream of an
// h2Conn with extended CONNECT (RFC 8441): Read returns the DATA the
// server sends, Write sends DATA within the flow-control windows,
// CloseWrite sends END_STREAM, and Close resets the stream (RST_STREAM
// CANCEL) unless both sides have ended it. The TCP connection under it is
// shared with other streams and never exposed.
//
// Deadlines have the semantics of net.Conn: they apply to pending and
// future calls, can be extended or cleared after they expired, and a call
// they interrupt fails with an error wrapping os.ErrDeadlineExceeded
// whose Timeout method reports true. A Read they interrupt loses nothing:
// the data stays buffered for the next Read.
type h2Stream struct {
	c  *h2Conn
	id uint32

	respDone chan struct{} // closed once the response arrived or the stream failed
	closed   chan struct{} // closed by Close
	rwake    chan struct{} // a token when there is something new to read
	wwake    chan struct{} // a token when a window grew or the stream ended
	wsem     chan struct{} // held by the Write or CloseWrite in progress
	rd, wd   deadline.Deadline

	// Guarded by c.mu.
	gotResp     bool
	respSignal  bool
	status      int
	header      http.Header
	interim     int   // interim 1xx responses received
	headerBytes int64 // header list bytes received
	sendWindow  int64 // what we may send
	recvWindow  int64 // what the server may send
	unacked     int64 // bytes read and not credited to the server yet
	buf         []byte
	off         int  // buf[off:] is unread
	recvEnd     bool // END_STREAM received
	sentEnd     bool // END_STREAM sent
	err         error
	isClosed    bool
}

// maxIdleStreamBuf is the largest receive buffer a stream keeps once its
// reader has emptied it.
const maxIdleStreamBuf = 32 << 10

// headersLocked handles a header block of s: an interim or the final
// response, or trailers, which end the stream. It returns the RST_STREAM
// code to send with a stream error.
func (s *h2Stream) headersLocked(f *http2.MetaHeadersFrame, maxHeader uint32) (http2.ErrCode, error) {
	tooLarge := fmt.Errorf("response header fields over %d bytes (SETTINGS_MAX_HEADER_LIST_SIZE)", maxHeader)
	if f.Truncated {
		return http2.ErrCodeCancel, tooLarge
	}
	for _, hf := range f.Fields {
		s.headerBytes += h2HeaderSize(hf)
	}
	if s.headerBytes > int64(maxHeader) {
		return http2.ErrCodeCancel, tooLarge
	}
	if s.gotResp {
		if !f.StreamEnded() {
			return http2.ErrCodeProtocol, errors.New("HEADERS after the response without END_STREAM")
		}
		s.recvEnd = true // trailers: the stream's data has ended
		s.wakeReader()
		return 0, nil
	}
	for _, hf := range f.PseudoFields() {
		if hf.Name != ":status" {
			return http2.ErrCodeProtocol, fmt.Errorf("pseudo-header field %s in a response", hf.Name)
		}
	}
	v := f.PseudoValue("status")
	status, err := strconv.Atoi(v)
	if len(v) != 3 || err != nil || status < 100 {
		return http2.ErrCodeProtocol, fmt.Errorf("invalid :status %q", v)
	}
	if status < 200 {
		s.interim++
		switch {
		case status == http.StatusSwitchingProtocols:
			return http2.ErrCodeProtocol, errors.New("101 Switching Protocols in HTTP/2")
		case f.StreamEnded():
			return http2.ErrCodeProtocol, fmt.Errorf("interim %d response ends the stream", status)
		case s.interim > maxInterimResponses:
			return http2.ErrCodeCancel, fmt.Errorf("more than %d interim responses", maxInterimResponses)
		}
		return 0, nil
	}
	regular := f.RegularFields()
	h := make(http.Header, len(regular))
	for _, hf := range regular {
		k := http.CanonicalHeaderKey(hf.Name)
		h[k] = append(h[k], hf.Value)
	}
	s.status, s.header, s.gotResp = status, h, true
	if f.StreamEnded() {
		s.recvEnd = true
	}
	s.signalResp()
	return 0, nil
}

func (s *h2Stream) signalResp() {
	if !s.respSignal {
		s.respSignal = true
		close(s.respDone)
	}
}

// failLocked ends s with err: what is buffered can still be read, then
// err is returned.
func (s *h2Stream) failLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	s.signalResp()
	s.wakeReader()
	s.wakeWriter()
}

func (s *h2Stream) wakeReader() {
	select {
	case s.rwake <- struct{}{}:
	default:
	}
}

func (s *h2Stream) wakeWriter() {
	select {
	case s.wwake <- struct{}{}:
	default:
	}
}

// bufferLocked keeps data for Read.
func (s *h2Stream) bufferLocked(data []byte) {
	if s.isClosed || len(data) == 0 {
		return
	}
	if s.off > 0 && len(s.buf)+len(data) > cap(s.buf) {
		n := copy(s.buf, s.buf[s.off:])
		s.buf, s.off = s.buf[:n], 0
	}
	s.buf = append(s.buf, data...)
}

// creditLocked counts n bytes as consumed and returns the window to
// credit the server with now, if any: credits go out in batches of a
// quarter of the window.
func (s *h2Stream) creditLocked(n int64) int64 {
	if n <= 0 || s.recvEnd || s.err != nil {
		return 0
	}
	s.unacked += n
	if s.unacked < h2StreamWindow/4 {
		return 0
	}
	credit := s.unacked
	s.unacked = 0
	s.recvWindow += credit
	return credit
}

// writableLocked returns why s cannot send, or nil.
func (s *h2Stream) writableLocked() error {
	switch {
	case s.isClosed:
		return net.ErrClosed
	case s.err != nil:
		return s.err
	case s.sentEnd:
		return errWriteClosed
	}
	return nil
}

// response waits for the final response of s, or for stop.
func (s *h2Stream) response(stop <-chan struct{}) (int, http.Header, error) {
	select {
	case <-s.respDone:
	case <-stop:
		return 0, nil, errStopped
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if !s.gotResp {
		return 0, nil, s.err
	}
	return s.status, s.header, nil
}

// errStopped is the error of a wait its caller stopped.
var errStopped = errors.New("stopped")

// Read reads the data the server sent on the stream. It returns io.EOF
// once the server has ended its side of the stream (END_STREAM), and an
// error wrapping syscall.ECONNRESET once it has reset it.
func (s *h2Stream) Read(p []byte) (int, error) {
	n, err := s.read(p)
	if err != nil && err != io.EOF {
		err = s.opError("read", err)
	}
	return n, err
}

func (s *h2Stream) read(p []byte) (int, error) {
	c := s.c
	for {
		c.mu.Lock()
		if s.isClosed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if s.off < len(s.buf) {
			n := copy(p, s.buf[s.off:])
			s.off += n
			if s.off == len(s.buf) {
				s.buf, s.off = s.buf[:0], 0
				if cap(s.buf) > maxIdleStreamBuf {
					s.buf = nil
				}
			}
			credit := s.creditLocked(int64(n))
			c.mu.Unlock()
			if credit > 0 {
				// A write error breaks the connection: the next Read
				// reports it.
				_ = c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(s.id, uint32(credit)) })
			}
			return n, nil
		}
		recvEnd, err := s.recvEnd, s.err
		c.mu.Unlock()
		switch {
		case recvEnd:
			return 0, io.EOF
		case err != nil:
			return 0, err
		case len(p) == 0:
			return 0, nil
		}
		select {
		case <-s.rwake:
		case <-s.closed:
		case <-s.rd.Done():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// lockWrite takes wsem, unless the write deadline passes or s is closed
// first.
func (s *h2Stream) lockWrite() error {
	select {
	case <-s.wd.Done():
		return os.ErrDeadlineExceeded
	case s.wsem <- struct{}{}:
		return nil
	default:
	}
	select {
	case s.wsem <- struct{}{}:
		return nil
	case <-s.wd.Done():
		return os.ErrDeadlineExceeded
	case <-s.closed:
		return net.ErrClosed
	}
}

// Write sends p on the stream as DATA frames, waiting for flow-control
// credit as needed. It returns once the last frame has been written, or
// fails with the bytes sent so far.
func (s *h2Stream) Write(p []byte) (int, error) {
	n, err := s.write(p)
	if err != nil {
		err = s.opError("write", err)
	}
	return n, err
}

func (s *h2Stream) write(p []byte) (n int, err error) {
	if err := s.lockWrite(); err != nil {
		return 0, err
	}
	defer func() { <-s.wsem }()
	c := s.c
	for {
		c.mu.Lock()
		if err := s.writableLocked(); err != nil {
			c.mu.Unlock()
			return n, err
		}
		if len(p) == 0 {
			c.mu.Unlock()
			return n, nil
		}
		select {
		case <-s.wd.Done():
			c.mu.Unlock()
			return n, os.ErrDeadlineExceeded
		default:
		}
		m := min(int64(len(p)), s.sendWindow, c.sendWindow, int64(c.maxFrame))
		if m <= 0 {
			c.mu.Unlock()
			select {
			case <-s.wwake:
			case <-s.closed:
			case <-s.wd.Done():
				return n, os.ErrDeadlineExceeded
			}
			continue
		}
		s.sendWindow -= m
		c.sendWindow -= m
		c.mu.Unlock()
		if err := c.writeData(s, p[:m], false); err != nil {
			return n, err
		}
		n += int(m)
		p = p[m:]
		if len(p) == 0 {
			// Sent: a reset that came meanwhile is for the next Write.
			return n, nil
		}
	}
}

// CloseWrite ends the stream in the client-to-server direction
// (END_STREAM): the server reads EOF, and Read still returns what it
// sends. Later Writes fail.
func (s *h2Stream) CloseWrite() error {
	if err := s.lockWrite(); err != nil {
		return s.opError("close", err)
	}
	defer func() { <-s.wsem }()
	s.c.mu.Lock()
	done := s.sentEnd && !s.isClosed
	s.c.mu.Unlock()
	if done {
		return nil
	}
	if err := s.c.writeData(s, nil, true); err != nil {
		return s.opError("close", err)
	}
	return nil
}

// Close resets the stream (RST_STREAM CANCEL) unless both sides have
// ended it. Pending Reads and Writes fail with net.ErrClosed, and so do
// later calls.
func (s *h2Stream) Close() error {
	c := s.c
	c.mu.Lock()
	if s.isClosed {
		c.mu.Unlock()
		return s.opError("close", net.ErrClosed)
	}
	s.isClosed = true
	close(s.closed)
	// Still among the connection's streams: neither failed nor ended
	// both ways.
	reset := c.streams[s.id] == s && c.err == nil
	closeNow := c.forgetLocked(s)
	s.buf, s.off = nil, 0
	c.mu.Unlock()
	if reset {
		c.writeReset(s.id, http2.ErrCodeCancel)
	}
	if closeNow {
		c.close()
	}
	return nil
}

// LocalAddr returns the local address of the shared connection.
func (s *h2Stream) LocalAddr() net.Addr { return s.c.local }

// RemoteAddr returns the remote address of the shared connection.
func (s *h2Stream) RemoteAddr() net.Addr { return s.c.remote }

// SetDeadline sets the read and write deadlines of the stream.
func (s *h2Stream) SetDeadline(t time.Time) error {
	s.rd.Set(t)
	s.wd.Set(t)
	return nil
}

// SetReadDeadline sets the read deadline of the stream.
func (s *h2Stream) SetReadDeadline(t time.Time) error {
	s.rd.Set(t)
	return nil
}

// SetWriteDeadline sets the write deadline of the stream.
func (s *h2Stream) SetWriteDeadline(t time.Time) error {
	s.wd.Set(t)
	return nil
}

func (s *h2Stream) opError(op string, err error) error {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return err
	}
	return &net.OpError{Op: op, Net: s.c.local.Network(), Source: s.c.local, Addr: s.c.remote, Err: err}
}

// h2RequestFields returns the header fields of xreq, an extended CONNECT
// checked by checkH2Fields, as HTTP/2 sends them: the pseudo-header
// fields of RFC 8441 §4, then the others, lower-cased, credentials never
// indexed.
func h2RequestFields(xreq *http.Request, scheme string) []hpack.HeaderField {
	fields := make([]hpack.HeaderField, 0, 5+len(xreq.Header))
	fields = append(fields,
		hpack.HeaderField{Name: ":method", Value: http.MethodConnect},
		hpack.HeaderField{Name: ":protocol", Value: xreq.Header[":protocol"][0]},
		hpack.HeaderField{Name: ":scheme", Value: scheme},
		hpack.HeaderField{Name: ":path", Value: xreq.URL.RequestURI()},
		hpack.HeaderField{Name: ":authority", Value: xreq.Host},
	)
	for k, vs := range xreq.Header {
		if k == ":protocol" {
			continue
		}
		name := strings.ToLower(k)
		sensitive := name == "authorization" || name == "proxy-authorization"
		for _, v := range vs {
			fields = append(fields, hpack.HeaderField{Name: name, Value: v, Sensitive: sensitive})
		}
	}
	return fields
}
