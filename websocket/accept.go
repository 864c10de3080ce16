package websocket

import (
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"unsafe"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"github.com/go-upgrade/upgrade/internal/wskey"

	"github.com/go-upgrade/upgrade"
)

// A Handler is the server side of the WebSocket opening handshake, as a
// protocol for an upgrade.Server: AcceptUpgrade checks the request and
// adds the Sec-WebSocket-Accept, Sec-WebSocket-Protocol and
// Sec-WebSocket-Extensions fields to the 101 response, and ServeUpgrade
// hands the switched connection to Serve.
//
// A Handler must not be modified after it is registered. Its zero value
// (with Serve set) accepts same-origin and Origin-less requests, selects
// no subprotocol and accepts no extension.
type Handler struct {
	// Serve serves the connection after the switch, speaking WebSocket
	// frames (RFC 6455 §5) on it, in the subprotocol selected ("" for
	// none). When Serve returns, the connection is closed. Required.
	Serve func(c *upgrade.Conn, subprotocol string)

	// Subprotocols lists the subprotocols (Sec-WebSocket-Protocol) the
	// server speaks, in its order of preference. At most one is
	// selected, among those the client offered, compared exactly
	// (subprotocol names are case-sensitive); the 101 response carries
	// no Sec-WebSocket-Protocol field when none matches, and Serve must
	// then speak no subprotocol. Empty strings are ignored.
	Subprotocols []string

	// PreferClientOrder selects the subprotocol that comes first in the
	// client's list rather than the first in Subprotocols.
	PreferClientOrder bool

	// AcceptExtensions, if non-nil, is called with the extensions the
	// client offered (Sec-WebSocket-Extensions, every line, in order) and
	// returns the Sec-WebSocket-Extensions value of the 101 response, or
	// "" to accept none. Every extension in the returned value must be
	// one the client offered: an unrequested one fails the handshake
	// with 500 Internal Server Error, as does a non-nil error (a
	// *upgrade.RejectError is sent as it is). It is not called when the
	// client offers no extension.
	//
	// Nil means no extension is ever accepted, and the client's
	// Sec-WebSocket-Extensions field is not even parsed.
	AcceptExtensions func(r *http.Request, offers []Extension) (string, error)

	// OriginPatterns lists path.Match patterns for the hosts of other
	// origins allowed to open a connection, matched against the Origin's
	// host, with its port if it has one ("*.example.com",
	// "localhost:*"), ASCII case-insensitively. Requests from the
	// request's own host (Origin host[:port] equal to r.Host, ASCII
	// case-insensitively) are always allowed, as are requests without
	// an Origin field (clients that are not browsers). A malformed
	// pattern fails the handshake with 500 Internal Server Error.
	OriginPatterns []string

	// CheckOrigin, if non-nil, replaces the origin policy above: it
	// reports whether the request may open a connection, and is called
	// also for requests without an Origin. A false result is answered
	// with 403 Forbidden.
	CheckOrigin func(r *http.Request) bool

	// InsecureSkipOriginCheck disables the origin check entirely. Any web
	// page the user visits can then open a connection to the server with
	// the user's cookies and credentials (cross-site WebSocket hijacking):
	// set it only for servers that authenticate otherwise, or serve no
	// browser.
	InsecureSkipOriginCheck bool
}

// methods lists the request methods an opening handshake can use: GET
// only (RFC 6455 §4.1). Route states it to the upgrade.Server, which
// refuses other methods with 405 and an Allow field built from it, and
// AcceptUpgrade applies the same list, so the two always agree.
var methods = []string{http.MethodGet}

// Route returns h's registration: GET only (RFC 6455 §4.1) and no request
// body. Server.Handle uses it, so these two are the same:
//
//	s.Handle("websocket", h)
//	s.HandleRoute("websocket", h.Route())
//
// A request with another method is answered 405 Method Not Allowed with
// "Allow: GET" (or goes on to another offered protocol), one with a body
// 400 Bad Request.
func (h *Handler) Route() upgrade.Route {
	return upgrade.Route{Handler: h, Methods: methods, MaxBody: -1}
}

// AcceptUpgrade checks r as an RFC 6455 §4.2.1 opening handshake (or, for
// an HTTP/2 extended CONNECT, as RFC 8441 §5 has it: no key) and, if it is
// one that h accepts, adds Sec-WebSocket-Accept (HTTP/1.1 only) and, when
// negotiated, Sec-WebSocket-Protocol and Sec-WebSocket-Extensions to the
// header hdr of the 101 (or 200) and returns nil. Otherwise it returns a
// *upgrade.RejectError; it never returns upgrade.ErrDecline, because a
// request that offers websocket and breaks its rules is a client error.
// The Upgrade and Connection fields were checked by the upgrade.Server.
func (h *Handler) AcceptUpgrade(r *http.Request, hdr http.Header) error {
	key, err := h.check(r, hdr)
	if err != nil || key == "" {
		return err
	}
	// One allocation for the value and the slice holding it.
	v := new(acceptValue)
	wskey.Accept(&v.buf, key)
	v.vals[0] = unsafe.String(&v.buf[0], wskey.AcceptLen)
	hdr["Sec-Websocket-Accept"] = v.vals[:]
	return nil
}

