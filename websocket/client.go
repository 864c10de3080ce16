package websocket

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
	"github.com/go-upgrade/upgrade/internal/wskey"
	"golang.org/x/net/http/httpguts"

	"github.com/go-upgrade/upgrade"
)

// HandshakeError reports a response that does not complete a valid
// WebSocket opening handshake: a 101 failing the client's checks of
// RFC 6455 §4.1, or, over HTTP/2, a 2xx failing those of RFC 8441 §5. The
// connection (or stream) it came on has been closed.
type HandshakeError struct {
	Reason   string         // what is wrong, naming the header field and value
	Response *http.Response // the response, if one was read; its Body is closed
	Err      error          // underlying cause; may be nil
}

// Error returns the reason.
func (e *HandshakeError) Error() string {
	s := "websocket: handshake failed: " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *HandshakeError) Unwrap() error { return e.Err }

// NewKey returns a fresh Sec-WebSocket-Key: 16 bytes from crypto/rand,
// base64-encoded (RFC 6455 §4.1). Use a new key for every handshake.
func NewKey() string { return wskey.NewKey() }

// ClientHeader returns the header fields of an opening handshake request
// with key, other than Upgrade and Connection: Sec-WebSocket-Key,
// Sec-WebSocket-Version 13, and Sec-WebSocket-Protocol and
// Sec-WebSocket-Extensions when opts offers subprotocols or extensions;
// plus a copy of opts.Header. opts may be nil.
//
// It fails if opts.Header sets a field the handshake owns, or if a
// subprotocol or extension is not a valid token.
func ClientHeader(key string, opts *DialOptions) (http.Header, error) {
	h, err := clientHeader(opts)
	if err != nil {
		return nil, err
	}
	h["Sec-Websocket-Key"] = []string{key}
	return h, nil
}

// clientHeader is ClientHeader without Sec-WebSocket-Key, which an
// opening handshake over HTTP/2 does not have.
func clientHeader(opts *DialOptions) (http.Header, error) {
	if opts == nil {
		opts = &DialOptions{}
	}
	h := make(http.Header, len(opts.Header)+4)
	for k, vs := range opts.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol",
			"Sec-Websocket-Extensions", "Upgrade", "Connection":
			return nil, fmt.Errorf("websocket: DialOptions.Header must not set %s; it is part of the handshake", k)
		}
		h[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
	}
	h["Sec-Websocket-Version"] = []string{Version}
	if len(opts.Subprotocols) > 0 {
		for _, p := range opts.Subprotocols {
			if !httplist.IsToken(p) {
				return nil, fmt.Errorf("websocket: invalid subprotocol %s: not a token", httplist.Quote(p))
			}
		}
		h["Sec-Websocket-Protocol"] = []string{strings.Join(opts.Subprotocols, ", ")}
	}
	if len(opts.Extensions) > 0 {
		for _, e := range opts.Extensions {
			if !httplist.IsToken(e.Name) {
				return nil, fmt.Errorf("websocket: invalid extension name %s: not a token", httplist.Quote(e.Name))
			}
			for _, p := range e.Params {
				if !httplist.IsToken(p.Name) || (p.Value != "" && !httplist.IsToken(p.Value)) {
					return nil, fmt.Errorf("websocket: invalid parameter %s of extension %s", httplist.Quote(p.Name+"="+p.Value), httplist.Quote(e.Name))
				}
			}
		}
		h["Sec-Websocket-Extensions"] = []string{FormatExtensions(opts.Extensions)}
	}
	return h, nil
}

