package upgrade

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

// headerPool recycles the header maps handed to AcceptUpgrade.
var headerPool = sync.Pool{New: func() any { return make(http.Header, 4) }}

// bufPool recycles the buffers the 101 response is assembled in.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, maxSwitchBuf); return &b }}

// errNoHijack is reported when no ResponseWriter in the Unwrap chain
// implements http.Hijacker.
var errNoHijack = errors.New("upgrade: ResponseWriter does not support hijacking (HTTP/2, or a wrapper without Unwrap)")

// canHijack reports whether http.ResponseController can hijack w: whether w
// or a ResponseWriter reached through Unwrap implements http.Hijacker. It
// lets the server refuse with an ordinary 500 before anything is written.
func canHijack(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// checkSwitchHeader validates the extra 101 (or 200) header fields added
// by an Accepter: valid names and values (no CR or LF), and none of the
// fields the server owns or a 101 cannot carry.
func checkSwitchHeader(h http.Header) error {
	for k, vs := range h {
		if err := checkSwitchField(k, vs); err != nil {
			return err
		}
	}
	return nil
}

// checkSwitchField validates one extra 101 header field.
func checkSwitchField(k string, vs []string) error {
	if !httpguts.ValidHeaderFieldName(k) {
		return fmt.Errorf("upgrade: invalid 101 header field name %s", httplist.Quote(k))
	}
	if ascii.EqualFold(k, "Upgrade") || ascii.EqualFold(k, "Connection") ||
		ascii.EqualFold(k, "Content-Length") || ascii.EqualFold(k, "Transfer-Encoding") {
		return fmt.Errorf("upgrade: 101 header field %s is set by the server or not allowed", k)
	}
	for _, v := range vs {
		if !httpguts.ValidHeaderFieldValue(v) {
			return fmt.Errorf("upgrade: invalid value for 101 header field %s: %s", k, httplist.Quote(v))
		}
	}
	return nil
}

// readBody reads the whole request body, up to max bytes, before the
// switch. It returns errBodyTooLarge when the body is longer.
//
// Memory follows the bytes received, not the length declared: the body is
// read into chunks that double from bodyChunkMin to bodyChunkMax, each
// allocated only once the one before it is full, so a client that
// declares a large body and sends little of it holds little memory for
// the handshake timeout. Chunks are never copied into one buffer: the
// handler reads them through the bodyReader.
func readBody(r *http.Request, max int64) (*bodyReader, error) {
	want := r.ContentLength
	if want > max {
		return nil, errBodyTooLarge
	}
	if want < 0 {
		want = max + 1 // unknown length: room for one byte too many
	}
	body := new(bodyReader)
	body.chunks = body.first[:0]
	var got int64
	size := int64(bodyChunkMin)
	for got < want {
		b := make([]byte, min(size, want-got))
		n, err := io.ReadFull(r.Body, b)
		got += int64(n)
		if n > 0 {
			body.chunks = append(body.chunks, b[:n])
		}
		switch {
		case got > max:
			return nil, errBodyTooLarge
		case r.ContentLength < 0 && (err == io.EOF || err == io.ErrUnexpectedEOF):
			return body, nil
		case err != nil:
			return nil, err
		}
		size = min(2*size, bodyChunkMax)
	}
	// Every declared byte is here: the body must end now (net/http never
	// returns more than Content-Length; a reader that did is refused).
	for range 8 {
		n, err := r.Body.Read(body.probe[:])
		switch {
		case n > 0:
			return nil, errBodyTooLarge
		case err == io.EOF:
			return body, nil
		case err != nil:
			return nil, err
		}
	}
	return nil, io.ErrNoProgress
}

// Chunk sizes of a request body read before the switch.
const (
	bodyChunkMin = 4 << 10
	bodyChunkMax = 64 << 10
)

var errBodyTooLarge = errors.New("upgrade: request body too large")

// hasBody reports whether r has a request body to read.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// expectsContinue reports whether r carries "Expect: 100-continue".
func expectsContinue(r *http.Request) bool {
	return httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue")
}

// prepareSwitch prepares the switch for a negotiated route whose slot is
// reserved: it reads the body (sending 100 Continue first if the client
// expects it) and assembles the 101 response with the Accepter's fields
// (extra), which takeOver then gives the Conn. On failure it returns nil,
// having released the slot and answered on w.
//
// The switch runs on net/http's connection goroutine in two calls from
// serve, this one and takeOver, rather than one in the other: the hijack
// (which allocates net/http's 4 KiB write buffer, a deep call when the
// allocator has to refill) then runs two frames below serve, and the
// stack there does not have to grow (see negotiate).
func (s *Server) prepareSwitch(w http.ResponseWriter, r *http.Request, rt *route, version string, extra http.Header) *[]byte {
	sendContinue := expectsContinue(r)
	if hasBody(r) {
		if !s.readRequestBody(w, r, http.NewResponseController(w), rt) {
			s.release(rt)
			return nil
		}
		sendContinue = false // net/http sent it, if it was expected
	}
	bp, err := build101(Protocol{Name: rt.name, Version: version}, sendContinue, extra)
	if err != nil {
		s.switchFailed(w, r, rt, bp, err)
		return nil
	}
	if s.conns.closing.Load() {
		// Shutdown began during this handshake: refuse before the 101
		// rather than switch and drop.
		s.switchFailed(w, r, rt, bp, nil)
		return nil
	}
	return bp
}

// switchFailed answers a switch that fails before the hijack: 500 for an
// Accepter's invalid 101 header (err), 503 when Shutdown has begun (nil).
//
//go:noinline
func (s *Server) switchFailed(w http.ResponseWriter, r *http.Request, rt *route, bp *[]byte, err error) {
	recycle101(bp)
	s.release(rt)
	if err != nil {
		s.logError(r, "accepting "+rt.spelled, err)
		s.refuse(w, r, http.StatusInternalServerError, "upgrade: internal error")
		return
	}
	w.Header().Set("Retry-After", "1")
	s.refuse(w, r, http.StatusServiceUnavailable, "server shutting down")
}

// readRequestBody reads r's body, bounded by rt's limit and the handshake
// timeout, and makes it r.Body for the protocol; the body belongs to the
// request, not to the new protocol. Reading the body of a request with
// "Expect: 100-continue" makes net/http send the 100 (and flush it)
// before the first byte is read. On failure it answers the request and
// returns false.
func (s *Server) readRequestBody(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, rt *route) bool {
	max := rt.MaxBody
	if max == 0 {
		max = s.maxRequestBody()
	}
	if max < 0 {
		s.refuse(w, r, http.StatusBadRequest, "protocol "+rt.spelled+" does not accept a request body")
		return false
	}
	timeout := s.handshakeTimeout()
	if timeout > 0 {
		deadline := time.Now().Add(timeout)
		_ = rc.SetReadDeadline(deadline)
		_ = rc.SetWriteDeadline(deadline)
	}
	body, err := readBody(r, max)
	if err != nil && timeout > 0 {
		// The handshake deadline may have passed: give the answer its
		// own short deadline so it still reaches the client.
		_ = rc.SetWriteDeadline(time.Now().Add(time.Second))
	}
	switch {
	case err == errBodyTooLarge:
		s.refuse(w, r, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(max, 10)+" bytes")
		return false
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.logPeerError(r, "reading request body before switching to "+rt.spelled, err)
		s.refuse(w, r, http.StatusRequestTimeout, "request body not received within the handshake timeout")
		return false
	case err != nil:
		s.logPeerError(r, "reading request body before switching to "+rt.spelled, err)
		s.refuse(w, r, http.StatusBadRequest, "could not read request body")
		return false
	}
	r.Body = io.NopCloser(body)
	return true
}

// takeOver hijacks r's connection and starts tracking it as a Conn
// holding the 101 response bp and the bytes the client sent behind the
// request. It returns nil, having released the slot and answered the
// client, if the hijack fails or Shutdown has begun.
func (s *Server) takeOver(w http.ResponseWriter, r *http.Request, rt *route, version string, bp *[]byte) *Conn {
	netConn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.hijackFailed(w, r, rt, bp, err, nil)
		return nil
	}
	c := &Conn{nc: netConn, Protocol: Protocol{Name: rt.name, Version: version}, Request: r, ctx: r.Context(), reqCtx: true, route: rt, key: rt.spelled}
	c.sw.Store(bp)
	if !s.conns.track(c) {
		s.hijackFailed(w, r, rt, bp, nil, netConn)
		return nil
	}
	// From here on the Conn is tracked: Shutdown waits for it, and Close
	// closes it. Bytes the client sent behind the request are the new
	// protocol's: copy them out so net/http's 4 KiB read buffer is not
	// kept alive.
	if n := brw.Reader.Buffered(); n > 0 {
		ahead, _ := brw.Reader.Peek(n)
		c.rbuf = append([]byte(nil), ahead...)
	}
	return c
}