// check applies AcceptUpgrade's checks and adds Sec-WebSocket-Protocol and
// Sec-WebSocket-Extensions to hdr when negotiated. It returns the
// Sec-WebSocket-Key of an HTTP/1.1 request ("" over HTTP/2).
func (h *Handler) check(r *http.Request, hdr http.Header) (string, error) {
	// Over HTTP/2 (RFC 8441 §5) the request is an extended CONNECT whose
	// stream carries the frames: no method or body to check, and no
	// Sec-WebSocket-Key, so no Sec-WebSocket-Accept either.
	h1 := r.ProtoMajor == 1
	if h1 && !slices.Contains(methods, r.Method) {
		return "", rejectMethod(r.Method)
	}
	if h1 && (r.ContentLength != 0 || len(r.TransferEncoding) > 0) {
		return "", reject(http.StatusBadRequest, "websocket: the opening handshake must not have a request body")
	}
	if v := r.Header["Sec-Websocket-Version"]; len(v) != 1 || v[0] != Version {
		return "", rejectVersion(v)
	}
	var key string
	if h1 {
		var err error
		if key, err = checkKeyField(r.Header["Sec-Websocket-Key"]); err != nil {
			return "", err
		}
	}
	if err := h.checkOrigin(r); err != nil {
		return "", err
	}
	sub, err := h.selectSubprotocol(r)
	if err != nil {
		return "", reject(http.StatusBadRequest, err.Error())
	}
	var ext string
	if h.AcceptExtensions != nil && len(r.Header["Sec-Websocket-Extensions"]) > 0 {
		if ext, err = h.acceptExtensions(r); err != nil {
			return "", err
		}
	}
	if sub != "" {
		hdr["Sec-Websocket-Protocol"] = []string{sub}
	}
	if ext != "" {
		hdr["Sec-Websocket-Extensions"] = []string{ext}
	}
	return key, nil
}

// checkKeyField returns the one Sec-WebSocket-Key of an HTTP/1.1 opening
// handshake, or the rejection of a missing, repeated or invalid one.
func checkKeyField(keys []string) (string, error) {
	switch len(keys) {
	case 0:
		return "", reject(http.StatusBadRequest, "websocket: missing Sec-WebSocket-Key")
	case 1:
	default:
		return "", reject(http.StatusBadRequest, "websocket: Sec-WebSocket-Key sent more than once")
	}
	if why := checkKey(keys[0]); why != "" {
		return "", reject(http.StatusBadRequest, "websocket: invalid Sec-WebSocket-Key "+httplist.Quote(keys[0])+": "+why)
	}
	return keys[0], nil
}

// ServeUpgrade calls h.Serve with the switched connection and the
// subprotocol selected. It panics if h.Serve is nil (the upgrade.Server
// recovers, logs and closes the connection).
func (h *Handler) ServeUpgrade(c *upgrade.Conn) {
	if h.Serve == nil {
		panic("websocket: Handler.Serve is nil")
	}
	var sub string
	if len(h.Subprotocols) > 0 {
		// The selection is deterministic: it gives the value the 101
		// carried.
		sub, _ = h.selectSubprotocol(c.Request)
	}
	h.Serve(c, sub)
}

// SelectSubprotocol returns the subprotocol h selects for r, or "" when
// the client offered none that h speaks. It is the value of the 101's
// Sec-WebSocket-Protocol field. It makes no allocation.
func (h *Handler) SelectSubprotocol(r *http.Request) string {
	s, _ := h.selectSubprotocol(r)
	return s
}

// selectSubprotocol applies the selection rule; it fails when the
// client's Sec-WebSocket-Protocol has an element that is not a token.
func (h *Handler) selectSubprotocol(r *http.Request) (string, error) {
	offered := r.Header["Sec-Websocket-Protocol"]
	if len(offered) == 0 {
		return "", nil
	}
	for e := range httplist.Elements(offered) {
		if !httplist.IsToken(e) {
			return "", fmt.Errorf("websocket: malformed Sec-WebSocket-Protocol: element %s is not a token", httplist.Quote(e))
		}
	}
	if len(h.Subprotocols) == 0 {
		return "", nil
	}
	if h.PreferClientOrder {
		for e := range httplist.Elements(offered) {
			if slices.Contains(h.Subprotocols, e) {
				return e, nil
			}
		}
		return "", nil
	}
	for _, p := range h.Subprotocols {
		if p == "" {
			continue
		}
		for e := range httplist.Elements(offered) {
			if e == p {
				return p, nil
			}
		}
	}
	return "", nil
}

