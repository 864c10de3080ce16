package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/h2stream"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"github.com/go-upgrade/upgrade/internal/wskey"
)

// A delegated route is served on the stream of an extended CONNECT by
// giving its handler what an HTTP/1.1 switch would: a GET request with
// "Connection: Upgrade", the protocol in Upgrade and, for a WebSocket, a
// fresh Sec-WebSocket-Key and the version, and a ResponseWriter whose
// Hijack returns the stream. The 101 the handler writes is read back, not
// sent: its Sec-WebSocket-Accept is checked, its other end-to-end fields
// go into the 200 that switches the stream, and what follows it is the
// stream's data. A final status written instead is the stream's answer.
// It is the reverse proxy's HTTP/2-to-HTTP/1.1 bridge, in process.

// delegateStream lets the delegated route d chose switch the stream of the
// extended CONNECT r, through accept. It returns once the stream is done
// with: when the handler returned without switching, or when the
// switched connection is closed.
func (s *Server) delegateStream(w http.ResponseWriter, r *http.Request, d *decision, accept acceptStream) {
	rt := d.route
	proto := Protocol{Name: rt.name, Version: d.version}
	dw := s.startDelegation(w, r, rt, proto)
	if dw == nil {
		return
	}
	req, key := bridgeRequest(r, &dw.dc.ctx, proto)
	dw.dc.c.Request = req
	b := &streamBridge{w: w, r: r, accept: accept, s: s, rt: rt, proto: proto, ready: make(chan struct{}), closed: make(chan struct{})}
	if key != "" {
		b.wantAccept = wskey.AcceptString(key)
	}
	dw.bridge, dw.hdr = b, make(http.Header)
	func() {
		defer dw.finish()
		rt.Delegate.ServeHTTP(dw, req)
	}()
	if !dw.switched {
		return
	}
	// The stream lives as long as ServeHTTP runs: wait for the switched
	// connection to be closed, by the handler's goroutines or the Server,
	// or for the bridge to end before a switch (the stream reset, a
	// response head it cannot use, the handshake timeout). Then the Conn
	// is closed, whoever holds it: its stream is gone.
	<-b.closed
	dw.dc.c.Close()
	if b.abort {
		// Hijacked and closed without a 101 or an answer: reset the
		// stream, as a closed connection would be on HTTP/1.1.
		panic(http.ErrAbortHandler)
	}
}

// bridgeRequest returns the HTTP/1.1 upgrade request a delegated handler
// sees for the extended CONNECT r, switching to proto, on ctx, and the
// Sec-WebSocket-Key it carries ("" unless proto is websocket).
func bridgeRequest(r *http.Request, ctx context.Context, proto Protocol) (*http.Request, string) {
	r1 := r.Clone(ctx)
	h := r1.Header
	delete(h, ":protocol")
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{proto.String()}
	var key string
	if proto.Version == "" && ascii.EqualFold(proto.Name, "websocket") {
		key = wskey.NewKey()
		h["Sec-Websocket-Key"] = []string{key}
	}
	r1.Method = http.MethodGet
	r1.Proto, r1.ProtoMajor, r1.ProtoMinor = "HTTP/1.1", 1, 1
	r1.Body, r1.ContentLength = http.NoBody, 0
	r1.RequestURI = r.URL.RequestURI()
	return r1, key
}

// answerStream sets up, on w, the answer a delegated handler gave the
// extended CONNECT r instead of switching: the end-to-end fields of h,
// and the status to write, code, or 500 for a 2xx, which would tell the
// client the stream switched.
func (s *Server) answerStream(w http.ResponseWriter, r *http.Request, rt *route, code int, h http.Header) int {
	maps.Copy(w.Header(), h)
	dropConnectionFields(w.Header())
	if code < 300 {
		s.logError(r, "delegating "+rt.spelled, fmt.Errorf("upgrade: the handler answered %d without switching", code))
		return http.StatusInternalServerError
	}
	return code
}

// maxBridgeHead bounds the response head a delegated handler writes on
// the bridge.
const maxBridgeHead = 16 << 10

// errBridgeHead is the error of a response head the bridge cannot use.
var errBridgeHead = errors.New("upgrade: the delegated handler's response head")

