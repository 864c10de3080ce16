package upgrade

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

// switchHTTP1 switches r's connection to the route d chose, whose slot is
// reserved: it reads the body (after a 100 Continue if the client expects
// one), hijacks and tracks the connection, writes the 101 and starts the
// handler. On failure it releases the slot and answers the client.
func (s *Server) switchHTTP1(w http.ResponseWriter, r *http.Request, d *decision) {
	rt := d.route
	sendContinue := expectsContinue(r)
	if hasBody(r) {
		if !s.readRequestBody(w, r, rt) {
			s.release(rt)
			return
		}
		sendContinue = false // net/http sent it, if it was expected
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.release(rt)
		s.logError(r, "hijacking the connection", err)
		s.refuse(w, r, http.StatusInternalServerError, "upgrade: could not switch protocols")
		return
	}
	p := Protocol{Name: rt.name, Version: d.version}
	c := &Conn{nc: nc, Protocol: p, Request: r, ctx: r.Context(), reqCtx: true, route: rt}
	if !s.track(c) { // Shutdown began during the handshake
		s.release(rt)
		refuseShuttingDown(nc)
		return
	}
	// Bytes the client sent behind the request are the new protocol's.
	c.rbuf = buffered(brw.Reader)
	head := append101(brw.Writer.AvailableBuffer(), p, sendContinue, d.extra)
	if err := s.writeHead(nc, brw.Writer, head); err != nil {
		s.logPeerError(r, "writing the 101 response for "+rt.spelled, err)
		nc.Close()
		c.finish()
		s.untrack(c)
		return
	}
	go s.run(c)
}

// append101 appends the 101 switching to p, with the Accepter's fields
// extra, after a 100 Continue if sendContinue.
func append101(b []byte, p Protocol, sendContinue bool, extra http.Header) []byte {
	if sendContinue {
		b = append(b, "HTTP/1.1 100 Continue\r\n\r\n"...)
	}
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "...)
	b = append(b, p.String()...)
	b = append(b, "\r\nConnection: Upgrade\r\n"...)
	b = httplist.AppendFields(b, extra)
	return append(b, "\r\n"...)
}

// writeHead writes head on the hijacked nc through bw, within the
// handshake timeout.
func (s *Server) writeHead(nc net.Conn, bw *bufio.Writer, head []byte) error {
	if timeout := s.handshakeTimeout(); timeout > 0 {
		_ = nc.SetWriteDeadline(time.Now().Add(timeout))
		defer nc.SetWriteDeadline(time.Time{})
	}
	if _, err := bw.Write(head); err != nil {
		return err
	}
	return bw.Flush()
}

// refuseShuttingDown answers 503 on a connection hijacked once Shutdown
// began, and closes it.
func refuseShuttingDown(nc net.Conn) {
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = io.WriteString(nc, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	nc.Close()
}

// headerPool recycles the header maps handed to AcceptUpgrade.
var headerPool = sync.Pool{New: func() any { return make(http.Header, 4) }}

func recycleHeader(h http.Header) {
	clear(h)
	headerPool.Put(h)
}

// readRequestBody reads r's body before the switch, within rt's limit and
// the handshake timeout, and makes it r.Body: it belongs to the request,
// not to the new protocol. net/http sends a 100 Continue first if the
// client expects one. On failure it answers r and returns false.
func (s *Server) readRequestBody(w http.ResponseWriter, r *http.Request, rt *route) bool {
	max := rt.MaxBody
	if max == 0 {
		max = s.maxRequestBody()
	}
	if max < 0 {
		s.refuse(w, r, http.StatusBadRequest, "protocol "+rt.spelled+" does not accept a request body")
		return false
	}
	rc := http.NewResponseController(w)
	timeout := s.handshakeTimeout()
	if timeout > 0 {
		deadline := time.Now().Add(timeout)
		_ = rc.SetReadDeadline(deadline)
		_ = rc.SetWriteDeadline(deadline)
	}
	body, err := readBody(r, max)
	if err != nil && timeout > 0 {
		// Let the answer out even if the deadline has passed.
		_ = rc.SetWriteDeadline(time.Now().Add(time.Second))
	}
	switch {
	case err == nil:
		r.Body = io.NopCloser(body)
		return true
	case err == errBodyTooLarge:
		s.refuse(w, r, http.StatusRequestEntityTooLarge, "request body larger than "+strconv.FormatInt(max, 10)+" bytes")
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.logPeerError(r, "reading request body before switching to "+rt.spelled, err)
		s.refuse(w, r, http.StatusRequestTimeout, "request body not received within the handshake timeout")
	default:
		s.logPeerError(r, "reading request body before switching to "+rt.spelled, err)
		s.refuse(w, r, http.StatusBadRequest, "could not read request body")
	}
	return false
}

// readBody reads the whole request body, or fails with errBodyTooLarge
// past max bytes. Memory follows the bytes received, not the length
// declared: chunks, doubling from bodyChunkMin to bodyChunkMax, are
// allocated as the ones before them fill.
func readBody(r *http.Request, max int64) (*bodyReader, error) {
	want := r.ContentLength
	if want > max {
		return nil, errBodyTooLarge
	}
	if want < 0 {
		want = max + 1 // unknown length: room for one byte too many
	}
	body := new(bodyReader)
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
	// Every declared byte is here: the body must end now.
	var probe [1]byte
	for range 8 {
		n, err := r.Body.Read(probe[:])
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

// bodyReader serves the request body read before the switch.
type bodyReader struct{ chunks [][]byte }

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

// errNoHijack is reported when no ResponseWriter in the Unwrap chain
// implements http.Hijacker.
var errNoHijack = errors.New("upgrade: ResponseWriter does not support hijacking (HTTP/2, or a wrapper without Unwrap)")

// canHijack reports whether http.ResponseController can hijack w: whether
// w, or a ResponseWriter its Unwrap chain reaches, is an http.Hijacker.
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