// hijackFailed answers a switch that failed at the hijack (err), or right
// after it because Shutdown had begun (the hijacked netConn).
//
//go:noinline
func (s *Server) hijackFailed(w http.ResponseWriter, r *http.Request, rt *route, bp *[]byte, err error, netConn net.Conn) {
	recycle101(bp)
	s.release(rt)
	if err != nil {
		s.logError(r, "hijacking the connection", err)
		s.refuse(w, r, http.StatusInternalServerError, "upgrade: could not switch protocols")
		return
	}
	// Shutdown began since the check before the hijack. The connection
	// is ours now: refuse on the wire rather than switch and drop.
	_ = netConn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = io.WriteString(netConn, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	netConn.Close()
}

// appendFields appends the fields of h named in keys, in that order, in
// wire form. The names and values must have been validated.
func appendFields(b []byte, h http.Header, keys []string) []byte {
	for _, k := range keys {
		for _, v := range h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return b
}

// bodyReader serves the request body read before the switch.
type bodyReader struct {
	chunks [][]byte
	first  [1][]byte // backing array for the chunks of a small body
	probe  [1]byte   // room to read past the declared length
}

func (r *bodyReader) Read(p []byte) (int, error) {
	for len(r.chunks) > 0 && len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	return n, nil
}

// Len returns the number of bytes not yet read.
func (r *bodyReader) Len() int {
	n := 0
	for _, c := range r.chunks {
		n += len(c)
	}
	return n
}

// statusLine returns "NNN Text" for a status code.
func statusLine(code int) string {
	return strconv.Itoa(code) + " " + http.StatusText(code)
}