// CheckResponse verifies the response to an opening handshake sent with
// key and opts (which may be nil), as RFC 6455 §4.1 requires of a client:
// status 101; "websocket" in Upgrade, compared ASCII case-insensitively
// (a Unicode look-alike such as "websoc\u212Aet" does not match); the
// "upgrade" option in Connection; Sec-WebSocket-Accept present exactly
// once and equal to AcceptKey(key); Sec-WebSocket-Protocol absent, or a
// single subprotocol that opts offered; and no extension in
// Sec-WebSocket-Extensions that opts did not offer. A failed check is a
// *HandshakeError.
//
// A response with ProtoMajor 2 or 3 answers an extended CONNECT over
// HTTP/2 or HTTP/3 (RFC 8441 §5, RFC 9220 §3), which has neither key nor
// Upgrade: its status must be 200, key is ignored, and so is any
// Sec-WebSocket-Accept (a proxy translating to an HTTP/1.1 backend may
// pass the backend's on); the subprotocol and extension rules are the
// same.
func CheckResponse(resp *http.Response, key string, opts *DialOptions) error {
	if opts == nil {
		opts = &DialOptions{}
	}
	fail := func(reason string, err error) error {
		return &HandshakeError{Reason: reason, Response: resp, Err: err}
	}
	if resp.ProtoMajor >= 2 {
		if resp.StatusCode != http.StatusOK {
			return fail("status "+strconv.Itoa(resp.StatusCode)+" to the HTTP/"+strconv.Itoa(resp.ProtoMajor)+" extended CONNECT, want 200 (RFC 8441 §5)", nil)
		}
		return checkNegotiated(resp, opts, fail)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fail("status "+strconv.Itoa(resp.StatusCode)+", want 101 Switching Protocols", nil)
	}
	offers, err := upgrade.ParseProtocols(resp.Header["Upgrade"])
	if err != nil {
		return fail("malformed Upgrade "+httplist.Quote(strings.Join(resp.Header["Upgrade"], ", ")), err)
	}
	if len(offers) != 1 || !ascii.EqualFold(offers[0].Name, "websocket") || offers[0].Version != "" {
		return fail("Upgrade "+httplist.Quote(strings.Join(resp.Header["Upgrade"], ", "))+", want \"websocket\"", nil)
	}
	if !httpguts.HeaderValuesContainsToken(resp.Header["Connection"], "upgrade") {
		return fail("Connection "+httplist.Quote(strings.Join(resp.Header["Connection"], ", "))+" lacks the \"upgrade\" option", nil)
	}
	switch accepts := resp.Header["Sec-Websocket-Accept"]; {
	case len(accepts) == 0:
		return fail("missing Sec-WebSocket-Accept", nil)
	case len(accepts) > 1:
		return fail("Sec-WebSocket-Accept sent "+strconv.Itoa(len(accepts))+" times", nil)
	default:
		var want [wskey.AcceptLen]byte
		wskey.Accept(&want, key)
		if accepts[0] != string(want[:]) {
			return fail("Sec-WebSocket-Accept "+httplist.Quote(accepts[0])+" does not match the key (want "+httplist.Quote(string(want[:]))+")", nil)
		}
	}
	return checkNegotiated(resp, opts, fail)
}

// checkNegotiated checks the subprotocol and extensions the server chose
// against those opts offered.
func checkNegotiated(resp *http.Response, opts *DialOptions, fail func(string, error) error) error {
	if err := checkSubprotocol(resp.Header["Sec-Websocket-Protocol"], opts.Subprotocols); err != "" {
		return fail(err, nil)
	}
	if vs := resp.Header["Sec-Websocket-Extensions"]; len(vs) > 0 {
		exts, err := ParseExtensions(vs)
		if err != nil {
			return fail("malformed Sec-WebSocket-Extensions "+httplist.Quote(strings.Join(vs, ", ")), err)
		}
		for _, e := range exts {
			if !offered(opts.Extensions, e.Name) {
				return fail("Sec-WebSocket-Extensions names "+httplist.Quote(e.Name)+", which was not offered", nil)
			}
		}
	}
	return nil
}

// checkSubprotocol checks the server's Sec-WebSocket-Protocol lines
// against the subprotocols offered; it returns "" if they are fine.
func checkSubprotocol(vs, offers []string) string {
	switch len(vs) {
	case 0:
		return ""
	case 1:
	default:
		return "Sec-WebSocket-Protocol sent " + strconv.Itoa(len(vs)) + " times"
	}
	v := vs[0]
	if v == "" {
		return "empty Sec-WebSocket-Protocol"
	}
	for _, p := range offers {
		if p == v {
			return ""
		}
	}
	if strings.IndexByte(v, ',') >= 0 {
		return "Sec-WebSocket-Protocol " + httplist.Quote(v) + " is a list, want one subprotocol"
	}
	return "Sec-WebSocket-Protocol " + httplist.Quote(v) + " was not offered"
}