// A streamBridge is the connection a delegated handler hijacks on a
// stream. Until the handler has written a response head, Writes collect
// it; a 101 then switches the stream (accept), and everything after it,
// and every later Write, goes to the stream. A final status is written as
// the stream's answer instead, its body following. Reads wait for the
// switch.
type streamBridge struct {
	w          http.ResponseWriter
	r          *http.Request
	accept     acceptStream
	s          *Server
	rt         *route
	proto      Protocol // the protocol the 101 must name
	wantAccept string   // the Sec-WebSocket-Accept the 101 must carry, if any

	mu       sync.Mutex
	head     []byte   // the response head so far
	skipped  int      // bytes of interim responses skipped
	sc       net.Conn // the switched stream, once the 101 was written
	answered bool     // a final status was written: the rest is its body
	closing  bool     // Close was called, or the head was unusable
	abort    bool     // closed before a 101 or an answer
	rdl, wdl time.Time
	timer    *time.Timer   // the handshake timeout, until the head is written
	ready    chan struct{} // closed once the head is written
	closed   chan struct{} // closed once the bridge is closed
}

// start arms the handshake timeout: a handler that hijacks and writes no
// response head in time has the stream reset.
func (b *streamBridge) start() {
	if t := b.s.handshakeTimeout(); t > 0 {
		b.mu.Lock()
		b.timer = time.AfterFunc(t, func() { b.Close() })
		b.mu.Unlock()
	}
}

// Write takes the response head first, then passes what follows to the
// stream or the answer.
func (b *streamBridge) Write(p []byte) (int, error) {
	b.mu.Lock()
	switch {
	case b.closing:
		b.mu.Unlock()
		return 0, b.opError("write", net.ErrClosed)
	case b.sc != nil:
		sc := b.sc
		b.mu.Unlock()
		return sc.Write(p)
	case b.answered:
		defer b.mu.Unlock()
		return b.w.Write(p)
	}
	defer b.mu.Unlock()
	b.head = append(b.head, p...)
	var head, rest []byte
	for {
		end := bytes.Index(b.head, []byte("\r\n\r\n"))
		if end < 0 && len(b.head) <= maxBridgeHead-b.skipped {
			return len(p), nil
		}
		if end < 0 || b.skipped+end > maxBridgeHead {
			b.failLocked(fmt.Errorf("%w is larger than %d bytes", errBridgeHead, maxBridgeHead))
			return 0, b.opError("write", errBridgeHead)
		}
		head, rest = b.head[:end+4], b.head[end+4:]
		if !isInterim(head) {
			break
		}
		// An interim response (103 Early Hints, say) before the 101 or
		// the answer: it has no meaning on the stream.
		b.skipped += len(head)
		b.head = rest
	}
	b.head = nil
	if b.timer != nil {
		b.timer.Stop()
	}
	if err := b.switchLocked(head, rest); err != nil {
		return 0, b.opError("write", err)
	}
	return len(p), nil
}

// switchLocked handles the complete response head: a 101 switches the
// stream, a final status answers it; rest is what followed the head.
func (b *streamBridge) switchLocked(head, rest []byte) error {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), b.r)
	if err != nil {
		b.failLocked(fmt.Errorf("%w is malformed: %w", errBridgeHead, err))
		return errBridgeHead
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// Refused on the connection (gobwas/ws does so): the stream's
		// answer. A 2xx would tell the client the stream switched.
		close(b.ready)
		b.answered = true
		b.w.WriteHeader(b.s.answerStream(b.w, b.r, b.rt, resp.StatusCode, resp.Header))
		_, err := b.w.Write(rest)
		return err
	}
	if !namesProtocol(resp.Header["Upgrade"], b.proto) {
		b.failLocked(fmt.Errorf("%w has Upgrade %s, want %s", errBridgeHead, httplist.Quote(strings.Join(resp.Header["Upgrade"], ", ")), b.proto))
		return errBridgeHead
	}
	if b.wantAccept != "" {
		if got := resp.Header["Sec-Websocket-Accept"]; len(got) != 1 || got[0] != b.wantAccept {
			b.failLocked(fmt.Errorf("%w has Sec-WebSocket-Accept %s, want %s", errBridgeHead, httplist.Quote(strings.Join(got, ", ")), b.wantAccept))
			return errBridgeHead
		}
	}
	h := resp.Header
	delete(h, "Sec-Websocket-Accept")
	delete(h, "Date")
	// A 2xx to CONNECT has no content (RFC 9110 §9.3.6): the stream's
	// data is the protocol's.
	delete(h, "Content-Length")
	delete(h, "Transfer-Encoding")
	dropConnectionFields(h)
	sc, err := b.accept(h)
	if err != nil {
		b.s.logPeerError(b.r, "answering the extended CONNECT for "+b.rt.spelled, err)
		b.abort = true
		b.endLocked()
		return err
	}
	b.sc = sc
	if !b.rdl.IsZero() {
		_ = sc.SetReadDeadline(b.rdl)
	}
	if !b.wdl.IsZero() {
		_ = sc.SetWriteDeadline(b.wdl)
	}
	close(b.ready)
	if len(rest) > 0 {
		b.mu.Unlock()
		_, err = sc.Write(rest)
		b.mu.Lock()
	}
	return err
}

