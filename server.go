package upgrade

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/track"
)

// Defaults applied where the corresponding Server field is zero.
const (
	defaultMaxRequestBody   = 1 << 20
	defaultHandshakeTimeout = 10 * time.Second
)

// A Server switches connections to the protocols registered with Handle
// and HandleRoute (RFC 9110 §7.8), and serves the switched connections.
// The same registrations serve HTTP/2 extended CONNECT streams (RFC 8441)
// when net/http accepts them (see ExtendedConnect).
//
// Used as an http.Handler, a Server is an endpoint that requires an
// upgrade: a request it cannot switch is answered 426 Upgrade Required,
// listing the protocols available. Middleware serves other requests with
// another handler instead.
//
// An Upgrade header counts only in an HTTP/1.1 request whose Connection
// header carries "upgrade": in HTTP/1.0 it is ignored, and no 1xx is ever
// sent. A malformed Upgrade list is answered 400, one over Limits 431.
// Only a protocol the client offered is switched to; names compare ASCII
// case-insensitively, versions exactly. After refusing a request that
// carried Upgrade, the Server closes the connection, so that bytes sent
// behind it are never read as another request; a request framed by
// Transfer-Encoding is never switched. Over HTTP/2, a request never
// switches with Upgrade and its response never carries Upgrade or
// Connection; an extended CONNECT is negotiated as a single offer and
// answered 200, or refused with an error status (501 for a protocol not
// served).
//
// The zero Server is ready to use once protocols are registered; its
// fields must not be changed after its first request.
type Server struct {
	// ServerOrder makes negotiation pick the first registered protocol
	// that accepts one of the offers. By default it picks the first
	// offer, in the client's order of preference, that a registered
	// protocol accepts.
	ServerOrder bool

	// Limits bounds the Upgrade header parser.
	Limits Limits

	// MaxRequestBody bounds a request body read before the switch, for
	// routes whose MaxBody is zero: a larger one is answered 413. Zero
	// means 1 MiB.
	MaxRequestBody int64

	// HandshakeTimeout bounds reading the request body and writing the
	// 100 and 101 responses. Zero means 10 seconds; a negative value
	// means no bound.
	HandshakeTimeout time.Duration

	// ShouldUpgrade, if non-nil, is asked before negotiation; false makes
	// the request a plain one: Middleware passes it on, and the endpoint
	// answers 403 Forbidden.
	ShouldUpgrade func(r *http.Request) bool

	// MaxConns caps the switched connections served at once, across all
	// protocols (Route.MaxConns caps one). A protocol at its cap is
	// skipped for the client's next acceptable offer; with none left the
	// request is answered 503 with Retry-After, before any 101. Zero
	// means no cap.
	MaxConns int

	// ErrorLog receives what cannot be reported to the client: failed
	// hijacks and writes, handler panics, errors from AcceptUpgrade. Nil
	// means slog.Default().
	ErrorLog *slog.Logger

	mu       sync.Mutex
	routes   []route
	upgrades string // the registered protocols, for 426 responses
	// conditional is set when a route has an Available function, so
	// that a 426 lists only the protocols available for its request.
	conditional bool
	conns       track.Tracker // the switched connections
}

// Handle registers h for the protocols matched by pattern. If h has a
// method Route() Route, as the websocket and h2c adapters have, the route
// it returns states the protocol's own rules (its methods, body bound and
// availability); otherwise the default Route rules apply (GET and
// OPTIONS, the server's body bound). It is HandleRoute(pattern, route).
func (s *Server) Handle(pattern string, h Handler) {
	rt := Route{Handler: h}
	if r, ok := h.(interface{ Route() Route }); ok {
		rt = r.Route()
		if rt.Handler == nil {
			rt.Handler = h
		}
	}
	s.HandleRoute(pattern, rt)
}

// HandleFunc registers f for the protocols matched by pattern.
func (s *Server) HandleFunc(pattern string, f func(c *Conn)) {
	s.Handle(pattern, HandlerFunc(f))
}

