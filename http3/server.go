package http3

import (
	"fmt"
	"net"
	"net/http"
	"time"

	qhttp3 "github.com/quic-go/quic-go/http3"
)

// acceptTimeout bounds sending the 200 that switches a stream: a peer
// that grants no flow-control credit for it cannot hold the handler.
const acceptTimeout = 10 * time.Second

// Handler returns a handler for a quic-go http3.Server that serves h,
// presenting each HTTP/3 extended CONNECT (RFC 9220) as an
// upgrade.Server, or anything that serves upgrade.StreamAccepter
// requests, expects it: quic-go passes the :protocol in r.Proto; the
// request h sees has it in Header[":protocol"], Proto "HTTP/3.0", no body
// (the stream's data is the protocol's), and a ResponseWriter that is an
// upgrade.StreamAccepter, over the original one (Unwrap). Every other
// request reaches h as quic-go made it.
//
// The stream of a switched request is a net.Conn whose Read returns the
// peer's data and io.EOF at its FIN, Write sends data, CloseWrite sends
// FIN, and deadlines, which can be renewed after they passed, apply to
// the stream alone. A stream the peer resets, or whose QUIC connection
// the peer closes, fails as a reset TCP connection does
// (syscall.ECONNRESET). Close ends the stream as closing a TCP connection
// does: what was written is delivered, then FIN, and a side the peer has
// not ended is stopped (STOP_SENDING); only a Write blocked at that
// moment is interrupted by resetting the stream. Once closed, which the
// upgrade.Server does when the protocol handler returns, every method
// fails with net.ErrClosed. Its method Reset() closes it as a TCP reset
// does instead: the sides the peer has not ended are reset with
// H3_CONNECT_ERROR (RFC 9114 §8.1), which is how the reverse proxy passes
// on a backend's reset.
//
// quic-go holds :protocol to the token grammar, as RFC 9220 does (a value
// of the Upgrade Token Registry): it resets the stream of an extended
// CONNECT whose :protocol has a version, such as "echo/1", with
// H3_MESSAGE_ERROR before any handler runs, so a route such as "echo/1"
// cannot be reached over HTTP/3, while "websocket" or "echo" can.
func Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		streamer, ok := w.(qhttp3.HTTPStreamer)
		if !ok || r.Method != http.MethodConnect || r.ProtoMajor != 3 || r.Proto == "HTTP/3.0" {
			h.ServeHTTP(w, r)
			return
		}
		r2 := new(http.Request)
		*r2 = *r
		if r2.Header == nil {
			r2.Header = make(http.Header)
		}
		r2.Header[":protocol"] = []string{r.Proto}
		r2.Proto, r2.ProtoMinor = "HTTP/3.0", 0
		r2.Body, r2.ContentLength = http.NoBody, 0
		h.ServeHTTP(&streamWriter{ResponseWriter: w, streamer: streamer, r: r2}, r2)
	})
}

// streamWriter is the ResponseWriter of an extended CONNECT: an
// upgrade.StreamAccepter over quic-go's.
type streamWriter struct {
	http.ResponseWriter
	streamer qhttp3.HTTPStreamer
	r        *http.Request
}

// Unwrap returns quic-go's ResponseWriter, for http.ResponseController.
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// AcceptStream answers 200 with the fields h and returns the stream.
func (w *streamWriter) AcceptStream(h http.Header) (net.Conn, error) {
	hdr := w.Header()
	for k, vs := range h {
		hdr[k] = append([]string(nil), vs...)
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w.ResponseWriter)
	_ = rc.SetWriteDeadline(time.Now().Add(acceptTimeout))
	s, err := w.streamer.HTTPStream()
	if err != nil {
		return nil, fmt.Errorf("sending the 200 to the extended CONNECT: %w", err)
	}
	_ = s.SetWriteDeadline(time.Time{})
	ctx := w.r.Context()
	local, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	remote, _ := ctx.Value(qhttp3.RemoteAddrContextKey).(net.Addr)
	return newStreamConn(s, local, remote, nil), nil
}
