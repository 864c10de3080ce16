package upgrade

import (
	"context"
	"maps"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
)

// Draining returns a channel that is closed when the Server that switched
// a connection starts a graceful Shutdown: ctx is a Handler's
// c.Context() or a delegated handler's r.Context(), or a context derived
// from either. It is the moment to say goodbye (a WebSocket close frame
// with 1001 Going Away, an HTTP/2 GOAWAY) and return; a handler that
// ignores it keeps serving until Shutdown's grace period ends. For any
// other context Draining returns nil, a channel that is never closed.
func Draining(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(drainingKey{}).(<-chan struct{})
	return ch
}

// drainingKey is the context key under which a switched connection's
// context holds its Server's drain channel.
type drainingKey struct{}

// delegate lets the http.Handler of the delegated route d chose switch
// r's connection. The slot goes to the connection if the handler hijacks
// it, and is released otherwise.
func (s *Server) delegate(w http.ResponseWriter, r *http.Request, d *decision) {
	rt := d.route
	if hasBody(r) && !s.readRequestBody(w, r, rt) {
		s.release(rt)
		return
	}
	proto := Protocol{Name: rt.name, Version: d.version}
	dw := s.startDelegation(w, r, rt, proto)
	if dw == nil {
		return
	}
	defer dw.finish()
	req := r.WithContext(&dw.dc.ctx)
	req.Header = narrowHeader(r.Header, proto.String())
	dw.dc.c.Request = req
	rt.Delegate.ServeHTTP(dw, req)
}

// startDelegation prepares the ResponseWriter for a delegated handler of
// r and the Conn it will hijack, whose Request the caller sets: the
// request the handler gets, on the Conn's context. It returns nil, having
// released the slot and answered, if the Server began shutting down.
func (s *Server) startDelegation(w http.ResponseWriter, r *http.Request, rt *route, proto Protocol) *delegateWriter {
	_, drain := s.conns.Lifetime()
	if s.conns.Closing() {
		s.release(rt)
		s.refuseClosing(w, r)
		return nil
	}
	dc := &delegatedConn{s: s}
	lifetime, cancel := context.WithCancel(context.Background())
	dc.ctx = connContext{Context: lifetime, values: r.Context(), drain: drain}
	dc.cancel = cancel
	c := &dc.c
	c.Protocol, c.route = proto, rt
	c.nc, c.ctx = dc, &dc.ctx

	dw := &delegateWriter{rw: w, orig: r, s: s, rt: rt, dc: dc}
	// Until the switch, the request's end (the client going away) ends
	// the delegated request too.
	dw.stop = context.AfterFunc(r.Context(), dc.requestEnded)
	return dw
}

// narrowHeader returns h offering only proto, with "Connection: Upgrade":
// h itself if it is already so, else a copy.
func narrowHeader(h http.Header, proto string) http.Header {
	up, conn := h["Upgrade"], h["Connection"]
	if len(up) == 1 && up[0] == proto && len(conn) == 1 && conn[0] == "Upgrade" {
		return h
	}
	n := maps.Clone(h)
	n["Upgrade"] = []string{proto}
	n["Connection"] = []string{"Upgrade"}
	return n
}

// logPanic logs a panic in a handler serving protocol p.
func (s *Server) logPanic(p Protocol, remote string, v any) {
	buf := make([]byte, 16<<10)
	buf = buf[:runtime.Stack(buf, false)]
	s.logger().Error("upgrade: panic serving protocol", "protocol", p.String(),
		"remote", remote, "panic", v, "stack", string(buf))
}

// Kinds of response seen at the start of what a delegated handler writes
// on the connection.
const (
	headUnknown  = iota // fewer bytes than a status line's start so far
	headSwitched        // a 101, or anything but a final status
	headAnswered        // a final status: the handler refused on the wire
)