// HandleRoute registers rt for the protocols matched by pattern:
//
//	"name"      offers of that name without a version ("websocket")
//	"name/ver"  offers of that name and exactly that version ("echo/1")
//	"name/*"    offers of that name with any version, or none
//
// Names match ASCII case-insensitively; the 101 response names the
// protocol in the registered spelling. Registration order is the server's
// order of preference. HandleRoute panics, like http.ServeMux, if pattern
// is malformed or already registered, or unless exactly one of rt.Handler
// and rt.Delegate is set.
func (s *Server) HandleRoute(pattern string, rt Route) {
	if (rt.Handler == nil) == (rt.Delegate == nil) {
		panic("upgrade: a Route for " + pattern + " needs either a Handler or a Delegate")
	}
	r, err := parsePattern(pattern)
	if err != nil {
		panic("upgrade: invalid pattern: " + strings.TrimPrefix(err.Error(), "upgrade: "))
	}
	r.Route = rt
	if rt.Delegate != nil {
		r.accepter, _ = rt.Delegate.(Accepter)
	} else {
		r.accepter, _ = rt.Handler.(Accepter)
	}
	r.srv = s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.routes {
		if ascii.EqualFold(x.name, r.name) && x.version == r.version && x.anyVer == r.anyVer {
			panic("upgrade: multiple registrations for " + pattern)
		}
	}
	s.routes = append(s.routes, r)
	s.upgrades = advertise(s.routes, nil)
	if r.Available != nil {
		s.conditional = true
	}
}

// advertise lists the routes, in the server's order of preference, as an
// Upgrade field value: "name" or "name/version" ("name/*" is listed as
// "name"). With r non-nil, routes unavailable for r are left out.
func advertise(routes []route, r *http.Request) string {
	var b strings.Builder
	for i := range routes {
		x := &routes[i]
		if r != nil && !x.available(r) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x.name)
		if x.version != "" {
			b.WriteString("/")
			b.WriteString(x.version)
		}
	}
	return b.String()
}

// Protocols returns the registered protocols in the server's order of
// preference ("name/*" as a Protocol whose Version is "*").
func (s *Server) Protocols() []Protocol {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := make([]Protocol, len(s.routes))
	for i, rt := range s.routes {
		ps[i] = Protocol{Name: rt.name, Version: rt.version}
		if rt.anyVer {
			ps[i].Version = "*"
		}
	}
	return ps
}

// advertised returns the Upgrade field value of a 426 answering r: the
// protocols available for r.
func (s *Server) advertised(r *http.Request) string {
	s.mu.Lock()
	routes, all, conditional := s.routes, s.upgrades, s.conditional
	s.mu.Unlock()
	if !conditional {
		return all
	}
	return advertise(routes, r)
}

// ServeHTTP switches the request to a registered protocol, or answers 426
// Upgrade Required with the registered protocols when it cannot: the
// Server as an endpoint that requires an upgrade.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, nil)
}

// Middleware returns a handler that switches requests it can switch and
// passes every other request to next, unchanged, exactly as if no upgrade
// had been asked for (the upgrade is optional). Malformed Upgrade headers
// are still answered with 400 and oversized ones with 431.
func (s *Server) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, next)
	})
}

// serve is the common flow of ServeHTTP (next == nil) and Middleware.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if r.ProtoMajor != 1 {
		s.serveHTTP2(w, r, next)
		return
	}
	var arr [4]Protocol
	offers, ok := s.admit(w, r, next, arr[:0])
	if !ok {
		return
	}
	routes := s.registered()
	if !canHijack(w) {
		s.cannotHijack(w, r, next, routes, offers)
		return
	}
	d := s.negotiate(r, routes, offers)
	switch {
	case d.route == nil:
		// Nothing offered is registered (a speculative "Upgrade: h2c",
		// say), or nothing registered took it.
		s.refuseOffers(w, r, next, &d)
	case d.route.Delegate != nil:
		s.delegate(w, r, &d)
	default:
		s.switchHTTP1(w, r, &d)
	}
	if d.extra != nil {
		recycleHeader(d.extra)
	}
}

// registered returns the registered routes.
func (s *Server) registered() []route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routes
}

