package upgrade

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
)

// errWriterDone is returned by a delegated handler's ResponseWriter used
// after ServeHTTP returned (where net/http would panic).
var errWriterDone = errors.New("upgrade: ResponseWriter used after the delegated ServeHTTP returned")

// errShuttingDown is returned by Hijack once the Server is shutting down.
var errShuttingDown = errors.New("upgrade: server shutting down")

// A delegateWriter is the ResponseWriter given to a delegated handler. It
// passes the handler's answer on to the Server's ResponseWriter and, on
// Hijack, hands the connection out as a tracked *Conn.
type delegateWriter struct {
	rw   http.ResponseWriter // the Server's
	orig *http.Request       // the request the Server got
	s    *Server
	rt   *route
	dc   *delegatedConn
	stop func() bool // stops following the request's context (see requestEnded)
	// bridge, on the stream of an extended CONNECT, is what Hijack hands
	// out; nil on an HTTP/1.1 connection. The handler's header fields
	// are then kept in hdr, apart from those of the stream's answer.
	bridge *streamBridge
	hdr    http.Header

	// Like net/http's, the ResponseWriter is used by one goroutine at a
	// time; done alone may be read by another (a library misusing it
	// after ServeHTTP returned).
	status   int         // the final status passed on to rw; 0 if none yet
	pending  bool        // a WriteHeader(101) kept for Hijack to write
	hijacked bool        // rw's connection was hijacked
	switched bool        // and is tracked as dc: its slot is the connection's
	done     atomic.Bool // ServeHTTP returned
}

// Header returns the header map of the answer.
func (w *delegateWriter) Header() http.Header {
	if w.bridge != nil {
		return w.hdr
	}
	return w.rw.Header()
}

// WriteHeader passes code on, except a 101, which it keeps for Hijack to
// write. A final status makes net/http close the connection after the
// answer.
func (w *delegateWriter) WriteHeader(code int) {
	switch {
	case w.hijacked || w.done.Load():
		return
	case code == http.StatusSwitchingProtocols && w.status == 0:
		w.pending = true
		return
	case code >= 200 && w.status == 0:
		// A status after a kept 101 replaces it: the 101 was never sent.
		w.pending = false
		if w.bridge != nil {
			code = w.s.answerStream(w.rw, w.orig, w.rt, code, w.hdr)
		}
		w.status = code
		w.closeAfter()
	}
	w.rw.WriteHeader(code)
}

// Write passes p on as the body of the answer.
func (w *delegateWriter) Write(p []byte) (int, error) {
	switch {
	case w.hijacked:
		return 0, http.ErrHijacked
	case w.done.Load():
		return 0, errWriterDone
	case w.pending:
		return 0, http.ErrBodyNotAllowed
	case w.status == 0:
		w.WriteHeader(http.StatusOK)
	}
	return w.rw.Write(p)
}

