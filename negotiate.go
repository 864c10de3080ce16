package upgrade

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"golang.org/x/net/http/httpguts"
)

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

// decision is the outcome of negotiation for one request.
type decision struct {
	route         *route       // chosen route; nil if none
	version       string       // the version of the offer it was chosen for
	extra         http.Header  // extra 101 header fields (pooled), or nil
	reject        *RejectError // an Accepter's rejection, to be answered
	failed        bool         // an Accepter failed or added a field a 101 cannot carry: answer 500
	full          bool         // an acceptable route was at its MaxConns
	methodRefused bool         // an offer matched, but not the method
	bodyRefused   bool         // an offer matched, but takes no body
}

// negotiate picks the route and offer to switch to, asking Accepters as it
// goes, and reserves the chosen route's connection slot. A route is tried
// once, for its first matching offer, and only if it can take r's method
// and body (d notes why not): by default in the order of the client's
// offers, then of registration; with ServerOrder, in registration order.
func (s *Server) negotiate(r *http.Request, routes []route, offers []Protocol) (d decision) {
	body := r.ProtoMajor == 1 && hasBody(r)
	passes := len(offers) // one per offer, in the client's order
	if s.ServerOrder {
		passes = 1
	}
	// The route whose Accepter is running: if it panics, its slot is
	// released before the panic goes on to net/http.
	var asking *route
	defer func() {
		if asking != nil {
			s.release(asking)
		}
	}()
	for pass := range passes {
		for i := range routes {
			rt := &routes[i]
			j := slices.IndexFunc(offers, rt.matches)
			if j < 0 || !s.ServerOrder && j != pass || !rt.available(r) || !s.usable(r, rt, body, &d) {
				continue
			}
			// The slot is claimed before the pre-101 step, so that
			// concurrent handshakes cannot overrun a protocol's cap.
			if !s.reserve(rt) {
				d.full = true
				continue
			}
			if rt.accepter == nil {
				d.route, d.version = rt, offers[j].Version
				return d
			}
			h := headerPool.Get().(http.Header)
			asking = rt
			err := rt.accepter.AcceptUpgrade(r, h)
			if err == nil && rt.Delegate == nil { // a delegated handler writes its own
				err = checkSwitchHeader(h)
			}
			asking = nil
			if err == nil {
				d.route, d.version, d.extra = rt, offers[j].Version, h
				return d
			}
			recycleHeader(h)
			s.release(rt)
			var re *RejectError
			switch {
			case errors.Is(err, ErrDecline):
				continue
			case errors.As(err, &re):
				d.reject = re
			default:
				s.logError(r, "accepting "+rt.spelled, err)
				d.failed = true
			}
			return d
		}
	}
	return d
}

// checkSwitchHeader checks the 101 (or 200) header fields an Accepter
// added: valid, and none the Server sets or a 101 cannot carry.
func checkSwitchHeader(h http.Header) error {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("upgrade: invalid 101 header field name %s", httplist.Quote(k))
		}
		if reservedField(k) {
			return fmt.Errorf("upgrade: 101 header field %s is set by the server or not allowed", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("upgrade: invalid value for 101 header field %s: %s", k, httplist.Quote(v))
			}
		}
	}
	return nil
}

// reservedField reports whether the field named k is one the Server sets
// or a 101 cannot carry. Comparing each name is cheaper than
// canonicalizing k, which costs more than the rest of the check.
func reservedField(k string) bool {
	for _, name := range [...]string{"Upgrade", "Connection", "Content-Length", "Transfer-Encoding"} {
		if len(k) == len(name) && strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// usable reports whether rt can be switched to from r's method and body,
// noting in d why not. An HTTP/2 extended CONNECT is always a CONNECT,
// and the data of its stream is the protocol's: neither is checked.
func (s *Server) usable(r *http.Request, rt *route, body bool, d *decision) bool {
	if r.ProtoMajor == 1 && !rt.allowsMethod(r.Method) {
		d.methodRefused = true
		return false
	}
	if body && rt.MaxBody < 0 {
		d.bodyRefused = true
		return false
	}
	return true
}

// matchesAny reports whether rt matches one of offers.
func (rt *route) matchesAny(offers []Protocol) bool {
	return slices.ContainsFunc(offers, rt.matches)
}

// someRouteMatches reports whether a route available for r matches one
// of the offers.
func someRouteMatches(r *http.Request, routes []route, offers []Protocol) bool {
	for i := range routes {
		if routes[i].matchesAny(offers) && routes[i].available(r) {
			return true
		}
	}
	return false
}

// allowedMethods lists, for an Allow field, the methods of the routes
// available for r that match one of its offers.
func allowedMethods(r *http.Request, routes []route, offers []Protocol) string {
	var ms []string
	for _, rt := range routes {
		if !rt.available(r) || !rt.matchesAny(offers) {
			continue
		}
		methods := rt.Methods
		if methods == nil {
			methods = []string{http.MethodGet, http.MethodOptions}
		}
		for _, m := range methods {
			if m != "*" && !slices.Contains(ms, m) {
				ms = append(ms, m)
			}
		}
	}
	return strings.Join(ms, ", ")
}
