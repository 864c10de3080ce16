package upgrade

import (
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-upgrade/upgrade/internal/h2stream"
)

// serveHTTP2 serves a request of HTTP/2 or later: an extended CONNECT is
// switched, anything else declined.
func (s *Server) serveHTTP2(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if isExtendedConnect(r) {
		if len(r.Header[":protocol"]) != 1 {
			s.refuse(w, r, http.StatusBadRequest, "upgrade: malformed :protocol pseudo-header")
			return
		}
		s.serveStream(w, r, r.Header[":protocol"][0], streamAccepter(w, r, s.handshakeTimeout()))
		return
	}
	// No 101 exists in HTTP/2 and later: never an Upgrade or Connection
	// field on the response either (RFC 9113 §8.2.2).
	s.decline(w, r, next, http.StatusHTTPVersionNotSupported, "upgrade: this endpoint requires a protocol switch: an HTTP/1.1 Upgrade or an HTTP/2 extended CONNECT")
}

// A StreamAccepter is the ResponseWriter of an extended CONNECT whose
// stream is not served by net/http's HTTP/2 server: HTTP/3 (RFC 9220),
// say. A Server serves such a request as it serves an HTTP/2 one, with
// the same routes, when the request has Method CONNECT, ProtoMajor 2 or
// more and its :protocol in Header[":protocol"], as net/http presents an
// HTTP/2 extended CONNECT, and its ResponseWriter (or one that Unwrap
// returns) is a StreamAccepter. The package
// github.com/go-upgrade/upgrade/http3 presents quic-go's requests so.
type StreamAccepter interface {
	// AcceptStream answers the request with 200 and the header fields h
	// and returns the request's stream as a net.Conn: Read returns the
	// peer's data and io.EOF at its end, Write sends data, CloseWrite
	// ends the sending side, and deadlines apply to the stream alone.
	// Close ends the stream as net/http's HTTP/2 server does when a
	// handler returns: what was written is delivered and the sending
	// side ended, and a side the peer has not ended is reset; a Write
	// blocked then is interrupted. From then on every method fails with
	// net.ErrClosed. The net.Conn may also have a method Reset(), which
	// closes it as a TCP reset does: the sides the peer has not ended are
	// reset, and what was not delivered is lost. The reverse proxy passes
	// a backend's reset on with it.
	AcceptStream(h http.Header) (net.Conn, error)
}

// streamAccepter returns how to switch the stream of the extended CONNECT
// r: w's StreamAccepter, if it has one, or net/http's HTTP/2 stream.
func streamAccepter(w http.ResponseWriter, r *http.Request, timeout time.Duration) acceptStream {
	for rw := w; rw != nil; {
		if sa, ok := rw.(StreamAccepter); ok {
			return sa.AcceptStream
		}
		u, ok := rw.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		rw = u.Unwrap()
	}
	return func(h http.Header) (net.Conn, error) {
		sc, err := h2stream.Accept(w, r, h, timeout)
		if err != nil {
			return nil, err
		}
		return sc, nil
	}
}

// isExtendedConnect reports whether r is an extended CONNECT (RFC 8441,
// RFC 9220): a CONNECT of HTTP/2 or later carrying the :protocol
// pseudo-header, which net/http passes on in the Header (only when
// ExtendedConnect is on).
func isExtendedConnect(r *http.Request) bool {
	return r.ProtoMajor >= 2 && r.Method == http.MethodConnect && len(r.Header[":protocol"]) > 0
}

// An acceptStream answers an extended CONNECT with 200 and the header
// fields h, and returns its stream as a net.Conn.
type acceptStream func(h http.Header) (net.Conn, error)

// serveStream switches the stream of an extended CONNECT r (RFC 8441 §4)
// to protocol, its :protocol: negotiation over that one offer, with the
// same routes, Accepters and caps as an HTTP/1.1 upgrade, a 200 (sent by
// accept) instead of a 101, and the protocol's handler run on the
// request's goroutine, since the stream lives only as long as ServeHTTP
// does. A request it does not switch gets an error status, never a 2xx:
// there is no upgrade-optional path for an extended CONNECT.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, protocol string, accept acceptStream) {
	offer, err := parseProtocol(protocol)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, "upgrade: malformed :protocol pseudo-header")
		return
	}
	if !s.mayUpgrade(w, r, nil) {
		return
	}
	routes, offers := s.registered(), [1]Protocol{offer}
	d := s.negotiate(r, routes, offers[:])
	switch {
	case d.route == nil:
		s.refuseOffers(w, r, nil, routes, offers[:], &d)
	case d.route.Delegate != nil:
		s.delegateStream(w, r, &d, accept)
	default:
		if c := s.switchStream(w, r, &d, accept); c != nil {
			s.run(c)
		}
	}
	if d.extra != nil {
		recycleHeader(d.extra)
	}
}

// switchStream answers 200 to the extended CONNECT r, for the route d
// chose, whose slot is reserved, and returns the stream as a tracked Conn.
// On failure it returns nil, having released the slot.
func (s *Server) switchStream(w http.ResponseWriter, r *http.Request, d *decision, accept acceptStream) *Conn {
	rt := d.route
	if s.conns.Closing() {
		s.release(rt)
		s.refuseClosing(w, r)
		return nil
	}
	sc, err := accept(d.extra)
	if err != nil {
		s.release(rt)
		s.logPeerError(r, "answering the extended CONNECT for "+rt.spelled, err)
		return nil
	}
	// The client knows of the switch now: the Conn is tracked even if
	// Shutdown began meanwhile, and closed at once if its grace is over.
	c := &Conn{nc: sc, Protocol: Protocol{Name: rt.name, Version: d.version}, Request: r, ctx: r.Context(), reqCtx: true, route: rt}
	c.trk = &s.conns
	s.conns.Adopt(c)
	return c
}

// extendedConnect records, when this package is initialized (after
// net/http), whether GODEBUG then held the setting net/http's HTTP/2
// server reads in its own init; net/http tests it the same way.
var extendedConnect = strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1")

// ExtendedConnect reports whether net/http's HTTP/2 server in this process
// serves RFC 8441 extended CONNECT: whether it advertises
// SETTINGS_ENABLE_CONNECT_PROTOCOL and passes requests carrying :protocol
// to handlers, so that a Server can switch HTTP/2 streams too. It is off
// unless the program imports github.com/go-upgrade/upgrade/extconnect or
// was started with GODEBUG=http2xconnect=1.
//
// It reads the environment as net/http read it when the program started;
// changing GODEBUG later changes neither.
func ExtendedConnect() bool { return extendedConnect }