// acceptExtensions asks h.AcceptExtensions and checks its answer against
// the offers.
func (h *Handler) acceptExtensions(r *http.Request) (string, error) {
	offers, err := ParseExtensions(r.Header["Sec-Websocket-Extensions"])
	if err != nil {
		return "", reject(http.StatusBadRequest, err.Error())
	}
	if len(offers) == 0 {
		return "", nil
	}
	v, err := h.AcceptExtensions(r, offers)
	if err != nil {
		return "", err
	}
	if v == "" {
		return "", nil
	}
	accepted, err := ParseExtensions([]string{v})
	if err != nil {
		return "", fmt.Errorf("websocket: AcceptExtensions returned an invalid value: %w", err)
	}
	for _, a := range accepted {
		if !offered(offers, a.Name) {
			return "", fmt.Errorf("websocket: AcceptExtensions accepted extension %s, which the client did not offer", httplist.Quote(a.Name))
		}
	}
	return v, nil
}

// offered reports whether name is the name of one of exts, compared ASCII
// case-insensitively.
func offered(exts []Extension, name string) bool {
	for _, e := range exts {
		if ascii.EqualFold(e.Name, name) {
			return true
		}
	}
	return false
}

// checkOrigin applies h's origin policy to r (RFC 6455 §4.2.2, §10.2).
func (h *Handler) checkOrigin(r *http.Request) error {
	if h.InsecureSkipOriginCheck {
		return nil
	}
	if h.CheckOrigin != nil {
		if h.CheckOrigin(r) {
			return nil
		}
		return reject(http.StatusForbidden, "websocket: origin "+httplist.Quote(r.Header.Get("Origin"))+" not allowed")
	}
	origins := r.Header["Origin"]
	switch len(origins) {
	case 0:
		return nil // not a browser: Origin is a browser's statement
	case 1:
	default:
		return reject(http.StatusBadRequest, "websocket: Origin sent more than once")
	}
	origin := origins[0]
	host, ok := originHost(origin)
	if !ok {
		return reject(http.StatusForbidden, "websocket: origin "+httplist.Quote(origin)+" not allowed: not a scheme://host origin")
	}
	if ascii.EqualFold(host, r.Host) {
		return nil
	}
	if len(h.OriginPatterns) > 0 {
		lhost := strings.ToLower(host)
		for _, p := range h.OriginPatterns {
			ok, err := path.Match(strings.ToLower(p), lhost)
			if err != nil {
				return fmt.Errorf("websocket: bad origin pattern %s: %w", httplist.Quote(p), err)
			}
			if ok {
				return nil
			}
		}
	}
	return reject(http.StatusForbidden, "websocket: origin "+httplist.Quote(origin)+" not allowed for host "+httplist.Quote(r.Host))
}

// originHost returns the host[:port] of a serialized origin
// "scheme://host[:port]" (RFC 6454 §6.2). "null" and other values without
// a host are not origins a host can match.
func originHost(origin string) (string, bool) {
	i := strings.Index(origin, "://")
	if i <= 0 {
		return "", false
	}
	host := origin[i+3:]
	if j := strings.IndexAny(host, "/?#"); j >= 0 {
		host = host[:j]
	}
	if j := strings.LastIndexByte(host, '@'); j >= 0 {
		host = host[j+1:]
	}
	return host, host != ""
}

func rejectMethod(m string) error {
	return &upgrade.RejectError{
		Status:  http.StatusMethodNotAllowed,
		Message: "websocket: method " + m + " not allowed: the opening handshake is a GET request (RFC 6455 §4.1)",
		Header:  http.Header{"Allow": {strings.Join(methods, ", ")}},
	}
}

func rejectVersion(v []string) error {
	return &upgrade.RejectError{
		Status:  http.StatusUpgradeRequired,
		Message: "websocket: unsupported Sec-WebSocket-Version " + httplist.Quote(strings.Join(v, ", ")) + ": this server speaks version " + Version,
		Header:  http.Header{"Sec-Websocket-Version": {Version}},
	}
}

func reject(status int, msg string) error {
	return &upgrade.RejectError{Status: status, Message: msg}
}

// acceptValue holds a Sec-WebSocket-Accept value and the one-element slice
// of the 101 header that refers to it.
type acceptValue struct {
	vals [1]string
	buf  [wskey.AcceptLen]byte
}
