package reverseproxy

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/go-upgrade/upgrade"
	"github.com/go-upgrade/upgrade/internal/ascii"
	"github.com/go-upgrade/upgrade/internal/httplist"
)

// A Request is the request a Proxy received and the one it is about to
// send to the backend, given to Rewrite.
type Request struct {
	// In is the request the client sent. It must not be modified.
	In *http.Request

	// Out is the request to send to the backend. Its URL is nil until
	// Rewrite sets it; Host is In's (sent unless empty, when the URL's
	// host is sent); Header holds In's end-to-end fields plus the
	// forwarding fields. Its Upgrade and Connection fields are set by
	// the Proxy: Rewrite must not set them, nor Content-Length,
	// Transfer-Encoding or Expect.
	Out *http.Request
}

// SetURL routes Out to target: scheme and host become target's, the
// path is target's path joined with In's, and the query is target's
// followed by In's. Out.Host is cleared, so the backend gets target's
// host in its Host field; set Out.Host = In.Host afterwards to keep the
// client's.
func (pr *Request) SetURL(target *url.URL) {
	u := *target
	u.User = target.User
	in := pr.In.URL
	u.Path, u.RawPath = joinURLPath(target, in)
	switch {
	case target.RawQuery == "":
		u.RawQuery = in.RawQuery
	case in.RawQuery != "":
		u.RawQuery = target.RawQuery + "&" + in.RawQuery
	}
	u.Fragment, u.RawFragment = "", ""
	pr.Out.URL = &u
	pr.Out.Host = ""
}

// joinURLPath joins the paths of a and b with exactly one slash between
// them, keeping their escaping.
func joinURLPath(a, b *url.URL) (path, rawPath string) {
	if a.RawPath == "" && b.RawPath == "" {
		return singleJoiningSlash(a.Path, b.Path), ""
	}
	ap, bp := a.EscapedPath(), b.EscapedPath()
	joined := singleJoiningSlash(ap, bp)
	return singleJoiningSlash(a.Path, b.Path), joined
}

func singleJoiningSlash(a, b string) string {
	as, bs := strings.HasSuffix(a, "/"), strings.HasPrefix(b, "/")
	switch {
	case as && bs:
		return a + b[1:]
	case !as && !bs && b != "":
		return a + "/" + b
	}
	return a + b
}

// withoutUpgrade returns r as a plain request: without its Upgrade field,
// the fields only an upgrade uses, and the options naming them in
// Connection.
func withoutUpgrade(r *http.Request) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	r2.Header = httplist.WithoutUpgrade(r.Header)
	return r2
}

// newRequest makes the request to the backend: In's method, target
// and end-to-end fields, with the forwarding fields added. The upgrade's
// own HTTP2-Settings field is kept, named in Connection, when h2c is
// among the offers forwarded.
func newRequest(r *http.Request, offers []upgrade.Protocol) *Request {
	out := &http.Request{
		Method:     r.Method,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Host:       r.Host,
		Header:     make(http.Header, len(r.Header)+4),
	}
	out = out.WithContext(r.Context())
	h := out.Header
	for k, vs := range r.Header {
		h[k] = append([]string(nil), vs...)
	}
	keepSettings := len(h["Http2-Settings"]) > 0 && hasConnectionOption(r.Header, "HTTP2-Settings") &&
		slices.ContainsFunc(offers, func(o upgrade.Protocol) bool { return ascii.EqualFold(o.Name, "h2c") })
	settings := h["Http2-Settings"]
	removeHopByHop(h)
	delete(h, "Upgrade")
	delete(h, ":protocol") // an HTTP/2 pseudo-header, in the Header of an extended CONNECT
	// The Dialer sets these from the body it sends, and never sends
	// Expect: the proxy has answered it already.
	delete(h, "Content-Length")
	delete(h, "Expect")
	delete(h, "Host")
	delete(h, "Http2-Settings")
	if keepSettings {
		h["Http2-Settings"] = settings
		h["Connection"] = []string{"HTTP2-Settings"}
	}
	SetForwarded(h, r)
	return &Request{In: r, Out: out}
}

// hopByHop lists the fields that apply to one connection only
// (RFC 9110 §7.6.1; Keep-Alive, Proxy-Connection and the Proxy-* pair by
// widespread use), as httputil.ReverseProxy removes them.
var hopByHop = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
}

// removeHopByHop removes the hop-by-hop fields of h, those named in its
// Connection field included. Upgrade is left to the caller.
func removeHopByHop(h http.Header) {
	for o := range httplist.Elements(h["Connection"]) {
		if ascii.EqualFold(o, "upgrade") {
			continue
		}
		if httplist.IsToken(o) {
			delete(h, http.CanonicalHeaderKey(o))
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
}

// switchHeader returns the fields of the backend's 101 to relay to the
// client: the end-to-end ones. Upgrade and Connection are the client
// side's to write; a 101 has no content, so no Content-Length; and a
// bridged WebSocket's Sec-WebSocket-Accept answers the proxy's key, not
// anything the client sent.
func switchHeader(h http.Header, bridged bool) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		out[k] = vs
	}
	removeHopByHop(out)
	delete(out, "Upgrade")
	delete(out, "Content-Length")
	if bridged {
		delete(out, "Sec-Websocket-Accept")
	}
	return out
}