// FlushError flushes the answer written so far, as
// http.ResponseController's Flush does. A kept 101 is not flushed: it is
// written by Hijack.
func (w *delegateWriter) FlushError() error {
	switch {
	case w.hijacked:
		return http.ErrHijacked
	case w.done.Load():
		return errWriterDone
	case w.pending:
		return nil
	case w.status == 0:
		w.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(w.rw).Flush()
}

// Flush is FlushError without the error, for http.Flusher.
func (w *delegateWriter) Flush() { _ = w.FlushError() }

// Unwrap returns the Server's ResponseWriter, for http.ResponseController.
func (w *delegateWriter) Unwrap() http.ResponseWriter { return w.rw }

// closeAfter makes net/http close the connection after the answer, as the
// Server does after every refused upgrade: net/http closes when the first
// Connection line is exactly "close".
func (w *delegateWriter) closeAfter() {
	if w.bridge != nil {
		// A stream has no connection of its own to close, and net/http
		// would take "close" as a reason to close the HTTP/2 connection.
		return
	}
	h := w.rw.Header()
	if c := h["Connection"]; len(c) == 0 || c[0] != "close" {
		h["Connection"] = append([]string{"close"}, c...)
	}
}

// no101Fields are the header fields a 101 cannot carry (RFC 9110 §8.6,
// RFC 9112 §6.1).
var no101Fields = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

// Hijack takes the connection over for the delegated handler: it
// hijacks the Server's ResponseWriter, starts tracking the connection as
// a *Conn holding the bytes read ahead, writes a kept 101, and returns the
// *Conn with an empty bufio.ReadWriter over it.
func (w *delegateWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.done.Load() || w.hijacked || w.status != 0 {
		return nil, nil, w.hijackError()
	}
	var head []byte
	if w.pending {
		head = w.head101()
	}
	if w.bridge != nil {
		c, err := w.takeOver(w.bridge, nil, head)
		if err != nil {
			return nil, nil, err
		}
		return c, bridgeReadWriter(c), nil
	}
	hj, ok := w.rw.(http.Hijacker)
	if !ok {
		hj = unwrapHijacker{w.rw}
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, hijackFailed(err)
	}
	c, err := w.takeOver(nc, brw, head)
	if err != nil {
		return nil, nil, err
	}
	return c, brw, nil
}

// unwrapHijacker hijacks a ResponseWriter through its Unwrap chain.
type unwrapHijacker struct{ rw http.ResponseWriter }

func (u unwrapHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(u.rw).Hijack()
}

// hijackFailed wraps the error of the Server's ResponseWriter's Hijack.
func hijackFailed(err error) error {
	return fmt.Errorf("upgrade: hijacking the connection: %w", err)
}

// hijackError is the error of a Hijack that cannot be done.
func (w *delegateWriter) hijackError() error {
	switch {
	case w.done.Load():
		return errWriterDone
	case w.hijacked:
		return http.ErrHijacked
	}
	return fmt.Errorf("upgrade: cannot switch protocols after starting a %d response", w.status)
}

// takeOver starts tracking the hijacked nc as the delegated Conn, with the
// bytes read ahead in brw, writes head (the kept 101), if any, and makes
// brw, empty, read from and write to the Conn. On a stream, nc is the
// bridge and brw nil.
func (w *delegateWriter) takeOver(nc net.Conn, brw *bufio.ReadWriter, head []byte) (*Conn, error) {
	w.hijacked = true
	dc := w.dc
	// The request's context no longer ends the delegated one (finish
	// stops following it).
	dc.detached.Store(true)
	dc.Conn = nc
	c := &dc.c
	if brw == nil {
		// A stream: the bridge reads the handler's response head.
		if !w.s.track(c) {
			w.s.refuse(w.rw, w.orig, http.StatusServiceUnavailable, "server shutting down")
			return nil, errShuttingDown
		}
		w.switched = true
		w.bridge.start()
		if head != nil {
			if _, err := w.bridge.Write(head); err != nil {
				c.Close()
				return nil, fmt.Errorf("upgrade: writing the 101 response: %w", err)
			}
		}
		return c, nil
	}
	c.rbuf = buffered(brw.Reader)
	if !w.s.track(c) {
		refuseShuttingDown(nc)
		return nil, errShuttingDown
	}
	w.switched = true
	if head != nil {
		dc.kind.Store(headSwitched)
		if err := w.s.writeHead(nc, brw.Writer, head); err != nil {
			w.s.logPeerError(w.orig, "writing the 101 response for "+w.rt.spelled, err)
			c.Close()
			return nil, fmt.Errorf("upgrade: writing the 101 response: %w", err)
		}
	}
	// net/http's buffers, empty now, serve the library: the read-ahead
	// bytes come first from c.
	brw.Reader.Reset(c)
	brw.Writer.Reset(c)
	return c, nil
}

// head101 returns the kept 101 response's head, with the fields set on
// Header written as net/http would (sorted, invalid names dropped),
// but for those a 101 cannot carry.
func (w *delegateWriter) head101() []byte {
	b := appendWriter(make([]byte, 0, 256))
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\n"...)
	_ = w.Header().WriteSubset(&b, no101Fields)
	return append(b, "\r\n"...)
}

// finish runs when the delegated ServeHTTP returns or panics: it releases
// the slot of a request that did not switch, closes a hijacked connection
// that was answered with a final status or whose handler panicked, and
// answers a request that got no answer.
func (w *delegateWriter) finish() {
	p := recover()
	w.done.Store(true)
	status, pending, hijacked, switched := w.status, w.pending, w.hijacked, w.switched
	dc := w.dc
	w.stop()
	if !switched {
		dc.cancel()
		w.s.release(w.rt)
	}
	if p != nil {
		if p != http.ErrAbortHandler {
			w.s.logPanic(dc.c.Protocol, w.orig.RemoteAddr, p)
		}
		switch {
		case switched:
			dc.c.Close()
		case hijacked:
			dc.Conn.Close() // refused on the wire and closed, unless the panic came first
		case p == http.ErrAbortHandler:
			panic(p)
		case status == 0:
			w.s.refuse(w.rw, w.orig, http.StatusInternalServerError, "upgrade: internal error")
		}
		return
	}
	switch {
	case switched && dc.answered():
		// Refused on the connection, not switched (gobwas/ws does so).
		dc.c.Close()
	case !hijacked && pending:
		w.s.logError(w.orig, "delegating "+w.rt.spelled, errors.New("upgrade: the handler wrote a 101 status but did not hijack the connection"))
		w.s.refuse(w.rw, w.orig, http.StatusInternalServerError, "upgrade: internal error")
	case !hijacked && status == 0 && w.bridge != nil:
		// net/http would send an empty 200, which switches a stream.
		w.s.logError(w.orig, "delegating "+w.rt.spelled, errors.New("upgrade: the handler neither answered nor switched"))
		w.s.refuse(w.rw, w.orig, http.StatusInternalServerError, "upgrade: internal error")
	case !hijacked && status == 0:
		// net/http sends an empty 200 for the handler.
		w.closeAfter()
	}
}

// appendWriter is an io.Writer that appends to a byte slice.
type appendWriter []byte

func (b *appendWriter) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}

func (b *appendWriter) WriteString(s string) (int, error) {
	*b = append(*b, s...)
	return len(s), nil
}
