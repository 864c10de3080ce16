package upgrade

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-upgrade/upgrade/internal/ascii"
)

// A Handler serves a connection after it has switched protocols.
//
// ServeUpgrade runs in a goroutine of its own, started once the 101
// response has been written and flushed. The ServeHTTP call that switched
// returns without waiting for it, so net/http cancels the request's context
// (c.Request.Context()) right after the switch: use c.Context() instead,
// which carries the same values and is cancelled only by Server.Shutdown
// and Server.Close. The handler owns c: when
// ServeUpgrade returns, c is closed. A panic in ServeUpgrade is recovered,
// logged with the protocol and remote address, and c is closed; the server
// keeps serving.
type Handler interface {
	ServeUpgrade(c *Conn)
}

// HandlerFunc adapts an ordinary function to a Handler.
type HandlerFunc func(c *Conn)

// ServeUpgrade calls f(c).
func (f HandlerFunc) ServeUpgrade(c *Conn) { f(c) }

// Accepter is implemented by a Handler that inspects a request before the
// switch. AcceptUpgrade is called with the request and the header of the
// 101 response to be sent; it is called at most once per request and
// registered protocol, in negotiation order.
//
// h is valid only until AcceptUpgrade returns: the Server reuses it.
//
// It returns nil to switch (after adding any extra 101 header fields to h;
// Upgrade and Connection are set by the Server, and Content-Length and
// Transfer-Encoding are not allowed), ErrDecline to let negotiation move on
// to the next acceptable offer, or a *RejectError to answer the request with
// that status and not switch. Any other error is logged and answered with
// 500 Internal Server Error.
type Accepter interface {
	AcceptUpgrade(r *http.Request, h http.Header) error
}

// ErrDecline is returned by AcceptUpgrade to decline an offer: negotiation
// continues with the next acceptable offer, as if this protocol were not
// registered for this request.
var ErrDecline = errors.New("upgrade: protocol declined the request")

// RejectError is returned by AcceptUpgrade to refuse the switch and answer
// the request with Status, Header and a text/plain body Message.
//
// A 426 Upgrade Required rejection is always sent with an Upgrade field
// listing the registered protocols (unless Header sets one) and
// "Connection: Upgrade", as RFC 9110 §15.5.22 requires.
type RejectError struct {
	Status  int         // a 4xx or 5xx status code; zero means 400 Bad Request
	Message string      // response body; empty means the status text
	Header  http.Header // extra response header fields; may be nil
}

// Error returns the status and message.
func (e *RejectError) Error() string {
	return "upgrade: rejected with " + strings.TrimSpace(statusLine(e.status())) + ": " + e.message()
}

func (e *RejectError) status() int {
	if e.Status == 0 {
		return http.StatusBadRequest
	}
	return e.Status
}

func (e *RejectError) message() string {
	if e.Message == "" {
		return http.StatusText(e.status())
	}
	return e.Message
}

// Policy selects whose order of preference decides between several
// acceptable offers.
type Policy int

const (
	// ClientOrder picks the first offer, in the client's order, that a
	// registered protocol accepts. It is the zero Policy: RFC 9110 §7.8
	// has the client list its protocols in descending order of
	// preference.
	ClientOrder Policy = iota
	// ServerOrder picks the first registered protocol, in registration
	// order, that accepts one of the offers.
	ServerOrder
)

