package upgrade

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/track"
)

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

	mu     sync.Mutex
	routes []route
	conns  track.Tracker // the switched connections
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
	p, err := parseProtocol(pattern)
	if err != nil {
		panic("upgrade: invalid pattern: " + strings.TrimPrefix(err.Error(), "upgrade: "))
	}
	r := route{Route: rt, name: p.Name, version: p.Version, spelled: pattern}
	if p.Version == "*" {
		r.version, r.anyVer = "", true
	}
	if rt.Delegate != nil {
		r.accepter, _ = rt.Delegate.(Accepter)
	} else {
		r.accepter, _ = rt.Handler.(Accepter)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.routes {
		if ascii.EqualFold(x.name, r.name) && x.version == r.version && x.anyVer == r.anyVer {
			panic("upgrade: multiple registrations for " + pattern)
		}
	}
	s.routes = append(s.routes, r)
}

// Protocols returns the registered protocols in the server's order of
// preference ("name/*" as a Protocol whose Version is "*").
func (s *Server) Protocols() []Protocol {
	routes := s.registered()
	ps := make([]Protocol, len(routes))
	for i, rt := range routes {
		ps[i] = Protocol{Name: rt.name, Version: rt.version}
		if rt.anyVer {
			ps[i].Version = "*"
		}
	}
	return ps
}

// advertised returns the Upgrade field value of a 426 answering r: the
// protocols available for r, in the server's order of preference ("name/*"
// listed as "name").
func (s *Server) advertised(r *http.Request) string {
	var ps []Protocol
	for _, rt := range s.registered() {
		if rt.available(r) {
			ps = append(ps, Protocol{Name: rt.name, Version: rt.version})
		}
	}
	return formatProtocols(ps)
}

// ServeHTTP switches the request to a registered protocol, or answers 426
// Upgrade Required with the registered protocols when it cannot: the
// Server as an endpoint that requires an upgrade.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, nil)
}

// Middleware returns a handler that switches the requests it can and
// passes every other request on to next as if no upgrade had been asked
// for (the upgrade is optional): without the Upgrade field and the
// Connection options naming it, so that next cannot act on an upgrade
// the Server did not take. Malformed Upgrade headers are still answered
// 400, oversized ones 431.
func (s *Server) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, next)
	})
}

// serve is the common flow of ServeHTTP (next == nil) and Middleware:
// decide whether and to what r switches, then switch.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if r.ProtoMajor != 1 {
		s.serveHTTP2(w, r, next)
		return
	}
	d, ok := s.decide(w, r, next)
	if !ok {
		return
	}
	// A delegated handler runs on this goroutine for as long as its
	// connection lives: deciding is done, and its state off the stack.
	if d.route.Delegate != nil {
		s.delegate(w, r, &d)
	} else {
		s.switchHTTP1(w, r, &d)
	}
	if d.extra != nil {
		recycleHeader(d.extra)
	}
}

// decide returns the route the HTTP/1 request r switches to, its slot
// reserved, or false, having answered r or passed it on to next.
func (s *Server) decide(w http.ResponseWriter, r *http.Request, next http.Handler) (decision, bool) {
	var buf [1]Protocol // a single offer, as most requests make, needs no allocation
	offers, ok := s.admit(w, r, next, buf[:0])
	if !ok {
		return decision{}, false
	}
	routes := s.registered()
	if !canHijack(w) {
		s.cannotHijack(w, r, next, routes, offers)
		return decision{}, false
	}
	d := s.negotiate(r, routes, offers)
	if d.route == nil {
		s.refuseOffers(w, r, next, routes, offers, &d)
		return decision{}, false
	}
	return d, true
}

// registered returns the registered routes.
func (s *Server) registered() []route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routes
}

// admit returns the offers of the HTTP/1 request r, appended to buf, or
// false, having answered r or passed it on to next, when r is not to be
// switched.
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
		// net/http drops a Content-Length sent beside it: this may be
		// smuggling, answered and then closed (RFC 9112 §6.1).
		if next != nil {
			w.Header()["Connection"] = []string{"close"}
			passOn(w, r, next)
			return nil, false
		}
		s.refuse(w, r, http.StatusBadRequest, "a request switching protocols must not use Transfer-Encoding; send its body with Content-Length")
		return nil, false
	}
	if !s.mayUpgrade(w, r, next) {
		return nil, false
	}
	return offers, true
}

// mayUpgrade reports whether r may be switched: ShouldUpgrade allows it
// and Shutdown has not begun. If not, r is declined: passed on to next,
// or answered 403 or 503.
func (s *Server) mayUpgrade(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
	switch {
	case s.ShouldUpgrade != nil && !s.ShouldUpgrade(r):
		s.decline(w, r, next, http.StatusForbidden, "upgrade refused")
	case !s.conns.Closing():
		return true
	case next != nil:
		passOn(w, r, next)
	default:
		s.refuseClosing(w, r)
	}
	return false
}

// refuseClosing answers 503 to a request the Server does not switch
// because Shutdown has begun.
func (s *Server) refuseClosing(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "1")
	s.refuse(w, r, http.StatusServiceUnavailable, "server shutting down")
}

func (s *Server) maxRequestBody() int64 {
	if s.MaxRequestBody > 0 {
		return s.MaxRequestBody
	}
	return defaultMaxRequestBody
}

func (s *Server) handshakeTimeout() time.Duration {
	return timeoutOr(s.HandshakeTimeout, defaultHandshakeTimeout)
}

func (s *Server) logger() *slog.Logger {
	if s.ErrorLog != nil {
		return s.ErrorLog
	}
	return slog.Default()
}

// logError logs a failure on the server's side.
func (s *Server) logError(r *http.Request, what string, err error) {
	s.logger().Error("upgrade: "+what, "remote", r.RemoteAddr, "err", err)
}

// logPeerError logs a failure the peer caused.
func (s *Server) logPeerError(r *http.Request, what string, err error) {
	s.logger().Warn("upgrade: "+what, "remote", r.RemoteAddr, "err", err)
}