// admit checks the HTTP/1 request r before negotiation and returns its
// offers, appended to buf. It reports false, having answered r (or passed
// it on to next), when r is not to be switched: not an upgrade request, a
// malformed or oversized Upgrade list, a body framed by
// Transfer-Encoding, ShouldUpgrade's refusal, a Server shutting down.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, next http.Handler, buf []Protocol) ([]Protocol, bool) {
	upgrades := r.Header["Upgrade"]
	if len(upgrades) == 0 || !isUpgradeRequest(r) {
		s.decline(w, r, next, http.StatusUpgradeRequired, "")
		return nil, false
	}
	offers, err := appendProtocols(buf, upgrades, s.Limits)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, ErrHeaderTooLarge) {
			code = http.StatusRequestHeaderFieldsTooLarge
		}
		s.refuse(w, r, code, err.Error())
		return nil, false
	}
	if len(r.TransferEncoding) > 0 {
		// net/http removes a Content-Length sent beside
		// Transfer-Encoding, so this may be the request-smuggling form
		// that RFC 9112 §6.1 says to answer and then close the
		// connection after: never hand such a connection to another
		// protocol.
		if next != nil {
			w.Header()["Connection"] = []string{"close"}
			next.ServeHTTP(w, r)
			return nil, false
		}
		s.refuse(w, r, http.StatusBadRequest, "a request switching protocols must not use Transfer-Encoding; send its body with Content-Length")
		return nil, false
	}
	if s.ShouldUpgrade != nil && !s.ShouldUpgrade(r) {
		s.decline(w, r, next, http.StatusForbidden, "upgrade refused")
		return nil, false
	}
	if s.conns.Closing() {
		if next == nil {
			w.Header().Set("Retry-After", "1")
		}
		s.decline(w, r, next, http.StatusServiceUnavailable, "server shutting down")
		return nil, false
	}
	return offers, true
}

// cannotHijack answers an upgrade request on a connection that cannot be
// hijacked: an ordinary request if nothing offered is registered, an
// error otherwise.
func (s *Server) cannotHijack(w http.ResponseWriter, r *http.Request, next http.Handler, routes []route, offers []Protocol) {
	if !someRouteMatches(r, routes, offers) {
		s.decline(w, r, next, http.StatusUpgradeRequired, "")
		return
	}
	if next == nil {
		s.logError(r, "switching protocols", errNoHijack)
	}
	s.decline(w, r, next, http.StatusInternalServerError, "upgrade: could not switch protocols on this connection")
}

// isUpgradeRequest reports whether r, which has an Upgrade field, asks for
// an upgrade: HTTP/1.1 or later, with the "upgrade" option in Connection. An
// HTTP/1.0 request's Upgrade is ignored (RFC 9110 §7.8), and without the
// Connection option the Upgrade field is not meant for this hop.
func isUpgradeRequest(r *http.Request) bool {
	return r.ProtoAtLeast(1, 1) && hasConnectionOption(r.Header, "upgrade")
}

// decline answers a request the Server does not switch: Middleware passes
// it on to next, unchanged; the endpoint answers it with code, or with
// 426 and the available protocols.
func (s *Server) decline(w http.ResponseWriter, r *http.Request, next http.Handler, code int, msg string) {
	switch {
	case next != nil:
		next.ServeHTTP(w, r)
	case code == http.StatusUpgradeRequired:
		s.requireUpgrade(w, r)
	default:
		s.refuse(w, r, code, msg)
	}
}

// refuseOffers answers a request whose offers negotiation did not accept.
func (s *Server) refuseOffers(w http.ResponseWriter, r *http.Request, next http.Handler, d *decision) {
	switch {
	case d.failed:
		s.refuse(w, r, http.StatusInternalServerError, "upgrade: internal error")
	case d.reject != nil:
		s.writeReject(w, r, d.reject)
	case d.full:
		w.Header().Set("Retry-After", "1")
		s.refuse(w, r, http.StatusServiceUnavailable, "too many upgraded connections, retry later")
	case next != nil:
		next.ServeHTTP(w, r)
	case d.methodRefused:
		if allow := s.allowedMethods(r); allow != "" {
			w.Header().Set("Allow", allow)
		}
		s.refuse(w, r, http.StatusMethodNotAllowed, "method "+r.Method+" cannot be switched to the offered protocol")
	case d.bodyRefused:
		s.refuse(w, r, http.StatusBadRequest, "the offered protocol does not accept a request body")
	case r.ProtoMajor != 1:
		// An extended CONNECT: no Upgrade field to list protocols in.
		s.refuse(w, r, http.StatusNotImplemented, "protocol "+r.Header.Get(":protocol")+" is not served here; this endpoint serves: "+s.advertised(r))
	default:
		s.requireUpgrade(w, r)
	}
}