// failLocked answers a response head the bridge cannot use with 500, and
// closes the bridge.
func (b *streamBridge) failLocked(err error) {
	b.s.logError(b.r, "delegating "+b.rt.spelled, err)
	b.answered = true
	b.s.refuse(b.w, b.r, http.StatusInternalServerError, "upgrade: internal error")
	b.endLocked()
}

// Read reads the stream's data, once the stream has switched.
func (b *streamBridge) Read(p []byte) (int, error) {
	select {
	case <-b.ready:
	case <-b.closed:
	}
	b.mu.Lock()
	sc, answered := b.sc, b.answered
	b.mu.Unlock()
	if sc == nil {
		if answered {
			return 0, io.EOF // the stream carries no protocol
		}
		return 0, b.opError("read", net.ErrClosed)
	}
	return sc.Read(p)
}

// Close closes the stream once switched. Closed before it has a response
// head, the bridge resets the stream.
func (b *streamBridge) Close() error {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return b.opError("close", net.ErrClosed)
	}
	if b.sc == nil && !b.answered {
		b.abort = true
	}
	sc := b.sc
	b.endLocked()
	b.mu.Unlock()
	if sc != nil {
		sc.Close()
		close(b.closed)
	}
	return nil
}

// endLocked stops the bridge taking writes. Without a switched stream to
// close first, it closes closed at once.
func (b *streamBridge) endLocked() {
	b.closing = true
	if b.timer != nil {
		b.timer.Stop()
	}
	if b.sc == nil && !isClosed(b.closed) {
		close(b.closed)
	}
}

// CloseWrite ends the writing side of the switched stream.
func (b *streamBridge) CloseWrite() error {
	b.mu.Lock()
	sc := b.sc
	b.mu.Unlock()
	if cw, ok := sc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return b.opError("close", net.ErrClosed)
}

func (b *streamBridge) LocalAddr() net.Addr { return h2stream.LocalAddr(b.r) }

func (b *streamBridge) RemoteAddr() net.Addr { return h2stream.Addr(b.r.RemoteAddr) }

func (b *streamBridge) SetDeadline(t time.Time) error {
	if err := b.SetReadDeadline(t); err != nil {
		return err
	}
	return b.SetWriteDeadline(t)
}

// SetReadDeadline sets the stream's read deadline, once it has switched;
// before, it is kept for then.
func (b *streamBridge) SetReadDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sc != nil {
		return b.sc.SetReadDeadline(t)
	}
	b.rdl = t
	return nil
}

// SetWriteDeadline sets the stream's write deadline, once it has
// switched; before, it is kept for then (writing the head does not
// block).
func (b *streamBridge) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sc != nil {
		return b.sc.SetWriteDeadline(t)
	}
	b.wdl = t
	return nil
}

func (b *streamBridge) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "stream", Source: b.LocalAddr(), Addr: b.RemoteAddr(), Err: err}
}

// bridgeReadWriter returns the bufio.ReadWriter Hijack hands out with a
// bridged Conn: empty, over c.
func bridgeReadWriter(c net.Conn) *bufio.ReadWriter {
	return bufio.NewReadWriter(bufio.NewReaderSize(c, 4096), bufio.NewWriterSize(c, 4096))
}

// isInterim reports whether head is an interim response other than 101:
// "HTTP/1.x 1xx".
func isInterim(head []byte) bool {
	return len(head) >= 12 && string(head[:7]) == "HTTP/1." && head[8] == ' ' &&
		head[9] == '1' && string(head[9:12]) != "101"
}

// namesProtocol reports whether an Upgrade field names exactly p, as the
// 101 of a switch to p must.
func namesProtocol(upgrade []string, p Protocol) bool {
	got, err := ParseProtocols(upgrade)
	return err == nil && len(got) == 1 && ascii.EqualFold(got[0].Name, p.Name) && got[0].Version == p.Version
}