// String returns "client" or "server".
func (p Policy) String() string {
	switch p {
	case ClientOrder:
		return "client"
	case ServerOrder:
		return "server"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// Route is a protocol registration: the handler and the requests it can be
// switched to from.
type Route struct {
	// Handler serves the connection after the switch. If it implements
	// Accepter, AcceptUpgrade runs before the 101. Required.
	Handler Handler

	// Methods lists the request methods the protocol can honour
	// (RFC 9110 §7.8: the new protocol must be able to answer the
	// request). An offer in a request with another method is not
	// acceptable. Nil means GET and OPTIONS; a "*" element allows any
	// method except CONNECT.
	Methods []string

	// MaxBody bounds the request body read before the switch and handed
	// to the handler as c.Request.Body. Zero means the Server's
	// MaxRequestBody; a negative value means the protocol accepts no body,
	// and a request with one is answered with 400 Bad Request. A larger
	// body is answered with 413 Content Too Large; neither switches.
	MaxBody int64

	// MaxConns caps the connections switched to this protocol at once; see
	// Server.MaxConns. Zero means no cap.
	MaxConns int

	// Available, if non-nil, reports whether the protocol can be
	// switched to on r's connection at all (h2c, for one, only without
	// TLS). A protocol unavailable for a request is neither negotiated
	// nor listed in the Upgrade field of a 426 answering it: that list
	// names what the client could switch to (RFC 9110 §15.5.22). Nil
	// means always available.
	Available func(r *http.Request) bool
}

// route is a registered Route with its parsed pattern.
type route struct {
	Route
	name     string // registered spelling of the name
	version  string // "" matches offers without a version
	anyVer   bool   // "name/*": matches any version, or none
	accepter Accepter
	spelled  string // pattern as registered, for logs and 426 lists
}

// matches reports whether offer p is one this route accepts: names compare
// ASCII case-insensitively, versions exactly.
func (rt *route) matches(p Protocol) bool {
	if !ascii.EqualFold(rt.name, p.Name) {
		return false
	}
	return rt.anyVer || rt.version == p.Version
}

// available reports whether rt can be switched to on r's connection.
func (rt *route) available(r *http.Request) bool {
	return rt.Available == nil || rt.Available(r)
}

// allowsMethod reports whether the route can be switched to from method m.
func (rt *route) allowsMethod(m string) bool {
	if rt.Methods == nil {
		return m == http.MethodGet || m == http.MethodOptions
	}
	for _, x := range rt.Methods {
		if x == m || (x == "*" && m != http.MethodConnect) {
			return true
		}
	}
	return false
}

// parsePattern parses a registration pattern: "name", "name/version" or
// "name/*".
func parsePattern(pattern string) (route, error) {
	p, err := ParseProtocol(pattern)
	if err != nil {
		return route{}, err
	}
	rt := route{name: p.Name, version: p.Version, spelled: pattern}
	if p.Version == "*" {
		rt.version, rt.anyVer = "", true
	}
	return rt, nil
}

// decision is the outcome of negotiation for one request.
type decision struct {
	route         *route       // chosen route; nil if none
	offer         Protocol     // the offer it was chosen for
	extra         http.Header  // extra 101 header fields (pooled), or nil
	reject        *RejectError // an Accepter's rejection, to be answered
	failed        bool         // an Accepter failed: answer 500
	full          bool         // an acceptable route was at its MaxConns
	methodRefused bool         // an offer matched, but not the method
	bodyRefused   bool         // an offer matched, but takes no body
}

// negotiate picks the route and offer to switch to and records it in d.
// It tries every (route, offer) pair where the route matches the offer and
// honours the request's method, in policy order — ClientOrder: offers in
// the client's order, each against the routes in registration order;
// ServerOrder: routes in registration order, each against its first
// matching offer — asking Accepters as it goes. Each route is asked at most
// once per request, so an offer listed twice does not run a pre-101 step
// twice. It is flat, without closures, to keep the stack of net/http's
// connection goroutine within its initial size (growing it costs ~5% of a
// handshake).
func (s *Server) negotiate(r *http.Request, routes []route, offers []Protocol, d *decision) {
	body := hasBody(r)
	if s.Policy == ServerOrder {
		for i := range routes {
			rt := &routes[i]
			if !rt.available(r) {
				continue
			}
			for _, o := range offers {
				if !rt.matches(o) {
					continue
				}
				if s.usable(r, rt, body, d) && s.ask(r, rt, o, d) {
					return
				}
				break // one attempt per route
			}
		}
		return
	}
	for j, o := range offers {
		for i := range routes {
			rt := &routes[i]
			if !rt.matches(o) || anyMatches(rt, offers[:j]) || !rt.available(r) {
				continue // an earlier offer already tried this route
			}
			if s.usable(r, rt, body, d) && s.ask(r, rt, o, d) {
				return
			}
		}
	}
}

// usable reports whether rt can be switched to from r's method and body,
// noting in d why not.
func (s *Server) usable(r *http.Request, rt *route, body bool, d *decision) bool {
	if !rt.allowsMethod(r.Method) {
		d.methodRefused = true
		return false
	}
	if body && rt.MaxBody < 0 {
		d.bodyRefused = true
		return false
	}
	return true
}

// anyMatches reports whether rt matches one of offers.
func anyMatches(rt *route, offers []Protocol) bool {
	for _, o := range offers {
		if rt.matches(o) {
			return true
		}
	}
	return false
}

// anyMatch reports whether some route available for r matches some
// offer.
func anyMatch(r *http.Request, routes []route, offers []Protocol) bool {
	for i := range routes {
		if anyMatches(&routes[i], offers) && routes[i].available(r) {
			return true
		}
	}
	return false
}

// ask runs the pre-101 step of rt for offer o; true ends negotiation.
func (s *Server) ask(r *http.Request, rt *route, o Protocol, d *decision) bool {
	// Claim the slot before the pre-101 step, so that a protocol's
	// cap cannot be overrun by concurrent handshakes.
	if !s.reserve(rt) {
		d.full = true
		return false
	}
	if rt.accepter == nil {
		d.route, d.offer = rt, o
		return true
	}
	h := headerPool.Get().(http.Header)
	err := s.accept(r, rt, h)
	switch {
	case err == nil:
		if err := checkSwitchHeader(h); err != nil {
			s.logf(r, "accepting "+rt.spelled, err)
			d.failed = true
			recycleHeader(h)
			s.release(rt)
			return true
		}
		d.route, d.offer, d.extra = rt, o, h
		return true
	case errors.Is(err, ErrDecline):
		recycleHeader(h)
		s.release(rt)
		return false
	default:
		recycleHeader(h)
		s.release(rt)
		var re *RejectError
		if errors.As(err, &re) {
			d.reject = re
		} else {
			s.logf(r, "accepting "+rt.spelled, err)
			d.failed = true
		}
		return true
	}
}

// accept calls rt's AcceptUpgrade. If it panics, the slot reserved for the
// switch is released before the panic goes on to net/http.
func (s *Server) accept(r *http.Request, rt *route, h http.Header) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.release(rt)
			panic(p)
		}
	}()
	return rt.accepter.AcceptUpgrade(r, h)
}

func recycleHeader(h http.Header) {
	clear(h)
	headerPool.Put(h)
}

// allowedMethods lists, for an Allow field, the methods of the routes
// available for r that match one of the offers.
func allowedMethods(r *http.Request, routes []route, offers []Protocol) string {
	var ms []string
	add := func(m string) {
		for _, x := range ms {
			if x == m {
				return
			}
		}
		ms = append(ms, m)
	}
	for i := range routes {
		rt := &routes[i]
		if !rt.available(r) {
			continue
		}
		for _, o := range offers {
			if !rt.matches(o) {
				continue
			}
			if rt.Methods == nil {
				add(http.MethodGet)
				add(http.MethodOptions)
			}
			for _, m := range rt.Methods {
				if m != "*" {
					add(m)
				}
			}
			break
		}
	}
	return strings.Join(ms, ", ")
}
