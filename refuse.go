package upgrade

import (
	"fmt"
	"io"
	"net/http"

	"github.com/go-upgrade/upgrade/internal/httplist"
)

// cannotHijack answers an upgrade request on a connection that cannot be
// hijacked: as a plain request if nothing offered is registered, with an
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
// an upgrade: HTTP/1.1 or later (RFC 9110 §7.8), with the "upgrade" option
// in Connection.
func isUpgradeRequest(r *http.Request) bool {
	return r.ProtoAtLeast(1, 1) && hasConnectionOption(r.Header, "upgrade")
}

// decline answers a request the Server does not switch: Middleware passes
// it on to next; the endpoint answers code (426 with the protocols).
func (s *Server) decline(w http.ResponseWriter, r *http.Request, next http.Handler, code int, msg string) {
	switch {
	case next != nil:
		passOn(w, r, next)
	case code == http.StatusUpgradeRequired:
		s.requireUpgrade(w, r)
	default:
		s.refuse(w, r, code, msg)
	}
}

// refuseOffers answers a request whose offers negotiation did not accept
// among routes.
func (s *Server) refuseOffers(w http.ResponseWriter, r *http.Request, next http.Handler, routes []route, offers []Protocol, d *decision) {
	switch {
	case d.failed:
		s.refuse(w, r, http.StatusInternalServerError, "upgrade: internal error")
	case d.reject != nil:
		s.writeReject(w, r, d.reject)
	case d.full:
		w.Header().Set("Retry-After", "1")
		s.refuse(w, r, http.StatusServiceUnavailable, "too many upgraded connections, retry later")
	case next != nil:
		passOn(w, r, next)
	case d.methodRefused:
		if allow := allowedMethods(r, routes, offers); allow != "" {
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

// writeReject answers a request as an Accepter rejected it.
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
			// A 426 must list protocols in Upgrade (RFC 9110
			// §15.5.22), which HTTP/2 does not have.
			status = http.StatusBadRequest
		} else if h.Get("Upgrade") == "" {
			h.Set("Upgrade", s.advertised(r))
		}
	}
	s.refuse(w, r, status, e.message())
}

// refuse writes a short text/plain error response. Over HTTP/2 it carries
// no Upgrade or Connection. Over HTTP/1.x, one carrying Upgrade carries
// the "upgrade" connection option (RFC 9110 §7.8), and the connection is
// closed after a request that carried Upgrade, so that bytes sent behind
// a refused upgrade are never read as a next request; it is closed too
// where net/http would close it anyway, so that the option is not lost.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h := w.Header()
	if r.ProtoMajor != 1 {
		h.Del("Upgrade")
		h.Del("Connection")
	} else {
		var opts []string
		if len(r.Header["Upgrade"]) > 0 || r.Close || !r.ProtoAtLeast(1, 1) || hasBody(r) {
			// net/http closes when the first Connection line is
			// exactly "close".
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

// passOn passes r on to next as a plain request, without Upgrade,
// HTTP2-Settings and the Connection options naming them, so that next
// cannot act on an upgrade the Server did not take (RFC 9110 §7.6.1).
func passOn(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if len(r.Header["Upgrade"]) > 0 || len(r.Header["Http2-Settings"]) > 0 {
		r2 := new(http.Request)
		*r2 = *r
		r2.Header = httplist.WithoutUpgrade(r.Header)
		r = r2
	}
	next.ServeHTTP(w, r)
}