// requireUpgrade answers 426 Upgrade Required with the protocols
// available for r (RFC 9110 §15.5.22).
func (s *Server) requireUpgrade(w http.ResponseWriter, r *http.Request) {
	list := s.advertised(r)
	w.Header().Set("Upgrade", list)
	s.refuse(w, r, http.StatusUpgradeRequired, "this endpoint requires a protocol upgrade to one of: "+list)
}

// writeReject answers a request with the status an Accepter rejected it
// with.
func (s *Server) writeReject(w http.ResponseWriter, r *http.Request, e *RejectError) {
	if st := e.status(); st < 400 || st > 599 {
		s.logError(r, "rejecting", fmt.Errorf("upgrade: RejectError.Status %d is not a 4xx or 5xx status", st))
		s.refuse(w, r, http.StatusInternalServerError, "upgrade: internal error")
		return
	}
	h := w.Header()
	for k, vs := range e.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	status := e.status()
	if status == http.StatusUpgradeRequired {
		if r.ProtoMajor != 1 {
			// A 426 must list protocols in Upgrade (RFC 9110 §15.5.22),
			// which HTTP/2 does not have: answer 400, keeping the
			// rejection's other fields (Sec-WebSocket-Version, say).
			status = http.StatusBadRequest
		} else if h.Get("Upgrade") == "" {
			h.Set("Upgrade", s.advertised(r))
		}
	}
	s.refuse(w, r, status, e.message())
}

// refuse writes a short text/plain error response.
//
// On HTTP/2, where they are not allowed, Upgrade and Connection are
// removed. On HTTP/1.x, a response carrying Upgrade carries the "upgrade"
// connection option (RFC 9110 §7.8), and the connection is closed after
// refusing a request that carried an Upgrade field: the bytes a client
// sends behind a refused upgrade must never be read as a next request
// (a proxy that assumed the switch would pass them on unchecked). It is
// closed too where net/http would close it anyway (HTTP/1.0,
// "Connection: close", a request body), so that the upgrade option is
// never dropped from the response.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h := w.Header()
	if r.ProtoMajor != 1 {
		h.Del("Upgrade")
		h.Del("Connection")
	} else {
		var opts []string
		if len(r.Header["Upgrade"]) > 0 || r.Close || !r.ProtoAtLeast(1, 1) || hasBody(r) {
			// net/http closes the connection after the response when
			// the first Connection line is exactly "close", and keeps
			// any line then; "Upgrade, close" on one line would keep
			// the connection open.
			opts = append(opts, "close")
		}
		if len(h["Upgrade"]) > 0 {
			opts = append(opts, "Upgrade")
		}
		if opts != nil {
			h["Connection"] = opts
		} else {
			delete(h, "Connection")
		}
	}
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

func (s *Server) maxRequestBody() int64 {
	if s.MaxRequestBody > 0 {
		return s.MaxRequestBody
	}
	return defaultMaxRequestBody
}

func (s *Server) handshakeTimeout() time.Duration {
	switch {
	case s.HandshakeTimeout > 0:
		return s.HandshakeTimeout
	case s.HandshakeTimeout < 0:
		return 0
	}
	return defaultHandshakeTimeout
}

func (s *Server) logger() *slog.Logger {
	if s.ErrorLog != nil {
		return s.ErrorLog
	}
	return slog.Default()
}

// logError logs a failure on the server's side: a broken Accepter or
// ResponseWriter.
func (s *Server) logError(r *http.Request, what string, err error) {
	s.logger().Error("upgrade: "+what, "remote", r.RemoteAddr, "err", err)
}

// logPeerError logs a failure the peer caused, such as hanging up
// mid-handshake.
func (s *Server) logPeerError(r *http.Request, what string, err error) {
	s.logger().Warn("upgrade: "+what, "remote", r.RemoteAddr, "err", err)
}