// A delegatedConn is the connection under the *Conn a delegated handler
// hijacked. It holds everything the delegated switch keeps, in one
// allocation: the *Conn, its context and the narrowed request's fields.
// Its Close, reached through the *Conn or from the Server, ends the
// connection's life once: it cancels the context and stops tracking the
// Conn, releasing its slot. Its Write watches the start of what is
// written, to tell a switch from an answer written on the connection.
type delegatedConn struct {
	net.Conn // the hijacked connection; nil until then

	c      Conn // the *Conn handed out; c.nc is this delegatedConn
	s      *Server
	ctx    connContext
	cancel context.CancelFunc
	closed atomic.Bool
	// detached is set at the hijack: from then on the request's context
	// no longer ends the delegated one.
	detached atomic.Bool

	kind    atomic.Int32 // headUnknown, headSwitched or headAnswered
	mu      sync.Mutex   // guards the fields below while kind is headUnknown
	head    [len("HTTP/1.1 101")]byte
	n       int // bytes of the current response head in head
	crlf    int // bytes of "\r\n\r\n" matched while skipping an interim response
	skipped int // bytes of interim responses skipped
}

// requestEnded cancels the delegated request's context when the request's
// own ends (the client went away) before the hijack.
func (d *delegatedConn) requestEnded() {
	if !d.detached.Load() {
		d.cancel()
	}
}

// Write writes p to the connection.
func (d *delegatedConn) Write(p []byte) (int, error) {
	if d.kind.Load() == headUnknown {
		d.watch(p)
	}
	return d.Conn.Write(p)
}

// watch follows the start of what is written, until it tells whether the
// handler switched (a 101, or bytes that are not an HTTP/1.x response) or
// answered with a final status (2xx to 5xx). Interim responses (100
// Continue, 103 Early Hints) are skipped: what follows them decides.
func (d *delegatedConn) watch(p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(p) > 0 && d.kind.Load() == headUnknown {
		if d.n < len(d.head) {
			m := copy(d.head[d.n:], p)
			p = p[m:]
			d.n += m
			d.classify()
			continue
		}
		// Skipping an interim response: up to the blank line ending it.
		for len(p) > 0 && d.crlf < 4 {
			if p[0] == "\r\n\r\n"[d.crlf] {
				d.crlf++
			} else if p[0] == '\r' {
				d.crlf = 1
			} else {
				d.crlf = 0
			}
			p = p[1:]
			d.skipped++
		}
		if d.skipped > maxInterimBytes {
			d.kind.Store(headSwitched) // not HTTP as a client would read it
			return
		}
		if d.crlf == 4 {
			d.n, d.crlf = 0, 0 // the next response head starts here
		}
	}
}

// maxInterimBytes bounds the interim responses watch skips.
const maxInterimBytes = 16 << 10

// classify looks at the start of a response head, d.head[:d.n]: a status
// line other than a 1xx decides the kind.
func (d *delegatedConn) classify() {
	const prefix = "HTTP/1."
	h := d.head[:d.n]
	if string(h[:min(len(h), len(prefix))]) != prefix[:min(len(h), len(prefix))] {
		d.kind.Store(headSwitched)
		return
	}
	if d.n < len(d.head) {
		return
	}
	code := h[len(h)-3:]
	switch {
	case h[len(prefix)+1] != ' ' || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]):
		d.kind.Store(headSwitched)
	case code[0] == '1' && string(code) != "101":
		// An interim response: watch skips it.
	case code[0] >= '2' && code[0] <= '5':
		d.kind.Store(headAnswered)
	default:
		d.kind.Store(headSwitched)
	}
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// answered reports whether a final status was written on the connection
// rather than a 101.
func (d *delegatedConn) answered() bool { return d.kind.Load() == headAnswered }

// Close closes the connection and, the first time, cancels the delegated
// request's context and stops tracking the Conn.
func (d *delegatedConn) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return d.Conn.Close()
	}
	d.cancel()
	err := d.Conn.Close()
	d.s.untrack(&d.c)
	return err
}
